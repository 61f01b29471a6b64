"""The asset-list import and scanning codes off it, with intake as a real process and the CLI
as a subprocess."""

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from shared.auth import Role
from tests.builders import pickup_body, schedule_body
from tests.helpers import TopicReader, published
from tools.cluster import project_root

pytestmark = pytest.mark.integration

DONOR_A, DONOR_B, STAFF = "acme", "globex", "staff-lena"
NOW = datetime.now(UTC)
ROWS = 1200
MAKES = ("HP", "Dell", "Lenovo")
CATEGORIES = ("laptop", "desktop", "monitor")
# line in the file -> (cells that break the row, the field intake names)
BAD_LINES: dict[int, tuple[dict[str, str], str]] = {
    12: ({"weight_kg": "-2"}, "weight_kg"),
    502: ({"category": "toaster"}, "category"),
    1102: ({"asset_tag": "", "serial_number": ""}, "asset_tag"),
}
MAX_ROWS = 1500  # intake's limit of rows per pickup in this module
COLUMNS = ("asset_tag", "serial_number", "category", "make", "model", "weight_kg")
HEADER = ("Asset Tag", "Serial Number", *COLUMNS[2:])


def asset_row(line: int) -> dict[str, str]:
    """The device on a line of the donor's file (lines start at 2, after the header)."""
    n = line - 2
    return {
        "asset_tag": f"ACME-{n:05d}",
        "serial_number": f"SN{n:06d}X",
        "category": CATEGORIES[n % 3],
        "make": MAKES[n % 3],
        "model": f"Model {n % 7}",
        "weight_kg": f"{1 + n % 30 / 10:.1f}",
    }


