"""Intake's own collections: `pickups`, `devices` (with the custody view), `counters`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pymongo import ASCENDING, ReturnDocument

from services.intake.domain import (
    Custody,
    HistoryEntry,
    KnownDevice,
    Pickup,
    PickupStatus,
    ReceivedDevice,
)
from shared.events import Address, Contact, DeviceCategory, TimeWindow
from shared.mongo import Database, Document

ASSET_TAG_COUNTER = "asset_tag"


async def setup(db: Database) -> None:
    await db.devices.create_index([("asset_tag", ASCENDING)], unique=True)
    await db.devices.create_index([("serial_key", ASCENDING)], unique=True, sparse=True)
    await db.devices.create_index([("pickup_id", ASCENDING)])
    await db.devices.create_index([("partner_id", ASCENDING)])
    await db.pickups.create_index([("partner_id", ASCENDING)])


# ---- pickups ----------------------------------------------------------------------------------


def pickup_doc(pickup: Pickup) -> Document:
    """The pickup's state fields (without `_id`), ready for `$set` or an insert."""
    return {
        "partner_id": pickup.partner_id,
        "status": pickup.status.value,
        "address": pickup.address.model_dump(),
        "contact": pickup.contact.model_dump(),
        "window": pickup.window.model_dump(),
        "expected": {c.value: n for c, n in pickup.expected.items()},
        "notes": pickup.notes,
        "created_at": pickup.created_at,
        "scheduled_for": pickup.scheduled_for,
        "cancel_reason": pickup.cancel_reason,
    }


def pickup_from_doc(doc: Document) -> Pickup:
    return Pickup(
        pickup_id=UUID(doc["_id"]),
        partner_id=doc["partner_id"],
        status=PickupStatus(doc["status"]),
        address=Address.model_validate(doc["address"]),
        contact=Contact.model_validate(doc["contact"]),
        window=TimeWindow.model_validate(doc["window"]),
        expected={DeviceCategory(c): int(n) for c, n in doc["expected"].items()},
        notes=doc.get("notes"),
        created_at=doc["created_at"],
        scheduled_for=doc.get("scheduled_for"),
        cancel_reason=doc.get("cancel_reason"),
    )


async def load_pickup(db: Database, pickup_id: UUID) -> Pickup | None:
    doc = await db.pickups.find_one({"_id": str(pickup_id)}, {"outbox": 0})
    return pickup_from_doc(doc) if doc else None


async def find_pickups(db: Database, partner_id: str | None) -> list[Pickup]:
    query: dict[str, Any] = {} if partner_id is None else {"partner_id": partner_id}
    cursor = db.pickups.find(query, {"outbox": 0}).sort("created_at", ASCENDING)
    return [pickup_from_doc(d) async for d in cursor]


async def count_devices(db: Database, pickup_id: UUID) -> int:
    return await db.devices.count_documents({"pickup_id": str(pickup_id)})


async def devices_per_pickup(db: Database, pickup_ids: list[UUID]) -> dict[UUID, int]:
    counts: dict[UUID, int] = {p: 0 for p in pickup_ids}
    query = {"pickup_id": {"$in": [str(p) for p in pickup_ids]}}
    async for doc in db.devices.find(query, {"pickup_id": 1}):
        counts[UUID(doc["pickup_id"])] += 1
    return counts


# ---- devices ----------------------------------------------------------------------------------


def custody_fields(custody: Custody) -> Document:
    return {
        "stage": custody.stage,
        "recipient_id": custody.recipient_id,
        "recipient_name": custody.recipient_name,
        "erasure_certificate_id": _str(custody.erasure_certificate_id),
        "recycling_certificate_id": _str(custody.recycling_certificate_id),
        "history": [
            {
                "event_id": str(h.event_id),
                "event_type": h.event_type,
                "occurred_at": h.occurred_at,
                "producer": h.producer,
                "details": h.details,
                "digest": h.digest,
            }
            for h in custody.history
        ],
    }


def custody_from_doc(doc: Document) -> Custody:
    return Custody(
        stage=doc.get("stage"),
        recipient_id=doc.get("recipient_id"),
        recipient_name=doc.get("recipient_name"),
        erasure_certificate_id=_uuid(doc.get("erasure_certificate_id")),
        recycling_certificate_id=_uuid(doc.get("recycling_certificate_id")),
        history=tuple(
            HistoryEntry(
                event_id=UUID(h["event_id"]),
                event_type=h["event_type"],
                occurred_at=h["occurred_at"],
                producer=h["producer"],
                details=h.get("details") or {},
                digest=h.get("digest"),
            )
            for h in doc.get("history") or ()
        ),
    )


def device_doc(device: ReceivedDevice) -> Document:
    doc: Document = {
        "_id": str(device.device_id),
        "pickup_id": str(device.pickup_id),
        "partner_id": device.partner_id,
        "asset_tag": device.asset_tag,
        "asset_tag_generated": device.asset_tag_generated,
        "serial_number": device.serial_number,
        "category": device.category.value,
        "make": device.make,
        "model": device.model,
        "weight_kg": device.weight_kg,
        "location": device.location,
        "scanned_by": device.scanned_by,
        "received_at": device.received_at,
        "applied": [str(h.event_id) for h in device.custody.history],
        "version": 0,
        **custody_fields(device.custody),
    }
    if device.serial_key is not None:
        doc["serial_key"] = device.serial_key
    return doc


def known_device(doc: Document) -> KnownDevice:
    return KnownDevice(
        device_id=UUID(doc["_id"]),
        pickup_id=UUID(doc["pickup_id"]),
        asset_tag=doc["asset_tag"],
        stage=doc.get("stage") or "received",
    )


async def find_by_asset_tag(db: Database, asset_tag: str) -> KnownDevice | None:
    doc = await db.devices.find_one({"asset_tag": asset_tag}, _IDENTITY)
    return known_device(doc) if doc else None


async def find_by_serial_key(db: Database, key: str) -> KnownDevice | None:
    doc = await db.devices.find_one({"serial_key": key}, _IDENTITY)
    return known_device(doc) if doc else None


async def load_device(db: Database, device_id: UUID) -> Document | None:
    return await db.devices.find_one({"_id": str(device_id)}, {"outbox": 0})


async def find_devices(
    db: Database,
    *,
    partner_id: str | None = None,
    pickup_id: UUID | None = None,
    stage: str | None = None,
) -> list[Document]:
    query: dict[str, Any] = {}
    if partner_id is not None:
        query["partner_id"] = partner_id
    if pickup_id is not None:
        query["pickup_id"] = str(pickup_id)
    if stage is not None:
        query["stage"] = stage
    cursor = db.devices.find(query, {"outbox": 0, "applied": 0}).sort("received_at", ASCENDING)
    return [d async for d in cursor]


async def next_asset_number(db: Database) -> int:
    doc = await db.counters.find_one_and_update(
        {"_id": ASSET_TAG_COUNTER},
        {"$inc": {"n": 1}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None
    return int(doc["n"])


_IDENTITY = {"_id": 1, "pickup_id": 1, "asset_tag": 1, "stage": 1}


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: str | None) -> UUID | None:
    return None if value is None else UUID(value)
