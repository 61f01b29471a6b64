"""The custody service as a real process beside intake: it learns each device from
`device.received`, applies every device event once in any order, serves the donor's view, and
intake's old read paths answer 308 to it."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from shared.auth import Role
from shared.events import (
    DeviceReceived,
    SanitizationMethod,
    WorkbenchEvidence,
)
from tests.builders import diagnosed, scan_body, wiped
from tests.helpers import caught_up, eventually, new_pickup, publish

pytestmark = pytest.mark.integration

DONOR_A, DONOR_B, STAFF = "acme", "globex", "staff-lena"


CLUSTER = ["intake", "custody"]
PARTNERS = {DONOR_A: Role.DONOR, DONOR_B: Role.DONOR, STAFF: Role.STAFF}


@pytest.fixture(scope="module")
async def scanned(http) -> dict[str, Any]:
    """Donor A's pickup with one device scanned in at intake."""
    pickup = await new_pickup(http, DONOR_A, STAFF, expected={"laptop": 1})
    path = f"/pickups/{pickup['pickup_id']}/devices"
    device = await http(STAFF, "POST", path, json=scan_body(asset_tag="C-1"))
    assert device.status_code == 201, device.text
    return {"pickup_id": pickup["pickup_id"], "device": device.json()}


async def test_custody_learns_a_scanned_device_from_device_received(scanned, http):
    device = scanned["device"]

    async def shown():
        r = await http(DONOR_A, "GET", f"/devices/{device['device_id']}")
        return r.json() if r.status_code == 200 else None

    view = await eventually(shown)
    assert view["stage"] == "received"
    assert view["partner_id"] == DONOR_A
    assert view["asset_tag"] == "C-1"
    assert view["pickup_id"] == scanned["pickup_id"]
    assert [h["event_type"] for h in view["history"]] == ["device.received"]
    assert device["custody_url"].endswith(f"/devices/{device['device_id']}")
    other = await http(DONOR_B, "GET", f"/devices/{device['device_id']}")
    assert other.status_code == 404
    listed = await http(DONOR_B, "GET", "/devices", params={"partner_id": DONOR_A})
    assert listed.json() == []


async def test_the_custody_view_applies_each_device_event_once(scanned, http, namespace):
    device_id = UUID(scanned["device"]["device_id"])
    pickup_id = UUID(scanned["pickup_id"])
    certificate_id = uuid4()
    diagnosis = diagnosed(device_id, pickup_id, datetime.now(UTC))
    wipe = wiped(device_id, pickup_id, datetime.now(UTC) + timedelta(seconds=1), certificate_id)
    # wiped first: out of order, and every event delivered twice
    await publish(namespace, wipe, diagnosis, wipe, diagnosis)

    async def settled():
        view = (await http(DONOR_A, "GET", f"/devices/{device_id}")).json()
        return view if len(view["history"]) >= 3 else None

    await eventually(settled)
    # custody has applied all four (its lag is 0): a duplicate applied twice would show now
    await caught_up(namespace, "custody", "device.diagnosed", "device.wiped")
    view = (await http(DONOR_A, "GET", f"/devices/{device_id}")).json()
    assert [h["event_type"] for h in view["history"]] == [
        "device.received",
        "device.diagnosed",
        "device.wiped",
    ]
    assert view["stage"] == "wiped"
    assert view["erasure_certificate_id"] == str(certificate_id)
    wiped_list = await http(DONOR_A, "GET", "/devices", params={"stage": "wiped"})
    assert [d["device_id"] for d in wiped_list.json()] == [str(device_id)]


async def test_events_before_their_device_received_wait_for_it(http, namespace):
    """A device's events travel on different topics: one may come before `device.received`.
    It is kept, unseen, and the device shows with its whole history once received."""
    device_id, pickup_id = uuid4(), uuid4()
    at = datetime.now(UTC)
    await publish(namespace, diagnosed(device_id, pickup_id, at + timedelta(seconds=1)))

    async def stored():
        r = await http(STAFF, "GET", "/ops/devices", params={"q": "EARLY-1"})
        return r

    # not shown before its reception: neither to staff nor in the lists
    assert (await http(STAFF, "GET", f"/devices/{device_id}")).status_code == 404
    received = DeviceReceived(
        event_id=uuid4(),
        occurred_at=at,
        producer="intake",
        correlation_id=pickup_id,
        device_id=device_id,
        pickup_id=pickup_id,
        partner_id=DONOR_B,
        asset_tag="EARLY-1",
        asset_tag_generated=False,
        serial_number=None,
        category="laptop",
        make="Dell",
        model="Latitude",
        weight_kg=1.4,
        scanned_by=STAFF,
        location="Warehouse Brussels",
    )
    await publish(namespace, received)

    async def shown():
        r = await http(DONOR_B, "GET", f"/devices/{device_id}")
        return r.json() if r.status_code == 200 and len(r.json()["history"]) == 2 else None

    view = await eventually(shown)
    assert view["stage"] == "diagnosed"
    assert view["asset_tag"] == "EARLY-1"
    assert [h["event_type"] for h in view["history"]] == ["device.received", "device.diagnosed"]
    found = (await stored()).json()
    assert [d["device_id"] for d in found["devices"]] == [str(device_id)]


