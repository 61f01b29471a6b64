"""Allocation's claims after a crash at any step: a request counts the devices allocated to it
without reading the stock, never gets more than it asked for, and is never held back for good.

Handlers and store on the real document store and broker; a "crash" is a claim's first steps
written and its last ones never run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from pymongo import AsyncMongoClient

from services.allocation import domain, handlers
from services.allocation.domain import DeviceState, Request, RequestStatus
from services.allocation.store import Store, device_fields
from shared.events import (
    DeviceAllocated,
    DeviceCategory,
    MinSpecs,
    RequestClosed,
    RequestOpened,
)
from shared.kafka import EventBus, make_broker
from shared.mongo import update_if
from shared.outbox import Connection, Relay, outbox_set
from tests.conftest import MONGO_URL, settings_in
from tests.helpers import TopicReader, device_ready

pytestmark = pytest.mark.integration


@pytest.fixture
async def alloc(topics, namespace):
    settings = settings_in(namespace, f"allocation{uuid4().hex[:6]}")
    broker = make_broker(settings)
    bus = EventBus(broker, settings, [DeviceAllocated, RequestClosed, RequestOpened])
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL, tz_aware=True)
    db = client[settings.database]
    store = Store(Connection(db, Relay(bus, [db.stock, db.requests, db.shipments])))
    await store.setup()
    await broker.start()
    yield db, store
    await broker.stop()
    await client.drop_database(settings.database)
    await client.close()


async def in_stock(store: Store, count: int) -> list[UUID]:
    events = [device_ready() for _ in range(count)]
    for event in events:
        await handlers.on_device_ready(store, event)
    return [e.device_id for e in events]


async def open_request(store: Store, quantity: int) -> Request:
    return await handlers.open_request(
        store,
        recipient_id="school-rosa-parks",
        quantity=quantity,
        category=DeviceCategory.LAPTOP,
        min_specs=MinSpecs(),
        purpose="classroom",
        priority=3,
        deadline=None,
    )


async def claim_made_then_crash(db, store: Store, device_id: UUID, request: Request) -> None:
    """A claim's first two steps: listed as pending, the device allocated; then the crash."""
    device = await store.load_device(device_id)
    allocated, event = domain.allocate(
        device,
        device_id,
        request,
        allocation_id=uuid4(),
        event_id=uuid4(),
        now=datetime.now(UTC),
    )
    await store.begin_claim(request.request_id, device_id)
    assert await update_if(
        db.stock,
        str(device_id),
        {"state": DeviceState.AVAILABLE.value},
        {"$set": device_fields(allocated) | outbox_set([event])},
    )


async def allocated_in_stock(db, request_id: UUID) -> set[str]:
    return {d["_id"] async for d in db.stock.find({"request_id": str(request_id)}, {"_id": 1})}


async def test_a_claim_made_before_a_crash_is_counted_and_the_request_gets_no_more(
    alloc, namespace
):
    db, store = alloc
    devices = await in_stock(store, 3)
    request = await open_request(store, quantity=2)
    await claim_made_then_crash(db, store, devices[0], request)

    before = await store.load_request(request.request_id)
    assert before is not None
    assert await store.allocated_ids(before) == [devices[0]]  # a view reads the pending claim

    allocations, still_open = await handlers.run_matching(store)

    assert len(allocations) == 1
    assert still_open == 0
    after = await store.load_request(request.request_id)
    assert after is not None
    assert after.status is RequestStatus.FULFILLED
    assert after.pending_ids == ()
    assert set(after.device_ids) == {devices[0], allocations[0].device_id}
    assert await allocated_in_stock(db, request.request_id) == {str(d) for d in after.device_ids}
    async with TopicReader(namespace, "request.closed") as reader:
        seen = await reader.wait_for(
            lambda evs: [e for e in evs if e.request_id == request.request_id]
        )
    assert [(e.outcome, e.allocated) for e in seen if e.request_id == request.request_id] == [
        ("fulfilled", 2)
    ]
    # the entry the crash left for the allocated device is gone once matching tried it or not
    left = {d.device_id for d in await store.available_devices()}
    assert devices[0] not in left
    assert allocations[0].device_id not in left
    assert len(left) == 1


async def test_a_claim_interrupted_before_the_device_was_allocated_does_not_hold_back(alloc):
    _db, store = alloc
    devices = await in_stock(store, 1)
    request = await open_request(store, quantity=1)
    await store.begin_claim(request.request_id, devices[0])  # crash before the update

    allocations, still_open = await handlers.run_matching(store)

    assert [(a.device_id, a.request_id) for a in allocations] == [(devices[0], request.request_id)]
    assert still_open == 0
    after = await store.load_request(request.request_id)
    assert after is not None
    assert after.device_ids == (devices[0],)
    assert after.pending_ids == ()
    assert after.status is RequestStatus.FULFILLED


async def test_a_stale_available_entry_never_allocates_a_device_twice(alloc):
    db, store = alloc
    devices = await in_stock(store, 1)
    entry = await db.available.find_one({"_id": str(devices[0])})
    first = await open_request(store, quantity=1)
    assert len((await handlers.run_matching(store))[0]) == 1
    # a crash after the claim, before the entry was removed: the entry is still there
    await db.available.insert_one(entry)
    second = await open_request(store, quantity=1)

    allocations, still_open = await handlers.run_matching(store)

    assert allocations == []
    assert still_open == 1
    assert await store.available_devices() == []
    assert await allocated_in_stock(db, first.request_id) == {str(devices[0])}
    assert await allocated_in_stock(db, second.request_id) == set()
    view = await store.load_request(second.request_id)
    assert view is not None
    assert view.device_ids == ()
    assert view.pending_ids == ()


async def test_a_replayed_device_ready_after_allocation_does_not_make_it_available(alloc):
    _db, store = alloc
    event = device_ready()
    await handlers.on_device_ready(store, event)
    await open_request(store, quantity=1)
    assert len((await handlers.run_matching(store))[0]) == 1

    await handlers.on_device_ready(store, event)

    assert await store.available_devices() == []
    device = await store.load_device(event.device_id)
    assert device is not None
    assert device.state is DeviceState.ALLOCATED


async def test_recovery_lists_what_stock_holds_for_requests_stored_before_the_lists(alloc):
    db, store = alloc
    devices = await in_stock(store, 2)
    request = await open_request(store, quantity=2)
    await claim_made_then_crash(db, store, devices[0], request)
    # as stored before requests listed their devices, and before `available` existed
    await db.drop_collection("request_devices")
    await db.drop_collection("available")

    await store.recover()

    after = await store.load_request(request.request_id)
    assert after is not None
    assert after.device_ids == (devices[0],)
    assert after.pending_ids == ()
    assert [d.device_id for d in await store.available_devices()] == [devices[1]]
