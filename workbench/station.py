"""The station flow: identify, snapshot, test, erase, post, tell the outcome.

The posts are the services' public contracts: diagnostics' test report
(`POST /devices/{id}/reports`) and erasure record (`POST /devices/{id}/erasures`), v1.2 with
the workbench's snapshot and evidence; intake's scan (`POST /pickups/{id}/devices`) to register
an unknown device. Nothing here imports the services.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from workbench.checks import TestRun
from workbench.erase import Evidence
from workbench.outbox import Queue, Services, Unreachable, upload
from workbench.snapshot import DriveInfo, Snapshot

REPORT_PATH = "/devices/{device_id}/reports"
ERASURE_PATH = "/devices/{device_id}/erasures"


def drive_serial(drive: DriveInfo) -> str:
    """The serial the report and the erasure both name a drive by."""
    return drive.serial or f"{drive.model or 'drive'}-{drive.name}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def report_body(
    snap: Snapshot,
    tests: TestRun,
    *,
    drives: list[DriveInfo],
    cosmetic: dict[str, Any],
    location: str,
    snapshot_sha256: str,
    tests_sha256: str,
    report_id: UUID,
) -> dict[str, Any]:
    healths = [b.health_pct for b in snap.batteries if b.health_pct is not None]
    return {
        "report_id": str(report_id),
        "specs": {
            "cpu_model": snap.cpu.model,
            "cpu_cores": snap.cpu.cores,
            "ram_gb": snap.ram_gb,
            "drives": [
                {
                    "serial": drive_serial(d),
                    "kind": d.kind,
                    "capacity_gb": max(1, round(d.size_bytes / 1e9)),
                }
                for d in drives
            ],
            "battery_health_pct": min(healths) if healths else None,
        },
        "tests": tests.results,
        "cosmetic": cosmetic,
        "location": location,
        "tested_at": tests.ended_at.isoformat(),
        "snapshot": {
            "schema_version": snap.schema_version,
            "snapshot_id": str(snap.snapshot_id),
            "workbench": snap.workbench,
            "manufacturer": snap.manufacturer,
            "model": snap.model,
            "serial": snap.serial,
            "chassis_type": snap.chassis_type,
            "drives": [
                {
                    "serial": drive_serial(d),
                    "model": d.model,
                    "kind": d.kind,
                    "transport": d.transport,
                    "size_bytes": d.size_bytes,
                    "smart_passed": d.smart_passed,
                    "power_on_hours": d.power_on_hours,
                    "reallocated_sectors": d.reallocated_sectors,
                    "media_errors": d.media_errors,
                }
                for d in drives
            ],
            "batteries": [
                {
                    "design_capacity": b.design_capacity,
                    "full_capacity": b.full_capacity,
                    "capacity_unit": b.capacity_unit,
                    "wear_pct": b.wear_pct,
                    "cycle_count": b.cycle_count,
                }
                for b in snap.batteries
            ],
            "network_macs": [n.mac.lower() for n in snap.network][:16],
            "unread": [f"{u.field}: {u.reason}"[:200] for u in snap.unread][:64],
            "snapshot_sha256": snapshot_sha256,
            "tests_sha256": tests_sha256,
        },
    }


def erasure_body(evidence: Evidence, *, location: str) -> dict[str, Any]:
    verification = evidence.verification
    if evidence.verification_sample_rate < 1:
        verification += f", sample rate {evidence.verification_sample_rate:g}"
    return {
        "erasure_id": str(uuid4()),
        "drive_serial": evidence.serial,
        "method": evidence.method,
        "technique": evidence.technique[:200],
        "tool": evidence.tool,
        "tool_version": evidence.tool_version,
        "verified": evidence.verified,
        "verification": verification[:200],
        "performed_at": evidence.ended_at.isoformat(),
        "location": location,
        "workbench": {
            "evidence_version": evidence.schema_version,
            "log_sha256": evidence.log_sha256,
            "started_at": evidence.started_at.isoformat(),
            "ended_at": evidence.ended_at.isoformat(),
            "bytes_written": evidence.bytes_written,
            "passes": evidence.passes,
            "bytes_verified": evidence.bytes_verified,
            "verification_sample_rate": evidence.verification_sample_rate,
            "unreadable_sectors": evidence.unreadable_sectors,
            "drive_model": evidence.model,
            "drive_size_bytes": evidence.size_bytes,
        },
    }


def enqueue(
    queue: Queue,
    *,
    device_id: str | None,
    identify: dict[str, str | None],
    report: dict[str, Any],
    erasures: list[dict[str, Any]],
) -> None:
    base = {"device_id": device_id, "identify": identify}
    queue.put("report", UUID(report["report_id"]), base | {"path": REPORT_PATH, "body": report})
    for body in erasures:
        queue.put("erasure", UUID(body["erasure_id"]), base | {"path": ERASURE_PATH, "body": body})


def identify(
    services: Services, *, asset_tag: str | None, serial: str | None
) -> dict[str, Any] | None:
    return services.find_device(asset_tag=asset_tag, serial=serial)


def register(
    services: Services,
    *,
    pickup_id: str,
    snap: Snapshot,
    asset_tag: str | None,
    weight_kg: float,
    location: str,
    wait_seconds: float = 60,
) -> dict[str, Any]:
    """Scan the machine into intake under a pickup, then wait until diagnostics knows it."""
    body = {
        "asset_tag": asset_tag,
        "serial_number": snap.serial,
        "category": snap.category,
        "make": snap.manufacturer or "unknown",
        "model": snap.model or "unknown",
        "weight_kg": weight_kg,
        "location": location,
    }
    response = services.request(
        "intake", "POST", f"/pickups/{pickup_id}/devices", json={k: v for k, v in body.items() if v}
    )
    if response.status_code == 403:
        raise SystemExit(
            "this key may not register devices (a workbench key posts reports and erasures only):"
            " scan the device in at the station, or use a staff key"
        )
    if not response.is_success:
        raise SystemExit(f"intake refused the scan: {response.status_code} {response.text[:300]}")
    scanned: dict[str, Any] = response.json()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:  # diagnostics learns the device from intake's event
        found = services.request("diagnostics", "GET", f"/devices/{scanned['device_id']}")
        if found.status_code == 200:
            known: dict[str, Any] = found.json()
            return known
        time.sleep(0.5)
    raise SystemExit(
        f"diagnostics did not learn device {scanned['device_id']} within {wait_seconds} s"
    )


def outcome(services: Services, device_id: str) -> str:
    try:
        response = services.request("diagnostics", "GET", f"/devices/{device_id}")
    except Unreachable as exc:
        return f"outcome unknown: {exc}"
    if response.status_code != 200:
        return f"outcome unknown: diagnostics answered {response.status_code}"
    device = response.json()
    state = device["state"]
    if state == "ready":
        return f"READY for reuse: grade {device['functional_grade']}/{device['cosmetic_grade']}"
    if state == "awaiting_recycling":
        return f"RECYCLE: {device['reason']}"
    if state == "diagnosed":
        return (
            f"decided {device['decision']} ({device['reason']}), but drive(s) "
            f"{', '.join(device['drives_pending'])} have no verified erasure yet"
        )
    return f"state {state}"


def send(queue: Queue, services: Services) -> list[str]:
    """Upload the queue and say what happened, line by line."""
    result = upload(queue, services)
    lines = [f"sent {len(result.sent)} post(s)"]
    lines += [f"refused: {r}" for r in result.refused]
    if result.offline:
        lines.append(
            f"offline ({result.offline}): {result.left} post(s) stay queued on the stick; "
            "run `workbench upload` when the network is back"
        )
    for device_id in sorted(result.device_ids or ()):
        lines.append(f"device {device_id}: {outcome(services, device_id)}")
    return lines


def now() -> datetime:
    return datetime.now(UTC)
