"""The workbench end to end: `python -m workbench run` and `upload` as a technician runs them,
against intake, diagnostics and custody started as processes, erasing two loop devices per
device. Online the device becomes ready with the workbench's evidence on its certificate; offline
everything waits on the stick, and uploading it twice applies it once."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import Role
from tests.helpers import create_key, eventually
from tests.workbench.loops import MIB, Loop, attached, loops_needed, make
from tools.cluster import free_port, project_root, running_cluster

pytestmark = [pytest.mark.integration, loops_needed]

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def urls(topics, base_env, namespace) -> Iterator[dict[str, str]]:
    log_dir = project_root() / ".local" / "test-logs" / namespace
    with running_cluster(base_env, log_dir, ["intake", "diagnostics", "custody"]) as cluster:
        yield cluster.urls


@pytest.fixture(scope="module")
async def keys(namespace) -> dict[str, str]:
    return {
        "donor": await create_key(namespace, Role.DONOR, "donor-wb"),
        "staff": await create_key(namespace, Role.STAFF, "staff-wb"),
        "workbench": await create_key(namespace, Role.WORKBENCH, "bench-7"),
    }


@pytest.fixture(scope="module")
def pickup(urls, keys) -> str:
    body = {
        "address": {"street": "Rue 1", "postal_code": "1040", "city": "Brussels", "country": "BE"},
        "contact": {"name": "Jo", "email": "it@acme.example"},
        "window": {
            "start": (NOW + timedelta(days=1)).isoformat(),
            "end": (NOW + timedelta(days=3)).isoformat(),
        },
        "expected": {"other": 2},
    }
    made = httpx.post(urls["intake"] + "/pickups", json=body, headers={"X-API-Key": keys["donor"]})
    assert made.status_code == 201, made.text
    pid: str = made.json()["pickup_id"]
    when = {"scheduled_for": (NOW + timedelta(days=2)).isoformat()}
    staff = {"X-API-Key": keys["staff"]}
    assert httpx.post(f"{urls['intake']}/pickups/{pid}/schedule", json=when, headers=staff)
    return pid


def scan(urls: dict[str, str], keys: dict[str, str], pickup: str, tag: str) -> dict[str, Any]:
    """The station scans the machine in (category other: no minimum specs to meet)."""
    body = {"asset_tag": tag, "category": "other", "make": "Firecracker", "model": "VM"}
    body |= {"weight_kg": 2.0, "location": "Warehouse Brussels"}
    response = httpx.post(
        f"{urls['intake']}/pickups/{pickup}/devices",
        json=body,
        headers={"X-API-Key": keys["staff"]},
    )
    assert response.status_code == 201, response.text
    device: dict[str, Any] = response.json()
    return device


def stick(tmp_path: Path, keys: dict[str, str]) -> Path:
    path = tmp_path / "stick"
    path.mkdir()
    (path / "workbench.key").write_text(keys["workbench"] + "\n")
    return path


def workbench(stick: Path, diagnostics: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "--stick",
            str(stick),
            "--diagnostics",
            diagnostics,
            "--location",
            "Bench 7, Brussels",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=project_root(),
        env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def run_args(tag: str, loops: list[Loop]) -> list[str]:
    drives = [a for loop in loops for a in ("--drive", loop.device)]
    return [
        "run",
        "--asset-tag",
        tag,
        *drives,
        "--casing",
        "light",
        "--scratches",
        "none",
        "--screen",
        "pass",
        "--keyboard",
        "pass",
        "--ports",
        "pass",
        "--memory-mb",
        "16",
        "--cpu-seconds",
        "0.5",
        "--no-self-test",
        "--yes",
    ]


def diagnostics_device(urls: dict[str, str], keys: dict[str, str], device_id: str) -> Any:
    response = httpx.get(
        f"{urls['diagnostics']}/devices/{device_id}", headers={"X-API-Key": keys["staff"]}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_device_processed_by_the_workbench_is_ready_with_its_evidence(
    urls, keys, pickup, tmp_path
):
    device = scan(urls, keys, pickup, "WB-ONLINE-1")
    path = stick(tmp_path, keys)
    with attached() as loops:
        disks = [make(loops, tmp_path, 8 * MIB), make(loops, tmp_path, 8 * MIB + 4096)]

        done = workbench(path, urls["diagnostics"], *run_args("WB-ONLINE-1", disks))

        assert done.returncode == 0, done.stdout + done.stderr
        assert all(d.contents() == bytes(len(d.contents())) for d in disks)
    assert "READY for reuse" in done.stdout
    assert keys["workbench"] not in done.stdout + done.stderr

    state = diagnostics_device(urls, keys, device["device_id"])
    assert state["state"] == "ready"
    assert state["report"]["tested_by"] == "bench-7"
    assert state["report"]["tests"]["screen"] == "pass"
    snapshot = state["report"]["snapshot"]
    assert snapshot["workbench"].startswith("greenit-workbench")
    assert [d["serial"] for d in snapshot["drives"]] == ["LOOP-disk0.img", "LOOP-disk1.img"]
    (machine,) = (path / "machines").iterdir()
    assert (
        snapshot["snapshot_sha256"]
        == hashlib.sha256((machine / "snapshot.json").read_bytes()).hexdigest()
    )
    logs = {
        e["drive_serial"]: hashlib.sha256(
            (machine / f"erasure-{e['drive_serial']}.log").read_bytes()
        ).hexdigest()
        for e in state["erasures"]
    }
    assert sorted(logs) == ["LOOP-disk0.img", "LOOP-disk1.img"]
    for record in state["erasures"]:
        assert (record["tool"], record["verified"], record["method"]) == (
            "greenit-workbench",
            True,
            "clear",
        )
        assert record["workbench"]["log_sha256"] == logs[record["drive_serial"]]
        assert record["workbench"]["bytes_written"] == record["workbench"]["bytes_verified"]

    staff = {"X-API-Key": keys["staff"]}
    certificate_url = f"{urls['custody']}/devices/{device['device_id']}/certificates/erasure"

    async def certified() -> dict[str, Any]:
        response = httpx.get(certificate_url, headers=staff)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    certificate = await eventually(certified)
    assert {e["drive_serial"]: e["workbench"]["log_sha256"] for e in certificate["erasures"]} == (
        logs
    )
    pdf = httpx.get(certificate_url, params={"format": "pdf"}, headers=staff)
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")


async def test_offline_the_stick_keeps_everything_and_two_uploads_apply_it_once(
    urls, keys, pickup, tmp_path
):
    device = scan(urls, keys, pickup, "WB-OFFLINE-1")
    path = stick(tmp_path, keys)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with attached() as loops:
        disks = [make(loops, tmp_path, 8 * MIB), make(loops, tmp_path, 8 * MIB)]

        offline = workbench(path, nowhere, *run_args("WB-OFFLINE-1", disks))

    assert offline.returncode == 3, offline.stdout + offline.stderr
    assert "3 post(s) stay queued on the stick" in offline.stdout
    queued = sorted(p.name for p in (path / "queue").glob("*.json"))
    assert [name.split("-")[1] for name in queued] == ["report", "erasure", "erasure"]
    copy = tmp_path / "queue-copy"
    shutil.copytree(path / "queue", copy)
    assert diagnostics_device(urls, keys, device["device_id"])["state"] == "received"

    first = workbench(path, urls["diagnostics"], "upload")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "sent 3 post(s)" in first.stdout
    assert "READY for reuse" in first.stdout
    after_first = diagnostics_device(urls, keys, device["device_id"])

    # The same posts again, as from a second copy of the stick: answered, applied once.
    for item in copy.glob("*.json"):
        shutil.copy(item, path / "queue" / item.name)
    second = workbench(path, urls["diagnostics"], "upload")

    assert second.returncode == 0, second.stdout + second.stderr
    assert "sent 3 post(s)" in second.stdout
    assert "refused" not in second.stdout
    after_second = diagnostics_device(urls, keys, device["device_id"])
    assert after_second == after_first
    assert len(after_second["erasures"]) == 2
    assert after_second["state"] == "ready"
    answers = [json.loads(p.read_text())["answer"] for p in (path / "queue" / "sent").iterdir()]
    assert {a["status"] for a in answers} == {201}

    nothing = workbench(path, urls["diagnostics"], "upload")
    assert "0 post(s) queued" in nothing.stdout


def test_a_workbench_key_may_not_register_or_read_elsewhere(urls, keys, pickup):
    bench = {"X-API-Key": keys["workbench"]}
    body = {"category": "other", "make": "X", "model": "Y", "weight_kg": 1.0, "location": "B"}

    scanned = httpx.post(f"{urls['intake']}/pickups/{pickup}/devices", json=body, headers=bench)
    refusals = httpx.get(f"{urls['diagnostics']}/refusals", headers=bench)

    assert scanned.status_code == 403
    assert refusals.status_code == 403
