"""Intake's rules: the pickup state machine and scanning devices in."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from shared.domain import IllegalTransition
from shared.events import (
    Address,
    Contact,
    DeviceCategory,
    DeviceReceived,
    PickupCancelled,
    PickupCompleted,
    PickupRequested,
    PickupScheduled,
    TimeWindow,
)

PRODUCER: Literal["intake"] = "intake"

# ---- pickups ----------------------------------------------------------------------------------


class PickupStatus(StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


OPEN_STATUSES = (PickupStatus.REQUESTED, PickupStatus.SCHEDULED)


@dataclass(frozen=True, slots=True)
class Pickup:
    pickup_id: UUID
    partner_id: str
    status: PickupStatus
    address: Address
    contact: Contact
    window: TimeWindow
    expected: dict[DeviceCategory, int]
    notes: str | None
    created_at: datetime
    scheduled_for: datetime | None = None
    cancel_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def _refuse(pickup: Pickup, action: str, reason: str) -> IllegalTransition:
    return IllegalTransition(
        subject_kind="pickup",
        subject_id=pickup.pickup_id,
        action=action,
        state=pickup.status.value,
        reason=reason,
        correlation_id=pickup.pickup_id,
    )


def request_pickup(
    *,
    pickup_id: UUID,
    partner_id: str,
    address: Address,
    contact: Contact,
    window: TimeWindow,
    expected: dict[DeviceCategory, int],
    notes: str | None,
    now: datetime,
    event_id: UUID,
) -> tuple[Pickup, PickupRequested]:
    """A donor asks for devices to be collected: the pickup starts as `requested`."""
    pickup = Pickup(
        pickup_id=pickup_id,
        partner_id=partner_id,
        status=PickupStatus.REQUESTED,
        address=address,
        contact=contact,
        window=window,
        expected=dict(expected),
        notes=notes,
        created_at=now,
    )
    event = PickupRequested(
        event_id=event_id,
        occurred_at=now,
        correlation_id=pickup_id,
        producer=PRODUCER,
        pickup_id=pickup_id,
        partner_id=partner_id,
        address=address,
        contact=contact,
        window=window,
        expected=expected,
        notes=notes,
    )
    return pickup, event


def schedule_pickup(
    pickup: Pickup, *, scheduled_for: datetime, by: str, now: datetime, event_id: UUID
) -> tuple[Pickup, PickupScheduled]:
    """Staff fix the date of a requested pickup; only a requested pickup can be scheduled."""
    if pickup.status is not PickupStatus.REQUESTED:
        raise _refuse(pickup, "schedule", f"a {pickup.status.value} pickup cannot be scheduled")
    event = PickupScheduled(
        event_id=event_id,
        occurred_at=now,
        correlation_id=pickup.pickup_id,
        producer=PRODUCER,
        pickup_id=pickup.pickup_id,
        partner_id=pickup.partner_id,
        scheduled_for=scheduled_for,
        scheduled_by=by,
    )
    return replace(pickup, status=PickupStatus.SCHEDULED, scheduled_for=scheduled_for), event


def complete_pickup(
    pickup: Pickup, *, devices_received: int, by: str, now: datetime, event_id: UUID
) -> tuple[Pickup, PickupCompleted]:
    """Close a scheduled pickup: no device is scanned in under it any more."""
    if pickup.status is not PickupStatus.SCHEDULED:
        raise _refuse(
            pickup, "complete", f"only a scheduled pickup can be completed, not a {pickup.status}"
        )
    event = PickupCompleted(
        event_id=event_id,
        occurred_at=now,
        correlation_id=pickup.pickup_id,
        producer=PRODUCER,
        pickup_id=pickup.pickup_id,
        partner_id=pickup.partner_id,
        completed_by=by,
        devices_received=devices_received,
    )
    return replace(pickup, status=PickupStatus.COMPLETED), event


def cancel_pickup(
    pickup: Pickup, *, devices_received: int, reason: str, now: datetime, event_id: UUID
) -> tuple[Pickup, PickupCancelled]:
    """Cancel a requested or scheduled pickup, as long as no device was received under it."""
    if not pickup.is_open:
        raise _refuse(pickup, "cancel", f"a {pickup.status.value} pickup cannot be cancelled")
    if devices_received > 0:
        raise _refuse(
            pickup,
            "cancel",
            f"{devices_received} device(s) were already received under this pickup",
        )
    event = PickupCancelled(
        event_id=event_id,
        occurred_at=now,
        correlation_id=pickup.pickup_id,
        producer=PRODUCER,
        pickup_id=pickup.pickup_id,
        partner_id=pickup.partner_id,
        reason=reason,
    )
    return replace(pickup, status=PickupStatus.CANCELLED, cancel_reason=reason), event


# ---- scanning devices in ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scan:
    """What a warehouse scan says about one device."""

    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    location: str
    asset_tag: str | None = None
    serial_number: str | None = None


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """The identifying part of an already scanned device."""

    device_id: UUID
    pickup_id: UUID
    asset_tag: str
    stage: str
    partner_id: str | None = None


class HeldElsewhere(IllegalTransition):
    """A scan's asset tag or serial belongs to a device of another pickup.

    `reason` names that pickup or the tag its device carries: staff may read it. Another donor
    may not (partners see only their own data), so `partner_reason` says only that another
    donor holds it.
    """

    def __init__(self, *, owner: str | None, partner_reason: str, **refusal: Any) -> None:
        super().__init__(**refusal)
        self.owner = owner
        self.partner_reason = partner_reason

    def reason_for(self, partner_id: str | None) -> str:
        """The reason as this partner may read it (None: staff, who see every detail)."""
        if partner_id is None or partner_id == self.owner:
            return self.reason
        return self.partner_reason


def reason_for(refused: IllegalTransition, partner_id: str | None) -> str:
    """A refusal's reason as this partner may read it (None: staff)."""
    if isinstance(refused, HeldElsewhere):
        return refused.reason_for(partner_id)
    return refused.reason


