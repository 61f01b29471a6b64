"""Custody's rules: the donor's view of one device, built from its events in any order."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.events import (
    DeviceAllocated,
    DeviceDelivered,
    DeviceDiagnosed,
    DeviceDismantled,
    DeviceEvent,
    DeviceReady,
    DeviceReceived,
    DeviceRecycled,
    DeviceReleasedForRecycling,
    DeviceReported,
    DeviceReturned,
    DeviceShipped,
    DeviceUsageReported,
    DeviceWiped,
)
from shared.evidence import event_digest
from shared.stages import rank_of, stage_of, stage_of_entry


def to_millis(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    event_id: UUID
    event_type: str
    occurred_at: datetime
    producer: str
    details: dict[str, Any]
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Custody:
    """What the donor sees of one device: its furthest stage and what happened to it."""

    stage: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    recipient_id: str | None = None
    recipient_name: str | None = None
    erasure_certificate_id: UUID | None = None
    recycling_certificate_id: UUID | None = None

    @property
    def rank(self) -> int:
        return rank_of(self.stage)

    def has_seen(self, event_id: UUID) -> bool:
        return any(h.event_id == event_id for h in self.history)


def details_of(event: DeviceEvent) -> dict[str, Any]:
    """The part of an event a donor cares about (JSON-ready values)."""
    match event:
        case DeviceReceived():
            return {"asset_tag": event.asset_tag, "location": event.location}
        case DeviceDiagnosed():
            return {
                "decision": event.decision.value,
                "reason": event.reason,
                "cosmetic_grade": event.cosmetic_grade.value,
                "functional_grade": event.functional_grade.value,
            }
        case DeviceWiped():
            return {
                "certificate_id": str(event.certificate_id),
                "drives": len(event.erasures),
                "erasures": [e.model_dump(mode="json") for e in event.erasures],
            }
        case DeviceReady():
            return {"erasure_certificate_id": str(event.erasure_certificate_id)}
        case DeviceReleasedForRecycling():
            return {
                "reason": event.reason,
                "erasure_certificate_id": str(event.erasure_certificate_id),
            }
        case DeviceAllocated():
            return {"recipient_id": event.recipient_id, "recipient_name": event.recipient_name}
        case DeviceShipped() | DeviceDelivered():
            return {"recipient_id": event.recipient_id}
        case DeviceUsageReported():
            return {
                "recipient_id": event.recipient_id,
                "students": event.students,
                "classrooms": event.classrooms,
            }
        case DeviceReturned():
            return {"recipient_id": event.recipient_id, "reason": event.reason}
        case DeviceReported():
            return {"recipient_id": event.recipient_id, "condition": event.condition}
        case DeviceDismantled():
            return {
                "fractions_total_kg": round(event.fractions.total_kg, 3),
                "fractions": event.fractions.model_dump(mode="json"),
                "hazardous_parts": list(event.hazardous_parts),
                "storage_destroyed": [e.model_dump(mode="json") for e in event.storage_destroyed],
                "dismantled_by": event.dismantled_by,
                "location": event.location,
                "drive_serials": event.drive_serials,
                "erasure_certificate_id": _str_or_none(event.erasure_certificate_id),
            }
        case DeviceRecycled():
            return {
                "lot_id": str(event.lot_id),
                "certificate_id": str(event.certificate_id),
                "recycler": event.recycler.name,
                "recycler_certification": event.recycler.certification,
                "fractions": event.fractions.model_dump(mode="json"),
                "bill_of_lading": event.bill_of_lading,
            }
    return {}


def _str_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _chronological(entry: HistoryEntry) -> tuple[datetime, int]:
    """Time first; events written in one update share a time, so then the lifecycle's order."""
    stage = stage_of_entry(entry.event_type, entry.details)
    return entry.occurred_at, rank_of(stage)


def record(custody: Custody, event: DeviceEvent) -> Custody:
    """Add one device event to the custody view, once.

    A device's events travel on different topics and may arrive out of order, so the stage is
    the highest-ranked one seen: a late `device.wiped` never moves a delivered device back, and
    `lost` (the highest rank) is terminal.
    """
    if custody.has_seen(event.event_id):
        return custody
    stage = stage_of(event)
    entry = HistoryEntry(
        event_id=event.event_id,
        event_type=event.event_type,
        # The store keeps milliseconds: two events of one update (wiped and ready) then share
        # their time and keep the lifecycle's order between them.
        occurred_at=to_millis(event.occurred_at),
        producer=event.producer,
        details=details_of(event),
        digest=event_digest(event),
    )
    history = tuple(sorted((*custody.history, entry), key=_chronological))
    updated = replace(
        custody,
        history=history,
        stage=stage if rank_of(stage) > custody.rank else custody.stage,
    )
    match event:
        case DeviceWiped():
            updated = replace(updated, erasure_certificate_id=event.certificate_id)
        case DeviceReady() | DeviceReleasedForRecycling():
            if updated.erasure_certificate_id is None:
                updated = replace(updated, erasure_certificate_id=event.erasure_certificate_id)
        case DeviceRecycled():
            updated = replace(updated, recycling_certificate_id=event.certificate_id)
        case (
            DeviceAllocated()
            | DeviceShipped()
            | DeviceDelivered()
            | DeviceReturned()
            | DeviceReported()
        ) if updated.recipient_id is None or rank_of(stage) > custody.rank:
            updated = replace(updated, recipient_id=event.recipient_id)
    if isinstance(event, DeviceAllocated) and event.recipient_name:
        updated = replace(updated, recipient_name=event.recipient_name)
    return updated
