"""Intake's own collections: `pickups`, `devices` (as registered), `pickup_devices`,
`device_keys`, `counters`, and the manifest's (`manifest`, `manifest_lists`, `manifest_pages`,
`manifest_serials`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter
from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.intake.domain import KnownDevice, Pickup, ReceivedDevice
from shared.events import Event
from shared.mongo import (
    DUPLICATE_KEY,
    Document,
    find_by_ids,
    increment,
    lease,
    list_pending,
    settle_pending,
    to_document,
    update_if,
)
from shared.outbox import ServiceStore, outbox_doc, outbox_set

ASSET_TAG_COUNTER = "asset_tag"

_PICKUP = TypeAdapter(Pickup)
_DEVICE = TypeAdapter(ReceivedDevice)
_KNOWN = TypeAdapter(KnownDevice)


# ---- pickups ----------------------------------------------------------------------------------


def pickup_doc(pickup: Pickup) -> Document:
    """The pickup's state fields (without `_id`), ready for `$set` or an insert."""
    doc: Document = to_document(_PICKUP.dump_python(pickup))
    del doc["pickup_id"]
    return doc


def pickup_from_doc(doc: Document) -> Pickup:
    return _PICKUP.validate_python({**doc, "pickup_id": doc["_id"]})


def device_doc(device: ReceivedDevice) -> Document:
    fields: Document = to_document(_DEVICE.dump_python(device))
    doc: Document = {"_id": fields.pop("device_id"), **fields}
    if device.serial_key is not None:
        doc["serial_key"] = device.serial_key
    return doc


def device_from_doc(doc: Document) -> ReceivedDevice:
    return _DEVICE.validate_python({**doc, "device_id": doc["_id"]})


def known_device(doc: Document) -> KnownDevice:
    # intake knows a device as received; what became of it since is custody's
    return _KNOWN.validate_python({**doc, "device_id": doc["_id"], "stage": "received"})


def _keys_of(doc: Document) -> list[str]:
    keys = [f"tag:{doc['asset_tag']}"]
    if doc.get("serial_key"):
        keys.append(f"serial:{doc['serial_key']}")
    return keys


_IDENTITY = {"_id": 1, "pickup_id": 1, "partner_id": 1, "asset_tag": 1}


# ---- manifest lists ---------------------------------------------------------------------------

MANIFEST_PAGE = 100


def is_listed(row: Document | None, listed: int) -> bool:
    return row is not None and isinstance(row.get("seq"), int) and row["seq"] < listed


def _page_id(pickup_id: UUID, page: int) -> str:
    return f"{pickup_id}:{page}"


def _serial_id(pickup_id: UUID, serial_fold: str) -> str:
    return f"{pickup_id}:{serial_fold}"


