"""The recycling service as a real process: fed with events, driven through its HTTP API."""

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.recycling import domain, store
from shared.auth import Role
from shared.codec import encode
from shared.events import (
    DeviceCategory,
    DeviceReleasedForRecycling,
    DeviceReturned,
    MaterialFractions,
    Recycler,
)
from shared.ids import derive_id
from tests.conftest import MONGO_URL
from tests.helpers import TopicReader, eventually, publish, publish_raw

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
PICKUP = uuid4()
FRACTIONS = {"plastics_kg": 0.5, "ferrous_kg": 0.3, "circuit_boards_kg": 0.25}
RECYCLER = {"name": "Recupel Metals NV", "certification": "WEEELABEX"}
A, B, C, PENDING = uuid4(), uuid4(), uuid4(), uuid4()


def released(device_id: UUID) -> DeviceReleasedForRecycling:
    return DeviceReleasedForRecycling(
        event_id=uuid4(),
        occurred_at=NOW,
        correlation_id=PICKUP,
        producer="diagnostics",
        device_id=device_id,
        category=DeviceCategory.LAPTOP,
        reason="does not boot",
        erasure_certificate_id=uuid4(),
    )


RELEASED_A = released(A)
RETURNED_C = DeviceReturned(
    event_id=uuid4(),
    occurred_at=NOW,
    correlation_id=uuid4(),
    producer="allocation",
    device_id=C,
    recipient_id="school-malala",
    reason="end_of_life",
    category=DeviceCategory.LAPTOP,
    drive_serials=["DRV-C-0", "DRV-C-1"],
    erasure_certificate_id=uuid4(),
)


def destroyed(serial: str) -> dict[str, object]:
    return {
        "drive_serial": serial,
        "method": "destroy",
        "technique": "shredding",
        "tool": "HSM shredder",
        "tool_version": "2.1",
        "verified": True,
        "verification": "visual inspection",
        "operator": "staff-lena",
        "performed_at": NOW.isoformat(),
        "location": "Warehouse Brussels",
    }


CLUSTER = ["recycling"]
PARTNERS = {
    "staff": (Role.STAFF, "staff-lena"),
    "ops": (Role.OPERATIONS, "ops-omar"),
    "donor": (Role.DONOR, "acme-consulate"),
    "school": (Role.RECIPIENT, "school-malala"),
}


@pytest.fixture(scope="module")
def service(cluster):
    return cluster.urls["recycling"]


@pytest.fixture
async def staff(service, keys):
    async with httpx.AsyncClient(
        base_url=service, headers={"X-API-Key": keys["staff"]}, timeout=30
    ) as client:
        yield client


async def _devices(staff: httpx.AsyncClient) -> dict[str, dict]:
    response = await staff.get("/devices")
    assert response.status_code == 200, response.text
    return {d["device_id"]: d for d in response.json()}


async def test_released_and_returned_devices_are_held_once_each(namespace, staff):
    await publish(namespace, RELEASED_A, RELEASED_A, released(B), RETURNED_C, released(PENDING))

    async def all_held():
        devices = await _devices(staff)
        return devices if {str(A), str(B), str(C), str(PENDING)} <= devices.keys() else None

    devices = await eventually(all_held)
    assert len(devices) == 4
    a = devices[str(A)]
    assert a["state"] == "awaiting_dismantling"
    assert a["source"] == "diagnostics"
    assert a["erasure_certificate_id"] == str(RELEASED_A.erasure_certificate_id)
    assert a["correlation_id"] == str(PICKUP)
    assert devices[str(C)]["source"] == "return"
    assert devices[str(C)]["erasure_certificate_id"] == str(RETURNED_C.erasure_certificate_id)
    assert devices[str(C)]["drive_serials"] == ["DRV-C-0", "DRV-C-1"]
    waiting = await staff.get("/devices", params={"state": "awaiting_dismantling"})
    assert len(waiting.json()) == 4
    assert (await staff.get(f"/devices/{A}")).json() == a


async def test_unknown_devices_lots_and_certificates_are_404(staff):
    for path in (f"/devices/{uuid4()}", f"/lots/{uuid4()}", f"/certificates/{uuid4()}"):
        response = await staff.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"]


