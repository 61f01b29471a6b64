"""Custody's operations endpoints on a real process (fed by intake's scans): devices per stage,
stuck ones, search."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from shared.auth import Role
from shared.events import DeviceDiagnosed, DeviceWiped
from tests.builders import NOW, diagnosed, scan_body, wiped
from tests.helpers import eventually, new_pickup, publish

pytestmark = pytest.mark.integration

DONOR, STAFF, OPS = "acme", "staff-lena", "ops-omar"
HOUR = timedelta(hours=1)


CLUSTER = ["intake", "custody"]
PARTNERS = {DONOR: Role.DONOR, STAFF: Role.STAFF, OPS: Role.OPERATIONS}


def _diagnosed(device: dict[str, Any], at: datetime) -> DeviceDiagnosed:
    return diagnosed(UUID(device["device_id"]), UUID(device["pickup_id"]), at)


def _wiped(device: dict[str, Any], at: datetime) -> DeviceWiped:
    return wiped(UUID(device["device_id"]), UUID(device["pickup_id"]), at)


SCANS = [
    {"asset_tag": "OPS-A", "serial_number": "5CG8ABC", "make": "HP"},
    {"serial_number": "SN+1.(x)", "make": "Lenovo"},
    {"asset_tag": "OPS-C", "make": "Dell"},
    {"asset_tag": "OPS-D", "serial_number": "5CG8ABC", "make": "Fujitsu"},
]


@pytest.fixture(scope="module")
async def fleet(http, namespace) -> dict[str, dict[str, Any]]:
    """Four devices scanned in; B diagnosed three hours ago; C diagnosed and wiped an hour ago.
    So: A and D received (just now), B diagnosed (3 h), C wiped (1 h)."""
    pid = (await new_pickup(http, DONOR, STAFF, expected={"laptop": 4}))["pickup_id"]
    devices = {}
    for name, scan in zip("ABCD", SCANS, strict=True):
        response = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan_body(**scan))
        assert response.status_code == 201, response.text
        devices[name] = response.json()
    a, b, c, d_ = devices["A"], devices["B"], devices["C"], devices["D"]
    await publish(
        namespace,
        _diagnosed(b, NOW - 3 * HOUR),
        _diagnosed(c, NOW - 2 * HOUR),
        _wiped(c, NOW - HOUR),
    )

    async def settled() -> bool:
        views = [(await http(STAFF, "GET", f"/devices/{d['device_id']}")).json() for d in (b, c)]
        # custody learns each device a moment after its scan: 404 until then
        others = [(await http(STAFF, "GET", f"/devices/{d['device_id']}")) for d in (a, d_)]
        return [v.get("stage") for v in views] == ["diagnosed", "wiped"] and all(
            r.status_code == 200 for r in others
        )

    await eventually(settled, within_s=60)
    return devices


async def stage_table(http, who: str = OPS, **params: Any) -> dict[str, dict[str, Any]]:
    response = await http(who, "GET", "/ops/stages", params=params)
    assert response.status_code == 200, response.text
    return {s["stage"]: s for s in response.json()["stages"]}


async def test_operations_see_how_many_devices_are_in_each_stage(http, fleet):
    response = await http(OPS, "GET", "/ops/stages")
    assert response.status_code == 200, response.text
    view = response.json()
    counts = {s["stage"]: s["count"] for s in view["stages"]}
    assert counts == {s: 0 for s in counts} | {"received": 2, "diagnosed": 1, "wiped": 1}
    assert view["total"] == 4
    # the truth, independently: staff's device list
    listed = (await http(STAFF, "GET", "/devices")).json()
    assert sorted(d["stage"] for d in listed) == ["diagnosed", "received", "received", "wiped"]


async def test_each_stage_names_its_oldest_device_and_since_when(http, fleet):
    stages = await stage_table(http)
    a = (await http(STAFF, "GET", f"/devices/{fleet['A']['device_id']}")).json()
    oldest = stages["received"]["oldest"]
    assert oldest["asset_tag"] == "OPS-A", "A was scanned before D"
    assert datetime.fromisoformat(oldest["since"]) == datetime.fromisoformat(
        a["history"][0]["occurred_at"]
    )
    diagnosed = stages["diagnosed"]["oldest"]
    assert diagnosed["device_id"] == fleet["B"]["device_id"]
    since = datetime.fromisoformat(diagnosed["since"])
    assert abs(since - (NOW - 3 * HOUR)) < timedelta(milliseconds=2)
    since_import = (datetime.now(UTC) - NOW).total_seconds()  # NOW is taken at collection
    assert 3 * 3600 - 5 < diagnosed["age_s"] < 3 * 3600 + since_import + 60
    wiped_since = datetime.fromisoformat(stages["wiped"]["oldest"]["since"])
    assert abs(wiped_since - (NOW - HOUR)) < timedelta(milliseconds=2), "since wiped, not diagnosed"
    assert stages["ready"]["oldest"] is None


async def test_with_the_default_thresholds_nothing_here_is_stuck(http, fleet):
    stages = await stage_table(http)
    assert {s: v["stuck"] for s, v in stages.items() if v["stuck"]} == {}
    assert stages["received"]["stuck_after_s"] == 2 * 86_400
    assert stages["recycled"]["stuck_after_s"] is None


async def test_a_tiny_threshold_makes_every_waiting_device_stuck(http, fleet):
    stages = await stage_table(http, stuck_after="0.001")
    assert {s: v["stuck"] for s, v in stages.items() if v["stuck"]} == {
        "received": 2,
        "diagnosed": 1,
        "wiped": 1,
    }
    assert [d["asset_tag"] for d in stages["received"]["stuck_devices"]] == ["OPS-A", "OPS-D"]
    limited = await stage_table(http, stuck_after="0.001", limit=1)
    assert limited["received"]["stuck"] == 2
    assert len(limited["received"]["stuck_devices"]) == 1


async def test_a_threshold_between_ages_separates_stuck_from_waiting(http, fleet):
    two_hours = await stage_table(http, stuck_after=str(2 * 3600))
    assert {s: v["stuck"] for s, v in two_hours.items() if v["stuck"]} == {"diagnosed": 1}
    per_stage = json.dumps({"wiped": 1800, "diagnosed": 4 * 3600})
    mixed = await stage_table(http, stuck_after=per_stage)
    assert {s: v["stuck"] for s, v in mixed.items() if v["stuck"]} == {"wiped": 1}
    assert mixed["wiped"]["stuck_devices"][0]["asset_tag"] == "OPS-C"
    assert mixed["received"]["stuck_after_s"] == 2 * 86_400


@pytest.mark.parametrize(
    "stuck_after",
    ["soon", "-5", '{"melted": 1}', '{"lost": 1}', '{"received": "1h"}', "1e999"],
)
async def test_a_bad_threshold_is_refused_with_the_reason(http, fleet, stuck_after):
    response = await http(OPS, "GET", "/ops/stages", params={"stuck_after": stuck_after})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["query", "stuck_after"]
    assert detail[0]["msg"]


async def test_a_device_is_found_by_its_asset_tag_with_its_timeline(http, fleet):
    response = await http(OPS, "GET", "/ops/devices", params={"q": "OPS-C"})
    assert response.status_code == 200, response.text
    found = response.json()["devices"]
    assert [d["device_id"] for d in found] == [fleet["C"]["device_id"]]
    truth = (await http(STAFF, "GET", f"/devices/{fleet['C']['device_id']}")).json()
    assert [h["event_type"] for h in found[0]["history"]] == [
        h["event_type"] for h in truth["history"]
    ]
    assert {h["event_type"] for h in found[0]["history"]} == {
        "device.received",
        "device.diagnosed",
        "device.wiped",
    }
    assert found[0]["stage"] == "wiped"
    assert found[0]["make"] == "Dell"


async def test_a_serial_number_matches_ignoring_case_and_every_make_carrying_it(http, fleet):
    response = await http(OPS, "GET", "/ops/devices", params={"q": "5cg8abc"})
    assert response.status_code == 200, response.text
    found = {d["device_id"] for d in response.json()["devices"]}
    assert found == {fleet["A"]["device_id"], fleet["D"]["device_id"]}
    special = await http(OPS, "GET", "/ops/devices", params={"q": "sn+1.(X)"})
    assert [d["device_id"] for d in special.json()["devices"]] == [fleet["B"]["device_id"]]


@pytest.mark.parametrize("q", ["SN+1.(y)", "SN+1", "ops-c", "OPS", ".*", "5CG8ABC "])
async def test_nothing_but_an_exact_tag_or_serial_matches(http, fleet, q):
    response = await http(OPS, "GET", "/ops/devices", params={"q": q})
    if q == "5CG8ABC ":  # surrounding blanks from a scanner are trimmed
        assert response.status_code == 200
        return
    assert response.status_code == 404
    assert "no device has asset tag or serial number" in response.json()["detail"]


async def test_an_empty_or_blank_search_is_refused(http, fleet):
    assert (await http(OPS, "GET", "/ops/devices", params={"q": ""})).status_code == 422
    assert (await http(OPS, "GET", "/ops/devices", params={"q": "   "})).status_code == 422
    assert (await http(OPS, "GET", "/ops/devices")).status_code == 422


async def test_staff_may_look_but_a_donor_may_not(http, fleet):
    assert (await http(STAFF, "GET", "/ops/stages")).status_code == 200
    assert (await http(STAFF, "GET", "/ops/devices", params={"q": "OPS-A"})).status_code == 200
    assert (await http(DONOR, "GET", "/ops/stages")).status_code == 403
    assert (await http(DONOR, "GET", "/ops/devices", params={"q": "OPS-A"})).status_code == 403
    assert (await http(None, "GET", "/ops/stages")).status_code == 401
