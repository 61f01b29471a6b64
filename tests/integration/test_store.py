import asyncio
import contextlib
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from services.intake.store import Store as IntakeStore
from shared import mongo, store_adapter
from shared.mongo import find_by_ids, update_if
from shared.outbox import Connection
from shared.settings import ServiceSettings
from shared.usecase import Busy
from tests.conftest import MONGO_URL
from tools.localinfra import LOCAL

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


@pytest.fixture(params=["MongoDB semantics", "FerretDB v1 adapter"])
def lookup_mode(request, monkeypatch, collection):
    """update_if either sends the condition to the store, or (the FerretDB v1 adapter) reads by
    `_id`, tests the condition itself and writes by `_id`: both must decide alike, on any store."""
    adapter = (
        store_adapter.MongoSemantics()
        if request.param == "MongoDB semantics"
        else store_adapter.FerretDBv1()
    )
    monkeypatch.setitem(store_adapter._ADAPTERS, collection.database.client, adapter)
    return adapter


async def test_update_if_applies_only_when_the_condition_holds(collection, lookup_mode):
    device_id, event_id = str(uuid4()), str(uuid4())
    await collection.insert_one({"_id": device_id, "version": 3, "applied": [], "lot_id": None})
    update = {"$set": {"stage": "wiped"}, "$inc": {"version": 1}, "$push": {"applied": event_id}}
    guard = {"version": 3, "applied": {"$ne": event_id}, "lot_id": None}

    assert await update_if(collection, device_id, guard, update) is True
    assert await update_if(collection, device_id, guard, update) is False  # version moved on
    assert (
        await update_if(collection, device_id, {"version": 4, "applied": {"$ne": event_id}}, update)
        is False
    )  # already applied
    assert await update_if(collection, str(uuid4()), {"version": 0}, update) is False
    doc = await collection.find_one({"_id": device_id})
    assert doc == {
        "_id": device_id,
        "version": 4,
        "applied": [event_id],
        "lot_id": None,
        "stage": "wiped",
    }


async def test_update_if_upserts_a_missing_document_and_never_moves_one_back(
    collection, lookup_mode
):
    summary_id = str(uuid4())
    newer = {"$set": {"version": 5, "stage": "ready"}}
    older = {"$set": {"version": 4, "stage": "wiped"}}
    assert await update_if(collection, summary_id, {"version": {"$lt": 5}}, newer, upsert=True)
    assert not await update_if(collection, summary_id, {"version": {"$lt": 4}}, older, upsert=True)
    assert await collection.find_one({"_id": summary_id}) == {
        "_id": summary_id,
        "version": 5,
        "stage": "ready",
    }


async def test_find_by_ids_reads_each_document_once_and_skips_the_missing(collection, lookup_mode):
    ids = [str(uuid4()) for _ in range(40)]
    await collection.insert_many([{"_id": i, "n": n, "pad": "x" * 50} for n, i in enumerate(ids)])
    wanted = [ids[3], str(uuid4()), ids[39], ids[3], ids[0]]

    found = await find_by_ids(collection, wanted, {"n": 1}, concurrency=2)

    assert found == {
        ids[3]: {"_id": ids[3], "n": 3},
        ids[39]: {"_id": ids[39], "n": 39},
        ids[0]: {"_id": ids[0], "n": 0},
    }
    assert await find_by_ids(collection, []) == {}


async def test_concurrent_updates_of_one_document_all_apply(collection):
    """FerretDB v1 loses concurrent updates of one document (measured: 300 concurrent
    `$addToSet`s kept 15); through `update_by_id` none is lost, on any store."""
    await collection.insert_one({"_id": "doc", "ids": []})
    adapter = await store_adapter.adapter_for(collection.database.client)

    await asyncio.gather(
        *(mongo.update_by_id(collection, "doc", {"$addToSet": {"ids": n}}) for n in range(100))
    )

    assert sorted((await collection.find_one({"_id": "doc"}))["ids"]) == list(range(100))
    assert getattr(adapter, "_locks", {}) == {}


async def test_concurrent_scans_get_distinct_generated_asset_numbers(collection):
    """60 first increments of a counter that does not exist yet: each gets its own number (an
    upsert by `findAndModify` answered `None` to some of them on SecantusDB, docs/store.md)."""
    intake = IntakeStore(Connection(collection.database, relay=None))  # publishes nothing
    for round_ in range(3):
        await collection.database.counters.delete_many({})
        numbers = await asyncio.gather(*(intake.next_asset_number() for _ in range(60)))
        assert sorted(numbers) == list(range(1, 61)), f"round {round_}"


async def test_the_adapter_is_chosen_from_what_the_store_says_it_is(collection):
    client = collection.database.client
    info = await client.admin.command("buildInfo")
    adapter = await store_adapter.adapter_for(client)
    expected = (
        store_adapter.FerretDBv1 if "ferretdbVersion" in info else store_adapter.MongoSemantics
    )
    assert type(adapter) is expected
    assert type(store_adapter.choose({"version": "8.0.4"})) is store_adapter.MongoSemantics
    assert type(store_adapter.choose({"ferretdbVersion": "v1.24.0"})) is store_adapter.FerretDBv1


