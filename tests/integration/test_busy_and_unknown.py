"""`Busy` and `Unknown` over HTTP in every service, in process: the service's own app (its
routes, `shared.service`'s error mapping) on the real store, no broker needed. A subject that
keeps changing while it is decided is answered 503 with Retry-After, a missing one 404."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.allocation import domain as allocation
from services.allocation.domain import DeviceState
from services.diagnostics import domain as diagnostics
from services.recycling import handlers as recycling
from shared import mongo
from shared.auth import Role
from shared.events import DeviceReady, DeviceReceived, DeviceReleasedForRecycling
from shared.examples import EXAMPLES
from shared.outbox import Relay
from tests.builders import pickup_body
from tests.conftest import BOOTSTRAP, MONGO_URL
from tests.helpers import create_key

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def env(namespace: str) -> Iterator[str]:
    patch = pytest.MonkeyPatch()
    patch.setenv("GREENIT_NAMESPACE", namespace)
    patch.setenv("GREENIT_KAFKA_BOOTSTRAP", BOOTSTRAP)
    patch.setenv("GREENIT_MONGO_URL", MONGO_URL)
    yield namespace
    patch.undo()


@pytest.fixture(scope="module")
async def databases(env: str) -> AsyncIterator[None]:
    yield
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
    for name in await client.list_database_names():
        if name.startswith(env):
            await client.drop_database(name)
    await client.close()


async def serve(service: str, databases: None) -> tuple[ModuleType, httpx.AsyncClient]:
    """The service's `main` module, imported in this module's namespace, with its runtime
    connected to the store (the broker is not started: no test here publishes)."""
    name = f"services.{service}.main"
    main = importlib.reload(sys.modules[name]) if name in sys.modules else None
    main = main or importlib.import_module(name)
    runtime = main.runtime
    runtime.client = mongo.connect(main.settings)
    runtime.db = mongo.database(runtime.client, main.settings)
    runtime.relay = Relay(main.bus, [])
    transport = httpx.ASGITransport(app=main.app)
    return main, httpx.AsyncClient(transport=transport, base_url="http://test")


async def as_(namespace: str, role: Role, partner: str) -> dict[str, str]:
    return {"X-API-Key": await create_key(namespace, role, partner)}


async def always_changed(*_: Any) -> bool:
    return False


def busy(response: httpx.Response) -> bool:
    return response.status_code == 503 and response.headers.get("Retry-After") == "1"


async def test_diagnostics(env, databases, monkeypatch):
    main, http = await serve("diagnostics", databases)
    staff = await as_(env, Role.STAFF, "staff-x")
    event = EXAMPLES[DeviceReceived].model_copy(update={"device_id": uuid4()})
    assert isinstance(event, DeviceReceived)
    await main.store.insert_received(diagnostics.receive(event))
    body = {
        "specs": {"cpu_model": "i5", "cpu_cores": 4, "ram_gb": 8, "drives": []},
        "tests": dict.fromkeys(
            [
                "boot",
                "cpu",
                "memory",
                "storage",
                "screen",
                "keyboard",
                "battery",
                "ports",
                "network",
            ],
            "pass",
        ),
        "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
        "location": "Warehouse Brussels",
    }
    async with http:
        unknown = await http.post(f"/devices/{uuid4()}/reports", json=body, headers=staff)
        monkeypatch.setattr(type(main.store), "save", always_changed)
        changing = await http.post(f"/devices/{event.device_id}/reports", json=body, headers=staff)

    assert unknown.status_code == 404, unknown.text
    assert busy(changing), changing.text


async def test_recycling(env, databases, monkeypatch):
    main, http = await serve("recycling", databases)
    staff = await as_(env, Role.STAFF, "staff-x")
    event = EXAMPLES[DeviceReleasedForRecycling].model_copy(
        update={"device_id": uuid4(), "drive_serials": []}
    )
    await recycling.admit(main.store, event)
    body = {"fractions": {"plastics_kg": 0.5, "ferrous_kg": 0.3}, "location": "W"}
    async with http:
        unknown = await http.get(f"/lots/{uuid4()}", headers=staff)
        monkeypatch.setattr(type(main.store), "save", always_changed)
        changing = await http.post(
            f"/devices/{event.device_id}/dismantle", json=body, headers=staff
        )

    assert unknown.status_code == 404, unknown.text
    assert busy(changing), changing.text


async def test_allocation(env, databases, monkeypatch):
    main, http = await serve("allocation", databases)
    school = await as_(env, Role.RECIPIENT, "school-a")
    ready = EXAMPLES[DeviceReady].model_copy(update={"device_id": uuid4()})
    assert isinstance(ready, DeviceReady)
    delivered = replace(
        allocation.stock_from_ready(ready),
        state=DeviceState.DELIVERED,
        recipient_id="school-a",
        request_id=uuid4(),
        allocation_id=uuid4(),
        allocated_at=NOW,
        shipment_id=uuid4(),
    )
    assert await main.store.insert_stock(delivered, ready.event_id)
    body = {"students": 30}
    async with http:
        unknown = await http.post(f"/devices/{uuid4()}/usage", json=body, headers=school)
        monkeypatch.setattr(type(main.store), "save", always_changed)
        changing = await http.post(
            f"/devices/{delivered.device_id}/usage", json=body, headers=school
        )

    assert unknown.status_code == 404, unknown.text
    assert busy(changing), changing.text


async def test_intake(env, databases, monkeypatch):
    main, http = await serve("intake", databases)
    donor = await as_(env, Role.DONOR, "acme")
    staff = await as_(env, Role.STAFF, "staff-x")
    body = pickup_body(expected={"laptop": 2})
    schedule = {"scheduled_for": (NOW + timedelta(days=2)).isoformat()}
    async with http:
        created = await http.post("/pickups", json=body, headers=donor)
        assert created.status_code == 201, created.text
        pickup_id = created.json()["pickup_id"]
        unknown = await http.post(f"/pickups/{uuid4()}/schedule", json=schedule, headers=staff)
        monkeypatch.setattr(type(main.store), "save_pickup", always_changed)
        changing = await http.post(f"/pickups/{pickup_id}/schedule", json=schedule, headers=staff)

    assert unknown.status_code == 404, unknown.text
    assert busy(changing), changing.text
