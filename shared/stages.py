"""The stages a device goes through, as donors and operations see them: defined here once.

Each device event moves a device to a stage (`STAGE_OF_EVENT`; a report moves it to the reported
condition). Stages are ranked in lifecycle order (`RANK`; the two outcomes of diagnostics share
a rank): a device's stage is the highest-ranked one its events reached, since its events travel
on different topics and may arrive out of order. Custody (the donor's view, certificates, impact
reports, operations' stage table), `tools.ops` and `tools.invariants` read this module; adding a
device event type means one entry in `STAGE_OF_EVENT` (a unit test checks every device event
has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

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
    event_type_of,
)

Stage = Literal[
    "received",
    "diagnosed",
    "wiped",
    "ready",
    "awaiting_recycling",
    "allocated",
    "shipped",
    "delivered",
    "broken",
    "returned",
    "dismantled",
    "recycled",
    "lost",
]

STAGES: tuple[Stage, ...] = get_args(Stage)
"""Every stage, in lifecycle order."""

_SAME_RANK_AS_PREVIOUS: frozenset[str] = frozenset({"awaiting_recycling"})
"""Diagnostics' two outcomes (ready, awaiting recycling) are one step of the lifecycle."""


def _ranks() -> dict[str, int]:
    ranks: dict[str, int] = {}
    rank = 0
    for stage in STAGES:
        rank += 0 if stage in _SAME_RANK_AS_PREVIOUS else 1
        ranks[stage] = rank
    return ranks


RANK: Mapping[str, int] = _ranks()
"""A stage's place in the lifecycle (1 = received); a device never moves to a lower rank."""

TERMINAL_STAGES: frozenset[str] = frozenset({"recycled", "lost"})
"""Stages a device never leaves. A broken device is not one: its recipient can still return it,
and recycling takes it from there."""

STAGE_OF_EVENT: Mapping[type[DeviceEvent], Stage | None] = {
    DeviceReceived: "received",
    DeviceDiagnosed: "diagnosed",
    DeviceWiped: "wiped",
    DeviceReady: "ready",
    DeviceReleasedForRecycling: "awaiting_recycling",
    DeviceAllocated: "allocated",
    DeviceShipped: "shipped",
    DeviceDelivered: "delivered",
    DeviceUsageReported: "delivered",
    DeviceReported: None,  # the reported condition: broken or lost
    DeviceReturned: "returned",
    DeviceDismantled: "dismantled",
    DeviceRecycled: "recycled",
}
"""The stage each device event moves a device to (None: the event says which)."""

_STAGE_OF_TYPE: dict[str, Stage | None] = {
    event_type_of(cls): stage for cls, stage in STAGE_OF_EVENT.items()
}


def stage_of(event: DeviceEvent) -> str:
    """The stage `event` moves its device to."""
    if isinstance(event, DeviceReported):
        return event.condition
    try:
        stage = STAGE_OF_EVENT[type(event)]
    except KeyError:
        raise ValueError(f"{event.event_type} says nothing about a device's stage") from None
    assert stage is not None
    return stage


def stage_of_entry(event_type: str, details: Mapping[str, Any]) -> str | None:
    """The stage a recorded history entry moved the device to (a report: its condition)."""
    stage = _STAGE_OF_TYPE.get(event_type) or details.get("condition")
    return stage if stage in RANK else None


def rank_of(stage: str | None) -> int:
    """The stage's rank; 0 for none (a device whose first event has not arrived)."""
    return RANK[stage] if stage else 0