@pytest.mark.parametrize(
    "path",
    [
        "/devices?pickup_id=00000000-0000-0000-0000-000000000001&stage=received",
        "/devices/9d7c2a0e-4d2b-4f4e-9b8e-2c1f0a6b7d31",
        "/devices/9d7c2a0e-4d2b-4f4e-9b8e-2c1f0a6b7d31/certificates/erasure?format=pdf",
        "/reports/impact?start=2030-01-01&end=2030-02-01",
        "/ops/stages?limit=3",
        "/ops/devices?q=C-1",
        "/ops/me",
        "/verify/9d7c2a0e-4d2b-4f4e-9b8e-2c1f0a6b7d31?format=json",
    ],
)
async def test_intakes_old_read_paths_answer_308_to_custody_keeping_the_query(cluster, http, path):
    moved = await http(None, "GET", path, service="intake")
    assert moved.status_code == 308
    assert moved.headers["location"] == cluster.urls["custody"] + path


async def test_the_qr_code_of_a_certificate_issued_before_resolves_through_intake(scanned, cluster):
    """Certificates issued before custody had its own service print intake's /verify URL."""
    device_id = scanned["device"]["device_id"]
    old_qr = f"{cluster.urls['intake']}/verify/{device_id}?format=json"
    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as client:

        async def verified():
            r = await client.get(old_qr)
            return r if r.status_code == 200 else None

        response = await eventually(verified)
    assert str(response.url).startswith(cluster.urls["custody"])
    assert response.json()["device_id"] == device_id


async def test_the_public_page_shows_workbench_evidence_or_typed_record(http, namespace):
    device_id, pickup_id = uuid4(), uuid4()
    at = datetime.now(UTC)
    received = DeviceReceived(
        event_id=uuid4(),
        occurred_at=at,
        producer="intake",
        correlation_id=pickup_id,
        device_id=device_id,
        pickup_id=pickup_id,
        partner_id=DONOR_B,
        asset_tag="WB-1",
        asset_tag_generated=False,
        serial_number="SN-WB-1",
        category="laptop",
        make="Lenovo",
        model="ThinkPad T480",
        weight_kg=1.6,
        scanned_by=STAFF,
        location="Warehouse Brussels",
    )
    wipe = wiped(device_id, pickup_id, at + timedelta(seconds=1), uuid4())
    typed = wipe.erasures[0]
    by_workbench = typed.model_copy(
        update={
            "drive_serial": "DRV-WB",
            "method": SanitizationMethod.CLEAR,
            "tool": "greenit-workbench",
            "tool_version": "1.0.0",
            "workbench": WorkbenchEvidence(
                evidence_version="1.1",
                log_sha256="cd" * 32,
                started_at=at - timedelta(minutes=9),
                ended_at=at,
                bytes_written=512110190592,
                passes=1,
                bytes_verified=51211018240,
                verification_sample_rate=0.1,
            ),
        }
    )
    await publish(namespace, received, wipe.model_copy(update={"erasures": [by_workbench, typed]}))

    async def page():
        r = await http(None, "GET", f"/verify/{device_id}", service="custody")
        return r if r.status_code == 200 and "Erasure certificate" in r.text else None

    html = " ".join((await eventually(page)).text.split())
    assert (
        "<td>1 of 2</td> <td>Clear</td> <td>greenit-workbench 1.0.0</td> <td>yes</td> "
        '<td class="workbench">recorded by the workbench on the machine (greenit-workbench '
        f'1.0.0); erasure log SHA-256 <code class="log">{"cd" * 32}</code>; 512,110,190,592 '
        "bytes written, 51,211,018,240 bytes read back (10% of the drive)</td>"
    ) in html
    assert (
        "<td>2 of 2</td> <td>Purge</td> <td>nwipe 0.37</td> <td>yes</td> "
        '<td class="typed">typed record: entered by a person, no machine evidence attached</td>'
    ) in html
    for private in ("DRV-WB", "DRV-1", "SN-WB-1", STAFF, DONOR_B, "Warehouse Brussels"):
        assert private not in html, private
