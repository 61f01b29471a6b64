"""The intake service as a real process: its HTTP API and the events it emits (custody, started
beside it, shows what it registered; custody's own tests: test_custody_service.py)."""

import asyncio
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from pymongo import AsyncMongoClient

from services.intake.domain import serial_key
from services.intake.store import Store as IntakeStore
from shared.auth import Role
from shared.outbox import Connection
from tests import helpers
from tests.builders import NOW, pickup_body, scan_body
from tests.conftest import MONGO_URL, settings_in
from tests.helpers import Api, TopicReader, eventually, published

pytestmark = pytest.mark.integration

DONOR_A, DONOR_B, STAFF, OPS = "acme", "globex", "staff-lena", "ops-omar"


CLUSTER = ["intake", "custody"]
PARTNERS = {DONOR_A: Role.DONOR, DONOR_B: Role.DONOR, STAFF: Role.STAFF, OPS: Role.OPERATIONS}


@pytest.fixture(scope="module")
def http(http: Api) -> Api:
    """Calls intake (every call of this module's tests but those to `custody`)."""
    return http.to("intake")


@pytest.fixture(scope="module")
def custody(http: Api) -> Api:
    """Calls custody, which serves the donor's view of the devices intake registers."""
    return http.to("custody")


async def new_pickup(http: Api, donor: str = DONOR_A, *, schedule: bool = True) -> dict[str, Any]:
    return await helpers.new_pickup(http, donor, STAFF, schedule=schedule)


@pytest.fixture(scope="module")
async def donation(http) -> dict[str, Any]:
    """Donor A's pickup, scheduled, with three devices scanned in (one with neither tag nor
    serial, one with only a serial), a repeated scan, then completed."""
    pickup = await new_pickup(http)
    pid = pickup["pickup_id"]
    bodies = [
        scan_body(asset_tag="ACME-0001", serial_number="SN-0001"),
        scan_body(serial_number="SN-0002", make="Lenovo", model="T480"),
        scan_body(category="monitor", make="Dell", model="P2419H", weight_kg=4.2),
    ]
    devices = []
    for body in bodies:
        response = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=body)
        assert response.status_code == 201, response.text
        devices.append(response.json())
    again = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=bodies[0])
    serial_again = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=bodies[1])
    completed = await http(STAFF, "POST", f"/pickups/{pid}/complete", json={})
    assert completed.status_code == 200, completed.text
    return {
        "pickup": pickup,
        "devices": devices,
        "again": again,
        "serial_again": serial_again,
        "completed": completed.json(),
    }


async def test_a_donor_requests_a_pickup_and_staff_schedule_it(http, namespace):
    created = await http(DONOR_A, "POST", "/pickups", json=pickup_body(notes="dock at the back"))
    assert created.status_code == 201, created.text
    pickup = created.json()
    assert pickup["status"] == "requested"
    assert pickup["partner_id"] == DONOR_A
    assert pickup["expected"] == {"laptop": 2, "monitor": 1}
    assert pickup["devices_received"] == 0
    pid = pickup["pickup_id"]

    when = (NOW + timedelta(days=2)).replace(microsecond=0)
    scheduled = await http(
        STAFF, "POST", f"/pickups/{pid}/schedule", json={"scheduled_for": when.isoformat()}
    )
    assert scheduled.status_code == 200
    assert scheduled.json()["status"] == "scheduled"
    assert datetime.fromisoformat(scheduled.json()["scheduled_for"]) == when

    fetched = await http(DONOR_A, "GET", f"/pickups/{pid}")
    assert fetched.json() == scheduled.json()

    async with TopicReader(namespace, "pickup.requested", "pickup.scheduled") as reader:
        await reader.wait_for(
            lambda evs: len({e.event_id for e in evs if str(e.subject_id) == pid}) == 2
        )
    # the outbox publishes at least once: a duplicate record carries the same event_id
    events = list({e.event_id: e for e in reader.events if str(e.subject_id) == pid}.values())
    assert {e.event_type for e in events} == {"pickup.requested", "pickup.scheduled"}
    assert all(e.correlation_id == UUID(pid) for e in events)


