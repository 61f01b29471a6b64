"""A state change and its events are stored together; the relay publishes what a crash left."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient

from shared.events import DeviceReceived
from shared.examples import EXAMPLES
from shared.kafka import EventBus, make_broker
from shared.outbox import Relay, outbox_doc, outbox_set
from tests.conftest import MONGO_URL, settings_in
from tests.helpers import TopicReader

pytestmark = pytest.mark.integration


@pytest.fixture
async def relay_and_collection(topics, namespace):
    settings = settings_in(namespace, "outboxtest")
    broker = make_broker(settings)
    bus = EventBus(broker, settings, [DeviceReceived])
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL, tz_aware=True)
    collection = client[settings.database].things
    await broker.start()
    yield Relay(bus, [collection]), collection
    await broker.stop()
    await client.drop_database(settings.database)
    await client.close()


def _event():
    return EXAMPLES[DeviceReceived].model_copy(
        update={"event_id": uuid4(), "device_id": uuid4(), "occurred_at": datetime.now(UTC)}
    )


async def test_events_left_in_an_outbox_by_a_crash_are_published_by_the_sweep(
    relay_and_collection, namespace
):
    relay, collection = relay_and_collection
    first, second = _event(), _event()
    # The writer stored state and events, then "crashed" before publishing.
    await collection.insert_one({"_id": "a", "state": "x"} | outbox_doc([first]))
    await collection.update_one({"_id": "a"}, {"$set": {"state": "y", **outbox_set([second])}})

    assert await relay.sweep(min_age_s=0) == 2
    assert (await collection.find_one({"_id": "a"}))["outbox"] == {}
    assert await relay.sweep(min_age_s=0) == 0

    async with TopicReader(namespace, "device.received") as reader:
        seen = await reader.wait_for(
            lambda evs: {e.event_id for e in evs} >= {first.event_id, second.event_id}
        )
    assert seen


async def test_a_young_entry_is_left_to_its_writer_and_swept_once_it_is_old(relay_and_collection):
    relay, collection = relay_and_collection
    await collection.insert_one({"_id": "b"} | outbox_doc([_event()]))
    assert await relay.sweep(min_age_s=3600) == 0
    assert await relay.sweep(min_age_s=0) == 1


async def test_a_failed_flush_is_retried_without_reading_the_whole_collection(
    relay_and_collection, monkeypatch
):
    relay, collection = relay_and_collection
    event = _event()
    await collection.insert_one({"_id": "c"} | outbox_doc([event]))
    publish = relay._bus.publish

    async def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(relay._bus, "publish", broker_down)
    await relay.flush(collection, "c")  # the change is stored: its writer is not failed
    with pytest.raises(ConnectionError):
        await relay.retry_failed()  # still down: stays listed
    assert (await collection.find_one({"_id": "c"}))["outbox"] != {}

    monkeypatch.setattr(relay._bus, "publish", publish)

    find = collection.find

    def by_id_only(filter=None, *args, **kwargs):
        assert set(filter or {}) == {"_id"}, f"reads more than one document: {filter}"
        return find(filter, *args, **kwargs)

    monkeypatch.setattr(collection, "find", by_id_only)
    assert await relay.retry_failed() == 1
    assert (await collection.find_one({"_id": "c"}))["outbox"] == {}
    assert await relay.retry_failed() == 0


async def test_a_failed_retry_keeps_every_other_failed_flush_listed(
    relay_and_collection, monkeypatch
):
    """Found by a chaos run: Kafka restarting while several flushes had failed; the first retry
    to fail again dropped the others from the list, left for the full sweep (minutes later)."""
    relay, collection = relay_and_collection
    ids = [f"r{i}" for i in range(5)]
    for doc_id in ids:
        await collection.insert_one({"_id": doc_id} | outbox_doc([_event()]))
    publish = relay._bus.publish

    async def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(relay._bus, "publish", broker_down)
    for doc_id in ids:
        await relay.flush(collection, doc_id)
    with pytest.raises(ConnectionError):
        await relay.retry_failed()  # still down: every one stays listed

    monkeypatch.setattr(relay._bus, "publish", publish)
    assert await relay.retry_failed() == len(ids)
    for doc_id in ids:
        assert (await collection.find_one({"_id": doc_id}))["outbox"] == {}
