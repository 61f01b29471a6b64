"""Load, decide, store (one atomic update per document, events in its outbox), flush.

Matching, manual allocation, shipping and cancelling run one at a time in this process
(`_claims`): the service is one process, and each claim is also a conditional update, so a device
claimed by anything else is never claimed twice. Every read on these paths is by `_id` (on
FerretDB v1 any other filter reads the whole collection): a request lists its devices, and
`available` lists the devices matching may claim (see `store`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from uuid import UUID, uuid4

from pymongo.errors import DuplicateKeyError

from services.allocation import domain, policy, store
from services.allocation.domain import (
    Condition,
    DeviceState,
    Request,
    RequestStatus,
    ReturnReason,
    Shipment,
    ShipmentStatus,
    StockDevice,
)
from shared.domain import IllegalTransition
from shared.events import DeviceCategory, DeviceReady, Event, MinSpecs
from shared.ids import derive_id
from shared.kafka import Unprocessable
from shared.mongo import Database, update_if
from shared.outbox import Relay, outbox_doc, outbox_set

log = logging.getLogger(__name__)

SERVICE = "allocation"
_claims = asyncio.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


# ---- consumed events --------------------------------------------------------------------------


async def on_device_ready(db: Database, event: Event) -> None:
    """Put a ready device in stock, once: its _id is the device id, a replay is a no-op."""
    if not isinstance(event, DeviceReady):
        raise Unprocessable(f"allocation does not consume {event.event_type}")
    if await db.stock.find_one({"_id": str(event.device_id)}, {"_id": 1}) is not None:
        log.info("device %s already in stock; %s ignored", event.device_id, event.event_id)
        return
    device = domain.stock_from_ready(event)
    await store.add_available(db, device)  # before the device: an available one always has it
    doc = {"_id": str(device.device_id), **store.device_fields(device)}
    doc["applied"] = [str(event.event_id)]
    try:
        await db.stock.insert_one(doc)
    except DuplicateKeyError:
        log.info("device %s already in stock; %s ignored", event.device_id, event.event_id)


# ---- requests ---------------------------------------------------------------------------------


async def open_request(
    db: Database,
    relay: Relay,
    *,
    recipient_id: str,
    quantity: int,
    category: DeviceCategory,
    min_specs: MinSpecs,
    purpose: str,
    priority: int,
    deadline: date | None,
    recipient_name: str | None = None,
) -> Request:
    request, event = domain.open_request(
        request_id=uuid4(),
        recipient_id=recipient_id,
        quantity=quantity,
        category=category,
        min_specs=min_specs,
        purpose=purpose,
        priority=priority,
        deadline=deadline,
        event_id=uuid4(),
        now=_now(),
        recipient_name=recipient_name,
    )
    await db.requests.insert_one(store.request_doc(request) | outbox_doc([event]))
    await relay.flush(db.requests, str(request.request_id))
    return request


async def cancel_request(db: Database, relay: Relay, request: Request) -> Request:
    """Withdraw an open request; devices already allocated to it stay allocated."""
    async with _claims:  # no claim for it in flight: its count is final
        current = await store.load_request(db, request.request_id)
        assert current is not None
        current = await store.settle_claims(db, current)
        allocated = len(current.device_ids)
        event_id = derive_id(SERVICE, request.request_id, "request.closed")
        cancelled, event = domain.cancel(
            current, allocated=allocated, event_id=event_id, now=_now()
        )
        stored = await update_if(
            db.requests,
            str(request.request_id),
            {"status": RequestStatus.OPEN.value},
            {
                "$set": {
                    "status": cancelled.status.value,
                    "closed_at": event.occurred_at,
                    **outbox_set([event]),
                }
            },
        )
        if not stored:
            current = await store.load_request(db, request.request_id)
            assert current is not None
            domain.cancel(current, allocated=allocated, event_id=event_id, now=_now())
    await relay.flush(db.requests, str(request.request_id))
    return cancelled


async def close_if_fulfilled(db: Database, relay: Relay, request_id: UUID) -> bool:
    """A request closes when it has as many devices as it asked for. Only under the claims
    lock, with its claims settled: then its list of devices is its count. True if it closed."""
    request = await store.load_request(db, request_id)
    if request is None:
        return False
    allocated = len(request.device_ids)
    event_id = derive_id(SERVICE, request_id, "request.closed")
    fulfilled, event = domain.fulfil(request, allocated=allocated, event_id=event_id, now=_now())
    if event is None:
        return False
    closed = await update_if(
        db.requests,
        str(request_id),
        {"status": RequestStatus.OPEN.value},
        {
            "$set": {
                "status": fulfilled.status.value,
                "closed_at": event.occurred_at,
                **outbox_set([event]),
            }
        },
    )
    await relay.flush(db.requests, str(request_id))
    return closed


# ---- allocation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allocation:
    device_id: UUID
    request_id: UUID
    recipient_id: str
    allocation_id: UUID


async def _claim(
    db: Database, relay: Relay, device: StockDevice | None, device_id: UUID, request: Request
) -> Allocation | None:
    """Allocate one device with ONE conditional update (still available -> allocated + event),
    listed by the request first as pending (see `store.begin_claim`)."""
    allocation_id = uuid4()
    allocated, event = domain.allocate(
        device,
        device_id,
        request,
        allocation_id=allocation_id,
        event_id=derive_id(SERVICE, allocation_id, "device.allocated"),
        now=_now(),
    )
    await store.begin_claim(db, request.request_id, device_id)
    stored = await update_if(
        db.stock,
        str(device_id),
        {"state": DeviceState.AVAILABLE.value},
        {"$set": store.device_fields(allocated) | outbox_set([event])},
    )
    if not stored:
        await store.end_claim(db, request.request_id, device_id, made=False)
        current = await db.stock.find_one({"_id": str(device_id)}, {"state": 1})
        if current is not None and current["state"] != DeviceState.AVAILABLE.value:
            await store.drop_available(db, device_id)  # stale: claimed before a crash
        return None
    await store.drop_available(db, device_id)
    await store.end_claim(db, request.request_id, device_id, made=True)
    await relay.flush(db.stock, str(device_id))
    return Allocation(device_id, request.request_id, request.recipient_id, allocation_id)


async def run_matching(db: Database, relay: Relay) -> tuple[list[Allocation], int]:
    """Match open requests with available stock by the policy; returns allocations and how
    many requests are still open."""
    async with _claims:
        requests = [
            await store.settle_claims(db, r)
            for r in await store.find_requests(db, {"status": RequestStatus.OPEN.value})
        ]
        by_id = {r.request_id: r for r in requests}
        allocated = Counter({r.request_id: len(r.device_ids) for r in requests})
        open_requests = [
            policy.OpenRequest(
                request_id=r.request_id,
                recipient_id=r.recipient_id,
                category=r.category,
                min_specs=r.min_specs,
                priority=r.priority,
                deadline=r.deadline,
                opened_at=r.opened_at,
                missing=r.quantity - allocated[r.request_id],
            )
            for r in requests
        ]
        stock = {d.device_id: d for d in await store.available_devices(db)}
        candidates = [
            policy.Candidate(d.device_id, d.category, d.specs, d.ready_at) for d in stock.values()
        ]
        allocations = []
        for m in policy.match(open_requests, candidates):
            claimed = await _claim(db, relay, stock[m.device_id], m.device_id, by_id[m.request_id])
            if claimed:
                allocations.append(claimed)
        allocated.update(a.request_id for a in allocations)
        still_open = len(by_id)
        for request_id, request in by_id.items():
            if allocated[request_id] >= request.quantity:
                still_open -= await close_if_fulfilled(db, relay, request_id)
    return allocations, still_open


async def allocate_one(db: Database, relay: Relay, device_id: UUID, request: Request) -> Allocation:
    """Staff allocate one device by hand; the same rules as matching apply."""
    async with _claims:
        current = await store.load_request(db, request.request_id)
        assert current is not None
        request = await store.settle_claims(db, current)
        if request.status is RequestStatus.OPEN and len(request.device_ids) >= request.quantity:
            raise IllegalTransition(
                subject_kind="request",
                subject_id=request.request_id,
                action="allocate",
                state=request.status,
                reason=f"request already has its {request.quantity} devices",
            )
        device = await store.load_device(db, device_id)
        claimed = await _claim(db, relay, device, device_id, request)
        if claimed is None:
            current_device = await store.load_device(db, device_id)
            domain.allocate(
                current_device,
                device_id,
                request,
                allocation_id=uuid4(),
                event_id=uuid4(),
                now=_now(),
            )
            raise RuntimeError(f"device {device_id} changed while being allocated")
        await close_if_fulfilled(db, relay, request.request_id)
        return claimed


# ---- shipping and after -----------------------------------------------------------------------


def bill_of_lading(shipment_id: UUID, now: datetime) -> str:
    return f"BOL-{now.year}-{shipment_id.hex[:8].upper()}"


async def create_shipment(
    db: Database, relay: Relay, *, recipient_id: str, device_ids: list[UUID], carrier: str | None
) -> Shipment:
    """Claim every device (silently), then commit by inserting the shipment with its events.

    If any device cannot be shipped nothing changes: the check refuses before any write, and a
    claim lost to a concurrent change is rolled back before the shipment exists.
    """
    shipment_id, now = uuid4(), _now()
    async with _claims:
        await store.release_orphan_claims(db, [str(d) for d in device_ids])
        found = await store.load_devices(db, device_ids)
        loaded = [(d, found.get(d)) for d in device_ids]
        shipment, shipped, events = domain.ship(
            loaded,
            recipient_id=recipient_id,
            shipment_id=shipment_id,
            bill_of_lading=bill_of_lading(shipment_id, now),
            carrier=carrier,
            event_ids=[derive_id(SERVICE, shipment_id, "device.shipped", d) for d in device_ids],
            now=now,
        )
        claimed: list[StockDevice] = []
        for device in shipped:
            stored = await update_if(
                db.stock,
                str(device.device_id),
                {"state": DeviceState.ALLOCATED.value, "recipient_id": recipient_id},
                {"$set": store.device_fields(device)},
            )
            if not stored:
                await _release(db, claimed, shipment_id)
                current = await store.load_device(db, device.device_id)
                domain.ship(
                    [(device.device_id, current)],
                    recipient_id=recipient_id,
                    shipment_id=shipment_id,
                    bill_of_lading=shipment.bill_of_lading,
                    carrier=carrier,
                    event_ids=[uuid4()],
                    now=now,
                )
                raise RuntimeError(f"device {device.device_id} changed while being shipped")
            claimed.append(device)
        await db.shipments.insert_one(store.shipment_doc(shipment) | outbox_doc(list(events)))
    await relay.flush(db.shipments, str(shipment_id))
    return shipment


async def _release(db: Database, claimed: list[StockDevice], shipment_id: UUID) -> None:
    for device in claimed:
        await update_if(
            db.stock,
            str(device.device_id),
            {"shipment_id": str(shipment_id)},
            {"$set": {"state": DeviceState.ALLOCATED.value, "shipment_id": None}},
        )


async def accept_shipment(
    db: Database, relay: Relay, shipment: Shipment, *, accepted_by: str
) -> Shipment:
    """Commit on the shipment document (new status + every device.delivered), then mirror the
    devices' state (`store.recover` finishes this after a crash)."""
    found = await store.load_devices(db, shipment.device_ids)
    devices = [
        found[d]
        for d in shipment.device_ids
        if d in found and found[d].shipment_id == shipment.shipment_id
    ]
    event_ids = [
        derive_id(SERVICE, shipment.shipment_id, "device.delivered", d.device_id) for d in devices
    ]
    delivered, updated, events = domain.accept(
        shipment, devices, accepted_by=accepted_by, event_ids=event_ids, now=_now()
    )
    doc = store.shipment_doc(delivered)
    stored = await update_if(
        db.shipments,
        doc.pop("_id"),
        {"status": shipment.status.value},
        {"$set": doc | outbox_set(events)},
    )
    if not stored:
        current = await db.shipments.find_one({"_id": str(shipment.shipment_id)})
        assert current is not None
        if current["status"] == ShipmentStatus.DELIVERED.value:
            await store.mirror_delivery(db, current)  # a retry after a failure half-way
        domain.accept(
            store.shipment_from(current),
            devices,
            accepted_by=accepted_by,
            event_ids=event_ids,
            now=_now(),
        )
    for device in updated:
        await update_if(
            db.stock,
            str(device.device_id),
            {"state": DeviceState.SHIPPED.value, "shipment_id": str(shipment.shipment_id)},
            {"$set": {"state": device.state.value, "updated_at": device.updated_at}},
        )
    await relay.flush(db.shipments, str(shipment.shipment_id))
    return delivered