class Store(ServiceStore):
    """Every collection call of intake but the manifest rows' own (`manifest_store`)."""

    async def setup(self) -> None:
        db = self._db
        await db.devices.create_index([("asset_tag", ASCENDING)], unique=True)
        await db.devices.create_index([("serial_key", ASCENDING)], unique=True, sparse=True)
        await db.devices.create_index([("pickup_id", ASCENDING)])
        await db.devices.create_index([("partner_id", ASCENDING)])
        await db.pickups.create_index([("partner_id", ASCENDING)])
        if await db.device_keys.find_one({}, {"_id": 1}) is None:
            await self.sync_keys()  # first start with keys: index the existing devices
        if await db.pickup_devices.find_one({}, {"_id": 1}) is None:
            await self.sync_pickup_devices()  # first start with the lists: list the devices
        if await db.manifest_lists.find_one({}, {"_id": 1}) is None:
            await self.sync_manifest_lists()  # first start with the lists: list the rows

    # ---- pickups ------------------------------------------------------------------------------

    async def insert_pickup(self, pickup: Pickup, events: Sequence[Event]) -> None:
        doc = {"_id": str(pickup.pickup_id), **pickup_doc(pickup), **outbox_doc(events)}
        await self._db.pickups.insert_one(doc)

    async def save_pickup(self, before: Pickup, after: Pickup, events: Sequence[Event]) -> bool:
        """Store the pickup's new state and its events if its status is still the one the
        decision was made on; False if it changed meanwhile."""
        return await update_if(
            self._db.pickups,
            str(before.pickup_id),
            {"status": before.status.value},
            {"$set": {**pickup_doc(after), **outbox_set(events)}},
        )

    async def flush_pickup(self, pickup_id: UUID) -> None:
        await self._connected.relay.flush(self._db.pickups, str(pickup_id))

    async def load_pickup(self, pickup_id: UUID) -> Pickup | None:
        doc = await self._db.pickups.find_one({"_id": str(pickup_id)}, {"outbox": 0})
        return pickup_from_doc(doc) if doc else None

    async def find_pickups(self, partner_id: str | None) -> list[Pickup]:
        query: dict[str, Any] = {} if partner_id is None else {"partner_id": partner_id}
        cursor = self._db.pickups.find(query, {"outbox": 0}).sort("created_at", ASCENDING)
        return [pickup_from_doc(d) async for d in cursor]

    # `pickup_devices` (_id = pickup id) lists the devices scanned into each pickup, so that
    # counting them is one lookup by `_id` whatever the store (docs/store.md). A scan lists the
    # new device as pending before inserting it and as received after
    # (`shared.mongo.list_pending`).

    async def begin_receiving(self, pickup_id: UUID, device_id: UUID) -> None:
        await list_pending(self._db.pickup_devices, str(pickup_id), str(device_id))

    async def end_receiving(self, pickup_id: UUID, device_id: UUID, *, inserted: bool) -> None:
        await settle_pending(
            self._db.pickup_devices, str(pickup_id), str(device_id), belongs=inserted
        )

    async def sync_pickup_devices(self) -> int:
        """List every device under its pickup (a store from before `pickup_devices`)."""
        by_pickup: dict[str, list[str]] = {}
        async for doc in self._db.devices.find({}, {"pickup_id": 1}):
            by_pickup.setdefault(doc["pickup_id"], []).append(doc["_id"])
        for pickup_id, device_ids in by_pickup.items():
            await self._db.pickup_devices.update_one(
                {"_id": pickup_id},
                {"$addToSet": {"device_ids": {"$each": device_ids}}},
                upsert=True,
            )
        return sum(len(ids) for ids in by_pickup.values())

    async def count_devices(self, pickup_id: UUID) -> int:
        return (await self.devices_per_pickup([pickup_id]))[pickup_id]

    async def devices_per_pickup(self, pickup_ids: list[UUID]) -> dict[UUID, int]:
        """How many devices were scanned into each pickup (reads by `_id` only)."""
        lists = await find_by_ids(self._db.pickup_devices, [str(p) for p in pickup_ids])
        received = {p: set(doc.get("device_ids") or ()) for p, doc in lists.items()}
        pending = [
            (p, d)
            for p, doc in lists.items()
            for d in doc.get("pending_ids") or ()
            if d not in received[p]
        ]
        found = await find_by_ids(self._db.devices, [d for _, d in pending], {"pickup_id": 1})
        inserted = Counter(p for p, d in pending if found.get(d, {}).get("pickup_id") == p)
        return {p: len(received.get(str(p), ())) + inserted[str(p)] for p in pickup_ids}

    # ---- devices ------------------------------------------------------------------------------

    async def insert_device(self, device: ReceivedDevice, events: Sequence[Event]) -> bool:
        """Insert a newly scanned device and its events; False if a unique index refused it
        (its asset tag or serial is taken)."""
        try:
            await self._db.devices.insert_one({**device_doc(device), **outbox_doc(events)})
        except DuplicateKeyError:
            return False
        return True

    async def flush_device(self, device_id: UUID) -> None:
        await self._connected.relay.flush(self._db.devices, str(device_id))

    # A scan looks the device up by asset tag and by serial. `device_keys` answers both by `_id`
    # ("tag:<asset tag>", "serial:<serial key>" -> device id), which every store looks up by
    # index (a stand-in may use no other: docs/store.md). The unique indexes on `devices` stay
    # the arbiter of duplicates; keys are written after the device, so a crash in between
    # leaves a device without keys: the scan that then collides with it finds it the slow way
    # (`find_conflicting`) and writes its keys.

    async def save_device_keys(self, device: ReceivedDevice) -> None:
        await self.save_keys(device_doc(device))

    async def save_keys(self, doc: Document) -> None:
        """Let the device's asset tag and serial find it (idempotent)."""
        for key in _keys_of(doc):
            point = {"$set": {"device_id": doc["_id"]}}
            try:
                await self._db.device_keys.update_one({"_id": key}, point, upsert=True)
            except DuplicateKeyError:  # two scans of one device upserted at once: it exists now
                await self._db.device_keys.update_one({"_id": key}, point)

    async def _find_by_key(self, key: str, field: str, value: str) -> KnownDevice | None:
        entry = await self._db.device_keys.find_one({"_id": key})
        if entry is None:
            return None
        doc = await self._db.devices.find_one({"_id": entry["device_id"]}, _IDENTITY | {field: 1})
        return known_device(doc) if doc and doc.get(field) == value else None

    async def find_by_asset_tag(self, asset_tag: str) -> KnownDevice | None:
        return await self._find_by_key(f"tag:{asset_tag}", "asset_tag", asset_tag)

    async def find_by_serial_key(self, key: str) -> KnownDevice | None:
        return await self._find_by_key(f"serial:{key}", "serial_key", key)

    async def find_by_keys(self, field: str, values: list[str]) -> dict[str, KnownDevice]:
        """The devices holding these asset tags (`field` "asset_tag") or serial keys
        ("serial_key"), by value, read by `_id` only (a batch of manifest rows looks up many at
        once)."""
        prefix = {"asset_tag": "tag", "serial_key": "serial"}[field]
        entries = await find_by_ids(self._db.device_keys, [f"{prefix}:{v}" for v in values])
        device_ids = [entry["device_id"] for entry in entries.values()]
        docs = await find_by_ids(self._db.devices, device_ids, _IDENTITY | {field: 1})
        wanted = set(values)
        return {doc[field]: known_device(doc) for doc in docs.values() if doc.get(field) in wanted}

    async def find_conflicting(
        self, asset_tag: str | None, serial_key: str | None
    ) -> list[Document]:
        """The devices holding this tag or serial, read the slow way, and their keys written."""
        found = []
        for field, value in (("asset_tag", asset_tag), ("serial_key", serial_key)):
            if value is not None and (
                doc := await self._db.devices.find_one({field: value}, _IDENTITY)
            ):
                found.append(doc)
        for doc in found:
            full = await self._db.devices.find_one(
                {"_id": doc["_id"]}, {"asset_tag": 1, "serial_key": 1}
            )
            if full is not None:
                await self.save_keys(full)
        return found

    async def sync_keys(self) -> int:
        """Write the keys of every device (a store from before `device_keys`)."""
        written = 0
        async for doc in self._db.devices.find({}, {"asset_tag": 1, "serial_key": 1}):
            await self.save_keys(doc)
            written += 1
        return written

    async def load_device(self, device_id: UUID) -> ReceivedDevice | None:
        doc = await self._db.devices.find_one({"_id": str(device_id)}, {"outbox": 0})
        return device_from_doc(doc) if doc else None

    async def device_ids_of_pickup(self, pickup_id: UUID) -> list[str]:
        """The ids of the devices scanned into a pickup, in the order listed (received), then
        those being received now (which may yet fail: read them with `devices_of_pickup`)."""
        listed = await self._db.pickup_devices.find_one({"_id": str(pickup_id)})
        if listed is None:
            return []
        received = list(listed.get("device_ids") or ())
        known = set(received)
        return received + [d for d in listed.get("pending_ids") or () if d not in known]

    async def devices_of_pickup(
        self, pickup_id: UUID, device_ids: list[str]
    ) -> list[ReceivedDevice]:
        """These devices of the pickup, in the order given (reads by `_id` only)."""
        found = await find_by_ids(self._db.devices, device_ids, {"outbox": 0})
        mine = [found[d] for d in device_ids if d in found]
        return [device_from_doc(doc) for doc in mine if doc.get("pickup_id") == str(pickup_id)]

    async def next_asset_number(self) -> int:
        """The next number for a generated asset tag, unique across intake instances (the
        unique index on the tag is the last line of defence)."""
        return await increment(self._db.counters, ASSET_TAG_COUNTER)

    # ---- manifest lists -----------------------------------------------------------------------

    # A pickup's manifest rows (`manifest`, one document per row, `_id` derived from the pickup
    # and the row's tag or serial) are found by `_id` only, so one pickup's long list costs
    # nothing to another pickup's scans on any store (docs/store.md):
    # - `manifest_lists` (_id = pickup id): `listed`, the rows given a place so far, and
    #   `scanned`;
    # - `manifest_pages` (_id = "<pickup id>:<page>"): `slots`, place -> row id, MANIFEST_PAGE a
    #   page; each row stores its place as `seq`, and a slot whose row says otherwise is stale;
    # - `manifest_serials` (_id = "<pickup id>:<folded serial>"): `row_ids`, the rows with it.
    # Slots and serials are written before the rows they name, `listed` after, all in one turn
    # of the pickup's writers. A crash in between leaves slots past `listed` (overwritten by the
    # next import) and rows whose `seq` is not below `listed`: the next import of them lists
    # them again.

    def manifest_turn(self, pickup_id: UUID) -> AbstractAsyncContextManager[None]:
        """The writers of one pickup's manifest take turns, in every intake instance (its
        counts are read, then written): a lease on the pickup's `manifest_lists` document."""
        return lease(self._db.manifest_lists, str(pickup_id), ttl_s=30.0, wait_s=60.0)

    async def manifest_counts(self, pickup_id: UUID) -> tuple[int, int]:
        """(rows listed, rows scanned) of a pickup's manifest: one read by `_id`."""
        doc = await self._db.manifest_lists.find_one({"_id": str(pickup_id)})
        return (0, 0) if doc is None else (int(doc.get("listed", 0)), int(doc.get("scanned", 0)))

    async def put_in_slots(self, pickup_id: UUID, places: dict[str, int]) -> None:
        """Give rows (row id -> place) their places, before the rows are written."""
        by_page: dict[int, dict[str, str]] = {}
        for row_id, seq in places.items():
            by_page.setdefault(seq // MANIFEST_PAGE, {})[f"slots.{seq}"] = row_id
        for page, slots in sorted(by_page.items()):
            await self._db.manifest_pages.update_one(
                {"_id": _page_id(pickup_id, page)}, {"$set": slots}, upsert=True
            )

    async def list_serials(self, pickup_id: UUID, folds: dict[str, str]) -> None:
        """Let each row (row id -> folded serial) be found by its serial, before it is
        written."""
        by_fold: dict[str, list[str]] = {}
        for row_id, fold in folds.items():
            by_fold.setdefault(fold, []).append(row_id)
        new = [{"_id": _serial_id(pickup_id, f), "row_ids": ids} for f, ids in by_fold.items()]
        if not new:
            return
        try:
            await self._db.manifest_serials.insert_many(new, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            for error in errors:  # a serial already listed (another make, an earlier import)
                doc = new[error["index"]]
                await self._db.manifest_serials.update_one(
                    {"_id": doc["_id"]}, {"$addToSet": {"row_ids": {"$each": doc["row_ids"]}}}
                )

    async def set_listed(self, pickup_id: UUID, listed: int) -> None:
        await self._db.manifest_lists.update_one(
            {"_id": str(pickup_id)}, {"$set": {"listed": listed}}, upsert=True
        )

    async def count_scanned(self, pickup_id: UUID) -> None:
        await self._db.manifest_lists.update_one(
            {"_id": str(pickup_id)}, {"$inc": {"scanned": 1}}, upsert=True
        )

    async def rows_with_serial(self, pickup_id: UUID, serial_fold: str) -> list[Document]:
        """The pickup's manifest rows whose serial folds to this (by `_id` only)."""
        entry = await self._db.manifest_serials.find_one(
            {"_id": _serial_id(pickup_id, serial_fold)}
        )
        if entry is None:
            return []
        rows = await find_by_ids(self._db.manifest, entry.get("row_ids") or [])
        return [
            r
            for r in rows.values()
            if r.get("pickup_id") == str(pickup_id) and r.get("serial_fold") == serial_fold
        ]

    async def manifest_page(
        self, pickup_id: UUID, start: int, limit: int
    ) -> tuple[list[Document], int | None]:
        """Up to `limit` rows from place `start` on, in the order they were first listed, and
        the place to go on from (None at the end)."""
        listed, _ = await self.manifest_counts(pickup_id)
        found: list[Document] = []
        seq = start
        while seq < listed and len(found) < limit:
            end = min(listed, seq + limit - len(found))
            pages = range(seq // MANIFEST_PAGE, (end - 1) // MANIFEST_PAGE + 1)
            docs = await find_by_ids(
                self._db.manifest_pages, [_page_id(pickup_id, p) for p in pages]
            )
            slots: dict[int, str] = {}
            for doc in docs.values():
                slots |= {int(k): v for k, v in (doc.get("slots") or {}).items()}
            wanted = {n: slots[n] for n in range(seq, end) if n in slots}
            rows = await find_by_ids(self._db.manifest, list(wanted.values()))
            found += [
                rows[row_id]
                for n, row_id in sorted(wanted.items())
                if row_id in rows and rows[row_id].get("seq") == n
            ]
            seq = end
        return found, (seq if seq < listed else None)

    async def sync_manifest_lists(self) -> int:
        """List every manifest row (a store from before the lists), in line order per pickup."""
        by_pickup: dict[str, list[Document]] = {}
        async for doc in self._db.manifest.find(
            {}, {"pickup_id": 1, "row": 1, "serial_fold": 1, "device_id": 1}
        ):
            by_pickup.setdefault(doc["pickup_id"], []).append(doc)
        for pickup, docs in by_pickup.items():
            pickup_id = UUID(pickup)
            docs.sort(key=lambda d: (d["row"], d["_id"]))
            places = {d["_id"]: n for n, d in enumerate(docs)}
            await self.put_in_slots(pickup_id, places)
            await self.list_serials(
                pickup_id, {d["_id"]: d["serial_fold"] for d in docs if d.get("serial_fold")}
            )
            for row_id, seq in places.items():
                await self._db.manifest.update_one({"_id": row_id}, {"$set": {"seq": seq}})
            scanned = sum(1 for d in docs if d.get("device_id"))
            await self._db.manifest_lists.update_one(
                {"_id": pickup}, {"$set": {"listed": len(docs), "scanned": scanned}}, upsert=True
            )
        return sum(len(docs) for docs in by_pickup.values())
