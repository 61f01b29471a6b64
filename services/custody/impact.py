"""The donor impact report: what became of one donor's devices in one period, and what it avoided.

Pure computation over custody's device documents: no I/O except reading
a factors file. Only events that occurred before the period's end count, so a report for a
past period is the same whenever it is asked for; every list is sorted and every sum is exact
(`math.fsum`), so the same documents in any order give the same report.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.events import DeviceCategory
from shared.stages import RANK, stage_of_entry

MAX_SPAN_DAYS = 3653
"""Ten years: the longest period a report covers."""

WEEKLY_UP_TO_DAYS = 93
"""Periods up to about a quarter are charted by week, longer ones by calendar month."""

TOP_MODELS = 15

IN_PROCESS_STAGES = (
    "received",
    "diagnosed",
    "wiped",
    "ready",
    "awaiting_recycling",
    "allocated",
    "shipped",
    "returned",
    "dismantled",
)
"""Stages where a device is still with us or on its way; the others are outcomes."""

PUBLISHED_LAPTOP_RANGE = (
    "Published factors for one reused laptop range from 18.6 kg CO2e (Labdoo) to 69 kg "
    "(PUC Belgium) to about 220-280 kg (3StepIT/EY, Inrego/IVL); 520 kg per monitor "
    "(3StepIT/EY, Inrego/IVL)."
)

NO_FACTOR = "no factor configured"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- factors ----------------------------------------------------------------------------------


class Co2eFactor(_Model):
    """CO2e avoided when one device of a category is reused instead of a new one being made."""

    kg_co2e: Annotated[float, Field(ge=0, le=100_000)] = Field(
        description="kg CO2e avoided per reused device"
    )
    source: Annotated[str, Field(min_length=1, max_length=300)] = Field(
        description="Who published the factor."
    )
    unit: Annotated[str, Field(min_length=1, max_length=100)] = "kg CO2e per reused device"
    note: Annotated[str, Field(max_length=500)] | None = None


class LandfillMethod(_Model):
    """How "kg kept from landfill" is counted: weights we measured ourselves, not a factor."""

    count_reused_devices: bool = Field(
        True, description="Count the weight scanned at intake of every device reused."
    )
    count_recycled_materials: bool = Field(
        True, description="Count the material fractions weighed for every device recycled."
    )
    source: Annotated[str, Field(min_length=1, max_length=300)] = (
        "our own measurements: each device weighed when scanned in; material fractions "
        "weighed at dismantling and stated on the recycler's certificate"
    )
    unit: Literal["kg"] = "kg"


class ImpactFactors(_Model):
    """The factors a report is computed with; every report prints them with source and unit."""

    name: Annotated[str, Field(min_length=1, max_length=200)] = "custom"
    co2e: dict[DeviceCategory, Co2eFactor] = Field(
        default_factory=dict,
        description="Per category; a category without a factor counts 0 CO2e.",
    )
    landfill: LandfillMethod = LandfillMethod()


BUILT_IN_FACTORS = ImpactFactors(
    name="built-in (the lowest published laptop factor we hold)",
    co2e={
        DeviceCategory.LAPTOP: Co2eFactor(
            kg_co2e=18.6,
            source="Labdoo",
            unit="kg CO2e per reused laptop",
            note="the lowest of the published laptop factors we hold: a conservative choice",
        ),
        DeviceCategory.MONITOR: Co2eFactor(
            kg_co2e=520,
            source="3StepIT/EY, Inrego/IVL",
            unit="kg CO2e per reused monitor",
        ),
    },
)


class FactorsError(ValueError):
    """A factors file that cannot be used, and why."""


def parse_factors(text: str, origin: str) -> ImpactFactors:
    """Factors from YAML text; `origin` names the file in the error message."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FactorsError(f"impact factors {origin}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise FactorsError(f"impact factors {origin}: expected a mapping with `co2e` at the top")
    try:
        return ImpactFactors.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise FactorsError(f"impact factors {origin}: {problems}") from None