async def test_scanned_devices_are_registered_once_and_announced(donation, http, namespace):
    devices = donation["devices"]
    tagged, serial_only, bare = devices
    assert tagged["asset_tag"] == "ACME-0001"
    assert tagged["asset_tag_generated"] is False
    assert serial_only["asset_tag_generated"] is True
    assert serial_only["serial_number"] == "SN-0002"
    assert bare["asset_tag_generated"] is True
    assert bare["serial_number"] is None
    assert bare["asset_tag"].startswith("GIT-")
    assert len(bare["asset_tag"]) == len("GIT-") + 8
    assert all(d["custody_url"].endswith(f"/devices/{d['device_id']}") for d in devices)
    assert all("stage" not in d and "history" not in d for d in devices)
    assert all(d["partner_id"] == DONOR_A for d in devices)

    assert donation["again"].status_code == 200
    assert donation["again"].json()["device_id"] == tagged["device_id"]
    assert donation["serial_again"].status_code == 200
    assert donation["serial_again"].json()["device_id"] == serial_only["device_id"]
    assert donation["completed"]["status"] == "completed"
    assert donation["completed"]["devices_received"] == 3

    ids = {d["device_id"] for d in devices}
    async with TopicReader(namespace, "device.received", "pickup.completed") as reader:
        await reader.wait_for(
            lambda evs: (
                ids <= {str(e.subject_id) for e in evs}
                and any(e.event_type == "pickup.completed" for e in evs)
            )
        )
        # intake's outbox is empty: all it will publish is on the topics; read them to the end
        await published(namespace, "intake")
        await reader.read_to_end()
    received = list(
        {
            e.event_id: e for e in reader.of_type("device.received") if str(e.subject_id) in ids
        }.values()
    )
    assert len(received) == 3, "a repeated scan announces nothing"
    assert {e.correlation_id for e in received} == {UUID(donation["pickup"]["pickup_id"])}
    assert {e.scanned_by for e in received} == {STAFF}
    done = [
        e
        for e in reader.of_type("pickup.completed")
        if str(e.subject_id) == donation["pickup"]["pickup_id"]
    ]
    assert {(e.event_id, e.devices_received) for e in done} == {(done[0].event_id, 3)}


async def test_a_scan_into_a_completed_pickup_is_refused_and_recorded(
    donation, http, custody, namespace
):
    pid = donation["pickup"]["pickup_id"]
    late = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan_body(asset_tag="LATE"))
    assert late.status_code == 409
    assert "completed" in late.json()["detail"]
    refusal_id = late.json()["refusal_id"]

    refusals = (await http(OPS, "GET", "/refusals")).json()
    assert any(r["refusal_id"] == refusal_id and r["subject_id"] == pid for r in refusals)
    async with TopicReader(namespace, "transition.refused") as reader:
        await reader.wait_for(lambda evs: any(str(e.event_id) == refusal_id for e in evs))
    listed = await eventually(lambda: _listed(custody, pid, 3))
    assert len(listed) == 3


async def test_the_same_asset_tag_under_another_pickup_is_refused(donation, http):
    other = await new_pickup(http)
    response = await http(
        STAFF,
        "POST",
        f"/pickups/{other['pickup_id']}/devices",
        json=scan_body(asset_tag="ACME-0001", serial_number="SN-0001"),
    )
    assert response.status_code == 409
    assert "ACME-0001" in response.json()["detail"]


async def test_concurrent_scans_of_one_device_register_it_once(http):
    pickup = await new_pickup(http)
    path = f"/pickups/{pickup['pickup_id']}/devices"
    body = scan_body(asset_tag=f"RACE-{uuid4().hex[:8]}")
    responses = await asyncio.gather(*(http(STAFF, "POST", path, json=body) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["device_id"] for r in responses}) == 1


async def test_a_device_whose_lookup_keys_a_crash_lost_is_still_found_by_a_rescan(http, namespace):
    """Keys are written after the device: a crash in between must not let a rescan register
    the device twice. The rescan collides on the unique index, finds it, and restores keys."""
    pickup = await new_pickup(http)
    path = f"/pickups/{pickup['pickup_id']}/devices"
    body = scan_body(asset_tag=f"LOST-{uuid4().hex[:8]}", serial_number=f"SN-{uuid4().hex[:8]}")
    first = await http(STAFF, "POST", path, json=body)
    assert first.status_code == 201, first.text
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        db = client[settings_in(namespace, "intake").database]
        serial = serial_key(body["make"], body["serial_number"])
        keys = [f"tag:{body['asset_tag']}", f"serial:{serial}"]
        assert await db.device_keys.count_documents({"_id": {"$in": keys}}) == 2
        await db.device_keys.delete_many({"_id": {"$in": keys}})

        again = await http(STAFF, "POST", path, json=body)
        assert again.status_code == 200, again.text
        assert again.json()["device_id"] == first.json()["device_id"]
        restored = await db.device_keys.find({"_id": {"$in": keys}}).to_list()
        assert {k["device_id"] for k in restored} == {first.json()["device_id"]}
        assert len(restored) == 2
    finally:
        await client.close()


async def test_keys_written_by_many_scans_at_once_never_fail(namespace):
    """Scans of one device that lost the race all write the winner's keys: concurrent upserts
    of one key may collide on its `_id` (FerretDB: query, then insert), which is no error."""
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        db = client[settings_in(namespace, "intake").database]
        doc = {"_id": str(uuid4()), "asset_tag": f"MANY-{uuid4().hex[:8]}", "serial_key": "x"}
        store = IntakeStore(Connection(db, relay=None))  # publishes nothing
        for _ in range(5):
            await asyncio.gather(*(store.save_keys(doc) for _ in range(8)))
            await db.device_keys.delete_many({"device_id": doc["_id"]})
    finally:
        await client.close()


