"""Recycling's rules: which devices it holds, when one may be dismantled, how lots are composed.

A device arrives released by diagnostics (storage already erased or destroyed) or returned by a
school. A returned device was used since its erasure, so every one of its drives must have a
verified destroy record before it is dismantled; one unaccounted drive keeps it waiting. It is
then dismantled into weighed material fractions, and finally leaves in a lot for a certified
recycler, which makes it recycled (terminal) with a recycling certificate citing every drive.

Which drives a device has comes with the event that hands it over (`drive_serials`, v1.1). A
device handed over by an older event has drives unknown here (`None`): then the drives staff
record at dismantling are taken as the device's drives; each must be a verified destroy, and a
returned device other than a monitor needs at least one. `tools.invariants` checks the result
against the drives diagnostics recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from shared.domain import IllegalTransition
from shared.events import (
    DeviceCategory,
    DeviceDismantled,
    DeviceRecycled,
    DeviceReleasedForRecycling,
    DeviceReturned,
    ErasureRecord,
    LotDispatched,
    MaterialFractions,
    Recycler,
    SanitizationMethod,
)

MAX_FRACTION_KG = 10_000.0


class State(StrEnum):
    AWAITING_DISMANTLING = "awaiting_dismantling"
    DISMANTLED = "dismantled"
    RECYCLED = "recycled"


NOT_RELEASED = "not_released"
"""The state named in a refusal about a device this service never received."""


class Source(StrEnum):
    DIAGNOSTICS = "diagnostics"
    RETURN = "return"


@dataclass(frozen=True, slots=True)
class Dismantling:
    fractions: MaterialFractions
    hazardous_parts: tuple[str, ...]
    storage_destroyed: tuple[ErasureRecord, ...]
    dismantled_by: str
    dismantled_at: datetime
    location: str


@dataclass(frozen=True, slots=True)
class RecyclingRecord:
    """What recycling did with one device: proof that its materials went to a certified recycler,
    served as its recycling certificate (`GET /certificates/{id}`). The donor's certificate,
    built from the events, is custody's `RecyclingCertificate`."""

    certificate_id: UUID
    device_id: UUID
    category: DeviceCategory
    source: Source
    correlation_id: UUID
    fractions: MaterialFractions
    recycler: Recycler
    lot_id: UUID
    bill_of_lading: str
    erasure_certificate_id: UUID | None
    storage_destroyed: tuple[ErasureRecord, ...]
    issued_at: datetime
    drive_serials: tuple[str, ...] = ()
    """Every drive of the device: each destroyed at dismantling or erased under the erasure
    certificate (drives unknown to recycling: those recorded destroyed at dismantling)."""


@dataclass(frozen=True, slots=True)
class Device:
    device_id: UUID
    category: DeviceCategory
    source: Source
    correlation_id: UUID
    admitted_by: UUID
    admitted_at: datetime
    erasure_certificate_id: UUID | None = None
    drive_serials: tuple[str, ...] | None = None
    """Every drive of the device (empty: none); None when the admitting event did not say."""
    state: State = State.AWAITING_DISMANTLING
    dismantling: Dismantling | None = None
    lot_id: UUID | None = None
    certificate: RecyclingRecord | None = None


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: UUID
    recycler: Recycler
    bill_of_lading: str
    device_ids: tuple[UUID, ...]
    fractions: MaterialFractions
    dispatched_at: datetime

    @property
    def total_kg(self) -> float:
        return round(self.fractions.total_kg, 6)


def admit(
    existing: Device | None, event: DeviceReleasedForRecycling | DeviceReturned
) -> Device | None:
    """A released or returned device now awaits dismantling.

    Returns None when this very event was already applied; refuses a second admission of a
    device recycling already holds under another event.
    """
    if existing is not None:
        if existing.admitted_by == event.event_id:
            return None
        raise IllegalTransition(
            subject_kind="device",
            subject_id=event.device_id,
            action="admit",
            state=existing.state.value,
            reason="device is already held by recycling",
            correlation_id=existing.correlation_id,
        )
    source = Source.DIAGNOSTICS if isinstance(event, DeviceReleasedForRecycling) else Source.RETURN
    drives = None if event.drive_serials is None else tuple(event.drive_serials)
    return Device(
        device_id=event.device_id,
        category=event.category,
        source=source,
        correlation_id=event.correlation_id,
        admitted_by=event.event_id,
        admitted_at=event.occurred_at,
        erasure_certificate_id=event.erasure_certificate_id,
        drive_serials=drives,
    )


