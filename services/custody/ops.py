"""What operations staff watch in the custody view, decided without I/O: devices per stage, the
oldest and the stuck ones, and the thresholds past which a device counts as stuck."""

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from services.custody.api import DeviceView
from shared.stages import STAGES, TERMINAL_STAGES, stage_of_entry

_DAY = 86_400.0
DEFAULT_STUCK_AFTER_S: dict[str, float | None] = {
    "received": 2 * _DAY,
    "diagnosed": 2 * _DAY,
    "wiped": 30 * _DAY,
    "ready": 30 * _DAY,
    "awaiting_recycling": 30 * _DAY,
    "allocated": 7 * _DAY,
    "shipped": 14 * _DAY,
    # in use at the recipient for years, by design
    "delivered": None,
    # waiting at its recipient to be returned, which brings its storage back to be erased
    "broken": 30 * _DAY,
    "returned": 14 * _DAY,
    "dismantled": 30 * _DAY,
    "recycled": None,
    "lost": None,
}


def defaults_text(thresholds: Mapping[str, float | None] = DEFAULT_STUCK_AFTER_S) -> str:
    """The thresholds in words, stages grouped by threshold in lifecycle order:
    "received and diagnosed 2 days; ...; delivered, recycled and lost never"."""
    groups: dict[float | None, list[str]] = {}
    for stage, seconds in thresholds.items():
        groups.setdefault(seconds, []).append(stage)

    def words(seconds: float | None) -> str:
        if seconds is None:
            return "never"
        days = seconds / _DAY
        return f"{days:g} day" + ("" if days == 1 else "s")

    def listed(stages: list[str]) -> str:
        return " and ".join([", ".join(stages[:-1]), stages[-1]] if stages[:-1] else stages)

    return "; ".join(f"{listed(stages)} {words(s)}" for s, stages in groups.items())


class DeviceInStage(BaseModel):
    """One device as the stage table shows it: since when it is in its current stage."""

    device_id: UUID
    asset_tag: str
    since: datetime
    age_s: float = Field(description="Seconds the device has been in this stage")


class StageStats(BaseModel):
    """One stage: how many devices are in it, the oldest one, and those waiting too long."""

    stage: str
    count: int
    oldest: DeviceInStage | None
    stuck_after_s: float | None = Field(description="None: a device never counts as stuck here")
    stuck: int
    stuck_devices: list[DeviceInStage] = Field(description="The longest-waiting stuck devices")


class StagesView(BaseModel):
    generated_at: datetime
    total: int
    stages: list[StageStats]


class DeviceSearch(BaseModel):
    query: str
    devices: list[DeviceView]


class BadThresholds(ValueError):
    """`stuck_after` is neither a number of seconds nor a JSON object of stage -> seconds."""


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadThresholds(f"{where}: expected a number of seconds, got {value!r:.100}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise BadThresholds(f"{where}: expected a finite number of seconds >= 0")
    return seconds


def stuck_thresholds(text: str | None) -> dict[str, float | None]:
    """Per-stage thresholds: the defaults, overridden by `text`.

    `text` is either seconds (for every stage that can be stuck) or a JSON object such as
    `{"received": 3600, "allocated": 86400}` overriding those stages only. Terminal stages
    (`TERMINAL_STAGES`: recycled, lost) are never stuck and refuse a threshold.
    """
    thresholds = dict(DEFAULT_STUCK_AFTER_S)
    if text is None or not text.strip():
        return thresholds
    try:
        given = json.loads(text)
    except (ValueError, RecursionError):
        raise BadThresholds(
            'expected seconds (e.g. 3600) or a JSON object such as {"received": 3600}'
        ) from None
    if not isinstance(given, dict):
        seconds = _seconds(given, "stuck_after")
        return {s: None if s in TERMINAL_STAGES else seconds for s in thresholds}
    for stage, value in given.items():
        if stage not in thresholds:
            raise BadThresholds(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if stage in TERMINAL_STAGES:
            raise BadThresholds(f"{stage} is terminal: a device there is never stuck")
        thresholds[stage] = _seconds(value, stage)
    return thresholds


def _stage_of_entry(entry: Mapping[str, Any]) -> str | None:
    return stage_of_entry(entry.get("event_type", ""), entry.get("details") or {})


def since_in_stage(row: Mapping[str, Any]) -> datetime:
    """When the device entered its current stage: the earliest event that leads to it.

    The stage is the furthest one reached, so the earliest history entry of that stage moved the
    device there (a later `device.usage_reported` keeps a device `delivered` since delivery).
    """
    stage = row.get("stage") or "received"
    times = [h["occurred_at"] for h in row.get("history") or () if _stage_of_entry(h) == stage]
    moment: datetime = min(times) if times else row["received_at"]
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    thresholds: Mapping[str, float | None],
    limit: int = 10,
) -> StagesView:
    """Devices per stage, each stage's oldest device and those in it longer than its threshold.

    Every known stage is listed, in lifecycle order, even when empty.
    """
    waiting: dict[str, list[tuple[datetime, str, str]]] = {stage: [] for stage in STAGES}
    for row in rows:
        entry = (since_in_stage(row), row["asset_tag"], str(row["_id"]))
        waiting.setdefault(row.get("stage") or "received", []).append(entry)

    def shown(entry: tuple[datetime, str, str]) -> DeviceInStage:
        since, asset_tag, device_id = entry
        age = max(0.0, (now - since).total_seconds())
        return DeviceInStage(device_id=UUID(device_id), asset_tag=asset_tag, since=since, age_s=age)

    stats = []
    for stage, entries in waiting.items():
        entries.sort()
        threshold = thresholds.get(stage)
        stuck = (
            []
            if threshold is None
            else [e for e in entries if (now - e[0]).total_seconds() > threshold]
        )
        stats.append(
            StageStats(
                stage=stage,
                count=len(entries),
                oldest=shown(entries[0]) if entries else None,
                stuck_after_s=threshold,
                stuck=len(stuck),
                stuck_devices=[shown(e) for e in stuck[:limit]],
            )
        )
    return StagesView(generated_at=now, total=sum(s.count for s in stats), stages=stats)