async def _listed(custody, pid: str, n: int) -> list[dict[str, Any]] | None:
    listed = (await custody(STAFF, "GET", "/devices", params={"pickup_id": pid})).json()
    return listed if len(listed) >= n else None


async def test_a_partner_never_sees_another_partners_pickups_or_devices(donation, http, custody):
    pid = donation["pickup"]["pickup_id"]
    device_id = donation["devices"][0]["device_id"]
    assert (await http(DONOR_B, "GET", f"/pickups/{pid}")).status_code == 404
    assert (await custody(DONOR_B, "GET", f"/devices/{device_id}")).status_code == 404
    cancel = await http(DONOR_B, "POST", f"/pickups/{pid}/cancel", json={"reason": "mine now"})
    assert cancel.status_code == 404
    assert pid not in {p["pickup_id"] for p in (await http(DONOR_B, "GET", "/pickups")).json()}
    b_devices = await custody(DONOR_B, "GET", "/devices", params={"partner_id": DONOR_A})
    assert b_devices.json() == []

    await eventually(lambda: _listed(custody, pid, 3))
    own = (await custody(DONOR_A, "GET", "/devices", params={"pickup_id": pid})).json()
    assert {d["device_id"] for d in own} == {d["device_id"] for d in donation["devices"]}
    assert pid in {p["pickup_id"] for p in (await http(DONOR_A, "GET", "/pickups")).json()}
    staff_view = await http(STAFF, "GET", "/pickups", params={"partner_id": DONOR_A})
    assert pid in {p["pickup_id"] for p in staff_view.json()}
    assert (await custody(STAFF, "GET", f"/devices/{device_id}")).status_code == 200


async def test_a_donor_cancels_an_open_pickup_but_not_a_closed_one(donation, http):
    pickup = await new_pickup(http, DONOR_B, schedule=False)
    pid = pickup["pickup_id"]
    cancelled = await http(DONOR_B, "POST", f"/pickups/{pid}/cancel", json={"reason": "moved"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await http(DONOR_B, "POST", f"/pickups/{pid}/cancel", json={"reason": "moved"})
    assert again.status_code == 409
    scan = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan_body())
    assert scan.status_code == 409

    done = donation["pickup"]["pickup_id"]
    refused = await http(STAFF, "POST", f"/pickups/{done}/cancel", json={"reason": "oops"})
    assert refused.status_code == 409

    with_devices = await new_pickup(http)
    wid = with_devices["pickup_id"]
    await http(STAFF, "POST", f"/pickups/{wid}/devices", json=scan_body())
    blocked = await http(DONOR_A, "POST", f"/pickups/{wid}/cancel", json={"reason": "x"})
    assert blocked.status_code == 409
    assert "already received" in blocked.json()["detail"]


async def test_a_missing_or_unknown_api_key_is_refused_with_401(http):
    assert (await http(None, "GET", "/pickups")).status_code == 401
    response = await http(None, "GET", "/pickups", headers={"X-API-Key": "git_nope"})
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown or revoked API key"


async def test_a_role_without_the_right_is_refused_with_403(http, donation):
    pid = donation["pickup"]["pickup_id"]
    assert (await http(DONOR_A, "POST", f"/pickups/{pid}/complete", json={})).status_code == 403
    assert (await http(STAFF, "POST", "/pickups", json=pickup_body())).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        pickup_body(colour="red"),
        pickup_body(expected={}),
        pickup_body(expected={"toaster": 1}),
        pickup_body(window={"start": NOW.isoformat(), "end": (NOW - timedelta(1)).isoformat()}),
        pickup_body(contact={"name": "Jo", "email": "not-an-email"}),
    ],
    ids=["unknown field", "nothing expected", "unknown category", "window ends first", "email"],
)
async def test_bad_pickup_input_is_refused_with_422(http, body):
    response = await http(DONOR_A, "POST", "/pickups", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_bad_scan_input_and_unknown_ids_are_answered_clearly(http, donation):
    pid = donation["pickup"]["pickup_id"]
    bad = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan_body(weight_kg=-1))
    assert bad.status_code == 422
    extra = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan_body(owner="me"))
    assert extra.status_code == 422
    naive = await http(
        STAFF, "POST", f"/pickups/{pid}/schedule", json={"scheduled_for": "2026-03-02T10:00:00"}
    )
    assert naive.status_code == 422
    unknown = await http(STAFF, "POST", f"/pickups/{uuid4()}/devices", json=scan_body())
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "unknown pickup"
    assert (await http(STAFF, "GET", "/pickups/not-a-uuid")).status_code == 422