def write_csv(path: Path, rows: dict[int, dict[str, str]]) -> None:
    """The file as a spreadsheet might save it: a byte-order mark, a header with spaces."""
    lines = ["\ufeff" + ", ".join(HEADER)]
    lines += [",".join(rows[line][column] for column in COLUMNS) for line in sorted(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def donor_file(changes: dict[int, dict[str, str]] | None = None) -> dict[int, dict[str, str]]:
    rows = {line: asset_row(line) for line in range(2, ROWS + 2)}
    for line, (cells, _) in BAD_LINES.items():
        rows[line] |= cells
    for line, cells in (changes or {}).items():
        rows[line] |= cells
    return rows


@pytest.fixture(scope="module")
def log_dir(namespace) -> Path:
    return project_root() / ".local" / "test-logs" / namespace


CLUSTER = ["intake"]
PARTNERS = {DONOR_A: Role.DONOR, DONOR_B: Role.DONOR, STAFF: Role.STAFF}


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    return {
        "GREENIT_INTAKE_MANIFEST_MAX_ROWS": str(MAX_ROWS),
        "GREENIT_SLOW_STORE_COMMAND_MS": "0.001",  # every store command is logged, with its shape
    }


@pytest.fixture(scope="module")
def intake_url(cluster) -> str:
    return cluster.urls["intake"]


async def whole_manifest(http, who: str, pid: str, limit: int = 500) -> dict[str, Any]:
    """Every page of the pickup's manifest, followed cursor by cursor."""
    params: dict[str, Any] = {"limit": limit}
    rows: list[dict[str, Any]] = []
    while True:
        page = await http(who, "GET", f"/pickups/{pid}/manifest", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["rows"]) <= limit
        rows += body["rows"]
        if body["next_cursor"] is None:
            return body | {"rows": rows}
        params["cursor"] = body["next_cursor"]


@pytest.fixture(scope="module")
def run_cli(intake_url, keys, base_env) -> Callable[..., Any]:
    async def run(path: Path, pickup_id: str, *extra: str, key: str | None = None):
        command = [sys.executable, "-m", "tools.import_assets", str(path), "--pickup", pickup_id]
        command += ["--url", intake_url, *extra]
        env = dict(base_env) | {"GREENIT_API_KEY": keys[DONOR_A] if key is None else key}
        return await asyncio.to_thread(
            subprocess.run,
            command,
            env=env,
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run


async def open_pickup(http, donor: str = DONOR_A) -> str:
    body = pickup_body(expected={"laptop": 400, "desktop": 400, "monitor": 400})
    created = await http(donor, "POST", "/pickups", json=body)
    assert created.status_code == 201, created.text
    pid = created.json()["pickup_id"]
    scheduled = await http(STAFF, "POST", f"/pickups/{pid}/schedule", json=schedule_body())
    assert scheduled.status_code == 200, scheduled.text
    return str(pid)


def summary_of(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
async def imported(http, run_cli, tmp_path_factory) -> dict[str, Any]:
    """Donor A's 1,200-line file with three bad lines, imported twice with the CLI."""
    pid = await open_pickup(http)
    path = tmp_path_factory.mktemp("assets") / "acme-assets.csv"
    write_csv(path, donor_file())
    first = await run_cli(path, pid, "--chunk", "500")
    again = await run_cli(path, pid)
    return {"pickup_id": pid, "path": path, "first": first, "again": again}


async def test_an_import_stores_every_valid_row_and_reports_bad_lines_with_their_field(
    imported, http
):
    first = imported["first"]
    good = ROWS - len(BAD_LINES)
    assert first.returncode == 1, first.stderr
    assert summary_of(first.stdout) == f"created {good}, updated 0, unchanged 0, errors 3"
    errors = [line for line in first.stdout.splitlines() if line.startswith("line ")]
    assert [e.split(":")[0] for e in errors] == [f"line {n}" for n in sorted(BAD_LINES)]
    for error, (line, (_, field)) in zip(errors, sorted(BAD_LINES.items()), strict=True):
        assert error.startswith(f"line {line}: {field}: "), error
    assert "greater than 0" in errors[0]

    manifest = await whole_manifest(http, DONOR_A, imported["pickup_id"])
    assert (manifest["rows_total"], manifest["rows_scanned"]) == (good, 0)
    expected = {line: asset_row(line) for line in range(2, ROWS + 2) if line not in BAD_LINES}
    assert [r["row"] for r in manifest["rows"]] == sorted(expected)
    sample = manifest["rows"][100]
    source = expected[sample["row"]]
    assert sample["asset_tag"] == source["asset_tag"]
    assert sample["make"] == source["make"]
    assert sample["weight_kg"] == float(source["weight_kg"])


async def test_importing_the_same_file_again_changes_and_duplicates_nothing(imported, http):
    again = imported["again"]
    good = ROWS - len(BAD_LINES)
    assert summary_of(again.stdout) == f"created 0, updated 0, unchanged {good}, errors 3"
    manifest = await whole_manifest(http, STAFF, imported["pickup_id"])
    assert manifest["rows_total"] == good
    assert len({r["asset_tag"] for r in manifest["rows"]}) == good


async def test_changed_rows_are_updated_and_a_fixed_one_created(imported, run_cli, tmp_path):
    changed = {line: {"model": "EliteBook 850"} for line in range(40, 190)}
    path = tmp_path / "fixed.csv"
    write_csv(path, donor_file(changed | {12: {"weight_kg": "2.5"}}))
    result = await run_cli(path, imported["pickup_id"], "--chunk", "1000")
    unchanged = ROWS - len(BAD_LINES) - len(changed)
    assert summary_of(result.stdout) == (
        f"created 1, updated {len(changed)}, unchanged {unchanged}, errors 2"
    ), result.stderr


async def test_another_donor_can_neither_read_nor_write_the_list(imported, http, run_cli, keys):
    pid = imported["pickup_id"]
    assert (await http(DONOR_B, "GET", f"/pickups/{pid}/manifest")).status_code == 404
    row = {"row": 2, **asset_row(9999)}
    written = await http(DONOR_B, "POST", f"/pickups/{pid}/manifest", json={"rows": [row]})
    assert written.status_code == 404
    result = await run_cli(imported["path"], pid, key=keys[DONOR_B])
    assert result.returncode == 2
    assert "404" in result.stderr
    scan = await http(
        DONOR_A, "POST", f"/pickups/{pid}/scan-code", json={"code": "x", "location": "y"}
    )
    assert scan.status_code == 403


async def test_scanning_a_listed_tag_registers_the_device_once_as_a_manual_scan_would(
    imported, http, namespace
):
    pid = imported["pickup_id"]
    line = 7
    source = asset_row(line)
    body = {"code": f"  {source['asset_tag']} ", "location": "Warehouse Brussels"}
    first = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
    assert first.status_code == 201, first.text
    device = first.json()
    assert (device["asset_tag"], device["serial_number"]) == (
        source["asset_tag"],
        source["serial_number"],
    )
    assert (device["make"], device["model"], device["category"]) == (
        source["make"],
        source["model"],
        source["category"],
    )
    assert device["weight_kg"] == float(source["weight_kg"])
    assert device["asset_tag_generated"] is False
    assert (device["manifest_row"], device["manifest_scanned"]) == (line, 1)

    again = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["device_id"] == device["device_id"]
    assert again.json()["manifest_scanned"] == 1

    other = asset_row(8)
    by_serial = {"code": other["serial_number"].lower(), "location": "Warehouse Brussels"}
    second = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=by_serial)
    assert second.status_code == 201, second.text
    assert second.json()["asset_tag"] == other["asset_tag"]
    assert second.json()["manifest_scanned"] == 2

    ids = {device["device_id"], second.json()["device_id"]}
    async with TopicReader(namespace, "device.received") as reader:
        await reader.wait_for(lambda evs: ids <= {str(e.subject_id) for e in evs})
        # intake's outbox is empty: all it will publish is on the topic; read it to the end
        await published(namespace, "intake")
        await reader.read_to_end()
    received = {e.event_id: e for e in reader.events if str(e.subject_id) == device["device_id"]}
    assert len(received) == 1, "a repeated scan announces nothing"
    [event] = received.values()
    assert (event.make, event.model, event.weight_kg) == (
        source["make"],
        source["model"],
        float(source["weight_kg"]),
    )
    assert event.correlation_id == UUID(pid)
    assert event.location == "Warehouse Brussels"

    listed = await whole_manifest(http, STAFF, pid)
    scanned = {r["row"]: r["device_id"] for r in listed["rows"] if r["scanned"]}
    assert scanned == {7: device["device_id"], 8: second.json()["device_id"]}
    pickup = (await http(STAFF, "GET", f"/pickups/{pid}")).json()
    assert pickup["devices_received"] == len(ids)


async def test_an_unknown_code_is_refused_with_the_reason(imported, http):
    pid = imported["pickup_id"]
    body = {"code": "NOT-ON-LIST-1", "location": "Warehouse Brussels"}
    refused = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"code NOT-ON-LIST-1 is not on the manifest of pickup {pid}"


async def test_a_closed_pickup_takes_neither_list_nor_scan(http):
    pid = await open_pickup(http)
    row = {"row": 2, **asset_row(5000)}
    stored = await http(DONOR_A, "POST", f"/pickups/{pid}/manifest", json={"rows": [row]})
    assert stored.json()["created"] == 1
    cancelled = await http(DONOR_A, "POST", f"/pickups/{pid}/cancel", json={"reason": "moved"})
    assert cancelled.status_code == 200, cancelled.text

    refused = await http(DONOR_A, "POST", f"/pickups/{pid}/manifest", json={"rows": [row]})
    assert refused.status_code == 409
    assert refused.json()["detail"] == "the asset list of a cancelled pickup can no longer change"
    body = {"code": row["asset_tag"], "location": "Warehouse Brussels"}
    scan = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
    assert scan.status_code == 409
    assert scan.json()["detail"] == "no device can be scanned into a cancelled pickup"


async def test_a_malformed_body_is_a_422_but_bad_rows_are_answered_one_by_one(http):
    pid = await open_pickup(http)
    path = f"/pickups/{pid}/manifest"
    assert (await http(STAFF, "POST", path, json={"rows": [{"asset_tag": "A"}]})).status_code == 422
    assert (
        await http(STAFF, "POST", path, json={"rows": [{"row": 2}, {"row": 2}]})
    ).status_code == 422
    rows = [{"row": 2, **asset_row(6000)}, {"row": 3, **asset_row(6000), "colour": "grey"}]
    answer = await http(STAFF, "POST", path, json={"rows": rows})
    assert answer.status_code == 200
    assert answer.json()["created"] == 1
    assert [(e["row"], e["field"]) for e in answer.json()["errors"]] == [(3, "colour")]


async def test_the_cli_refuses_a_file_with_an_unknown_column_or_no_key(http, run_cli, tmp_path):
    pid = await open_pickup(http)
    path = tmp_path / "odd.csv"
    path.write_text("asset_tag,category,make,model,weight_kg,colour\nA,laptop,HP,T,1,grey\n")
    result = await run_cli(path, pid)
    assert result.returncode == 2
    assert "unknown column(s) colour" in result.stderr
    no_key = await run_cli(path, pid, key="")
    assert no_key.returncode == 2
    assert "GREENIT_API_KEY" in no_key.stderr


async def test_a_serial_on_two_rows_of_different_makes_asks_for_the_asset_tag(http):
    pid = await open_pickup(http)
    rows = [
        {"row": 2, **asset_row(7000), "serial_number": "CN-77"},
        {"row": 3, **asset_row(7001), "serial_number": "cn-77"},
    ]
    stored = await http(STAFF, "POST", f"/pickups/{pid}/manifest", json={"rows": rows})
    assert stored.json()["created"] == 2, stored.text
    body = {"code": "CN-77", "location": "Warehouse Brussels"}
    refused = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
    assert refused.status_code == 409
    assert (
        refused.json()["detail"]
        == "serial CN-77 is on rows 2, 3 of the manifest: scan the asset tag"
    )
    by_tag = {"code": rows[1]["asset_tag"], "location": "Warehouse Brussels"}
    assert (await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=by_tag)).status_code == 201


def rows_from(first: int, count: int) -> list[dict[str, Any]]:
    """`count` rows of devices numbered from `first`, on lines 2, 3, ..."""
    return [{"row": 2 + i, **asset_row(first + i)} for i in range(count)]


async def test_the_manifest_is_read_a_page_at_a_time_every_row_exactly_once(imported, http):
    pid = imported["pickup_id"]
    first = await http(DONOR_A, "GET", f"/pickups/{pid}/manifest", params={"limit": 100})
    assert first.status_code == 200
    assert len(first.json()["rows"]) == 100
    assert first.json()["next_cursor"] is not None
    manifest = await whole_manifest(http, DONOR_A, pid, limit=97)
    tags = [r["asset_tag"] for r in manifest["rows"]]
    assert len(tags) == len(set(tags)) == manifest["rows_total"] > 1000
    for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "-1"}, {"cursor": "x"}):
        answer = await http(DONOR_A, "GET", f"/pickups/{pid}/manifest", params=params)
        assert answer.status_code == 422, params


