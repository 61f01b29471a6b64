"""What operations staff watch in intake's custody view: devices per stage, the oldest and the
stuck ones, and a device's timeline found by its serial number or asset tag."""

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, get_args
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from services.intake import store
from services.intake.api import DeviceView, device_view
from services.intake.domain import TERMINAL_STAGES, Stage, stage_of_entry
from shared.auth import Principal, Role
from shared.mongo import Database, Document
from shared.service import Runtime

STAGES: tuple[str, ...] = get_args(Stage)

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


# ---- pure decisions ---------------------------------------------------------------------------


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


def literal_pattern(text: str) -> str:
    """A regular expression matching exactly `text` (escaping only what is special in both
    Go's and PCRE's syntax, which differ on escaped ordinary characters)."""
    special = set("\\.^$|?*+()[]{}")
    return "^" + "".join("\\" + c if c in special else c for c in text) + "$"


# ---- store ------------------------------------------------------------------------------------


async def stage_rows(db: Database) -> list[Document]:
    """One query over every device, only the fields the stage table needs."""
    return await store.find_summaries(db, {})


async def find_by_tag_or_serial(db: Database, query: str) -> list[Document]:
    """Exact asset tag, or serial number ignoring case (scanners and labels disagree on case)."""
    serial = {"$regex": literal_pattern(query), "$options": "i"}
    matches = db.device_summaries.find(
        {"$or": [{"asset_tag": query}, {"serial_number": serial}]}, {"_id": 1}
    )
    ids = [m["_id"] async for m in matches]
    found = [await db.devices.find_one({"_id": i}, {"outbox": 0, "applied": 0}) for i in ids]
    return sorted((d for d in found if d is not None), key=lambda d: d["received_at"])


# ---- HTTP -------------------------------------------------------------------------------------


def _invalid(name: str, value: Any, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, so the answer matches the OpenAPI schema."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


class Operator(BaseModel):
    partner_id: str
    name: str
    role: Role


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter()
    operations = Depends(runtime.require(Role.OPERATIONS, Role.STAFF))

    @api.get(
        "/ops/me",
        tags=["operations"],
        summary="Whose operations or staff key this is (the operations page's sign-in check)",
    )
    async def who_am_i(principal: Annotated[Principal, operations]) -> Operator:
        return Operator(partner_id=principal.partner_id, name=principal.name, role=principal.role)

    @api.get(
        "/ops/stages",
        tags=["operations"],
        summary="Devices per stage, the oldest in each, and those stuck longer than a threshold",
    )
    async def stages(
        principal: Annotated[Principal, operations],
        stuck_after: Annotated[
            str | None,
            Query(
                max_length=2000,
                description='Seconds for every stage, or JSON per stage: {"received": 3600}. '
                f"Defaults: {defaults_text()}. Terminal stages "
                f"({', '.join(sorted(TERMINAL_STAGES))}) are never stuck.",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=0, le=100, description="Stuck devices listed")] = 10,
    ) -> StagesView:
        try:
            thresholds = stuck_thresholds(stuck_after)
        except BadThresholds as exc:
            raise _invalid("stuck_after", stuck_after, str(exc)) from None
        rows = await stage_rows(runtime.db)
        return summarize(rows, now=datetime.now(UTC), thresholds=thresholds, limit=limit)

    @api.get(
        "/ops/devices",
        tags=["operations"],
        summary="Find a device by asset tag or serial number: its identity and timeline",
        responses={404: {"description": "No device has that asset tag or serial number"}},
    )
    async def search(
        principal: Annotated[Principal, operations],
        q: Annotated[str, Query(min_length=1, max_length=128, description="Tag or serial")],
    ) -> DeviceSearch:
        query = q.strip()
        if not query:
            raise _invalid("q", q, "give an asset tag or a serial number")
        docs = await find_by_tag_or_serial(runtime.db, query)
        if not docs:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no device has asset tag or serial number {query!r}",
            )
        return DeviceSearch(query=query, devices=[device_view(d) for d in docs])

    return api
