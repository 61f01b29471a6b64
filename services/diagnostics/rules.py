"""Grading rules: stated, versioned and configurable (GREENIT_DIAGNOSTICS_RULES_FILE).

`assess` turns a test report into grades and the refurbish-or-recycle decision, and names
the rule(s) that decided it. Pure: no I/O besides `load_rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.diagnostics.domain import Assessment
from shared.events import Decision, DeviceCategory, Grade, HardwareSpecs, MinSpecs

Outcome = Literal["pass", "fail", "n/a"]
Component = Literal[
    "boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"
]
Wear = Literal["none", "light", "heavy"]

_CRITICAL: list[Component] = ["boot", "cpu", "memory"]
_MINOR: list[Component] = ["ports", "keyboard", "battery", "network"]


class TestResults(BaseModel):
    """One outcome per component test."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest test class

    boot: Outcome
    cpu: Outcome
    memory: Outcome
    storage: Outcome
    screen: Outcome
    keyboard: Outcome
    battery: Outcome
    ports: Outcome
    network: Outcome

    def failed(self) -> list[str]:
        return [name for name, outcome in self.model_dump().items() if outcome == "fail"]


class Cosmetic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    casing: Wear
    screen_scratches: Wear
    cracked: bool = False


def _default_min_specs() -> dict[DeviceCategory, MinSpecs]:
    computer = MinSpecs(cpu_cores=2, ram_gb=4, storage_gb=64)
    handheld = MinSpecs(ram_gb=2)
    return {
        DeviceCategory.LAPTOP: computer,
        DeviceCategory.DESKTOP: computer,
        DeviceCategory.TABLET: handheld,
        DeviceCategory.PHONE: handheld,
        DeviceCategory.MONITOR: MinSpecs(),
        DeviceCategory.OTHER: MinSpecs(),
    }


class GradingRules(BaseModel):
    """The rules in force; a JSON file may override any field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field("2026-11-default", min_length=1, max_length=100)
    critical_components: list[Component] = Field(
        default_factory=lambda: list(_CRITICAL),
        description="A failure of any of these makes the functional grade D.",
    )
    minor_components: list[Component] = Field(
        default_factory=lambda: list(_MINOR),
        description="Failures of only these make the functional grade C; any other failure D.",
    )
    screen_critical_categories: list[DeviceCategory] = Field(
        default_factory=lambda: [
            DeviceCategory.LAPTOP,
            DeviceCategory.TABLET,
            DeviceCategory.PHONE,
        ],
        description="A failed screen makes these D even if `screen` is listed as minor.",
    )
    battery_grade_a_pct: int = Field(80, ge=0, le=100)
    battery_grade_b_pct: int = Field(50, ge=0, le=100)
    min_specs: dict[DeviceCategory, MinSpecs] = Field(default_factory=_default_min_specs)


def load_rules(path: Path | None) -> GradingRules:
    if path is None:
        return GradingRules()
    return GradingRules.model_validate_json(path.read_text())


_REUSABLE = (Grade.A, Grade.B, Grade.C)


def functional_grade(
    rules: GradingRules, category: DeviceCategory, specs: HardwareSpecs, tests: TestResults
) -> tuple[Grade, str]:
    failed = tests.failed()
    critical = [c for c in failed if c in rules.critical_components]
    if critical:
        return Grade.D, f"functional grade D: {_failed(critical)}"
    if "screen" in failed and category in rules.screen_critical_categories:
        return Grade.D, f"functional grade D: screen failed on a {category.value}"
    major = [c for c in failed if c not in rules.minor_components]
    if major:
        return Grade.D, f"functional grade D: {_failed(major)}"
    battery = specs.battery_health_pct if tests.battery != "n/a" else None
    if failed:
        return Grade.C, f"functional grade C: {_failed(failed)}"
    if battery is None or battery >= rules.battery_grade_a_pct:
        return Grade.A, "functional grade A"
    if battery >= rules.battery_grade_b_pct:
        return Grade.B, (
            f"functional grade B: battery health {battery}% < {rules.battery_grade_a_pct}%"
        )
    return Grade.C, f"functional grade C: battery health {battery}% < {rules.battery_grade_b_pct}%"


def cosmetic_grade(cosmetic: Cosmetic) -> tuple[Grade, str]:
    if cosmetic.cracked:
        return Grade.D, "cosmetic grade D: cracked"
    wear = (cosmetic.casing, cosmetic.screen_scratches)
    if "heavy" in wear:
        return Grade.C, "cosmetic grade C: heavy wear"
    if "light" in wear:
        return Grade.B, "cosmetic grade B: light wear"
    return Grade.A, "cosmetic grade A"


def below_minimum(rules: GradingRules, category: DeviceCategory, specs: HardwareSpecs) -> list[str]:
    """What keeps the device under its category's minimum specs for reuse (empty: meets them)."""
    minimum = rules.min_specs.get(category, MinSpecs())
    where = f"below {category.value} minimum"
    shortfalls: list[str] = []
    if minimum.cpu_cores is not None and (specs.cpu_cores or 0) < minimum.cpu_cores:
        have = "unknown" if specs.cpu_cores is None else str(specs.cpu_cores)
        shortfalls.append(f"{where}: {have} CPU cores < {minimum.cpu_cores}")
    if minimum.ram_gb is not None and (specs.ram_gb or 0) < minimum.ram_gb:
        have = "unknown" if specs.ram_gb is None else f"{specs.ram_gb:g} GB"
        shortfalls.append(f"{where}: {have} RAM < {minimum.ram_gb:g} GB")
    if minimum.storage_gb is not None and specs.storage_gb < minimum.storage_gb:
        shortfalls.append(f"{where}: {specs.storage_gb} GB storage < {minimum.storage_gb} GB")
    battery = specs.battery_health_pct
    if (
        minimum.battery_health_pct is not None
        and battery is not None
        and battery < minimum.battery_health_pct
    ):
        shortfalls.append(f"{where}: battery {battery}% < {minimum.battery_health_pct}%")
    return shortfalls


def assess(
    rules: GradingRules,
    category: DeviceCategory,
    specs: HardwareSpecs,
    tests: TestResults,
    cosmetic: Cosmetic,
) -> Assessment:
    """Grade a report and decide: refurbish if both grades are A-C and minimums are met."""
    functional, functional_reason = functional_grade(rules, category, specs, tests)
    looks, cosmetic_reason = cosmetic_grade(cosmetic)
    shortfalls = below_minimum(rules, category, specs)
    against = [
        *([functional_reason] if functional not in _REUSABLE else []),
        *([cosmetic_reason] if looks not in _REUSABLE else []),
        *shortfalls,
    ]
    if against:
        decision, reason = Decision.RECYCLE, "; ".join(against)
    else:
        decision = Decision.REFURBISH
        reason = f"{functional_reason}; {cosmetic_reason}; meets {category.value} minimums"
    return Assessment(
        functional_grade=functional,
        cosmetic_grade=looks,
        decision=decision,
        reason=reason,
        rules_version=rules.version,
    )


def _failed(components: Sequence[str]) -> str:
    return ", ".join(f"{c} failed" for c in components)