async def test_a_lease_has_one_holder_at_a_time(collection):
    holding: list[int] = []
    overlaps = 0

    async def hold(n: int) -> None:
        nonlocal overlaps
        async with mongo.lease(collection, "claims", ttl_s=5.0, wait_s=30.0):
            holding.append(n)
            overlaps += len(holding) > 1
            await asyncio.sleep(0.02)
            holding.remove(n)

    await asyncio.gather(*(hold(n) for n in range(10)))

    assert overlaps == 0
    assert "lease" not in await collection.find_one({"_id": "claims"})


async def test_a_lease_whose_holder_died_is_free_when_its_time_runs_out(collection):
    stale = {"token": "dead holder", "until": datetime.now(UTC) - timedelta(seconds=1)}
    await collection.insert_one({"_id": "claims", "lease": stale})
    async with mongo.lease(collection, "claims", ttl_s=5.0, wait_s=2.0):
        doc = await collection.find_one({"_id": "claims"})
        assert doc["lease"]["token"] != "dead holder"


async def test_a_held_lease_makes_a_waiter_give_up_busy(collection):
    async with mongo.lease(collection, "claims", ttl_s=30.0, wait_s=1.0):
        with pytest.raises(Busy):
            async with mongo.lease(collection, "claims", ttl_s=30.0, wait_s=0.3):
                pass


@pytest.mark.skipif(shutil.which("mongod") is not None, reason="FerretDB's SQLite files only")
async def test_the_ferretdb_launcher_indexes_the_id_lookups_of_every_new_collection(collection):
    """FerretDB v1 indexes `_id` under an expression its own queries never use; our launcher
    (infra/ferretdb/idindex.go) adds the one they use, within a moment of the table appearing."""
    await collection.insert_one({"_id": "probe"})
    sqlite_file = LOCAL / "data" / "ferretdb" / f"{collection.database.name}.sqlite"
    if not sqlite_file.exists():
        pytest.skip(f"not the store ./dev started ({sqlite_file} absent)")
    table = _sqlite(
        sqlite_file,
        f"SELECT table_name FROM _ferretdb_collections WHERE name = '{collection.name}'",
    )
    plan = ""
    for _ in range(50):
        plan = _sqlite(
            sqlite_file,
            "EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "
            f"\"{table}\" WHERE _ferretdb_sjson->'$._id' = '\"probe\"'",
        )
        if "USING INDEX" in plan:
            break
        await asyncio.sleep(0.1)
    assert f"USING INDEX {table}__id_path" in plan


def _sqlite(path, query: str) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return "\n".join(" ".join(str(c) for c in row) for row in db.execute(query))


async def test_slow_store_commands_are_logged_with_field_names_and_no_values(namespace, caplog):
    class Settings(ServiceSettings):
        service = "store_test"

    settings = Settings(
        namespace=namespace,
        mongo_url=MONGO_URL,
        store_username="admin",
        slow_store_command_ms=0.001,
    )
    client = mongo.connect(settings)
    db = mongo.database(client, settings)
    try:
        await db.devices.insert_one({"_id": "d1", "serial": "SECRET-SERIAL", "state": "ready"})
        with caplog.at_level("WARNING", logger="greenit.store"):
            await db.devices.find_one({"serial": "SECRET-SERIAL", "state": "ready"})
            await db.devices.update_one({"_id": "d1"}, {"$set": {"state": "gone"}})
        shapes = [r.store_command for r in caplog.records if r.message == "slow store command"]
        by_command = {s["command"]: s for s in shapes}
        assert (by_command["find"]["collection"], by_command["find"]["filter"]) == (
            "devices",
            ["serial", "state"],
        )
        assert by_command["update"]["filter"] == ["_id"]
        assert all(s["ms"] >= 0 for s in shapes)
        # (commands on no collection, such as an authentication's, run on `admin`)
        assert {s["database"] for s in shapes if s["collection"]} == {settings.database}
        assert "SECRET-SERIAL" not in repr(shapes)
    finally:
        await client.drop_database(settings.database)
        await client.close()


async def test_store_commands_under_the_threshold_are_not_logged(namespace, caplog):
    class Settings(ServiceSettings):
        service = "store_test"

    settings = Settings(
        namespace=namespace,
        mongo_url=MONGO_URL,
        store_username="admin",
        slow_store_command_ms=60_000,
    )
    client = mongo.connect(settings)
    try:
        with caplog.at_level("WARNING", logger="greenit.store"):
            await mongo.database(client, settings).devices.find_one({"_id": "x"})
        assert not [r for r in caplog.records if r.message == "slow store command"]
    finally:
        await client.close()
