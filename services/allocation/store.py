"""Allocation's own collections: `stock` (one document per ready device, _id = device id),
`requests` (_id = request id) and `shipments` (_id = shipment id). Ids are stored as strings,
times as aware UTC datetimes, a request's deadline as an ISO date string."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any
from uuid import UUID

from pymongo import ASCENDING

from services.allocation.domain import (
    DeviceState,
    Request,
    RequestStatus,
    Shipment,
    ShipmentStatus,
    StockDevice,
)
from shared.events import DeviceCategory, Grade, HardwareSpecs, MinSpecs
from shared.mongo import Database, Document, update_if


async def setup(db: Database) -> None:
    await db.stock.create_index([("state", ASCENDING), ("category", ASCENDING)])
    await db.stock.create_index([("recipient_id", ASCENDING)])
    await db.stock.create_index([("request_id", ASCENDING)])
    await db.requests.create_index([("recipient_id", ASCENDING)])
    await db.requests.create_index([("status", ASCENDING)])
    await db.shipments.create_index([("recipient_id", ASCENDING)])
    await recover(db)


async def recover(db: Database) -> None:
    """Finish what a crash interrupted.

    A shipment's commit point is the insert of its document (with its events in the outbox):
    devices claimed for a shipment that was never written go back to allocated. Accepting a
    shipment commits on the shipment document: its devices still shown shipped become delivered.
    """
    shipment_ids = {d["_id"] async for d in db.shipments.find({}, {"_id": 1})}
    async for doc in db.stock.find({"state": DeviceState.SHIPPED.value}):
        if doc.get("shipment_id") not in shipment_ids:
            await update_if(
                db.stock,
                doc["_id"],
                {"state": DeviceState.SHIPPED.value},
                {"$set": {"state": DeviceState.ALLOCATED.value, "shipment_id": None}},
            )
    async for doc in db.shipments.find({"status": ShipmentStatus.DELIVERED.value}):
        await mirror_delivery(db, doc)


async def release_orphan_claims(db: Database, device_ids: list[str]) -> None:
    """Devices claimed for a shipment whose insert never happened go back to allocated.

    Only safe while no shipment is being written (the caller holds the claims lock)."""
    query = {"_id": {"$in": device_ids}, "state": DeviceState.SHIPPED.value}
    async for doc in db.stock.find(query, {"shipment_id": 1}):
        if await db.shipments.count_documents({"_id": doc.get("shipment_id")}) == 0:
            await update_if(
                db.stock,
                doc["_id"],
                {"state": DeviceState.SHIPPED.value},
                {"$set": {"state": DeviceState.ALLOCATED.value, "shipment_id": None}},
            )


async def mirror_delivery(db: Database, shipment: Document) -> None:
    """A delivered shipment's devices still shown shipped become delivered (idempotent)."""
    for device_id in shipment["device_ids"]:
        await update_if(
            db.stock,
            device_id,
            {"state": DeviceState.SHIPPED.value, "shipment_id": shipment["_id"]},
            {
                "$set": {
                    "state": DeviceState.DELIVERED.value,
                    "updated_at": shipment["delivered_at"],
                }
            },
        )


def _uuid(value: Any) -> UUID | None:
    return UUID(value) if value else None


def _str(value: UUID | None) -> str | None:
    return str(value) if value else None


# ---- stock ------------------------------------------------------------------------------------


def device_fields(device: StockDevice) -> Document:
    """Every field of a stock document but its _id (what a transition `$set`s)."""
    return {
        "state": device.state.value,
        "category": device.category.value,
        "specs": device.specs.model_dump(mode="json"),
        "cosmetic_grade": device.cosmetic_grade.value,
        "functional_grade": device.functional_grade.value,
        "erasure_certificate_id": str(device.erasure_certificate_id),
        "pickup_id": str(device.pickup_id),
        "ready_at": device.ready_at,
        "request_id": _str(device.request_id),
        "recipient_id": device.recipient_id,
        "allocation_id": _str(device.allocation_id),
        "allocated_at": device.allocated_at,
        "shipment_id": _str(device.shipment_id),
        "note": device.note,
        "updated_at": device.updated_at,
    }


def device_from(doc: Document) -> StockDevice:
    return StockDevice(
        device_id=UUID(doc["_id"]),
        state=DeviceState(doc["state"]),
        category=DeviceCategory(doc["category"]),
        specs=HardwareSpecs.model_validate(doc["specs"]),
        cosmetic_grade=Grade(doc["cosmetic_grade"]),
        functional_grade=Grade(doc["functional_grade"]),
        erasure_certificate_id=UUID(doc["erasure_certificate_id"]),
        pickup_id=UUID(doc["pickup_id"]),
        ready_at=doc["ready_at"],
        request_id=_uuid(doc.get("request_id")),
        recipient_id=doc.get("recipient_id"),
        allocation_id=_uuid(doc.get("allocation_id")),
        allocated_at=doc.get("allocated_at"),
        shipment_id=_uuid(doc.get("shipment_id")),
        note=doc.get("note"),
        updated_at=doc.get("updated_at"),
    )


