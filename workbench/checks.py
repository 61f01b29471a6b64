"""The tests diagnostics grades, run on the machine itself, each with its raw output kept.

Diagnostics takes nine outcomes (`pass`, `fail`, `n/a`): boot, cpu, memory, storage, screen,
keyboard, battery, ports, network. The workbench measures five of them (cpu: a short load check
on every core; memory: a bounded pattern test; storage: SMART health and a short self-test;
battery: wear against its design capacity; network: an interface present) and boot passes by
the workbench running at all. Screen, keyboard and ports need a person: the technician's
answers are taken as given, `n/a` when not given.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import multiprocessing
import os
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench import probe
from workbench.snapshot import Snapshot

Outcome = Literal["pass", "fail", "n/a"]
COMPONENTS = (
    "boot",
    "cpu",
    "memory",
    "storage",
    "screen",
    "keyboard",
    "battery",
    "ports",
    "network",
)
RESULTS_VERSION = "1.0"
REALLOCATED_LIMIT = 100  # more remapped sectors than this: the surface is failing


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    summary: str
    tool: str
    seconds: float = 0.0
    raw: str = Field("", description="The tool's own output, kept as evidence")


class TestRun(BaseModel):
    """Every check of one machine; `results` is what diagnostics takes as `tests`."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False

    schema_version: str = RESULTS_VERSION
    started_at: datetime
    ended_at: datetime
    checks: dict[str, Check]

    @property
    def results(self) -> dict[str, Outcome]:
        return {name: self.checks[name].outcome for name in COMPONENTS}


def _work(seed: int, seconds: float) -> tuple[str, int]:
    """SHA-256 chained for `seconds`: a deterministic result a faulty core would get wrong."""
    digest = seed.to_bytes(8, "big")
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(2000):
            digest = hashlib.sha256(digest).digest()
        rounds += 2000
    return digest.hex(), rounds


def _replay(seed: int, rounds: int) -> str:
    digest = seed.to_bytes(8, "big")
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def cpu_check(seconds: float = 5.0, workers: int | None = None) -> Check:
    """Load every core for `seconds`; each worker's chained hash is checked by replaying a
    share of it, so a core that computes wrong (or a worker that dies) fails the check."""
    count = workers or os.cpu_count() or 1
    began = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(count) as pool:
        results = pool.starmap(_work, [(seed, seconds) for seed in range(count)])
    lines = [f"{count} workers x {seconds} s of chained SHA-256"]
    ok = True
    for seed, (digest, rounds) in enumerate(results):
        lines.append(f"worker {seed}: {rounds} rounds ({rounds / seconds:,.0f}/s) -> {digest}")
        if seed == 0 and _replay(seed, rounds) != digest:
            ok = False
            lines.append(f"worker {seed}: replay disagrees")
    return Check(
        outcome="pass" if ok and len(results) == count else "fail",
        summary=f"{count} cores loaded {seconds:g} s" + ("" if ok else ": wrong results"),
        tool="workbench cpu load",
        seconds=round(time.monotonic() - began, 2),
        raw="\n".join(lines),
    )


