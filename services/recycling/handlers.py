"""Load, decide, store (one atomic update per document, with its outbox), flush."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from services.recycling import domain
from services.recycling.domain import Device, Lot, State
from services.recycling.store import DISPATCHED, DISPATCHING, Store, lot_from
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
from shared.usecase import apply

log = logging.getLogger(__name__)

LotDoc = dict[str, Any]


def certificate_id_of(device_id: UUID) -> UUID:
    return derive_id("recycling", device_id, "recycling-certificate")


# ---- consumed events --------------------------------------------------------------------------


async def admit(store: Store, event: Event) -> None:
    """A released or returned device becomes a `devices` document, once."""
    if not isinstance(event, DeviceReleasedForRecycling | DeviceReturned):
        raise Unprocessable(f"recycling does not consume {event.event_type}")
    device = domain.admit(await store.load_device(event.device_id), event)
    if device is None:
        return
    if not await store.insert_device(device):
        # A concurrent delivery stored it first: decide again against what is stored now.
        domain.admit(await store.load_device(event.device_id), event)


def consumer(store: Store) -> Handler:
    async def handle(event: Event) -> None:
        await admit(store, event)

    return handle


# ---- dismantling ------------------------------------------------------------------------------


async def dismantle(
    store: Store,
    device_id: UUID,
    *,
    fractions: MaterialFractions,
    hazardous_parts: Sequence[str],
    destroyed: Sequence[ErasureRecord],
    dismantled_by: str,
    location: str,
) -> Device:
    event_id, at = uuid4(), datetime.now(UTC)

    def decide(device: Device) -> tuple[Device, list[Event]]:
        dismantled, event = domain.dismantle(
            device,
            device_id,
            fractions=fractions,
            hazardous_parts=hazardous_parts,
            destroyed=destroyed,
            dismantled_by=dismantled_by,
            location=location,
            at=at,
            event_id=event_id,
        )
        return dismantled, [event]

    return await apply(
        store, device_id, decide, missing=lambda key: domain.not_released(key, "dismantle")
    )


# ---- lots -------------------------------------------------------------------------------------


async def create_lot(
    store: Store,
    *,
    recycler: Recycler,
    device_ids: Sequence[UUID],
    idempotency_key: str | None,
) -> LotDoc:
    """Compose, then dispatch: lot doc first, then each device, then the lot is dispatched.

    Devices are first claimed (lot_id set, no event), then recycled, so a lot that loses a race
    for one device releases its claims and leaves nothing behind.
    """
    if idempotency_key and (doc := await store.lot_by_key(idempotency_key)):
        return await finish_lot(store, doc)
    lot_id, at = uuid4(), datetime.now(UTC)
    devices = [(i, await store.load_device(i)) for i in device_ids]
    lot = domain.compose_lot(lot_id, recycler, devices, at)
    return await finish_lot(store, await store.insert_lot(lot, idempotency_key))


async def finish_lot(store: Store, doc: LotDoc, *, flush: bool = True) -> LotDoc:
    """Takes a `dispatching` lot to `dispatched`; safe to run again after a crash."""
    if doc["status"] == DISPATCHED:
        return doc
    lot = lot_from(doc)
    for device_id in lot.device_ids:
        await _claim(store, lot, device_id)
    lot_event = domain.dispatched(lot, derive_id("recycling", lot.lot_id, "lot.dispatched"))
    for device_id in lot.device_ids:
        device = await store.load_device(device_id)
        if device is None or device.state is State.RECYCLED:
            continue
        recycled, event = domain.recycle(
            device,
            lot,
            certificate_id=certificate_id_of(device_id),
            event_id=derive_id("recycling", lot.lot_id, "device.recycled", device_id),
            causation_id=lot_event.event_id,
        )
        await store.save_recycled(lot, recycled, event)
        if flush:
            await store.flush(device_id)
    await store.mark_dispatched(doc["_id"], lot_event)
    if flush:
        await store.flush_lot(doc["_id"])
    finished = await store.load_lot_doc(lot.lot_id)
    assert finished is not None
    return finished


async def _claim(store: Store, lot: Lot, device_id: UUID) -> None:
    if await store.claim(lot, device_id):
        return
    current = await store.load_device(device_id)
    if current is not None and current.lot_id == lot.lot_id:
        return
    for claimed in lot.device_ids:
        await store.unclaim(lot, claimed)
    await store.delete_dispatching(lot)
    domain.check_dispatchable(device_id, current)
    raise IllegalTransition(
        subject_kind="lot",
        subject_id=lot.lot_id,
        action="dispatch",
        state=DISPATCHING,
        reason="a device of the lot was taken meanwhile",
    )


async def resume_lots(store: Store) -> None:
    """Finish lots a crash left `dispatching`; the relay's sweep publishes their events."""
    for doc in await store.dispatching_lots():
        try:
            await finish_lot(store, doc, flush=False)
        except IllegalTransition as refused:
            log.warning("abandoned lot %s: %s", doc["_id"], refused.reason)


def lot_certificates(doc: LotDoc) -> list[dict[str, Any]]:
    return [
        {"device_id": i, "certificate_id": str(certificate_id_of(UUID(i)))}
        for i in doc["device_ids"]
    ]
