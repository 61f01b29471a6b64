"""Refused transitions, kept where operations can see them: the service's `refusals`
collection (GET /refusals) and the `transition.refused` topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from shared.domain import IllegalTransition
from shared.events import ServiceName, TransitionRefused
from shared.ids import derive_id
from shared.mongo import Database
from shared.outbox import Relay, outbox_set


async def record_refusal(
    db: Database,
    relay: Relay,
    producer: ServiceName,
    refused: IllegalTransition,
    causation_id: UUID | None = None,
) -> TransitionRefused:
    """Store and publish a refusal. A refusal caused by an event is recorded once per event."""
    event_id = derive_id(producer, causation_id, "transition.refused") if causation_id else uuid4()
    event = TransitionRefused(
        event_id=event_id,
        occurred_at=datetime.now(UTC),
        correlation_id=refused.correlation_id,
        causation_id=causation_id,
        producer=producer,
        subject_ref=refused.subject_id,
        subject_kind=refused.subject_kind,
        action=refused.action,
        state=refused.state,
        reason=refused.reason,
    )
    doc: dict[str, Any] = {
        "subject_kind": event.subject_kind,
        "subject_id": event.subject_ref,
        "action": event.action,
        "state": event.state,
        "reason": event.reason,
        "causation_id": causation_id,
        "occurred_at": event.occurred_at,
    }
    await db.refusals.update_one(
        {"_id": event_id},
        {"$setOnInsert": doc | outbox_set([event])},
        upsert=True,
    )
    await relay.flush(db.refusals, event_id)
    return event


def refusal_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "refusal_id": str(doc["_id"]),
        "subject_kind": doc["subject_kind"],
        "subject_id": str(doc["subject_id"]),
        "action": doc["action"],
        "state": doc["state"],
        "reason": doc["reason"],
        "occurred_at": doc["occurred_at"].isoformat(),
    }