async def test_an_import_past_the_pickups_row_limit_is_refused_whole_naming_the_limit(
    http, run_cli, tmp_path
):
    pid = await open_pickup(http)
    path = f"/pickups/{pid}/manifest"
    stored = await http(DONOR_A, "POST", path, json={"rows": rows_from(20_000, 1000)})
    assert stored.json()["created"] == 1000, stored.text
    over = await http(DONOR_A, "POST", path, json={"rows": rows_from(21_000, MAX_ROWS - 999)})
    assert over.status_code == 413, over.text
    assert f"at most {MAX_ROWS} rows" in over.json()["detail"]
    assert (await whole_manifest(http, DONOR_A, pid))["rows_total"] == 1000

    to_limit = await http(DONOR_A, "POST", path, json={"rows": rows_from(21_000, MAX_ROWS - 1000)})
    assert to_limit.json()["created"] == MAX_ROWS - 1000, to_limit.text
    again = await http(DONOR_A, "POST", path, json={"rows": rows_from(20_000, 1000)})
    assert again.json()["unchanged"] == 1000, "rows already listed do not count again"

    csv_path = tmp_path / "one-more.csv"
    write_csv(csv_path, {2: asset_row(29_999)})
    result = await run_cli(csv_path, pid)
    assert result.returncode == 2
    assert "413" in result.stderr
    assert f"at most {MAX_ROWS} rows" in result.stderr
    manifest = await whole_manifest(http, STAFF, pid, limit=1000)
    assert len(manifest["rows"]) == manifest["rows_total"] == MAX_ROWS