async def load_device(db: Database, device_id: UUID) -> StockDevice | None:
    """The device; one still shown shipped whose shipment was accepted is delivered first (the
    acceptance committed on the shipment and the store failed before the devices followed)."""
    doc = await db.stock.find_one({"_id": str(device_id)})
    if doc and doc["state"] == DeviceState.SHIPPED.value and doc.get("shipment_id"):
        shipment = await db.shipments.find_one(
            {"_id": doc["shipment_id"], "status": ShipmentStatus.DELIVERED.value}
        )
        if shipment is not None:
            await mirror_delivery(db, shipment)
            doc = await db.stock.find_one({"_id": str(device_id)})
    return device_from(doc) if doc else None


async def find_devices(db: Database, query: Document) -> list[StockDevice]:
    cursor = db.stock.find(query).sort([("ready_at", ASCENDING), ("_id", ASCENDING)])
    return [device_from(doc) async for doc in cursor]


async def count_allocated(db: Database, request_id: UUID) -> int:
    return await db.stock.count_documents({"request_id": str(request_id)})


async def count_allocated_many(db: Database, request_ids: list[UUID]) -> Counter[UUID]:
    """Devices allocated to each of these requests, in one read of the stock (not one per
    request: on FerretDB each is a read of every stock document)."""
    query = {"request_id": {"$in": [str(r) for r in request_ids]}}
    return Counter([UUID(d["request_id"]) async for d in db.stock.find(query, {"request_id": 1})])


async def allocated_ids(db: Database, request_id: UUID) -> list[UUID]:
    return (await allocated_ids_many(db, [request_id]))[request_id]


async def allocated_ids_many(db: Database, request_ids: list[UUID]) -> dict[UUID, list[UUID]]:
    """The devices allocated to each request, in allocation order, in one read of the stock."""
    found: dict[UUID, list[UUID]] = {r: [] for r in request_ids}
    query = {"request_id": {"$in": [str(r) for r in request_ids]}}
    cursor = db.stock.find(query, {"request_id": 1}).sort([("allocated_at", 1), ("_id", 1)])
    async for doc in cursor:
        found[UUID(doc["request_id"])].append(UUID(doc["_id"]))
    return found


# ---- requests ---------------------------------------------------------------------------------


def request_doc(request: Request) -> Document:
    return {
        "_id": str(request.request_id),
        "recipient_id": request.recipient_id,
        "status": request.status.value,
        "quantity": request.quantity,
        "category": request.category.value,
        "min_specs": request.min_specs.model_dump(mode="json"),
        "purpose": request.purpose,
        "priority": request.priority,
        "deadline": request.deadline.isoformat() if request.deadline else None,
        "opened_at": request.opened_at,
        "recipient_name": request.recipient_name,
    }


def request_from(doc: Document) -> Request:
    return Request(
        request_id=UUID(doc["_id"]),
        recipient_id=doc["recipient_id"],
        status=RequestStatus(doc["status"]),
        quantity=doc["quantity"],
        category=DeviceCategory(doc["category"]),
        min_specs=MinSpecs.model_validate(doc["min_specs"]),
        purpose=doc["purpose"],
        priority=doc["priority"],
        deadline=date.fromisoformat(doc["deadline"]) if doc.get("deadline") else None,
        opened_at=doc["opened_at"],
        recipient_name=doc.get("recipient_name"),
    )


async def load_request(db: Database, request_id: UUID) -> Request | None:
    doc = await db.requests.find_one({"_id": str(request_id)})
    return request_from(doc) if doc else None


async def find_requests(db: Database, query: Document) -> list[Request]:
    cursor = db.requests.find(query).sort([("opened_at", ASCENDING), ("_id", ASCENDING)])
    return [request_from(doc) async for doc in cursor]


# ---- shipments --------------------------------------------------------------------------------


def shipment_doc(shipment: Shipment) -> Document:
    return {
        "_id": str(shipment.shipment_id),
        "bill_of_lading": shipment.bill_of_lading,
        "recipient_id": shipment.recipient_id,
        "carrier": shipment.carrier,
        "status": shipment.status.value,
        "device_ids": [str(d) for d in shipment.device_ids],
        "created_at": shipment.created_at,
        "accepted_by": shipment.accepted_by,
        "delivered_at": shipment.delivered_at,
    }


def shipment_from(doc: Document) -> Shipment:
    return Shipment(
        shipment_id=UUID(doc["_id"]),
        bill_of_lading=doc["bill_of_lading"],
        recipient_id=doc["recipient_id"],
        carrier=doc.get("carrier"),
        status=ShipmentStatus(doc["status"]),
        device_ids=tuple(UUID(d) for d in doc["device_ids"]),
        created_at=doc["created_at"],
        accepted_by=doc.get("accepted_by"),
        delivered_at=doc.get("delivered_at"),
    )


async def load_shipment(db: Database, shipment_id: UUID) -> Shipment | None:
    doc = await db.shipments.find_one({"_id": str(shipment_id)})
    return shipment_from(doc) if doc else None


async def find_shipments(db: Database, query: Document) -> list[Shipment]:
    cursor = db.shipments.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
    return [shipment_from(doc) async for doc in cursor]
