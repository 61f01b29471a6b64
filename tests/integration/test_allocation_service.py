"""Allocation as a real process: fed device.ready on Kafka, driven through its HTTP API, its
emitted events read back from the topics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from shared.auth import Role
from shared.events import (
    DeviceReady,
)
from tests.helpers import Api, TopicReader, caught_up, device_ready, eventually, publish

pytestmark = pytest.mark.integration

STAFF, OPS, SCHOOL_A, SCHOOL_B = "staff-lena", "ops-omar", "school-rosa-parks", "school-malala"
RAMS = [4, 8, 8, 16, 16]
PICKUP = uuid4()
TOPICS = (
    "request.opened",
    "request.closed",
    "device.allocated",
    "device.shipped",
    "device.delivered",
    "device.reported",
    "device.returned",
    "transition.refused",
)


def ready(ram: float) -> DeviceReady:
    return device_ready(ram, PICKUP)


CLUSTER = ["allocation"]
PARTNERS = {
    STAFF: Role.STAFF,
    OPS: Role.OPERATIONS,
    SCHOOL_A: Role.RECIPIENT,
    SCHOOL_B: Role.RECIPIENT,
}


class Service:
    def __init__(self, http: Api) -> None:
        self.call = http
        self.devices: list[DeviceReady] = []
        self.requests: dict[str, str] = {}
        self.shipment_id = ""

    async def ok(self, who: str, method: str, path: str, **kw: Any) -> Any:
        response = await self.call(who, method, path, **kw)
        assert response.status_code in (200, 201), (method, path, response.text)
        return response.json()

    def device(self, i: int) -> str:
        return str(self.devices[i].device_id)


@pytest.fixture(scope="module")
def svc(http: Api) -> Service:
    return Service(http)


@pytest.fixture(scope="module")
async def reader(topics, namespace):
    async with TopicReader(namespace, *TOPICS) as r:
        yield r


async def test_1_ready_devices_enter_stock_once_even_if_delivered_twice(svc, namespace):
    svc.devices = [ready(ram) for ram in RAMS]
    await publish(namespace, *svc.devices, svc.devices[1])

    async def stocked():
        stock = await svc.ok(STAFF, "GET", "/stock")
        ids = [d["device_id"] for d in stock]
        return ids if set(ids) >= {str(d.device_id) for d in svc.devices} else None

    ids = await eventually(stocked)
    await caught_up(namespace, "allocation", "device.ready")
    ids = [d["device_id"] for d in await svc.ok(STAFF, "GET", "/stock")]
    assert sorted(ids) == sorted(svc.device(i) for i in range(5))
    one = await svc.ok(OPS, "GET", f"/devices/{svc.device(1)}")
    assert one["state"] == "available"
    assert one["erasure_certificate_id"] == str(svc.devices[1].erasure_certificate_id)


async def test_2_keys_roles_and_bad_input_are_checked(svc):
    body = {"quantity": 1, "category": "laptop", "purpose": "Class"}
    assert (await svc.call(None, "GET", "/requests")).status_code == 401
    wrong = {"X-API-Key": "git_not-a-key"}
    assert (await svc.call(None, "GET", "/requests", headers=wrong)).status_code == 401
    assert (await svc.call(STAFF, "POST", "/requests", json=body)).status_code == 403
    assert (await svc.call(SCHOOL_A, "GET", "/stock")).status_code == 403
    for bad in (
        body | {"colour": "red"},
        body | {"priority": 9},
        body | {"quantity": 0},
        body | {"category": "toaster"},
        body | {"min_specs": {"ram_gb": "lots"}},
        {"category": "laptop", "purpose": "Class"},
    ):
        response = await svc.call(SCHOOL_A, "POST", "/requests", json=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"]
    assert (await svc.call(STAFF, "GET", "/requests/not-a-uuid")).status_code == 422
    assert (await svc.call(STAFF, "GET", f"/requests/{uuid4()}")).status_code == 404
    assert (await svc.call(STAFF, "GET", f"/devices/{uuid4()}")).status_code == 404


async def test_3_matching_serves_the_urgent_request_first_with_the_smallest_sufficient_devices(
    svc, reader
):
    a = await svc.ok(
        SCHOOL_A,
        "POST",
        "/requests",
        json={
            "quantity": 2,
            "category": "laptop",
            "min_specs": {"ram_gb": 8},
            "purpose": "Coding club",
            "priority": 1,
        },
    )
    b = await svc.ok(
        SCHOOL_B,
        "POST",
        "/requests",
        json={"quantity": 4, "category": "laptop", "purpose": "Homework", "deadline": "2030-01-31"},
    )
    assert (a["status"], a["allocated"], a["recipient_id"]) == ("open", 0, SCHOOL_A)
    assert (b["priority"], b["deadline"]) == (3, "2030-01-31")
    svc.requests = {SCHOOL_A: a["request_id"], SCHOOL_B: b["request_id"]}

    result = await svc.ok(STAFF, "POST", "/matching/run", json={})
    got = {x["device_id"]: x["recipient_id"] for x in result["allocations"]}
    assert got == {
        svc.device(1): SCHOOL_A,
        svc.device(2): SCHOOL_A,
        svc.device(0): SCHOOL_B,
        svc.device(3): SCHOOL_B,
        svc.device(4): SCHOOL_B,
    }
    assert result["open_requests"] == 1

    a = await svc.ok(SCHOOL_A, "GET", f"/requests/{a['request_id']}")
    b = await svc.ok(STAFF, "GET", f"/requests/{b['request_id']}")
    assert (a["status"], a["allocated"]) == ("fulfilled", 2)
    assert sorted(a["device_ids"]) == sorted([svc.device(1), svc.device(2)])
    assert (b["status"], b["allocated"]) == ("open", 3)
    assert (await svc.ok(STAFF, "POST", "/matching/run", json={}))["allocations"] == []
    assert (await svc.call(SCHOOL_B, "GET", f"/requests/{a['request_id']}")).status_code == 404
    assert [r["request_id"] for r in await svc.ok(SCHOOL_B, "GET", "/requests")] == [
        b["request_id"]
    ]
    assert len(await svc.ok(OPS, "GET", "/requests")) == 2
    assert await svc.ok(STAFF, "GET", "/stock") == []

    def settled(events):
        allocated = [e for e in events if e.event_type == "device.allocated"]
        closed = [e for e in events if e.event_type == "request.closed"]
        opened = [e for e in events if e.event_type == "request.opened"]
        return (allocated, closed) if len(allocated) == 5 and closed and len(opened) == 2 else None

    allocated, closed = await reader.wait_for(settled)
    for event in allocated:
        assert str(event.correlation_id) == svc.requests[event.recipient_id]
        assert str(event.request_id) == svc.requests[event.recipient_id]
    assert [(str(e.request_id), e.outcome, e.allocated) for e in closed] == [
        (svc.requests[SCHOOL_A], "fulfilled", 2)
    ]


async def test_4_a_device_never_made_ready_cannot_be_allocated(svc, reader):
    never_ready = uuid4()
    body = {"device_id": str(never_ready), "request_id": svc.requests[SCHOOL_B]}
    response = await svc.call(STAFF, "POST", "/allocations", json=body)
    assert response.status_code == 409, response.text
    assert "never reported ready" in response.json()["detail"]
    refusals = await svc.ok(OPS, "GET", "/refusals")
    assert any(r["subject_id"] == str(never_ready) and r["action"] == "allocate" for r in refusals)
    await reader.wait_for(
        lambda evs: [
            e for e in evs if e.event_type == "transition.refused" and e.subject_ref == never_ready
        ]
    )
    assert (await svc.ok(STAFF, "GET", f"/requests/{svc.requests[SCHOOL_B]}"))["allocated"] == 3


async def test_5_a_shipment_is_accepted_once_and_only_by_its_recipient(svc, reader):
    ids = [svc.device(1), svc.device(2)]
    shipment = await svc.ok(
        STAFF,
        "POST",
        "/shipments",
        json={"recipient_id": SCHOOL_A, "device_ids": ids, "carrier": "Bpost"},
    )
    svc.shipment_id = sid = shipment["shipment_id"]
    assert shipment["bill_of_lading"].startswith(f"BOL-{datetime.now(UTC).year}-")
    assert shipment["status"] == "in_transit"
    assert [d["device_id"] for d in shipment["devices"]] == ids
    assert shipment["devices"][0]["erasure_certificate_id"] == str(
        svc.devices[1].erasure_certificate_id
    )

    twice = await svc.call(
        STAFF, "POST", "/shipments", json={"recipient_id": SCHOOL_A, "device_ids": ids[:1]}
    )
    assert twice.status_code == 409
    assert "already shipped" in twice.json()["detail"]
    mixed = await svc.call(
        STAFF,
        "POST",
        "/shipments",
        json={"recipient_id": SCHOOL_B, "device_ids": [svc.device(0), ids[0]]},
    )
    assert mixed.status_code == 409
    assert (await svc.ok(STAFF, "GET", f"/devices/{svc.device(0)}"))["state"] == "allocated"
    wrong = await svc.call(
        STAFF, "POST", "/shipments", json={"recipient_id": SCHOOL_A, "device_ids": [svc.device(3)]}
    )
    assert wrong.status_code == 409
    refusals = await svc.ok(STAFF, "GET", "/refusals")
    assert any(r["subject_id"] == ids[0] and r["action"] == "ship" for r in refusals)

    assert (await svc.call(SCHOOL_B, "GET", f"/shipments/{sid}")).status_code == 404
    assert await svc.ok(SCHOOL_B, "GET", "/shipments") == []
    steal = await svc.call(SCHOOL_B, "POST", f"/shipments/{sid}/accept", json={"accepted_by": "X"})
    assert steal.status_code == 404
    assert (
        await svc.call(SCHOOL_A, "POST", f"/shipments/{sid}/accept", json={"who": "X"})
    ).status_code == 422
    accepted = await svc.ok(
        SCHOOL_A, "POST", f"/shipments/{sid}/accept", json={"accepted_by": "Ms. Diallo"}
    )
    assert (accepted["status"], accepted["accepted_by"]) == ("delivered", "Ms. Diallo")
    again = await svc.call(
        SCHOOL_A, "POST", f"/shipments/{sid}/accept", json={"accepted_by": "Ms. Diallo"}
    )
    assert again.status_code == 409
    mine = await svc.ok(SCHOOL_A, "GET", "/devices", params={"state": "delivered"})
    assert sorted(d["device_id"] for d in mine) == sorted(ids)

    def shipped_and_delivered(events):
        shipped = [e for e in events if e.event_type == "device.shipped"]
        delivered = [e for e in events if e.event_type == "device.delivered"]
        return (shipped, delivered) if len(shipped) == 2 and len(delivered) == 2 else None

    shipped, delivered = await reader.wait_for(shipped_and_delivered)
    assert {str(e.device_id) for e in shipped} == set(ids)
    assert {str(e.shipment_id) for e in shipped + delivered} == {sid}
    assert {str(e.correlation_id) for e in shipped + delivered} == {svc.requests[SCHOOL_A]}
    assert shipped[0].bill_of_lading == shipment["bill_of_lading"]


async def test_6_a_delivered_device_is_reported_broken_and_returned(svc, reader):
    broken_id, lost_id = svc.device(1), svc.device(2)
    assert (await svc.call(SCHOOL_B, "GET", f"/devices/{broken_id}")).status_code == 404
    assert broken_id not in {d["device_id"] for d in await svc.ok(SCHOOL_B, "GET", "/devices")}
    hidden = await svc.call(
        SCHOOL_B, "POST", f"/devices/{broken_id}/report", json={"condition": "broken"}
    )
    assert hidden.status_code == 404
    bad = await svc.call(SCHOOL_A, "POST", f"/devices/{broken_id}/report", json={"condition": "x"})
    assert bad.status_code == 422

    broken = await svc.ok(
        SCHOOL_A,
        "POST",
        f"/devices/{broken_id}/report",
        json={"condition": "broken", "note": "hinge"},
    )
    assert (broken["state"], broken["note"]) == ("broken", "hinge")
    returned = await svc.ok(
        SCHOOL_A, "POST", f"/devices/{broken_id}/return", json={"reason": "broken"}
    )
    assert returned["state"] == "returned"

    lost = await svc.ok(SCHOOL_A, "POST", f"/devices/{lost_id}/report", json={"condition": "lost"})
    assert lost["state"] == "lost"
    refused = await svc.call(
        STAFF, "POST", f"/devices/{lost_id}/return", json={"reason": "end_of_life"}
    )
    assert refused.status_code == 409
    never_delivered = await svc.call(
        SCHOOL_B, "POST", f"/devices/{svc.device(3)}/return", json={"reason": "end_of_life"}
    )
    assert never_delivered.status_code == 409
    not_delivered = await svc.call(
        SCHOOL_B, "POST", f"/devices/{svc.device(3)}/report", json={"condition": "broken"}
    )
    assert not_delivered.status_code == 409

    def after_life(events):
        reported = [e for e in events if e.event_type == "device.reported"]
        returned = [e for e in events if e.event_type == "device.returned"]
        return (reported, returned) if len(reported) == 2 and returned else None

    reported, returned_events = await reader.wait_for(after_life)
    assert {(str(e.device_id), e.condition) for e in reported} == {
        (broken_id, "broken"),
        (lost_id, "lost"),
    }
    [back] = returned_events
    assert (str(back.device_id), back.reason, back.category) == (broken_id, "broken", "laptop")
    assert (back.recipient_id, str(back.correlation_id)) == (SCHOOL_A, svc.requests[SCHOOL_A])
    [ready_event] = [d for d in svc.devices if str(d.device_id) == broken_id]
    assert back.drive_serials == [d.serial for d in ready_event.specs.drives]
    assert back.drive_serials
    assert back.erasure_certificate_id == ready_event.erasure_certificate_id


async def test_7_a_request_is_cancelled_once_and_only_by_its_owner_or_staff(svc, reader):
    rid = svc.requests[SCHOOL_B]
    assert (await svc.call(SCHOOL_A, "POST", f"/requests/{rid}/cancel")).status_code == 404
    cancelled = await svc.ok(SCHOOL_B, "POST", f"/requests/{rid}/cancel")
    assert (cancelled["status"], cancelled["allocated"]) == ("cancelled", 3)
    assert (await svc.call(STAFF, "POST", f"/requests/{rid}/cancel")).status_code == 409
    closed = await reader.wait_for(
        lambda evs: [
            e for e in evs if e.event_type == "request.closed" and str(e.request_id) == rid
        ]
    )
    assert [(e.outcome, e.allocated) for e in closed] == [("cancelled", 3)]


async def test_8_a_replayed_device_ready_changes_nothing(svc, namespace):
    before = await svc.ok(STAFF, "GET", f"/devices/{svc.device(1)}")
    await publish(namespace, svc.devices[1], svc.devices[0])
    await caught_up(namespace, "allocation", "device.ready")
    assert await svc.ok(STAFF, "GET", f"/devices/{svc.device(1)}") == before
    assert (await svc.ok(STAFF, "GET", f"/devices/{svc.device(0)}"))["state"] == "allocated"
    assert await svc.ok(STAFF, "GET", "/stock") == []
    states = {d["device_id"]: d["state"] for d in await svc.ok(STAFF, "GET", "/devices")}
    assert states == {
        svc.device(0): "allocated",
        svc.device(1): "returned",
        svc.device(2): "lost",
        svc.device(3): "allocated",
        svc.device(4): "allocated",
    }
    assert UUID(before["request_id"]) == UUID(svc.requests[SCHOOL_A])