def destroyed_serials(records: Iterable[ErasureRecord]) -> set[str]:
    destroy = SanitizationMethod.DESTROY
    return {r.drive_serial for r in records if r.method is destroy and r.verified}


def undestroyed_drives(device: Device, records: Sequence[ErasureRecord]) -> list[str] | None:
    """The drives still to be destroyed before a returned device may be dismantled.

    A released device's drives were erased or destroyed under its erasure certificate: none.
    A returned device: each of its drives without a verified destroy record. Drives unknown
    here: each recorded drive without a verified destroy, or None when nothing was recorded for
    a device that is not a monitor (it must name and destroy its drives).
    """
    if device.source is not Source.RETURN:
        return []
    destroyed = destroyed_serials(records)
    if device.drive_serials is not None:
        return [s for s in device.drive_serials if s not in destroyed]
    if not records:
        return [] if device.category is DeviceCategory.MONITOR else None
    return list(dict.fromkeys(r.drive_serial for r in records if r.drive_serial not in destroyed))


def cited_drives(device: Device, records: Sequence[ErasureRecord]) -> tuple[str, ...]:
    """The drives a dismantling and its certificate account for."""
    if device.drive_serials is not None:
        return device.drive_serials
    return tuple(dict.fromkeys(r.drive_serial for r in records))


def dismantle(
    device: Device | None,
    device_id: UUID,
    *,
    fractions: MaterialFractions,
    hazardous_parts: Sequence[str],
    destroyed: Sequence[ErasureRecord],
    dismantled_by: str,
    location: str,
    at: datetime,
    event_id: UUID,
) -> tuple[Device, DeviceDismantled]:
    """An awaiting device is taken apart into weighed fractions: it becomes dismantled."""
    if device is None:
        raise not_released(device_id, "dismantle")
    if device.state is not State.AWAITING_DISMANTLING:
        raise IllegalTransition(
            subject_kind="device",
            subject_id=device_id,
            action="dismantle",
            state=device.state.value,
            reason=f"device is already {device.state.value}",
            correlation_id=device.correlation_id,
        )
    missing = undestroyed_drives(device, destroyed)
    if missing is None or missing:
        raise IllegalTransition(
            subject_kind="device",
            subject_id=device_id,
            action="dismantle",
            state=device.state.value,
            reason=_undestroyed_reason(missing),
            correlation_id=device.correlation_id,
        )
    if fractions.total_kg <= 0:
        raise ValueError("material fractions must weigh more than 0 kg in total")
    dismantling = Dismantling(
        fractions=fractions,
        hazardous_parts=tuple(hazardous_parts),
        storage_destroyed=tuple(destroyed),
        dismantled_by=dismantled_by,
        dismantled_at=at,
        location=location,
    )
    event = DeviceDismantled(
        event_id=event_id,
        occurred_at=at,
        correlation_id=device.correlation_id,
        causation_id=None,
        producer="recycling",
        device_id=device_id,
        fractions=fractions,
        hazardous_parts=list(hazardous_parts),
        storage_destroyed=list(destroyed),
        dismantled_by=dismantled_by,
        location=location,
        drive_serials=list(cited_drives(device, destroyed)),
        erasure_certificate_id=device.erasure_certificate_id,
    )
    return replace(device, state=State.DISMANTLED, dismantling=dismantling), event


def _undestroyed_reason(missing: list[str] | None) -> str:
    if missing is None:
        return (
            "storage of a returned device must be destroyed: its drives are unknown to "
            "recycling, record a verified destroy for each of them"
        )
    return (
        "storage of a returned device must be destroyed: no verified destroy record for "
        f"drive(s) {', '.join(missing)}"
    )


def sum_fractions(all_fractions: Iterable[MaterialFractions]) -> MaterialFractions:
    """Field by field sum, rounded to the gram's thousandth so float noise does not show."""
    totals: dict[str, float] = {name: 0.0 for name in MaterialFractions.model_fields}
    for fractions in all_fractions:
        for name, kg in fractions.model_dump().items():
            totals[name] += kg
    return MaterialFractions(**{name: round(kg, 6) for name, kg in totals.items()})


def bill_of_lading(lot_id: UUID, at: datetime) -> str:
    return f"BOL-R-{at.year}-{lot_id.hex[:8].upper()}"


