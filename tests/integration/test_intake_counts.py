"""A pickup's device count, read from `pickup_devices` by `_id`, stays exact when scans run at
once and when a scan crashes between listing a device and inserting it (real store)."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest
from pymongo import AsyncMongoClient

from services.intake.store import Store
from shared.outbox import Connection
from tests.conftest import MONGO_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(namespace):
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL, tz_aware=True)
    name = f"{namespace}intake_counts_{uuid4().hex[:6]}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


def store_of(db) -> Store:
    return Store(Connection(db, relay=None))  # nothing here publishes: no relay


async def insert_device(db, pickup_id: UUID, device_id: UUID) -> None:
    await db.devices.insert_one({"_id": str(device_id), "pickup_id": str(pickup_id)})


async def scan(db, pickup_id: UUID) -> UUID:
    device_id = uuid4()
    await store_of(db).begin_receiving(pickup_id, device_id)
    await insert_device(db, pickup_id, device_id)
    await store_of(db).end_receiving(pickup_id, device_id, inserted=True)
    return device_id


async def test_scans_into_one_pickup_at_once_are_all_counted(db):
    pickup, other = uuid4(), uuid4()

    await asyncio.gather(*(scan(db, pickup) for _ in range(40)), scan(db, other))

    never = uuid4()
    counts = await store_of(db).devices_per_pickup([pickup, other, never])
    assert counts == {pickup: 40, other: 1, never: 0}


async def test_a_scan_that_crashed_after_inserting_is_counted_and_one_before_is_not(db):
    pickup = uuid4()
    await scan(db, pickup)
    inserted, never = uuid4(), uuid4()
    await store_of(db).begin_receiving(pickup, inserted)
    await insert_device(db, pickup, inserted)  # crash here: still pending
    await store_of(db).begin_receiving(pickup, never)  # crash here: never inserted

    assert await store_of(db).count_devices(pickup) == 2


async def test_devices_from_before_the_lists_are_listed_at_setup(db):
    pickup = uuid4()
    for _ in range(3):
        await insert_device(db, pickup, uuid4())

    assert await store_of(db).count_devices(pickup) == 0
    assert await store_of(db).sync_pickup_devices() == 3
    assert await store_of(db).count_devices(pickup) == 3
