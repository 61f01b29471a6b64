"""Load, decide, store (one atomic update per document, with its outbox), flush."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pymongo.errors import DuplicateKeyError

from services.recycling import domain, store
from services.recycling.domain import Device, Lot, State
from shared.domain import IllegalTransition
from shared.events import (
    DeviceReleasedForRecycling,
    DeviceReturned,
    ErasureRecord,
    Event,
    MaterialFractions,
    Recycler,
)
from shared.ids import derive_id
from shared.kafka import Handler, Unprocessable
from shared.mongo import Database, Document, update_if
from shared.outbox import Relay, outbox_set

log = logging.getLogger(__name__)

DISPATCHING = "dispatching"
DISPATCHED = "dispatched"


def certificate_id_of(device_id: UUID) -> UUID:
    return derive_id("recycling", device_id, "recycling-certificate")


# ---- consumed events --------------------------------------------------------------------------


async def admit(db: Database, event: Event) -> None:
    """A released or returned device becomes a `devices` document, once."""
    if not isinstance(event, DeviceReleasedForRecycling | DeviceReturned):
        raise Unprocessable(f"recycling does not consume {event.event_type}")
    device = domain.admit(await store.load_device(db, event.device_id), event)
    if device is None:
        return
    try:
        await db.devices.insert_one({"_id": str(device.device_id), **store.device_doc(device)})
    except DuplicateKeyError:
        # A concurrent delivery stored it first: decide again against what is stored now.
        domain.admit(await store.load_device(db, event.device_id), event)


def consumer(db: Callable[[], Database]) -> Handler:
    async def handle(event: Event) -> None:
        await admit(db(), event)

    return handle


# ---- dismantling ------------------------------------------------------------------------------


async def dismantle(
    db: Database,
    relay: Relay,
    device_id: UUID,
    *,
    fractions: MaterialFractions,
    hazardous_parts: Sequence[str],
    destroyed: Sequence[ErasureRecord],
    dismantled_by: str,
    location: str,
) -> Device:
    event_id, at = uuid4(), datetime.now(UTC)
    while True:
        device, event = domain.dismantle(
            await store.load_device(db, device_id),
            device_id,
            fractions=fractions,
            hazardous_parts=hazardous_parts,
            destroyed=destroyed,
            dismantled_by=dismantled_by,
            location=location,
            at=at,
            event_id=event_id,
        )
        stored = await update_if(
            db.devices,
            str(device_id),
            {"state": State.AWAITING_DISMANTLING.value},
            {"$set": store.device_doc(device) | outbox_set([event])},
        )
        if stored:
            break
        # Dismantled concurrently: deciding again on the stored state refuses it.
    await relay.flush(db.devices, str(device_id))
    return device


# ---- lots -------------------------------------------------------------------------------------


async def create_lot(
    db: Database,
    relay: Relay | None,
    *,
    recycler: Recycler,
    device_ids: Sequence[UUID],
    idempotency_key: str | None,
) -> Document:
    """Compose, then dispatch: lot doc first, then each device, then the lot is dispatched.

    Devices are first claimed (lot_id set, no event), then recycled, so a lot that loses a race
    for one device releases its claims and leaves nothing behind.
    """
    if idempotency_key and (doc := await db.lots.find_one({"idempotency_key": idempotency_key})):
        return await finish_lot(db, relay, doc)
    lot_id, at = uuid4(), datetime.now(UTC)
    devices = [(i, await store.load_device(db, i)) for i in device_ids]
    lot = domain.compose_lot(lot_id, recycler, devices, at)
    doc = {
        "_id": str(lot_id),
        "status": DISPATCHING,
        "idempotency_key": idempotency_key or str(lot_id),
        **store.lot_doc(lot),
    }
    try:
        await db.lots.insert_one(doc)
    except DuplicateKeyError:
        existing = await db.lots.find_one({"idempotency_key": idempotency_key})
        if existing is None:
            raise
        doc = existing
    return await finish_lot(db, relay, doc)


async def finish_lot(db: Database, relay: Relay | None, doc: Document) -> Document:
    """Takes a `dispatching` lot to `dispatched`; safe to run again after a crash."""
    if doc["status"] == DISPATCHED:
        return doc
    lot = store.lot_from(doc)
    for device_id in lot.device_ids:
        await _claim(db, lot, device_id)
    lot_event = domain.dispatched(lot, derive_id("recycling", lot.lot_id, "lot.dispatched"))
    for device_id in lot.device_ids:
        device = await store.load_device(db, device_id)
        if device is None or device.state is State.RECYCLED:
            continue
        recycled, event = domain.recycle(
            device,
            lot,
            certificate_id=certificate_id_of(device_id),
            event_id=derive_id("recycling", lot.lot_id, "device.recycled", device_id),
            causation_id=lot_event.event_id,
        )
        await update_if(
            db.devices,
            str(device_id),
            {"state": State.DISMANTLED.value, "lot_id": str(lot.lot_id)},
            {"$set": store.device_doc(recycled) | outbox_set([event])},
        )
        if relay is not None:
            await relay.flush(db.devices, str(device_id))
    await update_if(
        db.lots,
        doc["_id"],
        {"status": DISPATCHING},
        {"$set": {"status": DISPATCHED, **outbox_set([lot_event])}},
    )
    if relay is not None:
        await relay.flush(db.lots, doc["_id"])
    finished = await store.load_lot_doc(db, lot.lot_id)
    assert finished is not None
    return finished


async def _claim(db: Database, lot: Lot, device_id: UUID) -> None:
    claimed = await update_if(
        db.devices,
        str(device_id),
        {"state": State.DISMANTLED.value, "lot_id": None},
        {"$set": {"lot_id": str(lot.lot_id)}},
    )
    if claimed:
        return
    current = await store.load_device(db, device_id)
    if current is not None and current.lot_id == lot.lot_id:
        return
    await _abandon(db, lot)
    domain.check_dispatchable(device_id, current)
    raise IllegalTransition(
        subject_kind="lot",
        subject_id=lot.lot_id,
        action="dispatch",
        state=DISPATCHING,
        reason="a device of the lot was taken meanwhile",
    )


async def _abandon(db: Database, lot: Lot) -> None:
    for device_id in lot.device_ids:
        await update_if(
            db.devices,
            str(device_id),
            {"state": State.DISMANTLED.value, "lot_id": str(lot.lot_id)},
            {"$set": {"lot_id": None}},
        )
    await db.lots.delete_one({"_id": str(lot.lot_id), "status": DISPATCHING})


async def resume_lots(db: Database) -> None:
    """Finish lots a crash left `dispatching`; the relay's sweep publishes their events."""
    async for doc in db.lots.find({"status": DISPATCHING}, {"outbox": 0}):
        try:
            await finish_lot(db, None, doc)
        except IllegalTransition as refused:
            log.warning("abandoned lot %s: %s", doc["_id"], refused.reason)


async def startup(db: Database) -> None:
    await store.setup(db)
    await resume_lots(db)


def lot_certificates(doc: Document) -> list[dict[str, Any]]:
    return [
        {"device_id": i, "certificate_id": str(certificate_id_of(UUID(i)))}
        for i in doc["device_ids"]
    ]
