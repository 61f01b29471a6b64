"""Recycling's own collections: `devices` (with each device's certificate) and `lots`.

Documents are the domain types as pydantic dumps them (`shared.mongo.to_document`) and read
back by their validation; a device's save is guarded by the state it was decided on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.recycling.domain import Device, Lot, RecyclingRecord, State
from shared.events import Event
from shared.mongo import Database, Document, to_document, update_if
from shared.outbox import ServiceStore, outbox_set
from shared.usecase import Loaded

DISPATCHING = "dispatching"
DISPATCHED = "dispatched"

_DEVICE = TypeAdapter(Device)
_LOT = TypeAdapter(Lot)
_CERTIFICATE = TypeAdapter(RecyclingRecord)


async def setup(db: Database) -> None:
    await db.devices.create_index([("state", ASCENDING)])
    await db.devices.create_index([("certificate_id", ASCENDING)])
    await db.lots.create_index([("idempotency_key", ASCENDING)], unique=True)
    await db.lots.create_index([("status", ASCENDING)])


def device_doc(device: Device) -> Document:
    """The state fields of a device document (everything but _id and its outbox)."""
    certificate_id = device.certificate.certificate_id if device.certificate else None
    doc: Document = to_document(_DEVICE.dump_python(device))
    return doc | {"certificate_id": to_document(certificate_id)}


def device_from(doc: Document) -> Device:
    return _DEVICE.validate_python({**doc, "device_id": doc["_id"]})


def lot_doc(lot: Lot) -> Document:
    doc: Document = to_document(_LOT.dump_python(lot))
    return doc


def lot_from(doc: Document) -> Lot:
    return _LOT.validate_python({**doc, "lot_id": doc["_id"]})


class Store(ServiceStore):
    """Every collection call of recycling."""

    # ---- devices ------------------------------------------------------------------------------

    async def load(self, device_id: UUID) -> Loaded[Device] | None:
        device = await self.load_device(device_id)
        return None if device is None else Loaded(device, device.state.value)

    async def save(self, loaded: Loaded[Device], device: Device, events: Sequence[Event]) -> bool:
        return await update_if(
            self._db.devices,
            str(device.device_id),
            {"state": loaded.version},
            {"$set": device_doc(device) | outbox_set(events)},
        )

    async def flush(self, device_id: UUID) -> None:
        await self._connected.relay.flush(self._db.devices, str(device_id))

    async def insert_device(self, device: Device) -> bool:
        """Store an admitted device; False if a concurrent delivery stored it first."""
        try:
            await self._db.devices.insert_one({"_id": str(device.device_id), **device_doc(device)})
        except DuplicateKeyError:
            return False
        return True

    async def load_device(self, device_id: UUID) -> Device | None:
        doc = await self._db.devices.find_one({"_id": str(device_id)}, {"outbox": 0})
        return device_from(doc) if doc else None

    async def load_devices(self, state: State | None = None) -> list[Device]:
        query: dict[str, Any] = {} if state is None else {"state": state.value}
        cursor = self._db.devices.find(query, {"outbox": 0}).sort("_id", 1)
        return [device_from(d) async for d in cursor]

    async def load_certificate(self, certificate_id: UUID) -> RecyclingRecord | None:
        doc = await self._db.devices.find_one(
            {"certificate_id": str(certificate_id)}, {"certificate": 1}
        )
        if not doc or not doc.get("certificate"):
            return None
        return _CERTIFICATE.validate_python(doc["certificate"])

    async def claim(self, lot: Lot, device_id: UUID) -> bool:
        """Mark a dismantled device in no lot as the lot's (no event yet)."""
        return await update_if(
            self._db.devices,
            str(device_id),
            {"state": State.DISMANTLED.value, "lot_id": None},
            {"$set": {"lot_id": str(lot.lot_id)}},
        )

    async def unclaim(self, lot: Lot, device_id: UUID) -> None:
        await update_if(
            self._db.devices,
            str(device_id),
            {"state": State.DISMANTLED.value, "lot_id": str(lot.lot_id)},
            {"$set": {"lot_id": None}},
        )

    async def save_recycled(self, lot: Lot, device: Device, event: Event) -> None:
        await update_if(
            self._db.devices,
            str(device.device_id),
            {"state": State.DISMANTLED.value, "lot_id": str(lot.lot_id)},
            {"$set": device_doc(device) | outbox_set([event])},
        )

    # ---- lots ---------------------------------------------------------------------------------

    async def lot_by_key(self, idempotency_key: str) -> Document | None:
        return await self._db.lots.find_one({"idempotency_key": idempotency_key})

    async def insert_lot(self, lot: Lot, idempotency_key: str | None) -> Document:
        """Store a `dispatching` lot; the one already stored under the same key if a concurrent
        request stored it first."""
        doc = {
            "_id": str(lot.lot_id),
            "status": DISPATCHING,
            "idempotency_key": idempotency_key or str(lot.lot_id),
            **lot_doc(lot),
        }
        try:
            await self._db.lots.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.lot_by_key(idempotency_key or str(lot.lot_id))
            if existing is None:
                raise
            return existing
        return doc

    async def mark_dispatched(self, lot_id: str, event: Event) -> None:
        await update_if(
            self._db.lots,
            lot_id,
            {"status": DISPATCHING},
            {"$set": {"status": DISPATCHED, **outbox_set([event])}},
        )

    async def delete_dispatching(self, lot: Lot) -> None:
        await self._db.lots.delete_one({"_id": str(lot.lot_id), "status": DISPATCHING})

    async def flush_lot(self, lot_id: str) -> None:
        await self._connected.relay.flush(self._db.lots, lot_id)

    async def load_lot_doc(self, lot_id: UUID) -> Document | None:
        return await self._db.lots.find_one({"_id": str(lot_id)}, {"outbox": 0})

    async def lot_docs(self, limit: int) -> list[Document]:
        cursor = self._db.lots.find({}, {"outbox": 0}).sort("dispatched_at", -1).limit(limit)
        return [d async for d in cursor]

    async def dispatching_lots(self) -> list[Document]:
        return [d async for d in self._db.lots.find({"status": DISPATCHING}, {"outbox": 0})]