def load_factors(path: Path | None) -> ImpactFactors:
    """The factors of `path` (GREENIT_INTAKE_IMPACT_FACTORS), or the built-in ones."""
    if path is None:
        return BUILT_IN_FACTORS
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FactorsError(f"impact factors {path}: cannot be read: {exc}") from None
    return parse_factors(text, str(path))


# ---- period -----------------------------------------------------------------------------------


class Period(_Model):
    """From `start` (inclusive) to `end` (exclusive), both at 00:00 UTC."""

    start: date
    end: date

    @model_validator(mode="after")
    def _sensible(self) -> Period:
        if self.end <= self.start:
            raise ValueError(f"the period must end after it starts ({self.start} to {self.end})")
        if (self.end - self.start).days > MAX_SPAN_DAYS:
            raise ValueError(f"a report covers at most ten years ({MAX_SPAN_DAYS} days)")
        return self

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end, time(), UTC)

    @property
    def bucket(self) -> Literal["week", "month"]:
        return "week" if (self.end - self.start).days <= WEEKLY_UP_TO_DAYS else "month"

    def contains(self, moment: datetime) -> bool:
        return self.start_at <= moment < self.end_at

    def buckets(self) -> Iterator[tuple[date, date]]:
        """Consecutive [from, to) slices: 7-day weeks from `start`, or calendar months."""
        current = self.start
        while current < self.end:
            following = _next_week(current) if self.bucket == "week" else _next_month(current)
            following = min(following, self.end)
            yield current, following
            current = following


def _next_week(day: date) -> date:
    return day + timedelta(days=7) if day <= date.max - timedelta(days=7) else date.max


def _next_month(day: date) -> date:
    if day.month < 12:
        return date(day.year, day.month + 1, 1)
    return date(day.year + 1, 1, 1) if day.year < date.max.year else date.max


# ---- the report -------------------------------------------------------------------------------


class CategoryCount(_Model):
    category: DeviceCategory
    devices: int
    weight_kg: float


class ModelCount(_Model):
    category: DeviceCategory
    make: str
    model: str
    devices: int


class RecipientImpact(_Model):
    """Devices delivered to one school or NGO in the period, and whom they serve."""

    recipient_id: str
    name: str = Field(description="The name given at allocation, else the recipient's id.")
    devices: int
    devices_with_usage_report: int
    students: int = Field(description="Sum over its devices of the latest reported students.")
    classrooms: int = Field(description="Sum over its devices of the latest reported classrooms.")


class FractionWeight(_Model):
    fraction: str
    kg: float


class RecyclerImpact(_Model):
    """Devices whose materials went to one downstream recycler in the period."""

    recycler: str
    certification: str
    devices: int
    kg: float


class StageCount(_Model):
    stage: str
    devices: int


class Co2eLine(_Model):
    """CO2e avoided by the devices of one category reused in the period."""

    category: DeviceCategory
    reused_devices: int
    factor_kg_co2e: float | None = Field(description="None: no factor configured (counts 0).")
    source: str
    unit: str
    kg_co2e: float


class Co2e(_Model):
    lines: list[Co2eLine]
    total_kg: float


class Landfill(_Model):
    reused_devices_kg: float
    recycled_materials_kg: float
    total_kg: float
    source: str
    unit: str


class FlowBucket(_Model):
    start: date
    end: date
    received: int
    delivered: int
    recycled: int