async def test_a_donor_is_told_only_that_another_donor_holds_a_tag_or_serial_staff_see_whom(http):
    theirs = await open_pickup(http, DONOR_B)
    device = {
        "asset_tag": "GLOBEX-0001",
        "serial_number": "GX-SERIAL-1",
        "category": "laptop",
        "make": "HP",
        "model": "ProBook",
        "weight_kg": 1.8,
        "location": "Warehouse Brussels",
    }
    scanned = await http(STAFF, "POST", f"/pickups/{theirs}/devices", json=device)
    assert scanned.status_code == 201, scanned.text
    mine = await open_pickup(http, DONOR_A)
    rows = [
        {"row": 2, **asset_row(30_000), "asset_tag": "GLOBEX-0001"},
        {"row": 3, **asset_row(30_001), "make": "HP", "serial_number": "GX-SERIAL-1"},
    ]
    path = f"/pickups/{mine}/manifest"

    donor = (await http(DONOR_A, "POST", path, json={"rows": rows})).json()
    assert [(e["row"], e["field"], e["reason"]) for e in donor["errors"]] == [
        (2, "asset_tag", "asset tag GLOBEX-0001 is already registered to another donor"),
        (3, "serial_number", "HP serial GX-SERIAL-1 is already registered to another donor"),
    ]
    assert theirs not in json.dumps(donor)

    staff = (await http(STAFF, "POST", path, json={"rows": rows})).json()
    reasons = [e["reason"] for e in staff["errors"]]
    assert reasons == [
        f"asset tag GLOBEX-0001 already belongs to a device of pickup {theirs}",
        "HP serial GX-SERIAL-1 is already registered as asset tag GLOBEX-0001",
    ]