def memory_check(megabytes: int = 256) -> Check:
    """A bounded memory test: memtester when installed, else the workbench's own walking
    patterns over `megabytes` of anonymous memory."""
    began = time.monotonic()
    if probe.have("memtester"):
        out = probe.run("memtester", f"{megabytes}M", "1", timeout=3600)
        return Check(
            outcome="pass" if out.returncode == 0 else "fail",
            summary=f"memtester {megabytes} MiB, 1 loop: exit {out.returncode}",
            tool=probe.version("memtester"),
            seconds=round(time.monotonic() - began, 2),
            raw=out.stdout + out.stderr,
        )
    size = megabytes * 2**20
    area = mmap.mmap(-1, size)
    lines = [f"own pattern test over {megabytes} MiB (memtester not installed: Debian memtester)"]
    failures = 0
    for pattern in (0x00, 0xFF, 0x55, 0xAA):
        block = bytes([pattern]) * 2**20
        for offset in range(0, size, 2**20):
            area[offset : offset + 2**20] = block
        bad = sum(area[o : o + 2**20] != block for o in range(0, size, 2**20))
        failures += bad
        lines.append(f"pattern 0x{pattern:02X}: {bad} bad MiB")
    for offset in range(0, size, 2**20):  # each MiB holds its own address: catches aliasing
        area[offset : offset + 2**20] = offset.to_bytes(8, "big") * (2**20 // 8)
    bad = sum(
        area[o : o + 2**20] != o.to_bytes(8, "big") * (2**20 // 8) for o in range(0, size, 2**20)
    )
    failures += bad
    lines.append(f"address pattern: {bad} bad MiB")
    area.close()
    return Check(
        outcome="pass" if failures == 0 else "fail",
        summary=f"{megabytes} MiB, 5 patterns: {failures} bad MiB",
        tool="workbench memory patterns",
        seconds=round(time.monotonic() - began, 2),
        raw="\n".join(lines),
    )


def storage_check(snap: Snapshot, *, self_test: bool = True, wait_seconds: float = 300) -> Check:
    """SMART health of every drive, and a short self-test where SMART answers."""
    began = time.monotonic()
    drives = [d for d in snap.drives if d.kind != "other" and not d.removable]
    if not drives:
        return Check(outcome="n/a", summary="no internal drive", tool="smartctl")
    if not probe.have("smartctl"):
        return Check(
            outcome="n/a",
            summary="smartctl is not installed (Debian package: smartmontools)",
            tool="smartctl",
        )
    lines: list[str] = []
    verdicts: list[bool] = []
    for drive in drives:
        if drive.smart_passed is None:
            lines.append(f"{drive.path}: no SMART")
            continue
        worn = (drive.reallocated_sectors or 0) > REALLOCATED_LIMIT or (drive.media_errors or 0) > 0
        verdicts.append(drive.smart_passed and not worn)
        if self_test:
            passed, raw = _short_self_test(drive.path, wait_seconds)
            lines.append(raw)
            if passed is not None:
                verdicts.append(passed)
        lines.append(f"{drive.path}: health {'passed' if drive.smart_passed else 'FAILED'}")
    outcome: Outcome = "n/a" if not verdicts else ("pass" if all(verdicts) else "fail")
    return Check(
        outcome=outcome,
        summary=f"{len(drives)} drive(s): " + ("no SMART" if not verdicts else outcome),
        tool=probe.version("smartctl"),
        seconds=round(time.monotonic() - began, 2),
        raw="\n".join(lines),
    )


def _short_self_test(path: str, wait_seconds: float) -> tuple[bool | None, str]:
    start = probe.run("smartctl", "--json", "-t", "short", path)
    raw = [start.stdout]
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        time.sleep(10)  # the drive runs the test itself; smartctl can only be asked again
        out = probe.run("smartctl", "--json", "-c", "-l", "selftest", path)
        data = json.loads(out.stdout or "{}")
        status = ((data.get("ata_smart_data") or {}).get("self_test") or {}).get("status") or {}
        nvme_log = data.get("nvme_self_test_log") or {}
        running = status.get("value", 0) >> 4 == 0xF or "current_self_test_operation" in nvme_log
        if not running:
            raw.append(out.stdout)
            table = ((data.get("ata_smart_self_test_log") or {}).get("standard") or {}).get(
                "table"
            ) or nvme_log.get("table")
            if table:
                first = table[0]
                result = first.get("status", first.get("self_test_result", {}))
                return bool(result.get("passed", result.get("value", 1) == 0)), "\n".join(raw)
            return None, "\n".join(raw)
    return False, "\n".join([*raw, f"self-test still running after {wait_seconds} s"])


def battery_check(snap: Snapshot, min_health_pct: int = 50) -> Check:
    if not snap.batteries:
        return Check(outcome="n/a", summary="no battery", tool="sysfs power_supply")
    lines = [
        f"{b.name}: design {b.design_capacity} {b.capacity_unit}, full {b.full_capacity} "
        f"{b.capacity_unit}, wear {b.wear_pct}%, cycles {b.cycle_count}"
        for b in snap.batteries
    ]
    healths = [b.health_pct for b in snap.batteries if b.health_pct is not None]
    if not healths:
        return Check(
            outcome="n/a",
            summary="capacity unknown",
            tool="sysfs power_supply",
            raw="\n".join(lines),
        )
    worst = min(healths)
    return Check(
        outcome="pass" if worst >= min_health_pct else "fail",
        summary=f"health {worst}% of design (needs {min_health_pct}%)",
        tool="sysfs power_supply",
        raw="\n".join(lines),
    )


def run_checks(
    snap: Snapshot,
    *,
    memory_mb: int = 256,
    cpu_seconds: float = 5.0,
    smart_self_test: bool = True,
    operator: dict[str, Outcome] | None = None,
) -> TestRun:
    started = datetime.now(UTC)
    given = operator or {}
    checks = {
        "boot": Check(outcome="pass", summary="booted the workbench", tool="workbench"),
        "cpu": cpu_check(cpu_seconds),
        "memory": memory_check(memory_mb),
        "storage": storage_check(snap, self_test=smart_self_test),
        "battery": battery_check(snap),
        "network": Check(
            outcome="pass" if snap.network else "n/a",
            summary=", ".join(f"{n.name} {n.mac}" for n in snap.network) or "no interface",
            tool="sysfs net",
        ),
    }
    for name in ("screen", "keyboard", "ports"):
        outcome = given.get(name, "n/a")
        checks[name] = Check(
            outcome=outcome,
            summary="technician's answer" if name in given else "not checked",
            tool="technician",
        )
    return TestRun(started_at=started, ended_at=datetime.now(UTC), checks=checks)
