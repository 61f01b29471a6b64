"""The document store: one database per service, opened in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import UUID, uuid4

from pymongo import AsyncMongoClient, ReturnDocument, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.results import UpdateResult

from shared import store_adapter
from shared.credentials import ADMIN, read_store_password, store_secret_file
from shared.settings import ServiceSettings, store_auth_on
from shared.usecase import Busy

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
    credentials: dict[str, Any] = settings.store_credentials()
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
        **credentials,
    )


def tool_client(
    url: str, user: str = ADMIN, *, auth: bool | None = None, **options: Any
) -> AsyncMongoClient[Document]:
    """A command-line tool's (or a test's) store client, as `user` (the admin by default; the
    operations console reads as `ops`) when the store has users (`shared.settings.store_auth`)."""
    credentials: dict[str, Any] = {}
    if store_auth_on(auth):
        credentials = {"username": user, "password": read_store_password(user)}
        credentials["authSource"] = "admin"
    options.setdefault("tz_aware", True)
    options.setdefault("uuidRepresentation", "standard")
    return AsyncMongoClient(url, **credentials, **options)


def with_credentials(url: str, user: str = ADMIN, *, auth: bool | None = None) -> str:
    """`url` with `user`'s credentials in it when the store has users (for clients that take a
    URL only: the tests' own, a tool's child process). Never log what it returns."""
    if not store_auth_on(auth):
        return url
    parts = urlsplit(url)
    password = quote(read_store_password(user), safe="")
    netloc = f"{quote(user, safe='')}:{password}@{parts.netloc.rpartition('@')[2]}"
    query = "&".join(q for q in (parts.query, "authSource=admin") if q)
    return urlunsplit((parts.scheme, netloc, parts.path or "/", query, parts.fragment))


AUTHENTICATION_FAILED = 18
UNAUTHORIZED = 13
Refusal = Literal["authentication", "authorization"]


class StoreRefused(RuntimeError):
    """The store refused this process's user (a wrong password, or no role on its database)."""


async def refusal(db: AsyncDatabase[Document]) -> Refusal | None:
    """Does the store refuse this process? One command on its own database."""
    try:
        await asyncio.wait_for(db.command("listCollections", nameOnly=True), timeout=5.0)
    except OperationFailure as exc:
        if exc.code == AUTHENTICATION_FAILED:
            return "authentication"
        if exc.code == UNAUTHORIZED:
            return "authorization"
        return None
    except (PyMongoError, TimeoutError):
        return None  # not reachable: not a question of credentials
    return None


async def check_access(db: AsyncDatabase[Document], settings: ServiceSettings) -> None:
    """Raise StoreRefused, naming the setting, if the store refuses this process."""
    why = await refusal(db)
    if why is None:
        return
    creds = settings.store_credentials()
    user = creds.get("username")
    if why == "authentication":
        where = (
            "GREENIT_STORE_PASSWORD"
            if settings.store_password is not None
            else f"GREENIT_STORE_PASSWORD is unset, so {store_secret_file(str(user))}"
        )
        raise StoreRefused(
            f"the store refused user {user!r} (authentication failed): the password ({where}) "
            f"is not the store's; `./dev rotate-store-password {user}` sets a new one in both"
        )
    if user is None:
        raise StoreRefused(
            f"the store requires authentication and {settings.service} sent none: "
            "GREENIT_STORE_AUTH is false (or GREENIT_STORE names a store without users)"
        )
    raise StoreRefused(
        f"the store refused user {user!r} access to database {db.name!r} (not authorized): "
        f"`python -m shared.store_users ensure` grants each service its own database"
    )


class SlowCommands(monitoring.CommandListener):
    """Logs each store command slower than `threshold_ms` with the shape of its filter (field
    names, never values): a read that scans a collection shows up here long before it times a
    client out."""

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


# ---- operations with MongoDB semantics --------------------------------------------------------
#
# Every state change is a conditional update: "document X, if it is still in the state I decided
# on", one atomic `update_one` with the condition in its filter. How a store carries each of these
# out is `shared.store_adapter`'s business (the only module that knows a stand-in store's quirks).


async def _adapter(collection: AsyncCollection[Document]) -> store_adapter.MongoSemantics:
    return await store_adapter.adapter_for(collection.database.client)


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
    adapter = await _adapter(collection)
    return await adapter.update_if(collection, doc_id, condition, update, upsert)


