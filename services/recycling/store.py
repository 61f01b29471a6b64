"""Recycling's own collections: `devices` (with each device's certificate) and `lots`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pymongo import ASCENDING

from services.recycling.domain import (
    Device,
    Dismantling,
    Lot,
    RecyclingRecord,
    Source,
    State,
)
from shared.events import DeviceCategory, ErasureRecord, MaterialFractions, Recycler
from shared.mongo import Database, Document


async def setup(db: Database) -> None:
    await db.devices.create_index([("state", ASCENDING)])
    await db.devices.create_index([("certificate_id", ASCENDING)])
    await db.lots.create_index([("idempotency_key", ASCENDING)], unique=True)
    await db.lots.create_index([("status", ASCENDING)])


# ---- devices ----------------------------------------------------------------------------------


def device_doc(device: Device) -> Document:
    """The state fields of a device document (everything but _id and its outbox)."""
    return {
        "state": device.state.value,
        "category": device.category.value,
        "source": device.source.value,
        "correlation_id": str(device.correlation_id),
        "admitted_by": str(device.admitted_by),
        "admitted_at": device.admitted_at,
        "erasure_certificate_id": _str(device.erasure_certificate_id),
        "drive_serials": None if device.drive_serials is None else list(device.drive_serials),
        "dismantling": _dismantling_doc(device.dismantling),
        "lot_id": _str(device.lot_id),
        "certificate_id": _str(device.certificate.certificate_id if device.certificate else None),
        "certificate": _certificate_doc(device.certificate),
    }


def device_from(doc: Document) -> Device:
    dismantling = doc.get("dismantling")
    certificate = doc.get("certificate")
    drives = doc.get("drive_serials")
    return Device(
        device_id=UUID(doc["_id"]),
        category=DeviceCategory(doc["category"]),
        source=Source(doc["source"]),
        correlation_id=UUID(doc["correlation_id"]),
        admitted_by=UUID(doc["admitted_by"]),
        admitted_at=doc["admitted_at"],
        erasure_certificate_id=_uuid(doc.get("erasure_certificate_id")),
        drive_serials=None if drives is None else tuple(drives),
        state=State(doc["state"]),
        dismantling=_dismantling_from(dismantling) if dismantling else None,
        lot_id=_uuid(doc.get("lot_id")),
        certificate=_certificate_from(certificate) if certificate else None,
    )


async def load_device(db: Database, device_id: UUID) -> Device | None:
    doc = await db.devices.find_one({"_id": str(device_id)}, {"outbox": 0})
    return device_from(doc) if doc else None


async def load_devices(db: Database, state: State | None = None) -> list[Device]:
    query: dict[str, Any] = {} if state is None else {"state": state.value}
    return [device_from(d) async for d in db.devices.find(query, {"outbox": 0}).sort("_id", 1)]


async def load_certificate(db: Database, certificate_id: UUID) -> RecyclingRecord | None:
    doc = await db.devices.find_one({"certificate_id": str(certificate_id)}, {"certificate": 1})
    return _certificate_from(doc["certificate"]) if doc and doc.get("certificate") else None


# ---- lots -------------------------------------------------------------------------------------


def lot_doc(lot: Lot) -> Document:
    return {
        "recycler": lot.recycler.model_dump(),
        "bill_of_lading": lot.bill_of_lading,
        "device_ids": [str(i) for i in lot.device_ids],
        "fractions": lot.fractions.model_dump(),
        "dispatched_at": lot.dispatched_at,
    }


def lot_from(doc: Document) -> Lot:
    return Lot(
        lot_id=UUID(doc["_id"]),
        recycler=Recycler(**doc["recycler"]),
        bill_of_lading=doc["bill_of_lading"],
        device_ids=tuple(UUID(i) for i in doc["device_ids"]),
        fractions=MaterialFractions(**doc["fractions"]),
        dispatched_at=doc["dispatched_at"],
    )


async def load_lot_doc(db: Database, lot_id: UUID) -> Document | None:
    return await db.lots.find_one({"_id": str(lot_id)}, {"outbox": 0})


async def lot_docs(db: Database, limit: int) -> list[Document]:
    cursor = db.lots.find({}, {"outbox": 0}).sort("dispatched_at", -1).limit(limit)
    return [d async for d in cursor]


# ---- conversions ------------------------------------------------------------------------------


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: str | None) -> UUID | None:
    return None if value is None else UUID(value)


def _erasures(records: tuple[ErasureRecord, ...]) -> list[Document]:
    return [r.model_dump() | {"method": r.method.value} for r in records]


def _dismantling_doc(d: Dismantling | None) -> Document | None:
    if d is None:
        return None
    return {
        "fractions": d.fractions.model_dump(),
        "hazardous_parts": list(d.hazardous_parts),
        "storage_destroyed": _erasures(d.storage_destroyed),
        "dismantled_by": d.dismantled_by,
        "dismantled_at": d.dismantled_at,
        "location": d.location,
    }


def _dismantling_from(doc: Document) -> Dismantling:
    return Dismantling(
        fractions=MaterialFractions(**doc["fractions"]),
        hazardous_parts=tuple(doc["hazardous_parts"]),
        storage_destroyed=tuple(ErasureRecord(**r) for r in doc["storage_destroyed"]),
        dismantled_by=doc["dismantled_by"],
        dismantled_at=doc["dismantled_at"],
        location=doc["location"],
    )


def _certificate_doc(c: RecyclingRecord | None) -> Document | None:
    if c is None:
        return None
    return {
        "certificate_id": str(c.certificate_id),
        "device_id": str(c.device_id),
        "category": c.category.value,
        "source": c.source.value,
        "correlation_id": str(c.correlation_id),
        "fractions": c.fractions.model_dump(),
        "recycler": c.recycler.model_dump(),
        "lot_id": str(c.lot_id),
        "bill_of_lading": c.bill_of_lading,
        "erasure_certificate_id": _str(c.erasure_certificate_id),
        "storage_destroyed": _erasures(c.storage_destroyed),
        "drive_serials": list(c.drive_serials),
        "issued_at": c.issued_at,
    }


def _certificate_from(doc: Document) -> RecyclingRecord:
    issued_at: datetime = doc["issued_at"]
    return RecyclingRecord(
        certificate_id=UUID(doc["certificate_id"]),
        device_id=UUID(doc["device_id"]),
        category=DeviceCategory(doc["category"]),
        source=Source(doc["source"]),
        correlation_id=UUID(doc["correlation_id"]),
        fractions=MaterialFractions(**doc["fractions"]),
        recycler=Recycler(**doc["recycler"]),
        lot_id=UUID(doc["lot_id"]),
        bill_of_lading=doc["bill_of_lading"],
        erasure_certificate_id=_uuid(doc.get("erasure_certificate_id")),
        storage_destroyed=tuple(ErasureRecord(**r) for r in doc["storage_destroyed"]),
        issued_at=issued_at,
        drive_serials=tuple(doc.get("drive_serials") or ()),
    )