@dataclass(frozen=True, slots=True)
class SameDevice:
    """The scan is a repeat: answer with the device already registered."""

    device_id: UUID


@dataclass(frozen=True, slots=True)
class NewDevice:
    """Register a new device; `asset_tag` None means the warehouse prints a generated one."""

    asset_tag: str | None


ScanDecision = SameDevice | NewDevice


def serial_key(make: str, serial_number: str) -> str:
    return f"{make.strip().casefold()}|{serial_number.strip()}"


def generated_asset_tag(number: int) -> str:
    if not 0 < number < 100_000_000:
        raise ValueError(f"asset tag counter out of range: {number}")
    return f"GIT-{number:08d}"


def decide_scan(
    pickup: Pickup,
    scan: Scan,
    *,
    by_tag: KnownDevice | None,
    by_serial: KnownDevice | None,
) -> ScanDecision:
    """Decide what a scan means.

    `by_tag` is the device already holding the scan's asset tag, `by_serial` the one with the
    same make and serial number. A scan with a tag is that tag's device; without a tag, the
    serial's device. A repeated scan under the same pickup answers with that device; the same
    device under another pickup, or a new tag on a serial already registered, is refused. A
    closed pickup takes no scan at all.
    """
    if not pickup.is_open:
        raise _refuse(
            pickup, "scan device", f"no device can be scanned into a {pickup.status} pickup"
        )
    if scan.asset_tag is not None:
        if by_tag is not None:
            return _same(pickup, by_tag, f"asset tag {scan.asset_tag}")
        if by_serial is not None:
            what = f"{scan.make} serial {scan.serial_number}"
            raise _refuse_device(
                pickup,
                by_serial,
                what,
                f"{what} is already registered as asset tag {by_serial.asset_tag}",
            )
        return NewDevice(asset_tag=scan.asset_tag)
    if by_serial is not None:
        return _same(pickup, by_serial, f"{scan.make} serial {scan.serial_number}")
    return NewDevice(asset_tag=None)


def _same(pickup: Pickup, existing: KnownDevice, what: str) -> SameDevice:
    if existing.pickup_id != pickup.pickup_id:
        raise _refuse_device(
            pickup,
            existing,
            what,
            f"{what} already belongs to a device of pickup {existing.pickup_id}",
        )
    return SameDevice(existing.device_id)


def _refuse_device(pickup: Pickup, existing: KnownDevice, what: str, reason: str) -> HeldElsewhere:
    return HeldElsewhere(
        owner=existing.partner_id,
        partner_reason=f"{what} is already registered to another donor",
        subject_kind="device",
        subject_id=existing.device_id,
        action="scan device",
        state=existing.stage,
        reason=reason,
        correlation_id=pickup.pickup_id,
    )


@dataclass(frozen=True, slots=True)
class ReceivedDevice:
    device_id: UUID
    pickup_id: UUID
    partner_id: str
    asset_tag: str
    asset_tag_generated: bool
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    location: str
    scanned_by: str
    received_at: datetime

    @property
    def serial_key(self) -> str | None:
        return None if self.serial_number is None else serial_key(self.make, self.serial_number)


def receive_device(
    pickup: Pickup,
    scan: Scan,
    *,
    device_id: UUID,
    asset_tag: str,
    asset_tag_generated: bool,
    scanned_by: str,
    now: datetime,
    event_id: UUID,
) -> tuple[ReceivedDevice, DeviceReceived]:
    """A new device enters custody under an open pickup."""
    if not pickup.is_open:
        raise _refuse(
            pickup, "scan device", f"no device can be scanned into a {pickup.status} pickup"
        )
    event = DeviceReceived(
        event_id=event_id,
        occurred_at=now,
        correlation_id=pickup.pickup_id,
        producer=PRODUCER,
        device_id=device_id,
        pickup_id=pickup.pickup_id,
        partner_id=pickup.partner_id,
        asset_tag=asset_tag,
        asset_tag_generated=asset_tag_generated,
        serial_number=scan.serial_number,
        category=scan.category,
        make=scan.make,
        model=scan.model,
        weight_kg=scan.weight_kg,
        scanned_by=scanned_by,
        location=scan.location,
    )
    device = ReceivedDevice(
        device_id=device_id,
        pickup_id=pickup.pickup_id,
        partner_id=pickup.partner_id,
        asset_tag=asset_tag,
        asset_tag_generated=asset_tag_generated,
        serial_number=scan.serial_number,
        category=scan.category,
        make=scan.make,
        model=scan.model,
        weight_kg=scan.weight_kg,
        location=scan.location,
        scanned_by=scanned_by,
        received_at=now,
    )
    return device, event


def to_millis(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)