async def _transition(
    db: Database, relay: Relay, before: StockDevice, after: StockDevice, event: Event
) -> StockDevice:
    stored = await update_if(
        db.stock,
        str(before.device_id),
        {"state": before.state.value},
        {"$set": store.device_fields(after) | outbox_set([event])},
    )
    if not stored:
        raise IllegalTransition(
            subject_kind="device",
            subject_id=before.device_id,
            action=event.event_type,
            state=before.state,
            reason="device changed meanwhile; try again",
            correlation_id=before.request_id,
        )
    await relay.flush(db.stock, str(before.device_id))
    return after


async def report_device(
    db: Database, relay: Relay, device: StockDevice, *, condition: Condition, note: str | None
) -> StockDevice:
    after, event = domain.report(
        device, condition=condition, note=note, event_id=uuid4(), now=_now()
    )
    return await _transition(db, relay, device, after, event)


async def report_usage(
    db: Database,
    relay: Relay,
    device: StockDevice,
    *,
    students: int | None,
    classrooms: int | None,
    note: str | None,
) -> StockDevice:
    after, event = domain.report_usage(
        device, students=students, classrooms=classrooms, note=note, event_id=uuid4(), now=_now()
    )
    return await _transition(db, relay, device, after, event)


async def return_device(
    db: Database, relay: Relay, device: StockDevice, *, reason: ReturnReason, note: str | None
) -> StockDevice:
    after, event = domain.return_device(
        device, reason=reason, note=note, event_id=uuid4(), now=_now()
    )
    return await _transition(db, relay, device, after, event)
