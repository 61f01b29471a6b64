"""The document store starts again after databases were dropped under load and it was killed,
even with a database file in its directory that holds no FerretDB metadata (issue 14, item 20).

It runs a FerretDB of its own (tools.localinfra, the launcher `./dev` builds) on a free port with
its own directory: the shared store is never touched."""

import asyncio
import contextlib
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, OperationFailure

from tools.localinfra import LocalStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mongod") is not None, reason="FerretDB's SQLite files only"),
]

DROPPED = [f"drop{i}_greenit_recycling" for i in range(3)]
KEPT = "kept_greenit_intake"
STRAY = "stray_greenit_recycling"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plant_stray_file(path: Path) -> None:
    """What the incident left: an SQLite file of one 4,096-byte page in WAL mode, no tables."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=wal")
    assert path.stat().st_size == 4096


def database_files(data: Path) -> set[str]:
    return {p.name.removesuffix(".sqlite") for p in data.glob("*.sqlite")}


async def write_until(client: AsyncMongoClient, stop: asyncio.Event) -> int:
    """Writes into the databases being dropped (each write after a drop creates it again), into a
    new collection now and then so the `_id` indexer has tables to index."""
    n = 0
    while not stop.is_set():
        name = DROPPED[n % len(DROPPED)]
        # a write racing the drop of its database may be refused, or FerretDB v1 may drop the
        # connection (a nil dereference in its handler, recovered per connection); neither is
        # the point here, the store restarting afterwards is
        with contextlib.suppress(OperationFailure, AutoReconnect):
            await client[name][f"c{n % 4}"].insert_one({"_id": n, "serial": f"S-{n}"})
        n += 1
    return n


@pytest.fixture
async def store(tmp_path: Path):
    store = LocalStore(
        name="store-restart",
        port=free_port(),
        log=tmp_path / "store.log",
        data=tmp_path / "data",
        kind="ferretdb",
        ferretdb_args=("--id-index-every", "5ms"),
    )
    store.start(timeout=60)
    yield store
    store.stop()


async def test_the_store_starts_again_after_drops_under_writes_a_kill_and_a_stray_file(store):
    client: AsyncMongoClient = AsyncMongoClient(store.url, serverSelectionTimeoutMS=10_000)
    try:
        await client[KEPT].devices.insert_many([{"_id": i, "ram_gb": 8} for i in range(20)])

        # databases dropped over and over while writes to them arrive and the indexer runs
        stop = asyncio.Event()
        writers = [asyncio.create_task(write_until(client, stop)) for _ in range(3)]
        for _ in range(15):
            for name in DROPPED:
                await client.drop_database(name)
            await asyncio.sleep(0.02)
        stop.set()
        assert sum(await asyncio.gather(*writers)) > 0

        # every database file on disk is a database the store knows: none made behind its back
        on_disk = database_files(store.data)
        assert on_disk <= set(await client.list_database_names()), on_disk

        # killed while writes arrive, as a crash would
        stop = asyncio.Event()
        writers = [asyncio.create_task(write_until(client, stop)) for _ in range(2)]
        await asyncio.sleep(0.3)
        store.kill()
        for writer in writers:  # their writes now wait for a server that is gone
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    finally:
        await client.close()

    stray = store.data / f"{STRAY}.sqlite"
    plant_stray_file(stray)

    store.start(timeout=60)  # raises if the store exits instead of listening

    log = store.log.read_text()
    assert "set aside a database file without FerretDB metadata" in log
    assert f"file={stray} bytes=4096" in log
    assert not stray.exists()
    assert len(list((store.data / "quarantine").glob(f"{STRAY}.sqlite.*"))) == 1

    client = AsyncMongoClient(store.url, serverSelectionTimeoutMS=10_000)
    try:
        assert await client[KEPT].devices.count_documents({}) == 20
        names = await client.list_database_names()
        assert STRAY not in names
        for name in names:  # every database that came back opens
            await client[name].list_collection_names()
        await client[STRAY].devices.insert_one({"_id": "after"})
        assert await client[STRAY].devices.find_one({"_id": "after"}) == {"_id": "after"}
    finally:
        await client.close()