class ImpactReport(_Model):
    """One donor's devices in one period; every figure is defined in its field's description."""

    partner_id: str = Field(description="The donor.")
    period: Period
    as_of: datetime = Field(
        description="The period's end: only events that occurred before it are counted."
    )
    provisional: bool = Field(
        False, description="The period had not ended when asked: later events may still count."
    )
    received: list[CategoryCount] = Field(
        description="Received: devices scanned in during the period, by category, with their "
        "weight as scanned."
    )
    models: list[ModelCount] = Field(
        description=f"Makes and models received in the period, the {TOP_MODELS} most frequent."
    )
    other_models_devices: int = Field(description="Devices received of the other models.")
    delivered: list[RecipientImpact] = Field(
        description="Refurbished and delivered: devices whose delivery a school or NGO accepted "
        "during the period, per recipient. Students and classrooms are the sums over those "
        "devices of the latest usage report each received before the period's end (a student "
        "using two devices counts twice)."
    )
    recycled_fractions: list[FractionWeight] = Field(
        description="Recycled: devices whose recycling certificate was issued during the period; "
        "the material weights per fraction as stated on those certificates."
    )
    recyclers: list[RecyclerImpact] = Field(
        description="The downstream certified recyclers those materials went to."
    )
    in_process: list[StageCount] = Field(
        description="Still in process: devices received before the period's end and, at that "
        "end, at a stage short of an outcome (delivered, broken, lost, recycled), by the "
        "furthest stage reached by then."
    )
    outcomes: list[StageCount] = Field(
        description="Outcomes at the period's end of every device received before it: "
        "delivered (in use), broken (reported at a recipient), lost, recycled."
    )
    co2e: Co2e = Field(
        description="CO2e avoided: devices delivered during the period (reused) times the "
        "factor of their category, in kg CO2e; a category without a factor counts 0."
    )
    landfill: Landfill = Field(
        description="Kept from landfill: the scanned weight of the devices delivered during the "
        "period plus the certified material weights of the devices recycled during it, in kg "
        "(a device delivered and then recycled within the period counts once, by its "
        "materials)."
    )
    bucket: Literal["week", "month"] = Field(
        description="The flow over time: weeks from the period's start for periods up to "
        f"{WEEKLY_UP_TO_DAYS} days, calendar months otherwise."
    )
    flow: list[FlowBucket] = Field(
        description="Devices received, delivered and recycled in each week or month (the same "
        "definitions as above)."
    )
    factors: ImpactFactors
    published_range: str = PUBLISHED_LAPTOP_RANGE

    @property
    def received_total(self) -> int:
        return sum(c.devices for c in self.received)

    @property
    def delivered_total(self) -> int:
        return sum(r.devices for r in self.delivered)

    @property
    def recycled_total(self) -> int:
        return sum(r.devices for r in self.recyclers)

    @property
    def in_process_total(self) -> int:
        return sum(s.devices for s in self.in_process)


# ---- computing it -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    type: str
    at: datetime
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Device:
    """One device as it stood at the period's end: its events before that end only."""

    device_id: str
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    received_at: datetime
    events: tuple[_Event, ...]

    def first_in(self, event_type: str, period: Period) -> _Event | None:
        return next(
            (e for e in self.events if e.type == event_type and period.contains(e.at)), None
        )

    def latest(self, event_type: str, recipient_id: str | None = None) -> _Event | None:
        for event in reversed(self.events):
            if event.type == event_type and (
                recipient_id is None or event.details.get("recipient_id") == recipient_id
            ):
                return event
        return None

    @property
    def stage(self) -> str:
        """The furthest stage reached, by the custody view's own ranking."""
        stages = [_stage_of(e) for e in self.events]
        return max((s for s in stages if s), key=RANK.__getitem__, default="received")


def _stage_of(event: _Event) -> str | None:
    return stage_of_entry(event.type, event.details)


