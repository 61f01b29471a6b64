"""What a stand-in document store needs beyond MongoDB semantics, and nothing else does.

The services are written once, for MongoDB: a guarded change is one `update_one` with its
conditions in the filter, several documents are one `$in` query, a counter is one `$inc`, and
nothing takes turns inside a process. `shared.mongo` offers those operations; each asks
`adapter_for(client)` (decided once per client, from the store's own `buildInfo`) how to carry
them out. `mongod` and SecantusDB (the embedded default, see docs/store.md) get `MongoSemantics`,
which does exactly what the sentence above says. FerretDB v1 (`GREENIT_STORE=ferretdb`) gets
`FerretDBv1`, which works around three things measured in docs/store.md:

- it looks a document up by index only for a filter on `_id` alone (any other filter, `$in`
  included, decodes the whole collection);
- an update is a read and a separate write, so of two concurrent updates of one document one
  can be lost, and a condition in the filter is not tested atomically with the write;
- hence writers of one document in one process take turns here (another process's writers can
  still race: with FerretDB, run one instance of each service).

SecantusDB's two defects need nothing here: its retryable-write slowdown is avoided at launch
(`--standalone`, `tools.localinfra` / `./dev`), and its lost `findAndModify` upsert reply never
arises because `shared.mongo.increment` creates a counter before it increments it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from mongomock.filtering import filter_applies
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]


class MongoSemantics:
    """A store that behaves as MongoDB does: every operation is the plain driver call."""

    name = "mongodb"

    def turn(self, collection: AsyncCollection[Document], doc_id: Any) -> Any:
        """Writers of one document needn't take turns: each update is atomic."""
        return contextlib.nullcontext()

    async def update_if(
        self,
        collection: AsyncCollection[Document],
        doc_id: Any,
        condition: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool,
    ) -> bool:
        try:
            result = await collection.update_one(
                {"_id": doc_id, **condition}, update, upsert=upsert
            )
        except DuplicateKeyError:
            return False  # upsert: the document exists, and the condition did not hold
        return bool(result.matched_count or result.upserted_id is not None)

    async def find_by_ids(
        self,
        collection: AsyncCollection[Document],
        ids: Sequence[Any],
        projection: Mapping[str, Any] | None,
        concurrency: int,
    ) -> dict[Any, Document]:
        cursor = collection.find({"_id": {"$in": list(ids)}}, projection)
        return {doc["_id"]: doc async for doc in cursor}


class FerretDBv1(MongoSemantics):
    """FerretDB v1: lookups by `_id` alone, conditions tested here, writers of a document in
    this process one at a time."""

    name = "ferretdb-v1"

    def __init__(self) -> None:
        self._locks: dict[tuple[str, Any], tuple[asyncio.Lock, int]] = {}
        self._matches: Callable[[dict[str, Any], Document], bool] = filter_applies

    @contextlib.asynccontextmanager
    async def turn(self, collection: AsyncCollection[Document], doc_id: Any) -> AsyncIterator[None]:
        key = (collection.full_name, doc_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def update_if(
        self,
        collection: AsyncCollection[Document],
        doc_id: Any,
        condition: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool,
    ) -> bool:
        # Read by `_id`, test the condition here (mongomock's matcher: MongoDB's query
        # semantics), write by `_id`: the guarantee FerretDB gives, without its scan.
        async with self.turn(collection, doc_id):
            current = await collection.find_one({"_id": doc_id})
            if current is None:  # an upsert by `_id` alone: one the store applies atomically
                return upsert and await super().update_if(collection, doc_id, {}, update, True)
            if condition and not self._matches(dict(condition), current):
                return False
            result = await collection.update_one({"_id": doc_id}, update)
            return bool(result.matched_count)

    async def find_by_ids(
        self,
        collection: AsyncCollection[Document],
        ids: Sequence[Any],
        projection: Mapping[str, Any] | None,
        concurrency: int,
    ) -> dict[Any, Document]:
        gate = asyncio.Semaphore(concurrency)

        async def one(doc_id: Any) -> Document | None:
            async with gate:
                return await collection.find_one({"_id": doc_id}, projection)

        found = await asyncio.gather(*(one(doc_id) for doc_id in ids))
        return {doc["_id"]: doc for doc in found if doc is not None}


STORES_WITHOUT_USERS = ("ferretdb", "mongod")
"""The GREENIT_STORE values for which ./dev starts a store without users: FerretDB v1 has none,
and a local mongod is started without `--auth` (`shared.settings.store_auth_on`)."""

_BUSY_SIGNS = ("SQLITE_BUSY", "database is locked")
"""How FerretDB on SQLite says another writer holds the lock: a retry a moment later succeeds."""


def is_busy(exc: BaseException) -> bool:
    """Is this store error a stand-in's "another writer holds the lock, try again"?"""
    return any(sign in str(exc) for sign in _BUSY_SIGNS)


_ADAPTERS: weakref.WeakKeyDictionary[AsyncMongoClient[Document], MongoSemantics] = (
    weakref.WeakKeyDictionary()
)


def choose(build_info: Mapping[str, Any]) -> MongoSemantics:
    """The adapter for a store, from its `buildInfo` answer."""
    if "ferretdbVersion" in build_info:
        return FerretDBv1()
    return MongoSemantics()


async def adapter_for(client: AsyncMongoClient[Document]) -> MongoSemantics:
    """This client's store adapter (asked once per client)."""
    adapter = _ADAPTERS.get(client)
    if adapter is None:
        chosen = choose(await client.admin.command("buildInfo"))
        # Concurrent first callers all asked; the first answer stored is everyone's (one
        # adapter per client: its turns must be shared).
        adapter = _ADAPTERS.setdefault(client, chosen)
    return adapter
