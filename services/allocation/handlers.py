"""Load, decide, store (one atomic update per document, events in its outbox), flush.

Matching, manual allocation, shipping and cancelling run one at a time across every allocation
instance (`store.claims_turn()`, a lease in the store), and each claim is also a conditional
update, so a device claimed by anything else is never claimed twice. Every read on these paths is
by `_id`: a request lists its devices, and `available` lists the devices matching may claim
(see `store`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from uuid import UUID, uuid4

from services.allocation import domain, policy
from services.allocation.domain import (
    Condition,
    Request,
    RequestStatus,
    ReturnReason,
    Shipment,
    ShipmentStatus,
    StockDevice,
)
from services.allocation.store import Store, shipment_doc
from shared.domain import IllegalTransition
from shared.events import DeviceCategory, DeviceReady, Event, MinSpecs
from shared.ids import derive_id
from shared.kafka import Unprocessable
from shared.usecase import Busy, Loaded, Unknown, apply

log = logging.getLogger(__name__)

SERVICE = "allocation"


def _now() -> datetime:
    return datetime.now(UTC)


# ---- consumed events --------------------------------------------------------------------------


async def on_device_ready(store: Store, event: Event) -> None:
    """Put a ready device in stock, once: its _id is the device id, a replay is a no-op."""
    if not isinstance(event, DeviceReady):
        raise Unprocessable(f"allocation does not consume {event.event_type}")
    if await store.in_stock(event.device_id):
        log.info("device %s already in stock; %s ignored", event.device_id, event.event_id)
        return
    device = domain.stock_from_ready(event)
    await store.add_available(device)  # before the device: an available one always has it
    if not await store.insert_stock(device, event.event_id):
        log.info("device %s already in stock; %s ignored", event.device_id, event.event_id)


# ---- requests ---------------------------------------------------------------------------------


async def open_request(
    store: Store,
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
    await store.insert_request(request, [event])
    await store.flush_request(request.request_id)
    return request


async def cancel_request(store: Store, request: Request) -> Request:
    """Withdraw an open request; devices already allocated to it stay allocated."""
    async with store.claims_turn():  # no claim for it in flight: its count is final
        current = await store.load_request(request.request_id)
        assert current is not None
        current = await store.settle_claims(current)
        allocated = len(current.device_ids)
        event_id = derive_id(SERVICE, request.request_id, "request.closed")
        cancelled, event = domain.cancel(
            current, allocated=allocated, event_id=event_id, now=_now()
        )
        if not await store.close_request(cancelled, event):
            current = await store.load_request(request.request_id)
            assert current is not None
            domain.cancel(current, allocated=allocated, event_id=event_id, now=_now())
    await store.flush_request(request.request_id)
    return cancelled


async def close_if_fulfilled(store: Store, request_id: UUID) -> bool:
    """A request closes when it has as many devices as it asked for. Only under the claims
    lock, with its claims settled: then its list of devices is its count. True if it closed."""
    request = await store.load_request(request_id)
    if request is None:
        return False
    allocated = len(request.device_ids)
    event_id = derive_id(SERVICE, request_id, "request.closed")
    fulfilled, event = domain.fulfil(request, allocated=allocated, event_id=event_id, now=_now())
    if event is None:
        return False
    closed = await store.close_request(fulfilled, event)
    await store.flush_request(request_id)
    return closed


# ---- allocation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allocation:
    device_id: UUID
    request_id: UUID
    recipient_id: str
    allocation_id: UUID


async def _claim(
    store: Store, device: StockDevice | None, device_id: UUID, request: Request
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
    await store.begin_claim(request.request_id, device_id)
    if device is None or not await store.save(
        Loaded(device, device.state.value), allocated, [event]
    ):
        await store.end_claim(request.request_id, device_id, made=False)
        if not await store.still_available(device_id):
            await store.drop_available(device_id)  # stale: claimed before a crash
        return None
    await store.drop_available(device_id)
    await store.end_claim(request.request_id, device_id, made=True)
    await store.flush(device_id)
    return Allocation(device_id, request.request_id, request.recipient_id, allocation_id)


async def run_matching(store: Store) -> tuple[list[Allocation], int]:
    """Match open requests with available stock by the policy; returns allocations and how
    many requests are still open."""
    async with store.claims_turn():
        requests = [
            await store.settle_claims(r)
            for r in await store.find_requests({"status": RequestStatus.OPEN.value})
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
        stock = {d.device_id: d for d in await store.available_devices()}
        candidates = [
            policy.Candidate(d.device_id, d.category, d.specs, d.ready_at) for d in stock.values()
        ]
        allocations = []
        for m in policy.match(open_requests, candidates):
            claimed = await _claim(store, stock[m.device_id], m.device_id, by_id[m.request_id])
            if claimed:
                allocations.append(claimed)
        allocated.update(a.request_id for a in allocations)
        still_open = len(by_id)
        for request_id, request in by_id.items():
            if allocated[request_id] >= request.quantity:
                still_open -= await close_if_fulfilled(store, request_id)
    return allocations, still_open


async def allocate_one(store: Store, device_id: UUID, request: Request) -> Allocation:
    """Staff allocate one device by hand; the same rules as matching apply."""
    async with store.claims_turn():
        current = await store.load_request(request.request_id)
        assert current is not None
        request = await store.settle_claims(current)
        if request.status is RequestStatus.OPEN and len(request.device_ids) >= request.quantity:
            raise IllegalTransition(
                subject_kind="request",
                subject_id=request.request_id,
                action="allocate",
                state=request.status,
                reason=f"request already has its {request.quantity} devices",
            )
        device = await store.load_device(device_id)
        claimed = await _claim(store, device, device_id, request)
        if claimed is None:
            current_device = await store.load_device(device_id)
            domain.allocate(
                current_device,
                device_id,
                request,
                allocation_id=uuid4(),
                event_id=uuid4(),
                now=_now(),
            )
            raise Busy(f"device {device_id} changed while being allocated")
        await close_if_fulfilled(store, request.request_id)
        return claimed


# ---- shipping and after -----------------------------------------------------------------------


def bill_of_lading(shipment_id: UUID, now: datetime) -> str:
    return f"BOL-{now.year}-{shipment_id.hex[:8].upper()}"


async def create_shipment(
    store: Store, *, recipient_id: str, device_ids: list[UUID], carrier: str | None
) -> Shipment:
    """Claim every device (silently), then commit by inserting the shipment with its events.

    If any device cannot be shipped nothing changes: the check refuses before any write, and a
    claim lost to a concurrent change is rolled back before the shipment exists.
    """
    shipment_id, now = uuid4(), _now()
    async with store.claims_turn():
        await store.release_orphan_claims([str(d) for d in device_ids])
        found = await store.load_devices(device_ids)
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
            if not await store.claim_for_shipment(device):
                await store.release_shipment_claims(claimed, shipment_id)
                current = await store.load_device(device.device_id)
                domain.ship(
                    [(device.device_id, current)],
                    recipient_id=recipient_id,
                    shipment_id=shipment_id,
                    bill_of_lading=shipment.bill_of_lading,
                    carrier=carrier,
                    event_ids=[uuid4()],
                    now=now,
                )
                raise Busy(f"device {device.device_id} changed while being shipped")
            claimed.append(device)
        await store.insert_shipment(shipment, events)
    await store.flush_shipment(shipment_id)
    return shipment


async def accept_shipment(store: Store, shipment: Shipment, *, accepted_by: str) -> Shipment:
    """Commit on the shipment document (new status + every device.delivered), then mirror the
    devices' state (`store.recover` finishes this after a crash)."""
    found = await store.load_devices(shipment.device_ids)
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
    if not await store.save_shipment(shipment, delivered, events):
        current = await store.load_shipment(shipment.shipment_id)
        assert current is not None
        if current.status is ShipmentStatus.DELIVERED:
            await store.mirror_delivery(shipment_doc(current))  # a retry after a failure half-way
        domain.accept(
            current,
            devices,
            accepted_by=accepted_by,
            event_ids=event_ids,
            now=_now(),
        )
    for device in updated:
        await store.mark_delivered(device, shipment.shipment_id)
    await store.flush_shipment(shipment.shipment_id)
    return delivered