def compose_lot(
    lot_id: UUID,
    recycler: Recycler,
    devices: Sequence[tuple[UUID, Device | None]],
    at: datetime,
) -> Lot:
    """Dismantled devices not yet in a lot leave together for one recycler.

    Refuses the whole lot when any device is unknown, not dismantled or already in a lot.
    """
    ids = [device_id for device_id, _ in devices]
    if not ids:
        raise ValueError("a lot needs at least one device")
    if len(set(ids)) != len(ids):
        raise ValueError("a device may appear only once in a lot")
    for device_id, device in devices:
        check_dispatchable(device_id, device)
    parts = [d.dismantling.fractions for _, d in devices if d is not None and d.dismantling]
    if any(sum(getattr(f, name) for f in parts) > MAX_FRACTION_KG for name in _FRACTION_NAMES):
        raise IllegalTransition(
            subject_kind="lot",
            subject_id=lot_id,
            action="dispatch",
            state="composing",
            reason=f"a lot may carry at most {MAX_FRACTION_KG:.0f} kg of one material",
        )
    return Lot(
        lot_id=lot_id,
        recycler=recycler,
        bill_of_lading=bill_of_lading(lot_id, at),
        device_ids=tuple(ids),
        fractions=sum_fractions(parts),
        dispatched_at=at,
    )


def check_dispatchable(device_id: UUID, device: Device | None) -> None:
    """Only a dismantled device that is in no lot yet may leave in one."""
    if device is None:
        raise not_released(device_id, "dispatch")
    if device.state is not State.DISMANTLED or device.lot_id is not None:
        raise IllegalTransition(
            subject_kind="device",
            subject_id=device_id,
            action="dispatch",
            state=device.state.value,
            reason=_why_not_dispatchable(device),
            correlation_id=device.correlation_id,
        )


def dispatched(lot: Lot, event_id: UUID) -> LotDispatched:
    return LotDispatched(
        event_id=event_id,
        occurred_at=lot.dispatched_at,
        correlation_id=lot.lot_id,
        causation_id=None,
        producer="recycling",
        lot_id=lot.lot_id,
        recycler=lot.recycler,
        bill_of_lading=lot.bill_of_lading,
        device_ids=list(lot.device_ids),
        fractions=lot.fractions,
    )


def recycle(
    device: Device, lot: Lot, *, certificate_id: UUID, event_id: UUID, causation_id: UUID
) -> tuple[Device, DeviceRecycled]:
    """A dismantled device in a dispatched lot is recycled (terminal) and certified."""
    if (
        device.state is not State.DISMANTLED
        or device.dismantling is None
        or device.lot_id not in (None, lot.lot_id)
        or device.device_id not in lot.device_ids
    ):
        raise IllegalTransition(
            subject_kind="device",
            subject_id=device.device_id,
            action="recycle",
            state=device.state.value,
            reason=_why_not_dispatchable(device),
            correlation_id=device.correlation_id,
        )
    fractions = device.dismantling.fractions
    certificate = RecyclingRecord(
        certificate_id=certificate_id,
        device_id=device.device_id,
        category=device.category,
        source=device.source,
        correlation_id=device.correlation_id,
        fractions=fractions,
        recycler=lot.recycler,
        lot_id=lot.lot_id,
        bill_of_lading=lot.bill_of_lading,
        erasure_certificate_id=device.erasure_certificate_id,
        storage_destroyed=device.dismantling.storage_destroyed,
        issued_at=lot.dispatched_at,
        drive_serials=cited_drives(device, device.dismantling.storage_destroyed),
    )
    event = DeviceRecycled(
        event_id=event_id,
        occurred_at=lot.dispatched_at,
        correlation_id=device.correlation_id,
        causation_id=causation_id,
        producer="recycling",
        device_id=device.device_id,
        lot_id=lot.lot_id,
        certificate_id=certificate_id,
        recycler=lot.recycler,
        fractions=fractions,
        bill_of_lading=lot.bill_of_lading,
    )
    recycled = replace(device, state=State.RECYCLED, lot_id=lot.lot_id, certificate=certificate)
    return recycled, event


_FRACTION_NAMES = tuple(MaterialFractions.model_fields)


def _why_not_dispatchable(device: Device) -> str:
    if device.state is State.AWAITING_DISMANTLING:
        return "device must be dismantled before it leaves in a lot"
    if device.state is State.RECYCLED or device.lot_id is not None:
        return "device is already in a lot"
    return f"device is {device.state.value}"


def not_released(device_id: UUID, action: str) -> IllegalTransition:
    return IllegalTransition(
        subject_kind="device",
        subject_id=device_id,
        action=action,
        state=NOT_RELEASED,
        reason="device was neither released for recycling nor returned",
    )