async def test_only_staff_write_and_operations_read(service, keys):
    async with httpx.AsyncClient(base_url=service, timeout=30) as client:
        assert (await client.get("/devices")).status_code == 401
        for who in ("donor", "school"):
            headers = {"X-API-Key": keys[who]}
            assert (await client.get("/devices", headers=headers)).status_code == 403
            posted = await client.post("/lots", headers=headers, json={})
            assert posted.status_code == 403
        ops = {"X-API-Key": keys["ops"]}
        assert (await client.get("/devices", headers=ops)).status_code == 200
        assert (await client.post("/lots", headers=ops, json={})).status_code == 403
        dismantled = await client.post(f"/devices/{uuid4()}/dismantle", headers=ops, json={})
        assert dismantled.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"fractions": {}, "hazardous_parts": [], "location": "W"},
        {"fractions": {"plastics_kg": -1}, "location": "W"},
        {"fractions": {"plastics_kg": "heavy"}, "location": "W"},
        {"fractions": FRACTIONS, "location": "W", "colour": "grey"},
        {"fractions": FRACTIONS},
    ],
)
async def test_bad_dismantling_input_is_422(staff, body):
    response = await staff.post(f"/devices/{A}/dismantle", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_bad_lot_input_is_422(staff):
    for body in (
        {"recycler": RECYCLER, "device_ids": []},
        {"recycler": RECYCLER, "device_ids": [str(A), str(A)]},
        {"recycler": {"name": "X"}, "device_ids": [str(A)]},
        {"recycler": RECYCLER, "device_ids": ["not-a-uuid"]},
    ):
        assert (await staff.post("/lots", json=body)).status_code == 422, body
    assert (await staff.get("/devices", params={"state": "melted"})).status_code == 422


async def test_dismantling_an_unknown_device_is_refused_and_recorded(namespace, staff):
    unknown = uuid4()
    async with TopicReader(namespace, "transition.refused") as reader:
        response = await staff.post(
            f"/devices/{unknown}/dismantle", json={"fractions": FRACTIONS, "location": "W"}
        )
        assert response.status_code == 409
        assert response.json()["detail"] == (
            "device was neither released for recycling nor returned"
        )
        assert response.json()["state"] == "not_released"
        refusals = (await staff.get("/refusals")).json()
        assert any(r["subject_id"] == str(unknown) for r in refusals)
        await reader.wait_for(lambda evs: [e for e in evs if e.subject_id == unknown])


async def test_a_returned_device_is_dismantled_only_with_every_drive_destroyed(namespace, staff):
    async with TopicReader(namespace, "transition.refused", "device.dismantled") as reader:
        for records, missing in (([], "DRV-C-0, DRV-C-1"), ([destroyed("DRV-C-0")], "DRV-C-1")):
            refused = await staff.post(
                f"/devices/{C}/dismantle",
                json={
                    "fractions": FRACTIONS,
                    "storage_destroyed": records,
                    "hazardous_parts": [],
                    "location": "W",
                },
            )
            assert refused.status_code == 409
            assert refused.json()["detail"] == (
                "storage of a returned device must be destroyed: no verified destroy record "
                f"for drive(s) {missing}"
            )
        refusals = (await staff.get("/refusals")).json()
        assert any(r["subject_id"] == str(C) and r["action"] == "dismantle" for r in refusals)
        await reader.wait_for(
            lambda evs: [
                e for e in evs if e.event_type == "transition.refused" and e.subject_id == C
            ]
        )
        assert (await staff.get(f"/devices/{C}")).json()["state"] == "awaiting_dismantling"

        done = await staff.post(
            f"/devices/{C}/dismantle",
            json={
                "fractions": FRACTIONS,
                "hazardous_parts": ["li-ion battery"],
                "storage_destroyed": [destroyed("DRV-C-0"), destroyed("DRV-C-1")],
                "location": "Warehouse Brussels",
            },
        )
        assert done.status_code == 201, done.text
        view = done.json()
        assert view["state"] == "dismantled"
        assert view["dismantled_by"] == "staff-lena"
        assert view["total_kg"] == pytest.approx(1.05)
        assert [r["drive_serial"] for r in view["storage_destroyed"]] == ["DRV-C-0", "DRV-C-1"]
        events = await reader.wait_for(
            lambda evs: [
                e for e in evs if e.event_type == "device.dismantled" and e.subject_id == C
            ]
        )
        assert [r.drive_serial for r in events[0].storage_destroyed] == ["DRV-C-0", "DRV-C-1"]
        assert events[0].drive_serials == ["DRV-C-0", "DRV-C-1"]
        assert events[0].erasure_certificate_id == RETURNED_C.erasure_certificate_id


async def test_a_return_of_the_v1_shape_is_held_with_unknown_drives_and_dismantled_safely(
    namespace, staff
):
    legacy = RETURNED_C.model_copy(update={"event_id": uuid4(), "device_id": uuid4()})
    v1 = legacy.model_dump(mode="json", exclude={"drive_serials", "erasure_certificate_id"})
    key = str(legacy.device_id).encode()
    await publish_raw(namespace, "device.returned", json.dumps(v1).encode(), key)

    async def held():
        response = await staff.get(f"/devices/{legacy.device_id}")
        return response.json() if response.status_code == 200 else None

    device = await eventually(held)
    assert device["drive_serials"] is None
    assert device["erasure_certificate_id"] is None
    path = f"/devices/{legacy.device_id}/dismantle"
    body = {"fractions": FRACTIONS, "location": "W"}
    refused = await staff.post(path, json=body)
    assert refused.status_code == 409
    assert "its drives are unknown to recycling" in refused.json()["detail"]
    unverified = destroyed("DRV-L-1") | {"verified": False}
    refused = await staff.post(
        path, json=body | {"storage_destroyed": [destroyed("DRV-L-0"), unverified]}
    )
    assert refused.status_code == 409
    assert refused.json()["detail"].endswith("drive(s) DRV-L-1")
    done = await staff.post(
        path, json=body | {"storage_destroyed": [destroyed("DRV-L-0"), destroyed("DRV-L-1")]}
    )
    assert done.status_code == 201, done.text


async def test_released_devices_are_dismantled_once(staff):
    for device_id in (A, B):
        response = await staff.post(
            f"/devices/{device_id}/dismantle",
            json={"fractions": FRACTIONS, "hazardous_parts": ["li-ion battery"], "location": "W"},
        )
        assert response.status_code == 201, response.text
    again = await staff.post(
        f"/devices/{A}/dismantle", json={"fractions": FRACTIONS, "location": "W"}
    )
    assert again.status_code == 409
    assert again.json()["state"] == "dismantled"


async def test_a_duplicate_event_is_applied_once(namespace, staff):
    before = (await staff.get(f"/devices/{A}")).json()
    assert before["state"] == "dismantled"
    await publish(namespace, RELEASED_A)
    # A marker on A's key (same partition, after the duplicate) shows the duplicate was consumed.
    marker = released(uuid4())
    await publish_raw(namespace, "device.released_for_recycling", encode(marker), str(A).encode())

    async def marker_held():
        return (await staff.get(f"/devices/{marker.device_id}")).status_code == 200

    await eventually(marker_held)
    assert (await staff.get(f"/devices/{A}")).json() == before
    refusals = (await staff.get("/refusals")).json()
    assert not [r for r in refusals if r["subject_id"] == str(A) and r["action"] == "admit"]


async def test_a_lot_with_an_undismantled_device_is_refused_and_changes_nothing(staff):
    response = await staff.post(
        "/lots", json={"recycler": RECYCLER, "device_ids": [str(A), str(PENDING)]}
    )
    assert response.status_code == 409
    assert response.json()["state"] == "awaiting_dismantling"
    assert (await staff.get("/lots")).json() == []
    assert (await staff.get(f"/devices/{A}")).json()["lot_id"] is None


async def test_a_lot_dispatches_dismantled_devices_and_certifies_each(namespace, staff):
    body = {"recycler": RECYCLER, "device_ids": [str(A), str(B), str(C)]}
    headers = {"Idempotency-Key": f"lot-{uuid4()}"}
    async with TopicReader(namespace, "lot.dispatched", "device.recycled") as reader:
        response = await staff.post("/lots", json=body, headers=headers)
        assert response.status_code == 201, response.text
        lot = response.json()
        assert lot["status"] == "dispatched"
        assert lot["bill_of_lading"] == (f"BOL-R-{NOW.year}-{UUID(lot['lot_id']).hex[:8].upper()}")
        assert lot["total_kg"] == pytest.approx(3 * 1.05)
        assert lot["fractions"]["plastics_kg"] == pytest.approx(1.5)
        assert lot["recycler"] == RECYCLER
        lot_id = UUID(lot["lot_id"])

        retried = await staff.post("/lots", json=body, headers=headers)
        assert retried.status_code == 201
        assert retried.json() == lot

        await reader.wait_for(
            lambda evs: (
                len({e.subject_id for e in evs if e.event_type == "device.recycled"}) == 3
                and [e for e in evs if e.event_type == "lot.dispatched"]
            )
        )
        [dispatched] = reader.of_type("lot.dispatched")
        assert dispatched.lot_id == lot_id
        assert set(dispatched.device_ids) == {A, B, C}
        recycled = {e.device_id: e for e in reader.of_type("device.recycled")}
        assert len(reader.of_type("device.recycled")) == 3
        for device_id in (A, B, C):
            event = recycled[device_id]
            assert event.lot_id == lot_id
            assert event.certificate_id == derive_id(
                "recycling", device_id, "recycling-certificate"
            )
            assert event.fractions.total_kg == pytest.approx(1.05)

    assert (await staff.get(f"/lots/{lot_id}")).json() == lot
    assert (await staff.get("/lots")).json() == [lot]
    by_device = {c["device_id"]: c["certificate_id"] for c in lot["certificates"]}
    assert by_device.keys() == {str(A), str(B), str(C)}
    for device_id, certificate_id in by_device.items():
        certificate = (await staff.get(f"/certificates/{certificate_id}")).json()
        assert certificate["device_id"] == device_id
        assert certificate["lot_id"] == str(lot_id)
        assert certificate["bill_of_lading"] == lot["bill_of_lading"]
        assert certificate["recycler"] == RECYCLER
        device = (await staff.get(f"/devices/{device_id}")).json()
        assert device["state"] == "recycled"
        assert device["recycling_certificate_id"] == certificate_id
    a = (await staff.get(f"/certificates/{by_device[str(A)]}")).json()
    assert a["erasure_certificate_id"] == str(RELEASED_A.erasure_certificate_id)
    c = (await staff.get(f"/certificates/{by_device[str(C)]}")).json()
    assert c["source"] == "return"
    assert c["drive_serials"] == ["DRV-C-0", "DRV-C-1"]
    assert [r["drive_serial"] for r in c["storage_destroyed"]] == ["DRV-C-0", "DRV-C-1"]
    assert {r["method"] for r in c["storage_destroyed"]} == {"destroy"}
    assert c["erasure_certificate_id"] == str(RETURNED_C.erasure_certificate_id)


async def test_a_device_cannot_leave_in_a_second_lot(staff):
    response = await staff.post("/lots", json={"recycler": RECYCLER, "device_ids": [str(A)]})
    assert response.status_code == 409
    assert response.json()["detail"] == "device is already in a lot"
    assert len((await staff.get("/lots")).json()) == 1
    refusals = (await staff.get("/refusals")).json()
    assert any(r["subject_id"] == str(A) and r["action"] == "dispatch" for r in refusals)


async def test_two_lots_racing_for_a_device_leave_it_in_exactly_one(namespace, staff):
    contested, other = uuid4(), uuid4()
    await publish(namespace, released(contested), released(other))

    async def held():
        devices = await _devices(staff)
        return {str(contested), str(other)} <= devices.keys()

    await eventually(held)
    for device_id in (contested, other):
        response = await staff.post(
            f"/devices/{device_id}/dismantle", json={"fractions": FRACTIONS, "location": "W"}
        )
        assert response.status_code == 201
    lots_before = len((await staff.get("/lots")).json())
    first, second = await asyncio.gather(
        staff.post("/lots", json={"recycler": RECYCLER, "device_ids": [str(contested)]}),
        staff.post(
            "/lots", json={"recycler": RECYCLER, "device_ids": [str(other), str(contested)]}
        ),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    lots = (await staff.get("/lots")).json()
    assert len(lots) == lots_before + 1
    assert [lot for lot in lots if str(contested) in lot["device_ids"]] == [
        (first if first.status_code == 201 else second).json()
    ]
    other_state = (await staff.get(f"/devices/{other}")).json()
    assert other_state["state"] == ("recycled" if second.status_code == 201 else "dismantled")
    assert other_state["lot_id"] is None or second.status_code == 201


async def test_a_lot_left_dispatching_by_a_crash_is_finished_on_restart(namespace, cluster, staff):
    claimed, unclaimed = uuid4(), uuid4()
    await publish(namespace, released(claimed), released(unclaimed))

    async def held():
        devices = await _devices(staff)
        return {str(claimed), str(unclaimed)} <= devices.keys()

    await eventually(held)
    for device_id in (claimed, unclaimed):
        response = await staff.post(
            f"/devices/{device_id}/dismantle", json={"fractions": FRACTIONS, "location": "W"}
        )
        assert response.status_code == 201
    lot = domain.Lot(
        lot_id=uuid4(),
        recycler=Recycler(**RECYCLER),
        bill_of_lading="BOL-R-CRASH",
        device_ids=(claimed, unclaimed),
        fractions=domain.sum_fractions([MaterialFractions(**FRACTIONS)] * 2),
        dispatched_at=NOW,
    )
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL, tz_aware=True)
    try:
        db = client[f"{namespace}greenit_recycling"]
        cluster.stop("recycling", kill=True)
        await db.lots.insert_one(
            {
                "_id": str(lot.lot_id),
                "status": "dispatching",
                "idempotency_key": str(lot.lot_id),
                **store.lot_doc(lot),
            }
        )
        await db.devices.update_one({"_id": str(claimed)}, {"$set": {"lot_id": str(lot.lot_id)}})
    finally:
        await client.close()
    async with TopicReader(namespace, "lot.dispatched", "device.recycled") as reader:
        cluster.start("recycling")
        cluster.wait_healthy("recycling")
        finished = (await staff.get(f"/lots/{lot.lot_id}")).json()
        assert finished["status"] == "dispatched"
        await reader.wait_for(
            lambda evs: {e.subject_id for e in evs} >= {lot.lot_id, claimed, unclaimed}
        )
    for device_id in (claimed, unclaimed):
        device = (await staff.get(f"/devices/{device_id}")).json()
        assert device["state"] == "recycled"
        assert device["lot_id"] == str(lot.lot_id)
