"""Asset labels from the intake process, over the real store: each label read back from the PDF
(tests/barcodes.py) is the device's tag and its public verification URL; who may fetch which;
and intake's old read paths under /devices still redirect to custody beside the label route."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest

from services.intake.labels import SHEET_LABEL
from shared.auth import Role
from tests.barcodes import needs_decoders, page_sizes_mm, symbols
from tests.helpers import create_key
from tools.cluster import project_root, running_cluster

pytestmark = [pytest.mark.integration, needs_decoders]

DONOR_A, DONOR_B, STAFF, OPS = "acme", "globex", "staff-lena", "ops-omar"
CUSTODY = "https://verify.greenit.example"
NOW = datetime.now(UTC)
CELL_W, CELL_H = (v * 25.4 / 72 for v in SHEET_LABEL)  # mm
SHEET_TOP = (297 - 8 * CELL_H) / 2


@pytest.fixture(scope="module")
def intake_url(topics, base_env, namespace):
    log_dir = project_root() / ".local" / "test-logs" / namespace
    env = base_env | {"GREENIT_CUSTODY_PUBLIC_URL": CUSTODY}
    with running_cluster(env, log_dir, ["intake"]) as cluster:
        yield cluster.urls["intake"]


@pytest.fixture(scope="module")
async def keys(namespace) -> dict[str, str]:
    return {
        DONOR_A: await create_key(namespace, Role.DONOR, DONOR_A),
        DONOR_B: await create_key(namespace, Role.DONOR, DONOR_B),
        STAFF: await create_key(namespace, Role.STAFF, STAFF),
        OPS: await create_key(namespace, Role.OPERATIONS, OPS),
    }


@pytest.fixture(scope="module")
async def http(intake_url, keys):
    async with httpx.AsyncClient(base_url=intake_url, timeout=60) as client:

        async def call(who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
            headers = {"X-API-Key": keys[who]} if who else {}
            return await client.request(method, path, headers=headers, **kw)

        yield call


async def new_pickup(http, donor: str) -> str:
    body = {
        "address": {"street": "Rue 1", "postal_code": "1040", "city": "Brussels", "country": "BE"},
        "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
        "window": {
            "start": (NOW + timedelta(days=1)).isoformat(),
            "end": (NOW + timedelta(days=3)).isoformat(),
        },
        "expected": {"laptop": 2, "monitor": 1},
    }
    created = await http(donor, "POST", "/pickups", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["pickup_id"])


@pytest.fixture(scope="module")
async def donation(http) -> dict[str, Any]:
    """Donor A's pickup with three devices scanned in (two without a tag), and donor B's own."""
    pickup = await new_pickup(http, DONOR_A)
    scans = [
        {"serial_number": "SN-L1", "category": "laptop", "make": "Lenovo", "model": "T480"},
        {"asset_tag": "ACME-0002", "category": "laptop", "make": "HP", "model": "EliteBook 840"},
        {"category": "monitor", "make": "Dell", "model": "P2419H"},
    ]
    devices = []
    for scan in scans:
        body = scan | {"weight_kg": 2.0, "location": "Warehouse Brussels"}
        response = await http(STAFF, "POST", f"/pickups/{pickup}/devices", json=body)
        assert response.status_code == 201, response.text
        devices.append(response.json())
    return {
        "pickup_id": pickup,
        "devices": devices,
        "other_pickup": await new_pickup(http, DONOR_B),
    }


def read_as(device: dict[str, Any]) -> list[str]:
    url = f"{CUSTODY}/verify/{device['device_id']}"
    return sorted([f"CODE-128:{device['asset_tag']}", f"QR-Code:{url}"])


def cell(n: int) -> tuple[float, float, float, float]:
    row, column = divmod(n, 3)
    return (column * CELL_W, SHEET_TOP + row * CELL_H, CELL_W, CELL_H)


async def test_a_device_label_reads_back_as_its_generated_tag_and_verification_url(donation, http):
    device = donation["devices"][0]
    assert device["asset_tag"].startswith("GIT-")

    roll = await http(STAFF, "GET", f"/devices/{device['device_id']}/label")
    sheet = await http(STAFF, "GET", f"/devices/{device['device_id']}/label?layout=sheet")

    assert roll.status_code == 200, roll.text
    assert roll.headers["content-type"] == "application/pdf"
    assert page_sizes_mm(roll.content) == [(pytest.approx(62, abs=0.1), pytest.approx(40, abs=0.1))]
    assert symbols(roll.content) == read_as(device)
    assert sheet.status_code == 200, sheet.text
    assert page_sizes_mm(sheet.content) == [
        (pytest.approx(210, abs=0.1), pytest.approx(297, abs=0.1))
    ]
    assert symbols(sheet.content, 1, cell(0)) == read_as(device)


async def test_a_pickups_labels_are_every_device_in_scan_order_on_both_layouts(donation, http):
    pid, devices = donation["pickup_id"], donation["devices"]

    sheet = await http(STAFF, "GET", f"/pickups/{pid}/labels")
    roll = await http(OPS, "GET", f"/pickups/{pid}/labels?layout=roll")

    assert sheet.status_code == 200, sheet.text
    assert len(page_sizes_mm(sheet.content)) == 1
    for n, device in enumerate(devices):
        assert symbols(sheet.content, 1, cell(n)) == read_as(device), f"label {n + 1}"
    assert symbols(sheet.content, 1, cell(3)) == []
    assert roll.status_code == 200, roll.text
    assert len(page_sizes_mm(roll.content)) == 3
    for page, device in enumerate(devices, start=1):
        assert symbols(roll.content, page) == read_as(device)


async def test_a_large_pickup_is_printed_a_part_at_a_time(donation, http):
    pid, devices = donation["pickup_id"], donation["devices"]

    middle = await http(STAFF, "GET", f"/pickups/{pid}/labels?layout=roll&start=1&limit=1")
    rest = await http(STAFF, "GET", f"/pickups/{pid}/labels?layout=roll&start=1")
    past = await http(STAFF, "GET", f"/pickups/{pid}/labels?start=3")
    too_many = await http(STAFF, "GET", f"/pickups/{pid}/labels?limit=241")

    assert middle.headers["x-labels-total"] == "3"
    assert len(page_sizes_mm(middle.content)) == 1
    assert symbols(middle.content) == read_as(devices[1])
    assert [symbols(rest.content, page) for page in (1, 2)] == [read_as(d) for d in devices[1:]]
    assert past.status_code == 404
    assert past.json()["detail"] == f"pickup {pid} has 3 device(s): none from start=3"
    assert too_many.status_code == 422


async def test_a_donor_gets_its_own_labels_and_another_donors_only_as_unknown(donation, http):
    device, pid = donation["devices"][2], donation["pickup_id"]
    own = await http(DONOR_A, "GET", f"/devices/{device['device_id']}/label")
    assert own.status_code == 200
    assert symbols(own.content) == read_as(device)
    assert (await http(DONOR_A, "GET", f"/pickups/{pid}/labels")).status_code == 200

    theirs = await http(DONOR_B, "GET", f"/devices/{device['device_id']}/label")
    nobody = uuid4()
    unknown = await http(DONOR_B, "GET", f"/devices/{nobody}/label")
    assert (theirs.status_code, unknown.status_code) == (404, 404)
    assert theirs.json() == {"detail": f"unknown device {device['device_id']}"}
    assert unknown.json() == {"detail": f"unknown device {nobody}"}

    their_pickup = await http(DONOR_B, "GET", f"/pickups/{pid}/labels")
    unknown_pickup = await http(DONOR_B, "GET", f"/pickups/{nobody}/labels")
    assert their_pickup.json() == {"detail": f"unknown pickup {pid}"}
    assert unknown_pickup.json() == {"detail": f"unknown pickup {nobody}"}


async def test_a_pickup_without_devices_and_a_bad_layout_are_refused_with_the_reason(
    donation, http
):
    empty = donation["other_pickup"]
    device = donation["devices"][0]["device_id"]

    none_yet = await http(DONOR_B, "GET", f"/pickups/{empty}/labels")
    bad = await http(STAFF, "GET", f"/devices/{device}/label?layout=a5")
    bad_sheet = await http(STAFF, "GET", f"/pickups/{donation['pickup_id']}/labels?layout=")

    assert none_yet.status_code == 404
    assert none_yet.json()["detail"] == (
        f"no device was scanned into pickup {empty} yet: no label to print"
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "layout"]
    assert "'roll' or 'sheet'" in bad.json()["detail"][0]["msg"]
    assert bad_sheet.status_code == 422


async def test_the_old_read_paths_under_devices_still_redirect_to_custody(donation, http):
    device = donation["devices"][0]["device_id"]
    for path in ("/devices", f"/devices/{device}", f"/devices/{device}/certificates/erasure"):
        moved = await http(None, "GET", path + "?format=json")
        assert moved.status_code == 308, path
        assert moved.headers["location"] == f"{CUSTODY}{path}?format=json"
    assert (await http(None, "GET", f"/devices/{device}/label")).status_code == 401