async def update_by_id(
    collection: AsyncCollection[Document],
    doc_id: Any,
    update: Mapping[str, Any],
    *,
    upsert: bool = False,
) -> UpdateResult:
    """One update of document `doc_id`, unconditional."""
    adapter = await _adapter(collection)
    async with adapter.turn(collection, doc_id):
        return await collection.update_one({"_id": doc_id}, update, upsert=upsert)


async def increment(collection: AsyncCollection[Document], doc_id: Any, field: str = "n") -> int:
    """Add one to a counter and return its new value; concurrent callers (in any process) each
    get a value of their own. The counter is created (at 0) before it is incremented: a
    concurrent upsert by `findAndModify` is a race MongoDB resolves by a duplicate-key error and
    a stand-in store answers wrongly (docs/store.md)."""
    adapter = await _adapter(collection)
    async with adapter.turn(collection, doc_id):
        for _ in range(3):
            doc = await collection.find_one_and_update(
                {"_id": doc_id}, {"$inc": {field: 1}}, return_document=ReturnDocument.AFTER
            )
            if doc is not None:
                return int(doc[field])
            with contextlib.suppress(DuplicateKeyError):
                await collection.update_one(
                    {"_id": doc_id}, {"$setOnInsert": {field: 0}}, upsert=True
                )
    raise RuntimeError(f"counter {doc_id!r} in {collection.full_name} could not be created")


async def find_by_ids(
    collection: AsyncCollection[Document],
    ids: Sequence[Any],
    projection: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 16,
) -> dict[Any, Document]:
    """The documents with these `_id`s (missing ones absent), keyed by `_id`: one `$in` query
    (`concurrency` bounds the lookups of a store that needs one per id)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    adapter = await _adapter(collection)
    return await adapter.find_by_ids(collection, wanted, projection, concurrency)


# ---- leases: one holder at a time, across processes -------------------------------------------
# A lease is a field of one document, taken by a conditional update (free, or expired) and
# renewed while held, so two instances of a service take turns at a read-decide-write that spans
# several documents (a request's claims, a pickup's manifest). A holder that dies frees it when
# its time runs out (`ttl_s`); a waiter that cannot get it within `wait_s` gives up with `Busy`.


@contextlib.asynccontextmanager
async def lease(
    collection: AsyncCollection[Document],
    key: str,
    *,
    ttl_s: float = 15.0,
    wait_s: float = 30.0,
) -> AsyncIterator[None]:
    token = uuid4().hex
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pause = 0.01
    while True:
        now = datetime.now(UTC)
        free = {"$or": [{"lease": None}, {"lease.until": {"$lt": now}}]}
        taken = {"$set": {"lease": {"token": token, "until": now + timedelta(seconds=ttl_s)}}}
        if await update_if(collection, key, free, taken, upsert=True):
            break
        if loop.time() >= deadline:
            raise Busy(f"{collection.name} {key} is held by another writer")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)
    renewing = asyncio.create_task(_renew(collection, key, token, ttl_s))
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await update_if(collection, key, {"lease.token": token}, {"$unset": {"lease": ""}})


async def _renew(collection: AsyncCollection[Document], key: str, token: str, ttl_s: float) -> None:
    while True:
        await asyncio.sleep(ttl_s / 3)
        until = datetime.now(UTC) + timedelta(seconds=ttl_s)
        try:
            held = await update_if(
                collection, key, {"lease.token": token}, {"$set": {"lease.until": until}}
            )
        except Exception:
            log.exception("renewing the lease on %s %s failed; retrying", collection.name, key)
            continue
        if not held:
            log.error("the lease on %s %s ran out while held", collection.name, key)
            return


# ---- lists written before what they list ------------------------------------------------------
# A list document (`_id` = the owner, e.g. a pickup or a request) names the devices that belong
# to its owner, so that counting them is one lookup by `_id`. A device is listed in `pending_ids`
# before the write that makes it belong, and moved to `device_ids` (or dropped) after: a crash in
# between leaves it pending, and readers look pending devices up. So `device_ids` never names a
# device that does not belong, and every one that does is in one of the two lists.


async def list_pending(collection: AsyncCollection[Document], owner_id: str, item: str) -> None:
    """Step one: `item` may belong to `owner_id` from now on."""
    await update_by_id(collection, owner_id, {"$addToSet": {"pending_ids": item}}, upsert=True)


async def settle_pending(
    collection: AsyncCollection[Document], owner_id: str, item: str, *, belongs: bool
) -> None:
    """Step two: the write is done; `item` belongs (listed) or not (dropped)."""
    update: Document = {"$pull": {"pending_ids": item}}
    if belongs:
        update["$addToSet"] = {"device_ids": item}
    await update_by_id(collection, owner_id, update)
