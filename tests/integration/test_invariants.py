"""The invariants checker on small worlds written by hand into the real store.

Each test starts from three consistent devices (one delivered to a school, one released by
diagnostics and recycled, one returned and recycled), breaks one thing, and expects the checker
to name exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared import store_users
from shared.credentials import OPS
from shared.settings import store_auth_on
from tests.conftest import MONGO_URL
from tools.cluster import project_root
from tools.invariants import (
    CUSTODY_DISAGREES,
    DANGLING_CERTIFICATE,
    DOUBLE_ALLOCATION,
    RECYCLED_WITHOUT_ERASURE,
    RECYCLING_CERTIFICATE,
    STALE_OUTBOX,
    TWO_PLACES,
    UNACCOUNTED_DRIVE,
    UNWIPED_IN_STOCK,
    Report,
    check,
    database_name,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(hours=2)
SCHOOL = "school-rosa-parks"


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class World:
    client: AsyncMongoClient[Any]
    namespace: str
    delivered: str
    recycled: str
    returned: str
    request: str
    shipment: str
    lot: str
    erasure_certificates: dict[str, str]
    recycling_certificates: dict[str, str]

    def db(self, service: str) -> Any:
        return self.client[database_name(self.namespace, service)]

    async def set(self, service: str, collection: str, doc_id: str, **fields: Any) -> None:
        result = await self.db(service)[collection].update_one({"_id": doc_id}, {"$set": fields})
        assert result.matched_count == 1

    async def check(self) -> Report:
        return await check(self.client, self.namespace)


def _drive(serial: str) -> dict[str, Any]:
    return {"serial": serial, "kind": "ssd", "capacity_gb": 256}


def _certified(serial: str, method: str) -> dict[str, Any]:
    return _drive(serial) | {"method": method, "verified": True, "operator": "lena"}


def _diagnostics_device(device_id: str, state: str, certificate_id: str, method: str) -> Any:
    serial = f"DRV-{device_id[:8]}"
    certificate = {
        "certificate_id": certificate_id,
        "device_id": device_id,
        "decision": "refurbish" if method != "destroy" else "recycle",
        "drives": [_certified(serial, method)],
        "issued_at": LONG_AGO,
    }
    return {
        "_id": device_id,
        "state": state,
        "diagnosis": {"specs": {"drives": [_drive(serial)]}},
        "erasures": [],
        "certificate": certificate,
    }, certificate


def _recycling_device(
    device_id: str, source: str, erasure_id: str | None, lot_id: str, certificate_id: str
) -> dict[str, Any]:
    return {
        "_id": device_id,
        "state": "recycled",
        "source": source,
        "erasure_certificate_id": erasure_id,
        "dismantling": {"storage_destroyed": [_destroyed(device_id)] if source == "return" else []},
        "lot_id": lot_id,
        "certificate_id": certificate_id,
        "certificate": {
            "certificate_id": certificate_id,
            "device_id": device_id,
            "lot_id": lot_id,
            "issued_at": LONG_AGO,
        },
    }


def _destroyed(device_id: str, serial: str | None = None) -> dict[str, Any]:
    return {"drive_serial": serial or f"DRV-{device_id[:8]}", "method": "destroy", "verified": True}


def _stock(device_id: str, state: str, request_id: str, certificate_id: str) -> dict[str, Any]:
    return {
        "_id": device_id,
        "state": state,
        "erasure_certificate_id": certificate_id,
        "request_id": request_id,
        "recipient_id": SCHOOL,
        "updated_at": LONG_AGO,
    }


def _custody(device_id: str, stage: str, erasure: str, recycling: str | None) -> dict[str, Any]:
    return {
        "_id": device_id,
        "stage": stage,
        "erasure_certificate_id": erasure,
        "recycling_certificate_id": recycling,
        "history": [],
    }


@pytest.fixture
async def world(namespace: str) -> AsyncIterator[World]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    w = World(
        client=client,
        namespace=f"{namespace}{uuid.uuid4().hex[:6]}_",
        delivered=_id(),
        recycled=_id(),
        returned=_id(),
        request=_id(),
        shipment=_id(),
        lot=_id(),
        erasure_certificates={},
        recycling_certificates={},
    )
    for device in (w.delivered, w.recycled, w.returned):
        w.erasure_certificates[device] = _id()
    for device in (w.recycled, w.returned):
        w.recycling_certificates[device] = _id()
    ec, rc = w.erasure_certificates, w.recycling_certificates

    diagnostics = [
        _diagnostics_device(w.delivered, "ready", ec[w.delivered], "purge"),
        _diagnostics_device(w.recycled, "awaiting_recycling", ec[w.recycled], "destroy"),
        _diagnostics_device(w.returned, "ready", ec[w.returned], "clear"),
    ]
    await w.db("diagnostics").devices.insert_many([d for d, _ in diagnostics])
    await w.db("diagnostics").certificates.insert_many(
        [{"_id": c["certificate_id"], **c} for _, c in diagnostics]
    )
    await w.db("allocation").stock.insert_many(
        [
            _stock(w.delivered, "delivered", w.request, ec[w.delivered]),
            _stock(w.returned, "returned", w.request, ec[w.returned]),
        ]
    )
    await w.db("allocation").requests.insert_one(
        {"_id": w.request, "recipient_id": SCHOOL, "quantity": 2, "status": "fulfilled"}
    )
    await w.db("allocation").request_devices.insert_one(
        {"_id": w.request, "device_ids": [w.delivered, w.returned], "pending_ids": []}
    )
    await w.db("allocation").shipments.insert_one(
        {"_id": w.shipment, "recipient_id": SCHOOL, "device_ids": [w.delivered, w.returned]}
    )
    await w.db("recycling").devices.insert_many(
        [
            _recycling_device(w.recycled, "diagnostics", ec[w.recycled], w.lot, rc[w.recycled]),
            _recycling_device(w.returned, "return", None, w.lot, rc[w.returned]),
        ]
    )
    await w.db("recycling").lots.insert_one(
        {"_id": w.lot, "status": "dispatched", "device_ids": [w.recycled, w.returned]}
    )
    await w.db("custody").devices.insert_many(
        [
            _custody(w.delivered, "delivered", ec[w.delivered], None),
            _custody(w.recycled, "recycled", ec[w.recycled], rc[w.recycled]),
            _custody(w.returned, "recycled", ec[w.returned], rc[w.returned]),
        ]
    )
    await w.db("intake").pickups.insert_one(
        {
            "_id": _id(),
            "status": "requested",
            "outbox": {_id(): {"payload": "{}", "at": datetime.now(UTC)}},
        }
    )
    if store_auth_on(None):  # the CLI reads as the operations console's read-only user
        await store_users.ensure(client, w.namespace, users=(OPS,))
    try:
        yield w
    finally:
        for service in ("intake", "diagnostics", "allocation", "recycling", "custody"):
            await client.drop_database(database_name(w.namespace, service))
        if store_auth_on(None):
            await store_users.revoke(client, w.namespace)
        await client.close()


def _subjects(report: Report, kind: str) -> list[str]:
    return [v.subject for v in report.of_kind(kind)]


async def test_a_consistent_world_has_no_violations(world: World):
    report = await world.check()

    assert report.violations == []
    assert report.counts["allocation.stock"] == 2
    assert report.counts["recycling.devices"] == 2
    assert report.counts["custody.devices"] == 3
    assert report.counts["outbox entries"] == 1


async def test_a_stock_device_with_an_unverified_erasure_is_found(world: World):
    certificate = (await world.db("diagnostics").devices.find_one({"_id": world.delivered}))[
        "certificate"
    ]
    certificate["drives"][0]["verified"] = False
    await world.set("diagnostics", "devices", world.delivered, certificate=certificate)

    report = await world.check()

    assert report.kinds() == {UNWIPED_IN_STOCK}
    assert _subjects(report, UNWIPED_IN_STOCK) == [world.delivered]


async def test_a_stock_device_diagnostics_never_made_ready_is_found(world: World):
    await world.set("diagnostics", "devices", world.delivered, state="diagnosed", certificate=None)

    report = await world.check()

    assert report.kinds() == {UNWIPED_IN_STOCK}


async def test_a_drive_missing_from_the_certificate_is_found(world: World):
    await world.set(
        "diagnostics",
        "devices",
        world.delivered,
        diagnosis={"specs": {"drives": [_drive(f"DRV-{world.delivered[:8]}"), _drive("EXTRA")]}},
    )

    report = await world.check()

    assert report.kinds() == {UNWIPED_IN_STOCK}
    assert "EXTRA" in report.violations[0].detail


async def test_a_recycled_device_without_an_erasure_certificate_is_found(world: World):
    await world.set("diagnostics", "devices", world.recycled, certificate=None)
    await world.db("diagnostics").certificates.delete_one(
        {"_id": world.erasure_certificates[world.recycled]}
    )
    await world.set("custody", "devices", world.recycled, erasure_certificate_id=None)

    report = await world.check()

    assert report.kinds() == {RECYCLED_WITHOUT_ERASURE}
    assert _subjects(report, RECYCLED_WITHOUT_ERASURE) == [world.recycled]


async def test_a_returned_device_recycled_without_destroyed_storage_is_found(world: World):
    await world.set("recycling", "devices", world.returned, dismantling={"storage_destroyed": []})

    report = await world.check()

    assert report.kinds() == {RECYCLED_WITHOUT_ERASURE}
    assert _subjects(report, RECYCLED_WITHOUT_ERASURE) == [world.returned]


async def test_a_returned_device_recycled_with_one_of_its_two_drives_destroyed_is_found(
    world: World,
):
    """The shape issue 14 found: both drives wiped before delivery, one destroyed after return."""
    first = f"DRV-{world.returned[:8]}"
    device = await world.db("diagnostics").devices.find_one({"_id": world.returned})
    certificate = device["certificate"] | {
        "drives": [_certified(first, "clear"), _certified("SECOND", "clear")]
    }
    await world.set(
        "diagnostics",
        "devices",
        world.returned,
        diagnosis={"specs": {"drives": [_drive(first), _drive("SECOND")]}},
        certificate=certificate,
    )

    report = await world.check()

    assert report.kinds() == {UNACCOUNTED_DRIVE}
    assert _subjects(report, UNACCOUNTED_DRIVE) == [world.returned]
    assert "['SECOND']" in report.violations[0].detail
    assert first not in report.violations[0].detail


async def test_a_drive_known_only_to_allocations_stock_must_be_destroyed_too(world: World):
    await world.set(
        "allocation",
        "stock",
        world.returned,
        specs={"drives": [_drive(f"DRV-{world.returned[:8]}"), _drive("ADDED")]},
    )

    report = await world.check()

    assert report.kinds() == {UNACCOUNTED_DRIVE}
    assert "['ADDED']" in report.violations[0].detail


async def test_a_returned_device_dismantled_with_a_drive_undestroyed_is_found(world: World):
    await world.db("recycling").devices.insert_one(
        {
            "_id": _id(),
            "state": "dismantled",
            "source": "return",
            "drive_serials": ["A1", "A2"],
            "dismantling": {"storage_destroyed": [_destroyed("", "A1")]},
        }
    )

    report = await world.check()

    assert report.kinds() == {UNACCOUNTED_DRIVE}
    assert "['A2']" in report.violations[0].detail


async def test_an_earlier_erasure_does_not_account_for_a_returned_devices_drive(world: World):
    await world.set(
        "recycling",
        "devices",
        world.returned,
        dismantling={"storage_destroyed": [_destroyed("", "OTHER")]},
    )

    report = await world.check()

    assert report.kinds() == {UNACCOUNTED_DRIVE}
    assert f"DRV-{world.returned[:8]}" in report.violations[0].detail


async def test_a_released_devices_drive_destroyed_at_dismantling_is_accounted_for(world: World):
    serials = [f"DRV-{world.recycled[:8]}", "LATE"]
    await world.set(
        "diagnostics",
        "devices",
        world.recycled,
        diagnosis={"specs": {"drives": [_drive(s) for s in serials]}},
    )
    assert _subjects(await world.check(), UNACCOUNTED_DRIVE) == [world.recycled]

    await world.set(
        "recycling",
        "devices",
        world.recycled,
        dismantling={"storage_destroyed": [_destroyed("", "LATE")]},
    )

    assert (await world.check()).ok


async def test_a_recycling_certificate_whose_lot_does_not_list_the_device_is_found(world: World):
    await world.set("recycling", "lots", world.lot, device_ids=[world.returned])

    report = await world.check()

    assert report.kinds() == {RECYCLING_CERTIFICATE}
    assert report.violations[0].subject == (
        f"recycling certificate {world.recycling_certificates[world.recycled]}"
    )


async def test_a_recycling_certificate_of_a_device_not_recycled_is_found(world: World):
    await world.set("recycling", "devices", world.recycled, state="dismantled")
    await world.set("custody", "devices", world.recycled, stage="dismantled")

    report = await world.check()

    assert report.kinds() == {RECYCLING_CERTIFICATE}
    details = " | ".join(v.detail for v in report.violations)
    assert "is dismantled" in details


async def test_a_delivered_device_also_dismantled_in_recycling_is_found(world: World):
    await world.db("recycling").devices.insert_one(
        {
            "_id": world.delivered,
            "state": "dismantled",
            "source": "return",
            "dismantling": {"storage_destroyed": [_destroyed(world.delivered)]},
            "lot_id": None,
        }
    )

    report = await world.check()

    assert report.kinds() == {TWO_PLACES}
    assert _subjects(report, TWO_PLACES) == [world.delivered]


async def test_a_device_awaiting_recycling_and_in_stock_is_found(world: World):
    certificate_id = world.erasure_certificates[world.recycled]
    available = _stock(world.recycled, "available", "", certificate_id) | {"request_id": None}
    await world.db("allocation").stock.insert_one(available)

    report = await world.check()

    assert report.kinds() == {TWO_PLACES}
    assert set(_subjects(report, TWO_PLACES)) == {world.recycled}
    assert any("awaiting_recycling in diagnostics" in v.detail for v in report.violations)


async def test_a_custody_certificate_the_issuer_lacks_is_found(world: World):
    await world.set("custody", "devices", world.delivered, erasure_certificate_id=_id())
    await world.set("custody", "devices", world.returned, recycling_certificate_id=_id())

    report = await world.check()

    assert report.kinds() == {DANGLING_CERTIFICATE}
    assert sorted(_subjects(report, DANGLING_CERTIFICATE)) == sorted(
        [world.delivered, world.returned]
    )


async def test_a_custody_stage_that_disagrees_with_the_final_state_is_found(world: World):
    await world.set("custody", "devices", world.recycled, stage="dismantled")
    await world.set("custody", "devices", world.delivered, stage="lost")

    report = await world.check()

    assert report.kinds() == {CUSTODY_DISAGREES}
    assert sorted(_subjects(report, CUSTODY_DISAGREES)) == sorted([world.delivered, world.recycled])


async def test_a_fresh_recycling_not_yet_in_custody_is_tolerated(world: World):
    await world.set("custody", "devices", world.recycled, stage="dismantled")
    fresh = {"certificate.issued_at": datetime.now(UTC)}
    await world.db("recycling").devices.update_one({"_id": world.recycled}, {"$set": fresh})

    report = await world.check()

    assert report.violations == []


async def test_an_outbox_entry_older_than_a_minute_is_found(world: World):
    stale = {f"outbox.{_id()}": {"payload": "{}", "at": datetime.now(UTC) - timedelta(seconds=61)}}
    await world.db("allocation").stock.update_one({"_id": world.delivered}, {"$set": stale})

    report = await world.check()

    assert report.kinds() == {STALE_OUTBOX}
    assert _subjects(report, STALE_OUTBOX) == [f"allocation.stock/{world.delivered}"]


async def test_a_device_in_two_shipments_is_found(world: World):
    await world.db("allocation").shipments.insert_one(
        {"_id": _id(), "recipient_id": SCHOOL, "device_ids": [world.delivered]}
    )

    report = await world.check()

    assert report.kinds() == {DOUBLE_ALLOCATION}
    assert _subjects(report, DOUBLE_ALLOCATION) == [world.delivered]


async def test_a_device_listed_by_another_request_than_its_stock_says_is_found(world: World):
    other = _id()
    await world.db("allocation").requests.insert_one(
        {"_id": other, "recipient_id": SCHOOL, "quantity": 1, "status": "open"}
    )
    await world.db("allocation").request_devices.insert_one(
        {"_id": other, "device_ids": [world.delivered], "pending_ids": []}
    )

    report = await world.check()

    assert report.kinds() == {DOUBLE_ALLOCATION}
    assert other in report.violations[0].detail


async def test_a_device_its_request_does_not_list_is_found(world: World):
    await world.db("allocation").request_devices.update_one(
        {"_id": world.request}, {"$set": {"device_ids": [world.returned]}}
    )

    report = await world.check()

    assert report.kinds() == {DOUBLE_ALLOCATION}
    assert _subjects(report, DOUBLE_ALLOCATION) == [world.delivered]
    assert "does not list it" in report.violations[0].detail


async def test_a_device_its_request_lists_as_pending_is_no_violation(world: World):
    await world.db("allocation").request_devices.update_one(
        {"_id": world.request},
        {"$set": {"device_ids": [world.returned], "pending_ids": [world.delivered]}},
    )

    assert (await world.check()).ok


async def test_the_cli_prints_each_violation_and_exits_with_1(world: World):
    await world.set("custody", "devices", world.delivered, erasure_certificate_id=_id())
    env = os.environ | {"GREENIT_MONGO_URL": MONGO_URL}

    run = subprocess.run(
        [sys.executable, "-m", "tools.invariants", "--namespace", world.namespace],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"{DANGLING_CERTIFICATE}: {world.delivered}: ")
    assert lines[-1].startswith("checked intake.pickups=1, intake.devices=0")
    assert "custody.devices=3" in lines[-1]
    assert lines[-1].endswith("; 1 violation(s)")


async def test_the_cli_exits_with_0_on_a_consistent_world(world: World):
    env = os.environ | {"GREENIT_MONGO_URL": MONGO_URL, "GREENIT_NAMESPACE": world.namespace}

    run = subprocess.run(
        [sys.executable, "-m", "tools.invariants"],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("; 0 violation(s)")