def _transition(
    change: Callable[[StockDevice], tuple[StockDevice, Event]],
) -> Callable[[StockDevice], tuple[StockDevice, list[Event]]]:
    def decide(device: StockDevice) -> tuple[StockDevice, list[Event]]:
        after, event = change(device)
        return after, [event]

    return decide


async def report_device(
    store: Store, device_id: UUID, *, condition: Condition, note: str | None
) -> StockDevice:
    def change(device: StockDevice) -> tuple[StockDevice, Event]:
        return domain.report(device, condition=condition, note=note, event_id=uuid4(), now=_now())

    return await apply(store, device_id, _transition(change), missing=_unknown)


async def report_usage(
    store: Store,
    device_id: UUID,
    *,
    students: int | None,
    classrooms: int | None,
    note: str | None,
) -> StockDevice:
    def change(device: StockDevice) -> tuple[StockDevice, Event]:
        return domain.report_usage(
            device,
            students=students,
            classrooms=classrooms,
            note=note,
            event_id=uuid4(),
            now=_now(),
        )

    return await apply(store, device_id, _transition(change), missing=_unknown)


async def return_device(
    store: Store, device_id: UUID, *, reason: ReturnReason, note: str | None
) -> StockDevice:
    def change(device: StockDevice) -> tuple[StockDevice, Event]:
        return domain.return_device(device, reason=reason, note=note, event_id=uuid4(), now=_now())

    return await apply(store, device_id, _transition(change), missing=_unknown)


def _unknown(device_id: UUID) -> Unknown:
    return Unknown(f"no device {device_id} in allocation")
