"""A transactional outbox in the same document as the state it describes.

The store has no multi-document transactions, so a state change and the events it causes are
written in ONE update: `$set` of the new state plus `outbox.<event_id>` entries. The relay then
publishes the entries and `$unset`s them. A crash between the two leaves the entries in the
document; the relay's sweep publishes them later. Event ids are deterministic, so a second
publication of the same entry is recognised downstream as a duplicate.

Each entry also keeps the trace context of the moment it was stored (`trace`: W3C headers), so
the record published later continues the trace of what caused it. Entries stored before that
field existed have none and are published all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from shared import observability
from shared.codec import decode, encode
from shared.events import Event
from shared.kafka import EventBus
from shared.mongo import Database, Document, update_by_id

log = logging.getLogger(__name__)

PENDING: dict[str, Any] = {"outbox": {"$nin": [{}, None]}}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _entry(event: Event) -> dict[str, Any]:
    entry: dict[str, Any] = {"payload": encode(event).decode(), "at": event.occurred_at}
    if trace := observability.stored_trace(event):
        entry["trace"] = trace
    return entry


def outbox_set(events: Iterable[Event]) -> dict[str, Any]:
    """The `$set` fields that put `events` in an existing document's outbox."""
    return {f"outbox.{e.event_id}": _entry(e) for e in events}


def outbox_doc(events: Iterable[Event]) -> dict[str, Any]:
    """The `outbox` field of a new document (an insert takes no dotted keys)."""
    return {"outbox": {str(e.event_id): _entry(e) for e in events}}


class Relay:
    """Publishes outbox entries of the given collections, then removes them.

    An event is counted in the domain metrics by the relay that removes its entry: each entry
    is written by a successful state change and removed exactly once, whereas a flush and a
    sweep racing, or a crash before the removal, may publish it twice.

    Finding entries left behind means reading every document of the collections (the store
    has no index on "has outbox entries"), so the
    relay does not do it every second: it sweeps everything when it starts (what a crash of
    this or another instance left), then every `full_sweep_s`, and in between retries only the
    documents whose flush failed in this process.
    """

    def __init__(self, bus: EventBus, collections: Sequence[AsyncCollection[Document]]) -> None:
        self._bus = bus
        self._collections = list(collections)
        self._failed: set[tuple[int, Any]] = set()
        """(collection index, document id) whose flush raised: retried at the next tick."""

    async def flush(self, collection: AsyncCollection[Document], doc_id: Any) -> None:
        """Publish the document's events now. A failure (broker or store down) is logged, not
        raised: the change is stored, so its caller succeeded; the document is retried every
        second, and swept when the service starts after a crash. (Raised, it answered a stored
        pickup with a 500 while Kafka restarted, inviting the client to ask again.)"""
        try:
            doc = await collection.find_one({"_id": doc_id}, {"outbox": 1})
            if doc:
                await self._publish(collection, doc)
        except Exception as exc:
            self._remember(collection, doc_id)
            log.warning(
                "publishing %s %s failed, retried in the background: %r",
                collection.name,
                doc_id,
                exc,
            )
        except BaseException:
            self._remember(collection, doc_id)
            raise

    def _remember(self, collection: AsyncCollection[Document], doc_id: Any) -> None:
        for index, known in enumerate(self._collections):
            if known.full_name == collection.full_name:
                self._failed.add((index, doc_id))

    async def retry_failed(self) -> int:
        """Flush again the documents whose flush failed; those failing again stay listed, and
        the first of their errors is raised once every one was tried (one failure must not
        drop the others from the list: they would wait for the next full sweep)."""
        failed, self._failed = self._failed, set()
        published = 0
        error: Exception | None = None
        for index, doc_id in failed:
            collection = self._collections[index]
            try:
                doc = await collection.find_one({"_id": doc_id}, {"outbox": 1})
                if doc:
                    published += await self._publish(collection, doc)
            except Exception as exc:
                self._failed.add((index, doc_id))
                error = error or exc
            except BaseException:
                self._failed.add((index, doc_id))
                raise
        if error is not None:
            raise error
        return published

    async def sweep(self, min_age_s: float = 5.0) -> int:
        """Publish entries left behind, e.g. by a crash between storing and publishing.

        Entries younger than `min_age_s` are left to the writer's own flush, so the two rarely
        publish the same entry twice (a duplicate is harmless: same event id).
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=min_age_s)
        published = 0
        for collection in self._collections:
            async for doc in collection.find(PENDING, {"outbox": 1}):
                published += await self._publish(collection, doc, older_than=cutoff)
        return published

    async def run_forever(self, interval_s: float = 1.0, full_sweep_s: float = 30.0) -> None:
        """Sweep everything now (entries of any age) and every `full_sweep_s`; retry failed
        flushes every `interval_s`."""
        next_full: float | None = None
        while True:
            try:
                now = asyncio.get_running_loop().time()
                if next_full is None:
                    await self.sweep(min_age_s=0)
                    next_full = now + full_sweep_s
                elif now >= next_full:
                    await self.sweep()
                    next_full = now + full_sweep_s
                else:
                    await self.retry_failed()
            except Exception:
                log.exception("outbox sweep failed; retrying")
            await asyncio.sleep(interval_s)

    async def _publish(
        self,
        collection: AsyncCollection[Document],
        doc: Document,
        older_than: datetime | None = None,
    ) -> int:
        entries = sorted((doc.get("outbox") or {}).items(), key=lambda kv: kv[1]["at"])
        if older_than is not None:
            entries = [(k, e) for k, e in entries if _aware(e["at"]) < older_than]
        for event_id, entry in entries:
            event = decode(entry["payload"])
            await self._bus.publish(event, entry.get("trace"))
            field = f"outbox.{event_id}"
            # Only the relay that actually removes the entry sees it modified, and counts it.
            removed = await update_by_id(collection, doc["_id"], {"$unset": {field: ""}})
            if removed.modified_count:
                observability.count_stored(event)
        return len(entries)


@contextlib.asynccontextmanager
async def running(relay: Relay, interval_s: float = 1.0, full_sweep_s: float = 30.0) -> Any:
    task = asyncio.create_task(relay.run_forever(interval_s, full_sweep_s))
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Connected(Protocol):
    """What a service's store works through: its database and the relay that flushes its
    outboxes (`shared.service.Runtime` once the app started, or a `Connection` in a test)."""

    db: Database
    relay: Relay


@dataclass(slots=True)
class Connection:
    db: Database
    relay: Relay


class ServiceStore:
    """The base of each service's `Store`: the one object that makes the service's collection
    calls, on the database of what it was given (the app's runtime once started, or a
    `Connection` in a test)."""

    def __init__(self, connected: Connected) -> None:
        self._connected = connected

    @property
    def _db(self) -> Database:
        return self._connected.db
