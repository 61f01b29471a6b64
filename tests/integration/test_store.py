from uuid import uuid4

import pytest
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from tests.conftest import MONGO_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def collection(namespace):
    client: AsyncMongoClient = AsyncMongoClient(
        MONGO_URL, uuidRepresentation="standard", tz_aware=True
    )
    name = f"{namespace}store_test"
    yield client[name].devices
    await client.drop_database(name)
    await client.close()


async def test_documents_written_through_the_async_client_read_back_equal(collection):
    device_id = uuid4()
    doc = {"_id": device_id, "asset_tag": "GIT-1", "drives": [{"serial": "S1", "gb": 256}]}
    await collection.insert_one(doc)
    assert await collection.find_one({"_id": device_id}) == doc


async def test_a_unique_index_refuses_a_duplicate_and_keeps_the_first(collection):
    await collection.create_index([("asset_tag", ASCENDING)], unique=True)
    await collection.insert_one({"_id": uuid4(), "asset_tag": "GIT-2", "make": "HP"})
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one({"_id": uuid4(), "asset_tag": "GIT-2", "make": "Dell"})
    docs = await collection.find({"asset_tag": "GIT-2"}).to_list()
    assert [d["make"] for d in docs] == ["HP"]


async def test_a_conditional_update_applies_an_event_once(collection):
    device_id, event_id = uuid4(), uuid4()
    await collection.insert_one({"_id": device_id, "applied": [], "stage": "received"})
    for _ in range(2):
        await collection.update_one(
            {"_id": device_id, "applied": {"$ne": event_id}},
            {"$set": {"stage": "diagnosed"}, "$push": {"applied": event_id}},
        )
    doc = await collection.find_one({"_id": device_id})
    assert doc["applied"] == [event_id]