def store_commands_since(log: Path, offset: int) -> list[dict[str, Any]]:
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    return [json.loads(line)["store_command"] for line in lines if '"slow store command"' in line]


async def test_a_scan_reads_by_id_only_however_long_another_pickups_list_is(
    imported, http, log_dir
):
    """Every store command of a scan (and of its pickup's manifest page) finds its documents
    by `_id` (alone, or with a guard's conditions beside it, which every store answers from the
    `_id` index): another pickup's 1,200 rows cannot slow it. bench/manifest.py times it."""
    pid = await open_pickup(http)
    rows = [
        {"row": 2, **asset_row(40_000)},
        {"row": 3, **{k: v for k, v in asset_row(40_001).items() if k != "asset_tag"}},
    ]
    stored = await http(DONOR_A, "POST", f"/pickups/{pid}/manifest", json={"rows": rows})
    assert stored.json()["created"] == 2, stored.text
    log = log_dir / "intake.log"
    offset = log.stat().st_size

    for code in (rows[0]["asset_tag"], rows[1]["serial_number"]):
        body = {"code": code, "location": "Warehouse Brussels"}
        scanned = await http(STAFF, "POST", f"/pickups/{pid}/scan-code", json=body)
        assert scanned.status_code == 201, scanned.text
    assert (scanned.json()["manifest_scanned"], scanned.json()["manifest_rows"]) == (2, 2)
    page = await http(STAFF, "GET", f"/pickups/{pid}/manifest")
    assert [r["scanned"] for r in page.json()["rows"]] == [True, True]

    commands = store_commands_since(log, offset)
    assert any(c["collection"] == "manifest" for c in commands), "the commands were logged"
    # api_keys: the caller's key, read by shared.auth for every request, whatever the pickup
    reads = [
        c
        for c in commands
        if c["command"] not in ("insert", "endSessions") and c["collection"] != "api_keys"
    ]
    scans = [c for c in reads if "_id" not in c["filter"]]
    assert scans == []
