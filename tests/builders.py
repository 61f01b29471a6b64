"""Request bodies and events the tests build again and again, written once: a test names only
what matters to it (`pickup_body(expected={"laptop": 4})`, `scan_body(asset_tag="A-1")`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from shared.events import (
    Decision,
    DeviceDiagnosed,
    DeviceWiped,
    ErasureRecord,
    Grade,
    HardwareSpecs,
    SanitizationMethod,
)

NOW = datetime.now(UTC)
"""The tests' "now": pickup windows and schedules are set from it."""

OPERATOR = "staff-lena"
"""Who tested and wiped the devices of the events built here."""


def pickup_body(expected: dict[str, int] | None = None, **overrides: Any) -> dict[str, Any]:
    """`POST /pickups`: a donor's pickup in Brussels, tomorrow to in three days."""
    return {
        "address": {
            "street": "Rue de la Loi 42",
            "postal_code": "1040",
            "city": "Brussels",
            "country": "BE",
        },
        "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
        "window": {
            "start": (NOW + timedelta(days=1)).isoformat(),
            "end": (NOW + timedelta(days=3)).isoformat(),
        },
        "expected": expected if expected is not None else {"laptop": 2, "monitor": 1},
        **overrides,
    }


def schedule_body(days: float = 2) -> dict[str, str]:
    """`POST /pickups/{id}/schedule`: in `days` days (inside pickup_body's window)."""
    return {"scheduled_for": (NOW + timedelta(days=days)).isoformat()}


def scan_body(**fields: Any) -> dict[str, Any]:
    """`POST /pickups/{id}/devices`: a laptop scanned in at the warehouse; `fields` add its
    asset tag or serial and change the rest."""
    return {
        "category": "laptop",
        "make": "HP",
        "model": "EliteBook 840 G5",
        "weight_kg": 1.5,
        "location": "Warehouse Brussels",
        **fields,
    }


def request_body(**overrides: Any) -> dict[str, Any]:
    """`POST /requests`: a school's request for two laptops with 8 GB of RAM."""
    return {
        "quantity": 2,
        "category": "laptop",
        "min_specs": {"ram_gb": 8},
        "purpose": "Classroom for newly arrived pupils",
        **overrides,
    }


def diagnosed(device_id: UUID, pickup_id: UUID, at: datetime) -> DeviceDiagnosed:
    """Diagnostics' `device.diagnosed`: graded B/A, to be refurbished."""
    return DeviceDiagnosed(
        event_id=uuid4(),
        occurred_at=at,
        producer="diagnostics",
        correlation_id=pickup_id,
        device_id=device_id,
        report_id=uuid4(),
        specs=HardwareSpecs(),
        cosmetic_grade=Grade.B,
        functional_grade=Grade.A,
        decision=Decision.REFURBISH,
        reason="all tests passed",
        rules_version="2026.1",
        tested_by=OPERATOR,
        location="Warehouse Brussels",
    )


def wiped(
    device_id: UUID, pickup_id: UUID, at: datetime, certificate_id: UUID | None = None
) -> DeviceWiped:
    """Diagnostics' `device.wiped`: its one drive purged and verified."""
    return DeviceWiped(
        event_id=uuid4(),
        occurred_at=at,
        producer="diagnostics",
        correlation_id=pickup_id,
        device_id=device_id,
        certificate_id=certificate_id or uuid4(),
        erasures=[
            ErasureRecord(
                drive_serial="DRV-1",
                method=SanitizationMethod.PURGE,
                technique="crypto erase",
                tool="nwipe",
                tool_version="0.37",
                verified=True,
                verification="full read-back",
                operator=OPERATOR,
                performed_at=at,
                location="Warehouse Brussels",
            )
        ],
    )
