"""Allocation's rules: stock devices, recipients' requests and shipments, as pure decisions.

A device enters stock only from its `device.ready` (wiped, certified, refurbishable), so an
un-wiped device can never be allocated. Its life here:

    available -> allocated -> shipped -> delivered -> returned
                                         delivered -> broken -> returned
                                         delivered -> lost (terminal)

Every decision returns the new state and the events it causes, or raises `IllegalTransition`.
Ids and clocks come in as arguments, so the same inputs always give the same outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from shared.domain import IllegalTransition
from shared.events import (
    DeviceAllocated,
    DeviceCategory,
    DeviceDelivered,
    DeviceReady,
    DeviceReported,
    DeviceReturned,
    DeviceShipped,
    DeviceUsageReported,
    Grade,
    HardwareSpecs,
    MinSpecs,
    RequestClosed,
    RequestOpened,
)

PRODUCER: Literal["allocation"] = "allocation"


class DeviceState(StrEnum):
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    BROKEN = "broken"
    LOST = "lost"
    RETURNED = "returned"


class RequestStatus(StrEnum):
    OPEN = "open"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


class ShipmentStatus(StrEnum):
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"


Condition = Literal["broken", "lost"]
ReturnReason = Literal["end_of_life", "broken"]


@dataclass(frozen=True, slots=True)
class StockDevice:
    device_id: UUID
    state: DeviceState
    category: DeviceCategory
    specs: HardwareSpecs
    cosmetic_grade: Grade
    functional_grade: Grade
    erasure_certificate_id: UUID
    pickup_id: UUID
    ready_at: datetime
    request_id: UUID | None = None
    recipient_id: str | None = None
    allocation_id: UUID | None = None
    allocated_at: datetime | None = None
    shipment_id: UUID | None = None
    note: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Request:
    request_id: UUID
    recipient_id: str
    status: RequestStatus
    quantity: int
    category: DeviceCategory
    min_specs: MinSpecs
    purpose: str
    priority: int
    deadline: date | None
    opened_at: datetime
    recipient_name: str | None = None
    device_ids: tuple[UUID, ...] = ()
    """The devices allocated to it, in allocation order."""
    pending_ids: tuple[UUID, ...] = ()
    """Claims begun and not known to have ended (a crash or a store failure mid-claim): each of
    these devices may or may not be allocated to it; `store.settle_claims` finds out."""


@dataclass(frozen=True, slots=True)
class Shipment:
    shipment_id: UUID
    bill_of_lading: str
    recipient_id: str
    carrier: str | None
    status: ShipmentStatus
    device_ids: tuple[UUID, ...]
    created_at: datetime
    accepted_by: str | None = None
    delivered_at: datetime | None = None


# ---- stock ------------------------------------------------------------------------------------


def stock_from_ready(event: DeviceReady) -> StockDevice:
    """A ready device (wiped, certified) enters stock as available."""
    return StockDevice(
        device_id=event.device_id,
        state=DeviceState.AVAILABLE,
        category=event.category,
        specs=event.specs,
        cosmetic_grade=event.cosmetic_grade,
        functional_grade=event.functional_grade,
        erasure_certificate_id=event.erasure_certificate_id,
        pickup_id=event.correlation_id,
        ready_at=event.occurred_at,
        updated_at=event.occurred_at,
    )


def unmet_specs(specs: HardwareSpecs, minimum: MinSpecs) -> list[str]:
    """The stated minimums a device fails; a value the device lacks fails its minimum."""
    have: dict[str, float | None] = {
        "cpu_cores": specs.cpu_cores,
        "ram_gb": specs.ram_gb,
        "storage_gb": specs.storage_gb or None,
        "battery_health_pct": specs.battery_health_pct,
    }
    unmet = []
    for name, wanted in minimum.model_dump(exclude_none=True).items():
        value = have[name]
        if value is None or value < wanted:
            unmet.append(f"{name} {value if value is not None else 'unknown'} < {wanted}")
    return unmet


def allocate(
    device: StockDevice | None,
    device_id: UUID,
    request: Request,
    *,
    allocation_id: UUID,
    event_id: UUID,
    now: datetime,
) -> tuple[StockDevice, DeviceAllocated]:
    """Reserve an available stock device for an open request of its category it fits.

    A device allocation never heard ready of (not in stock) is refused: it may not be wiped.
    """

    def refuse(state: str, reason: str) -> IllegalTransition:
        return IllegalTransition(
            subject_kind="device",
            subject_id=device_id,
            action="allocate",
            state=state,
            reason=reason,
            correlation_id=request.request_id,
        )

    if device is None:
        raise refuse("unknown", "device is not in stock: it was never reported ready (wiped)")
    if device.state is not DeviceState.AVAILABLE:
        raise refuse(
            device.state, f"device is {device.state}, only available devices can be allocated"
        )
    if request.status is not RequestStatus.OPEN:
        raise refuse(device.state, f"request {request.request_id} is {request.status}")
    if device.category is not request.category:
        raise refuse(
            device.state, f"device is a {device.category}, the request asks for {request.category}"
        )
    if unmet := unmet_specs(device.specs, request.min_specs):
        raise refuse(
            device.state, "device does not meet the request's minimum: " + ", ".join(unmet)
        )
    allocated = replace(
        device,
        state=DeviceState.ALLOCATED,
        request_id=request.request_id,
        recipient_id=request.recipient_id,
        allocation_id=allocation_id,
        allocated_at=now,
        updated_at=now,
    )
    event = DeviceAllocated(
        event_id=event_id,
        occurred_at=now,
        correlation_id=request.request_id,
        producer=PRODUCER,
        device_id=device.device_id,
        request_id=request.request_id,
        recipient_id=request.recipient_id,
        allocation_id=allocation_id,
        recipient_name=request.recipient_name,
    )
    return allocated, event


def _refuse_device(device: StockDevice, action: str, reason: str) -> IllegalTransition:
    return IllegalTransition(
        subject_kind="device",
        subject_id=device.device_id,
        action=action,
        state=device.state,
        reason=reason,
        correlation_id=device.request_id,
    )


def ship(
    devices: Sequence[tuple[UUID, StockDevice | None]],
    *,
    recipient_id: str,
    shipment_id: UUID,
    bill_of_lading: str,
    carrier: str | None,
    event_ids: Sequence[UUID],
    now: datetime,
) -> tuple[Shipment, list[StockDevice], list[DeviceShipped]]:
    """Ship devices allocated to one recipient together; one unfit device refuses them all."""
    if not devices:
        raise IllegalTransition(
            subject_kind="shipment",
            subject_id=shipment_id,
            action="ship",
            state="new",
            reason="a shipment needs at least one device",
        )
    seen: set[UUID] = set()
    for device_id, device in devices:
        if device_id in seen:
            raise IllegalTransition(
                subject_kind="device",
                subject_id=device_id,
                action="ship",
                state=device.state if device else "unknown",
                reason="device listed twice in the shipment",
            )
        seen.add(device_id)
        if device is None:
            raise IllegalTransition(
                subject_kind="device",
                subject_id=device_id,
                action="ship",
                state="unknown",
                reason="device is not in stock",
            )
        if device.state is not DeviceState.ALLOCATED:
            reason = (
                f"device was already shipped (shipment {device.shipment_id})"
                if device.shipment_id
                else f"device is {device.state}, only allocated devices can be shipped"
            )
            raise _refuse_device(device, "ship", reason)
        if device.recipient_id != recipient_id:
            raise _refuse_device(
                device, "ship", f"device is allocated to another recipient, not {recipient_id}"
            )
    shipped = [
        replace(d, state=DeviceState.SHIPPED, shipment_id=shipment_id, updated_at=now)
        for _, d in devices
        if d is not None
    ]
    events = [
        DeviceShipped(
            event_id=event_id,
            occurred_at=now,
            correlation_id=d.request_id or d.device_id,
            producer=PRODUCER,
            device_id=d.device_id,
            shipment_id=shipment_id,
            recipient_id=recipient_id,
            bill_of_lading=bill_of_lading,
        )
        for d, event_id in zip(shipped, event_ids, strict=True)
    ]
    shipment = Shipment(
        shipment_id=shipment_id,
        bill_of_lading=bill_of_lading,
        recipient_id=recipient_id,
        carrier=carrier,
        status=ShipmentStatus.IN_TRANSIT,
        device_ids=tuple(d.device_id for d in shipped),
        created_at=now,
    )
    return shipment, shipped, events


def accept(
    shipment: Shipment,
    devices: Sequence[StockDevice],
    *,
    accepted_by: str,
    event_ids: Sequence[UUID],
    now: datetime,
) -> tuple[Shipment, list[StockDevice], list[DeviceDelivered]]:
    """The recipient accepted a shipment in transit: each of its devices is delivered."""
    if shipment.status is not ShipmentStatus.IN_TRANSIT:
        raise IllegalTransition(
            subject_kind="shipment",
            subject_id=shipment.shipment_id,
            action="accept",
            state=shipment.status,
            reason=f"shipment is already {shipment.status}",
        )
    for device in devices:
        if device.state is not DeviceState.SHIPPED or device.shipment_id != shipment.shipment_id:
            raise _refuse_device(device, "deliver", "device was not shipped in this shipment")
    delivered = [replace(d, state=DeviceState.DELIVERED, updated_at=now) for d in devices]
    events = [
        DeviceDelivered(
            event_id=event_id,
            occurred_at=now,
            correlation_id=d.request_id or d.device_id,
            producer=PRODUCER,
            device_id=d.device_id,
            shipment_id=shipment.shipment_id,
            recipient_id=shipment.recipient_id,
            accepted_by=accepted_by,
        )
        for d, event_id in zip(delivered, event_ids, strict=True)
    ]
    done = replace(
        shipment, status=ShipmentStatus.DELIVERED, accepted_by=accepted_by, delivered_at=now
    )
    return done, delivered, events


def report(
    device: StockDevice,
    *,
    condition: Condition,
    note: str | None,
    event_id: UUID,
    now: datetime,
) -> tuple[StockDevice, DeviceReported]:
    """A recipient reports a delivered device broken or lost (lost is terminal)."""
    if device.state is not DeviceState.DELIVERED:
        raise _refuse_device(
            device,
            f"report_{condition}",
            f"device is {device.state}, only delivered devices can be reported",
        )
    assert device.recipient_id is not None
    event = DeviceReported(
        event_id=event_id,
        occurred_at=now,
        correlation_id=device.request_id or device.device_id,
        producer=PRODUCER,
        device_id=device.device_id,
        recipient_id=device.recipient_id,
        condition=condition,
        note=note,
    )
    return replace(device, state=DeviceState(condition), note=note, updated_at=now), event


def report_usage(
    device: StockDevice,
    *,
    students: int | None,
    classrooms: int | None,
    note: str | None,
    event_id: UUID,
    now: datetime,
) -> tuple[StockDevice, DeviceUsageReported]:
    """A recipient says whom a delivered device serves; the device stays delivered."""
    if device.state is not DeviceState.DELIVERED:
        raise _refuse_device(
            device,
            "report_usage",
            f"device is {device.state}, only delivered devices are in use",
        )
    assert device.recipient_id is not None
    event = DeviceUsageReported(
        event_id=event_id,
        occurred_at=now,
        correlation_id=device.request_id or device.device_id,
        producer=PRODUCER,
        device_id=device.device_id,
        recipient_id=device.recipient_id,
        students=students,
        classrooms=classrooms,
        note=note,
    )
    return replace(device, updated_at=now), event


def return_device(
    device: StockDevice,
    *,
    reason: ReturnReason,
    note: str | None,
    event_id: UUID,
    now: datetime,
) -> tuple[StockDevice, DeviceReturned]:
    """A delivered or broken device comes back; recycling takes it from here.

    The event names every drive the device was diagnosed with and its erasure certificate:
    recycling destroys each of those drives before it dismantles the device.
    """
    if device.state not in (DeviceState.DELIVERED, DeviceState.BROKEN):
        raise _refuse_device(
            device,
            "return",
            f"device is {device.state}, only delivered or broken devices can be returned",
        )
    assert device.recipient_id is not None
    event = DeviceReturned(
        event_id=event_id,
        occurred_at=now,
        correlation_id=device.request_id or device.device_id,
        producer=PRODUCER,
        device_id=device.device_id,
        recipient_id=device.recipient_id,
        reason=reason,
        category=device.category,
        drive_serials=[d.serial for d in device.specs.drives],
        erasure_certificate_id=device.erasure_certificate_id,
    )
    return replace(device, state=DeviceState.RETURNED, note=note, updated_at=now), event


# ---- requests ---------------------------------------------------------------------------------


def open_request(
    *,
    request_id: UUID,
    recipient_id: str,
    quantity: int,
    category: DeviceCategory,
    min_specs: MinSpecs,
    purpose: str,
    priority: int,
    deadline: date | None,
    event_id: UUID,
    now: datetime,
    recipient_name: str | None = None,
) -> tuple[Request, RequestOpened]:
    """A recipient asks for `quantity` devices of a category meeting minimum specs."""
    request = Request(
        request_id=request_id,
        recipient_id=recipient_id,
        status=RequestStatus.OPEN,
        quantity=quantity,
        category=category,
        min_specs=min_specs,
        purpose=purpose,
        priority=priority,
        deadline=deadline,
        opened_at=now,
        recipient_name=recipient_name,
    )
    event = RequestOpened(
        event_id=event_id,
        occurred_at=now,
        correlation_id=request_id,
        producer=PRODUCER,
        request_id=request_id,
        recipient_id=recipient_id,
        quantity=quantity,
        category=category,
        min_specs=min_specs,
        purpose=purpose,
        priority=priority,
        deadline=deadline,
        recipient_name=recipient_name,
    )
    return request, event


def _closed(
    request: Request,
    outcome: Literal["fulfilled", "cancelled"],
    allocated: int,
    event_id: UUID,
    now: datetime,
) -> RequestClosed:
    return RequestClosed(
        event_id=event_id,
        occurred_at=now,
        correlation_id=request.request_id,
        producer=PRODUCER,
        request_id=request.request_id,
        recipient_id=request.recipient_id,
        outcome=outcome,
        allocated=allocated,
    )


def cancel(
    request: Request, *, allocated: int, event_id: UUID, now: datetime
) -> tuple[Request, RequestClosed]:
    """An open request is withdrawn; devices already allocated to it stay allocated."""
    if request.status is not RequestStatus.OPEN:
        raise IllegalTransition(
            subject_kind="request",
            subject_id=request.request_id,
            action="cancel",
            state=request.status,
            reason=f"request is already {request.status}",
        )
    event = _closed(request, "cancelled", allocated, event_id, now)
    return replace(request, status=RequestStatus.CANCELLED), event


def fulfil(
    request: Request, *, allocated: int, event_id: UUID, now: datetime
) -> tuple[Request, RequestClosed | None]:
    """An open request with as many devices as it asked for is fulfilled and closes."""
    if request.status is not RequestStatus.OPEN or allocated < request.quantity:
        return request, None
    event = _closed(request, "fulfilled", allocated, event_id, now)
    return replace(request, status=RequestStatus.FULFILLED), event
