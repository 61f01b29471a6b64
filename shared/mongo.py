"""The document store: one database per service, opened in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from enum import Enum
from typing import Any
from uuid import UUID

from mongomock.filtering import filter_applies
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.settings import ServiceSettings

Document = dict[str, Any]
DUPLICATE_KEY = 11000
"""The server's error code for a write refused by a unique index."""
Database = AsyncDatabase[Document]
log = logging.getLogger("greenit.store")


def to_document(value: Any) -> Any:
    """A `model_dump()` (or a dataclass's `TypeAdapter.dump_python`) as the store keeps it:
    UUIDs as strings, enums as their values, tuples as lists, datetimes kept (aware UTC).
    Reading back is the type's own validation (`model_validate`, `validate_python`)."""
    if isinstance(value, dict):
        return {str(k): to_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_document(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def connect(settings: ServiceSettings) -> AsyncMongoClient[Document]:
    listeners = (
        [SlowCommands(settings.slow_store_command_ms)] if settings.slow_store_command_ms else []
    )
    return AsyncMongoClient(
        settings.mongo_url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname=settings.service,
        maxPoolSize=settings.store_max_pool_size,
        event_listeners=listeners,
    )


class SlowCommands(monitoring.CommandListener):
    """Logs each store command slower than `threshold_ms` with the shape of its filter (field
    names, never values): a read that scans a collection on FerretDB v1 shows up here long
    before it times a client out."""

    def __init__(self, threshold_ms: float) -> None:
        self.threshold_us = threshold_ms * 1000
        self._shapes: dict[tuple[Any, int], Document] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if len(self._shapes) > 10_000:  # ends never reported (a dropped pool): forget them
            self._shapes.clear()
        self._shapes[(event.connection_id, event.request_id)] = command_shape(event.command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finish(event, "ok")

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event, "failed")

    def _finish(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, outcome: str
    ) -> None:
        shape = self._shapes.pop((event.connection_id, event.request_id), None)
        if shape is not None and event.duration_micros >= self.threshold_us:
            log.warning(
                "slow store command",
                extra={
                    "store_command": {
                        **shape,
                        "database": event.database_name,
                        "ms": round(event.duration_micros / 1000, 1),
                        "outcome": outcome,
                    }
                },
            )


def command_shape(command: Mapping[str, Any]) -> Document:
    """The command's name, collection and filter field names (no values)."""
    name = next(iter(command), "")
    query: Any = command.get("filter") or command.get("query")
    for key in ("updates", "deletes"):
        statements = command.get(key)
        if statements:
            query = statements[0].get("q")
    if name == "aggregate":
        stages = command.get("pipeline") or [{}]
        query = stages[0].get("$match")
    fields = sorted(query) if isinstance(query, Mapping) else []
    collection = command.get(name)
    return {
        "command": name,
        "collection": collection if isinstance(collection, str) else "",
        "filter": fields,
    }


def database(
    client: AsyncMongoClient[Document], settings: ServiceSettings
) -> AsyncDatabase[Document]:
    return client[settings.database]


async def ping(client: AsyncMongoClient[Document]) -> bool:
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=2.0)
    except Exception:
        return False
    return True


# ---- conditional updates ----------------------------------------------------------------------
#
# Every state change is a conditional update: "document X, if it is still in the state I decided
# on". MongoDB applies the condition atomically with the update. FerretDB v1 (our stand-in where
# no mongod is installed) looks a document up by index only when the filter is `{"_id": X}` alone;
# any other filter makes it read and decode the whole collection in Go (measured by
# `bench.store`: 0.7 s per guarded update at 5,000 documents). Its own update is a query
# followed by a separate write, so the condition is not atomic there either. On FerretDB we
# therefore read the document by `_id`, test the condition here (mongomock's matcher, the
# MongoDB query semantics) and write by `_id`: the same guarantee FerretDB gives, without the
# scan.

_ID_ONLY_LOOKUPS: dict[int, bool] = {}
_matches: Callable[[dict[str, Any], Document], bool] = filter_applies


async def looks_up_by_id_only(client: AsyncMongoClient[Document]) -> bool:
    """Does this store use an index only for filters on `_id` alone (FerretDB v1)?"""
    key = id(client)
    if key not in _ID_ONLY_LOOKUPS:
        info = await client.admin.command("buildInfo")
        _ID_ONLY_LOOKUPS[key] = "ferretdbVersion" in info
    return _ID_ONLY_LOOKUPS[key]


_LOCKS: dict[tuple[str, Any], tuple[asyncio.Lock, int]] = {}


@contextlib.asynccontextmanager
async def document_lock(collection: AsyncCollection[Document], doc_id: Any) -> AsyncIterator[None]:
    """Hold off this process's other writers of one document, on FerretDB v1 only.

    FerretDB v1 updates a document by reading it and writing it back whole, so of two concurrent
    updates of one document one can be lost, and `update_if`'s own read, test and write could
    interleave with another. Writers of one document in one process take turns here; `mongod`
    applies each update atomically and needs no turns.
    """
    if not await looks_up_by_id_only(collection.database.client):
        yield
        return
    key = (collection.full_name, doc_id)
    lock, users = _LOCKS.get(key, (asyncio.Lock(), 0))
    _LOCKS[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _LOCKS[key]
        if users == 1:
            del _LOCKS[key]
        else:
            _LOCKS[key] = (lock, users - 1)


# ---- lists written before what they list ------------------------------------------------------
# A list document (`_id` = the owner, e.g. a pickup or a request) names the devices that belong
# to its owner, so that counting them is one lookup by `_id` (any other filter reads a whole
# collection on FerretDB v1). A device is listed in `pending_ids` before the write that makes it
# belong, and moved to `device_ids` (or dropped) after: a crash in between leaves it pending, and
# readers look pending devices up. So `device_ids` never names a device that does not belong, and
# every one that does is in one of the two lists.


async def list_pending(collection: AsyncCollection[Document], owner_id: str, item: str) -> None:
    """Step one: `item` may belong to `owner_id` from now on."""
    async with document_lock(collection, owner_id):
        await collection.update_one(
            {"_id": owner_id}, {"$addToSet": {"pending_ids": item}}, upsert=True
        )


async def settle_pending(
    collection: AsyncCollection[Document], owner_id: str, item: str, *, belongs: bool
) -> None:
    """Step two: the write is done; `item` belongs (listed) or not (dropped)."""
    update: Document = {"$pull": {"pending_ids": item}}
    if belongs:
        update["$addToSet"] = {"device_ids": item}
    async with document_lock(collection, owner_id):
        await collection.update_one({"_id": owner_id}, update)


async def find_by_ids(
    collection: AsyncCollection[Document],
    ids: Sequence[Any],
    projection: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 16,
) -> dict[Any, Document]:
    """The documents with these `_id`s (missing ones absent), keyed by `_id`.

    One `$in` query where the store uses an index for it; on FerretDB v1, where only a filter on
    `_id` alone is looked up by index (an `$in` reads the whole collection), one lookup per id,
    `concurrency` at a time.
    """
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    if not await looks_up_by_id_only(collection.database.client):
        cursor = collection.find({"_id": {"$in": wanted}}, projection)
        return {doc["_id"]: doc async for doc in cursor}
    gate = asyncio.Semaphore(concurrency)

    async def one(doc_id: Any) -> Document | None:
        async with gate:
            return await collection.find_one({"_id": doc_id}, projection)

    found = await asyncio.gather(*(one(doc_id) for doc_id in wanted))
    return {doc["_id"]: doc for doc in found if doc is not None}


async def update_if(
    collection: AsyncCollection[Document],
    doc_id: Any,
    condition: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    upsert: bool = False,
) -> bool:
    """Apply `update` to document `doc_id` if it matches `condition` (a query filter), or insert
    it when `upsert` and no such document exists. True if the update applied or inserted.

    An upsert inserts `update` applied to `{"_id": doc_id}`; the condition's fields are not
    copied into the new document (use it with conditions on existing documents only).
    """
    if not condition or not await looks_up_by_id_only(collection.database.client):
        try:
            result = await collection.update_one(
                {"_id": doc_id, **condition}, update, upsert=upsert
            )
        except DuplicateKeyError:
            return False  # upsert: the document exists, and the condition did not hold
        return bool(result.matched_count or result.upserted_id is not None)
    async with document_lock(collection, doc_id):
        current = await collection.find_one({"_id": doc_id})
        if current is None:
            if not upsert:
                return False
            try:
                result = await collection.update_one({"_id": doc_id}, update, upsert=True)
            except DuplicateKeyError:
                return False  # inserted meanwhile
            return bool(result.matched_count or result.upserted_id is not None)
        if not _matches(dict(condition), current):
            return False
        result = await collection.update_one({"_id": doc_id}, update)
        return bool(result.matched_count)
