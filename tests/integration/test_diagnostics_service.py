"""The diagnostics service as a real process: fed device.received, driven over HTTP,
checked through its API and the topics it writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from shared.auth import Role
from shared.events import DeviceCategory, DeviceReceived
from shared.examples import EXAMPLES
from shared.ids import derive_id
from tests.helpers import TopicReader, caught_up, create_key, eventually, publish, published

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
ALL_PASS = dict.fromkeys(
    ["boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"],
    "pass",
)
PRISTINE = {"casing": "none", "screen_scratches": "none", "cracked": False}


CLUSTER = ["diagnostics"]
PARTNERS = {"staff": (Role.STAFF, "staff-x")}


@pytest.fixture(scope="module")
def url(cluster) -> str:
    return cluster.urls["diagnostics"]


@pytest.fixture(scope="module")
async def client(url, keys) -> Any:
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": keys["staff"]}, timeout=30
    ) as c:
        yield c


def received(category: DeviceCategory = DeviceCategory.LAPTOP) -> DeviceReceived:
    device_id = uuid4()
    event = EXAMPLES[DeviceReceived].model_copy(
        update={
            "event_id": uuid4(),
            "device_id": device_id,
            "category": category,
            "asset_tag": f"GIT-{device_id.hex[:8]}",
            "occurred_at": NOW,
        }
    )
    assert isinstance(event, DeviceReceived)
    return event


async def receive(client: httpx.AsyncClient, namespace: str, *events: DeviceReceived) -> None:
    await publish(namespace, *events)

    async def all_there() -> bool:
        for event in events:
            if (await client.get(f"/devices/{event.device_id}")).status_code != 200:
                return False
        return True

    await eventually(all_there)


def specs(*serials: str, ram_gb: float = 8) -> dict[str, Any]:
    return {
        "cpu_model": "Intel Core i5-8350U",
        "cpu_cores": 4,
        "ram_gb": ram_gb,
        "drives": [{"serial": s, "kind": "ssd", "capacity_gb": 256} for s in serials],
        "battery_health_pct": 85,
    }


def report(drive_specs: dict[str, Any], **tests: str) -> dict[str, Any]:
    return {
        "specs": drive_specs,
        "tests": ALL_PASS | tests,
        "cosmetic": PRISTINE,
        "location": "Warehouse Brussels",
    }


def erasure(serial: str, method: str = "purge", verified: bool = True) -> dict[str, Any]:
    return {
        "drive_serial": serial,
        "method": method,
        "technique": "shredding" if method == "destroy" else "NVMe secure erase",
        "tool": "nwipe",
        "tool_version": "0.37",
        "verified": verified,
        "verification": "full read-back",
        "performed_at": NOW.isoformat(),
        "location": "Warehouse Brussels",
    }


async def test_a_donation_is_graded_wiped_certified_and_released(client, namespace):
    laptop, desktop, monitor = (
        received(DeviceCategory.LAPTOP),
        received(DeviceCategory.DESKTOP),
        received(DeviceCategory.MONITOR),
    )
    await receive(client, namespace, laptop, laptop, desktop, monitor)
    listed = (await client.get("/devices", params={"state": "received"})).json()
    ours = [d for d in listed if d["device_id"] in {str(laptop.device_id), str(desktop.device_id)}]
    assert len(ours) == 2

    r = await client.post(f"/devices/{laptop.device_id}/reports", json=report(specs("L-1")))
    assert r.status_code == 201, r.text
    assert r.json() | {"rules_version": None} == {
        "device_id": str(laptop.device_id),
        "state": "diagnosed",
        "cosmetic_grade": "A",
        "functional_grade": "A",
        "decision": "refurbish",
        "reason": r.json()["reason"],
        "rules_version": None,
        "drives_pending": ["L-1"],
        "certificate_id": None,
    }
    assert r.json()["rules_version"] == "2026-11-default"

    r = await client.post(
        f"/devices/{desktop.device_id}/reports", json=report(specs("D-1", "D-2"), boot="fail")
    )
    assert r.status_code == 201, r.text
    assert r.json()["decision"] == "recycle"
    assert r.json()["reason"] == "functional grade D: boot failed"
    assert r.json()["drives_pending"] == ["D-1", "D-2"]

    no_tests = dict.fromkeys(ALL_PASS, "n/a") | {"screen": "pass"}
    r = await client.post(
        f"/devices/{monitor.device_id}/reports",
        json={**report({"drives": []}), "tests": no_tests},
    )
    assert r.status_code == 201, r.text
    monitor_certificate = derive_id("diagnostics", monitor.device_id, "erasure-certificate")
    assert r.json()["state"] == "ready"
    assert r.json()["certificate_id"] == str(monitor_certificate)

    async with TopicReader(namespace, "device.ready", "device.wiped") as reader:
        r = await client.post(
            f"/devices/{laptop.device_id}/erasures", json=erasure("L-1", verified=False)
        )
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "diagnosed"
        assert r.json()["drives_pending"] == ["L-1"]
        await reader.wait_for(
            lambda evs: any(
                e.subject_id == monitor.device_id for e in evs if e.event_type == "device.ready"
            )
        )
        assert not [e for e in reader.events if e.subject_id == laptop.device_id]

    r = await client.post(f"/devices/{laptop.device_id}/erasures", json=erasure("L-1"))
    assert r.status_code == 201, r.text
    laptop_certificate = derive_id("diagnostics", laptop.device_id, "erasure-certificate")
    assert r.json() == {
        "device_id": str(laptop.device_id),
        "state": "ready",
        "drives_pending": [],
        "certificate_id": str(laptop_certificate),
    }

    r = await client.post(f"/devices/{desktop.device_id}/erasures", json=erasure("D-1", "destroy"))
    assert r.json()["drives_pending"] == ["D-2"]
    r = await client.post(f"/devices/{desktop.device_id}/erasures", json=erasure("D-2", "clear"))
    assert r.json()["state"] == "awaiting_recycling"
    desktop_certificate = r.json()["certificate_id"]

    ids = {laptop.device_id, desktop.device_id, monitor.device_id}
    topics = ("device.diagnosed", "device.wiped", "device.ready", "device.released_for_recycling")
    async with TopicReader(namespace, *topics) as reader:

        def complete(evs) -> bool:
            ours = [e for e in evs if e.subject_id in ids]
            return len(ours) >= 9

        await reader.wait_for(complete)
        # diagnostics' outbox is empty: all it will publish is on the topics; read to the end
        await published(namespace, "diagnostics")
        await reader.read_to_end()
        ours = [(e.event_type, e.subject_id) for e in reader.events if e.subject_id in ids]
        assert sorted(ours, key=str) == sorted(
            [
                ("device.diagnosed", laptop.device_id),
                ("device.diagnosed", desktop.device_id),
                ("device.diagnosed", monitor.device_id),
                ("device.wiped", laptop.device_id),
                ("device.wiped", desktop.device_id),
                ("device.wiped", monitor.device_id),
                ("device.ready", laptop.device_id),
                ("device.ready", monitor.device_id),
                ("device.released_for_recycling", desktop.device_id),
            ],
            key=str,
        )
        [ready] = [e for e in reader.of_type("device.ready") if e.subject_id == laptop.device_id]
        assert ready.erasure_certificate_id == laptop_certificate
        assert ready.correlation_id == laptop.pickup_id
        [wiped] = [e for e in reader.of_type("device.wiped") if e.subject_id == desktop.device_id]
        assert [(x.drive_serial, x.method) for x in wiped.erasures] == [
            ("D-1", "destroy"),
            ("D-2", "clear"),
        ]

    certificate = (await client.get(f"/certificates/{laptop_certificate}")).json()
    assert certificate["device_id"] == str(laptop.device_id)
    assert (certificate["make"], certificate["model"]) == (laptop.make, laptop.model)
    assert certificate["serial_number"] == laptop.serial_number
    assert certificate["asset_tag"] == laptop.asset_tag
    [drive] = certificate["drives"]
    assert drive["serial"] == "L-1"
    assert drive["method"] == "purge"
    assert drive["verified"] is True
    assert drive["operator"] == "staff-x"
    assert (await client.get(f"/certificates/{desktop_certificate}")).json()["drives"][0][
        "method"
    ] == "destroy"
    assert (await client.get(f"/certificates/{monitor_certificate}")).json()["drives"] == []
    assert (await client.get(f"/certificates/{uuid4()}")).status_code == 404

    view = (await client.get(f"/devices/{laptop.device_id}")).json()
    assert view["state"] == "ready"
    assert view["certificate_id"] == str(laptop_certificate)
    assert [e["verified"] for e in view["erasures"]] == [False, True]
    assert view["report"]["tests"]["boot"] == "pass"
    assert view["report"]["tested_by"] == "staff-x"


async def test_a_redelivered_device_received_changes_nothing(client, namespace):
    event = received()
    await receive(client, namespace, event)
    r = await client.post(f"/devices/{event.device_id}/reports", json=report(specs("R-1")))
    assert r.status_code == 201
    before = (await client.get(f"/devices/{event.device_id}")).json()

    await publish(namespace, event)
    await caught_up(namespace, "diagnostics", "device.received")

    after = (await client.get(f"/devices/{event.device_id}")).json()
    assert after == before
    assert after["state"] == "diagnosed"
    all_devices = (await client.get("/devices")).json()
    assert [d["device_id"] for d in all_devices].count(str(event.device_id)) == 1


async def test_a_burst_of_new_and_redelivered_devices_is_applied_once_each(client, namespace):
    """One burst: the consumer takes it in batches, inserts the new devices in bulk and leaves
    the ones it already holds (further along) untouched."""
    known = [received() for _ in range(5)]
    await receive(client, namespace, *known)
    for event in known:
        r = await client.post(f"/devices/{event.device_id}/reports", json=report(specs("K-1")))
        assert r.status_code == 201, r.text
    new = [received() for _ in range(60)]

    await publish(namespace, *new[:30], *known, *new[30:], *new[:10])
    await caught_up(namespace, "diagnostics", "device.received")

    listed = [d["device_id"] for d in (await client.get("/devices?limit=1000")).json()]
    for event in new:
        assert listed.count(str(event.device_id)) == 1
        device = (await client.get(f"/devices/{event.device_id}")).json()
        assert device["state"] == "received"
    for event in known:
        assert (await client.get(f"/devices/{event.device_id}")).json()["state"] == "diagnosed"


async def test_illegal_transitions_are_refused_recorded_and_published(client, namespace):
    event = received()
    await receive(client, namespace, event)
    device = event.device_id

    r = await client.post(f"/devices/{device}/erasures", json=erasure("X-1"))
    assert r.status_code == 409
    assert r.json()["detail"] == "the device has not been diagnosed yet"

    await client.post(f"/devices/{device}/reports", json=report(specs("X-1")))
    again = await client.post(f"/devices/{device}/reports", json=report(specs("X-1")))
    assert again.status_code == 409
    assert again.json()["detail"] == "the device was already diagnosed"

    destroy = await client.post(f"/devices/{device}/erasures", json=erasure("X-1", "destroy"))
    assert destroy.status_code == 409
    assert destroy.json()["detail"] == "destroying storage makes it unfit for reuse"
    unknown_drive = await client.post(f"/devices/{device}/erasures", json=erasure("NOPE"))
    assert unknown_drive.status_code == 409

    refusals = (await client.get("/refusals")).json()
    reasons = {r["reason"] for r in refusals if r["subject_id"] == str(device)}
    assert "destroying storage makes it unfit for reuse" in reasons
    assert "the device was already diagnosed" in reasons

    async with TopicReader(namespace, "transition.refused") as reader:
        await reader.wait_for(
            lambda evs: any(
                e.subject_id == device and e.reason == "destroying storage makes it unfit for reuse"
                for e in evs
            )
        )
    view = (await client.get(f"/devices/{device}")).json()
    assert view["state"] == "diagnosed"
    assert view["erasures"] == []

    await client.post(f"/devices/{device}/erasures", json=erasure("X-1"))
    late = await client.post(f"/devices/{device}/erasures", json=erasure("X-1"))
    assert late.status_code == 409
    assert late.json()["detail"] == "the erasure certificate was already issued"


async def test_unknown_devices_are_answered_404(client):
    r = await client.post(f"/devices/{uuid4()}/reports", json=report(specs("U-1")))
    assert r.status_code == 404
    assert r.json()["detail"] == "device not received"
    assert (await client.post(f"/devices/{uuid4()}/erasures", json=erasure("U"))).status_code == 404
    assert (await client.get(f"/devices/{uuid4()}")).status_code == 404
    assert (await client.get("/devices/not-a-uuid")).status_code == 422


async def test_bad_input_is_answered_422_with_the_reason(client, namespace):
    event = received()
    await receive(client, namespace, event)
    path = f"/devices/{event.device_id}/reports"

    unknown_field = await client.post(path, json=report(specs("B-1")) | {"colour": "red"})
    assert unknown_field.status_code == 422
    assert "colour" in unknown_field.text
    bad_outcome = await client.post(path, json=report(specs("B-1"), boot="maybe"))
    assert bad_outcome.status_code == 422
    assert "boot" in bad_outcome.text
    twice = await client.post(path, json=report(specs("B-1", "B-1")))
    assert twice.status_code == 422
    assert "unique" in twice.text
    naive = await client.post(path, json=report(specs("B-1")) | {"tested_at": "2026-01-01T10:00"})
    assert naive.status_code == 422
    assert (await client.get("/devices", params={"state": "lost"})).status_code == 422

    await client.post(path, json=report(specs("B-1")))
    bad_method = await client.post(
        f"/devices/{event.device_id}/erasures", json=erasure("B-1") | {"method": "magnet"}
    )
    assert bad_method.status_code == 422
    assert (await client.get(f"/devices/{event.device_id}")).json()["erasures"] == []


async def test_only_staff_write_and_operations_read(url, namespace):
    async with httpx.AsyncClient(base_url=url, timeout=30) as anonymous:
        assert (await anonymous.get("/devices")).status_code == 401
        assert (await anonymous.get("/rules")).status_code == 401

        donor = await create_key(namespace, Role.DONOR, "acme-consulate")
        r = await anonymous.get("/devices", headers={"X-API-Key": donor})
        assert r.status_code == 403, "every service knows every key, and says it is not for it"
        assert r.json()["detail"] == "this role may not use diagnostics: donor"

        recipient = await create_key(namespace, Role.RECIPIENT, "school-x")
        r = await anonymous.get("/devices", headers={"X-API-Key": recipient})
        assert r.status_code == 403

        ops = await create_key(namespace, Role.OPERATIONS, "ops-y")
        for write in ("reports", "erasures"):
            r = await anonymous.post(
                f"/devices/{uuid4()}/{write}", headers={"X-API-Key": ops}, json={}
            )
            assert r.status_code == 403, "operations only read"
        r = await anonymous.get("/rules", headers={"X-API-Key": ops})
        assert r.status_code == 200
        assert r.json()["version"] == "2026-11-default"
        assert r.json()["critical_components"] == ["boot", "cpu", "memory"]
        assert r.json()["min_specs"]["laptop"]["ram_gb"] == 4