def _aware(moment: datetime) -> datetime:
    """Aware times compare correctly in any zone; a naive one from the store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _device(doc: Mapping[str, Any], end_at: datetime) -> _Device | None:
    """The device as of `end_at`, or None if it was not received by then."""
    received_at = _aware(doc["received_at"])
    if received_at >= end_at:
        return None
    events = sorted(
        (
            _Event(h["event_type"], at, h.get("details") or {})
            for h in doc.get("history") or ()
            if (at := _aware(h["occurred_at"])) < end_at
        ),
        key=lambda e: e.at,
    )
    return _Device(
        device_id=str(doc["_id"]),
        category=DeviceCategory(doc["category"]),
        make=doc["make"],
        model=doc["model"],
        weight_kg=float(doc["weight_kg"]),
        received_at=received_at,
        events=tuple(events),
    )


def _kg(values: Iterable[float]) -> float:
    return round(math.fsum(values), 3)


def compute(
    docs: Iterable[Mapping[str, Any]],
    *,
    partner_id: str,
    period: Period,
    factors: ImpactFactors,
    provisional: bool = False,
) -> ImpactReport:
    """The impact report of `partner_id` for `period`; documents of other partners are ignored."""
    devices = sorted(
        (
            device
            for doc in docs
            if doc.get("partner_id") == partner_id
            and (device := _device(doc, period.end_at)) is not None
        ),
        key=lambda d: d.device_id,
    )
    received = [d for d in devices if period.contains(d.received_at)]
    delivered = [(d, e) for d in devices if (e := d.first_in("device.delivered", period))]
    recycled = [(d, e) for d in devices if (e := d.first_in("device.recycled", period))]
    models, others = _models(received)
    stages = _stages(devices)
    return ImpactReport(
        partner_id=partner_id,
        period=period,
        as_of=period.end_at,
        provisional=provisional,
        received=_by_category(received),
        models=models,
        other_models_devices=others,
        delivered=_recipients(delivered, devices),
        recycled_fractions=_fractions(e for _, e in recycled),
        recyclers=_recyclers(e for _, e in recycled),
        in_process=[s for s in stages if s.stage in IN_PROCESS_STAGES],
        outcomes=[s for s in stages if s.stage not in IN_PROCESS_STAGES],
        co2e=_co2e([d for d, _ in delivered], factors),
        landfill=_landfill(delivered, recycled, factors),
        bucket=period.bucket,
        flow=_flow(period, received, delivered, recycled),
        factors=factors,
    )


def _by_category(devices: list[_Device]) -> list[CategoryCount]:
    groups: dict[DeviceCategory, list[_Device]] = defaultdict(list)
    for device in devices:
        groups[device.category].append(device)
    return [
        CategoryCount(
            category=category,
            devices=len(groups[category]),
            weight_kg=_kg(d.weight_kg for d in groups[category]),
        )
        for category in DeviceCategory
        if category in groups
    ]


def _models(devices: list[_Device]) -> tuple[list[ModelCount], int]:
    """The most frequent models (ties by name), and how many devices are of the others."""
    counts = Counter((d.category, d.make, d.model) for d in devices)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = [
        ModelCount(category=category, make=make, model=model, devices=n)
        for (category, make, model), n in ranked[:TOP_MODELS]
    ]
    return top, sum(n for _, n in ranked[TOP_MODELS:])


def _recipients(
    delivered: list[tuple[_Device, _Event]], devices: list[_Device]
) -> list[RecipientImpact]:
    names = _recipient_names(devices)
    rows: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for device, delivery in delivered:
        recipient = str(delivery.details.get("recipient_id") or "unknown recipient")
        row = rows[recipient]
        row["devices"] += 1
        usage = device.latest("device.usage_reported", recipient)
        if usage is not None:
            row["devices_with_usage_report"] += 1
            row["students"] += int(usage.details.get("students") or 0)
            row["classrooms"] += int(usage.details.get("classrooms") or 0)
    impacts = [
        RecipientImpact(
            recipient_id=recipient,
            name=names.get(recipient, recipient),
            devices=row["devices"],
            devices_with_usage_report=row["devices_with_usage_report"],
            students=row["students"],
            classrooms=row["classrooms"],
        )
        for recipient, row in rows.items()
    ]
    return sorted(impacts, key=lambda r: (-r.devices, r.name, r.recipient_id))


def _recipient_names(devices: list[_Device]) -> dict[str, str]:
    """Each recipient's name as given at its latest allocation before the period's end."""
    named = sorted(
        (e.at, str(e.details["recipient_id"]), str(e.details["recipient_name"]))
        for d in devices
        for e in d.events
        if e.type == "device.allocated"
        and e.details.get("recipient_id")
        and e.details.get("recipient_name")
    )
    return {recipient: name for _, recipient, name in named}


def _fraction_weights(event: _Event) -> dict[str, float]:
    fractions = event.details.get("fractions") or {}
    return {
        name.removesuffix("_kg"): float(kg)
        for name, kg in fractions.items()
        if isinstance(kg, int | float)
    }


def _fractions(events: Iterable[_Event]) -> list[FractionWeight]:
    weights: dict[str, list[float]] = defaultdict(list)
    for event in events:
        for name, kg in _fraction_weights(event).items():
            weights[name].append(kg)
    rows = [FractionWeight(fraction=name, kg=_kg(kgs)) for name, kgs in weights.items()]
    return sorted((r for r in rows if r.kg > 0), key=lambda r: (-r.kg, r.fraction))


def _recyclers(events: Iterable[_Event]) -> list[RecyclerImpact]:
    groups: dict[tuple[str, str], list[_Event]] = defaultdict(list)
    for event in events:
        key = (
            str(event.details.get("recycler") or "unknown recycler"),
            str(event.details.get("recycler_certification") or "not stated"),
        )
        groups[key].append(event)
    rows = [
        RecyclerImpact(
            recycler=recycler,
            certification=certification,
            devices=len(group),
            kg=_kg(kg for e in group for kg in _fraction_weights(e).values()),
        )
        for (recycler, certification), group in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r.devices, r.recycler, r.certification))


def _stages(devices: list[_Device]) -> list[StageCount]:
    """Devices by their furthest stage at the period's end, in the lifecycle's order."""
    counts = Counter(d.stage for d in devices)
    return [
        StageCount(stage=stage, devices=counts[stage])
        for stage in sorted(counts, key=lambda s: (RANK.get(s, 0), s))
    ]


def _co2e(reused: list[_Device], factors: ImpactFactors) -> Co2e:
    counts = Counter(d.category for d in reused)
    lines = []
    for category in DeviceCategory:
        if not counts[category]:
            continue
        factor = factors.co2e.get(category)
        lines.append(
            Co2eLine(
                category=category,
                reused_devices=counts[category],
                factor_kg_co2e=factor.kg_co2e if factor else None,
                source=factor.source if factor else NO_FACTOR,
                unit=factor.unit if factor else "kg CO2e",
                kg_co2e=round(counts[category] * factor.kg_co2e, 3) if factor else 0.0,
            )
        )
    return Co2e(lines=lines, total_kg=_kg(line.kg_co2e for line in lines))


def _landfill(
    delivered: list[tuple[_Device, _Event]],
    recycled: list[tuple[_Device, _Event]],
    factors: ImpactFactors,
) -> Landfill:
    method = factors.landfill
    recycled_ids = {d.device_id for d, _ in recycled}
    reused_kg = (
        _kg(d.weight_kg for d, _ in delivered if d.device_id not in recycled_ids)
        if method.count_reused_devices
        else 0.0
    )
    materials_kg = (
        _kg(kg for _, e in recycled for kg in _fraction_weights(e).values())
        if method.count_recycled_materials
        else 0.0
    )
    return Landfill(
        reused_devices_kg=reused_kg,
        recycled_materials_kg=materials_kg,
        total_kg=_kg((reused_kg, materials_kg)),
        source=method.source,
        unit=method.unit,
    )


def _flow(
    period: Period,
    received: list[_Device],
    delivered: list[tuple[_Device, _Event]],
    recycled: list[tuple[_Device, _Event]],
) -> list[FlowBucket]:
    slices = list(period.buckets())
    starts = [datetime.combine(s, time(), UTC) for s, _ in slices]

    def per_bucket(moments: Iterable[datetime]) -> Counter[int]:
        return Counter(_bucket_index(starts, m) for m in moments)

    received_n = per_bucket(d.received_at for d in received)
    delivered_n = per_bucket(e.at for _, e in delivered)
    recycled_n = per_bucket(e.at for _, e in recycled)
    return [
        FlowBucket(
            start=start,
            end=end,
            received=received_n[i],
            delivered=delivered_n[i],
            recycled=recycled_n[i],
        )
        for i, (start, end) in enumerate(slices)
    ]


def _bucket_index(starts: list[datetime], moment: datetime) -> int:
    """The last bucket starting at or before `moment` (which lies within the period)."""
    return bisect_right(starts, moment) - 1
