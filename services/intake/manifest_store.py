"""The `manifest` collection: one document per row of a pickup's asset list (its lists, by which
every read is by `_id`: `store`, "manifest lists")."""

from uuid import UUID

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from services.intake import manifest
from services.intake.manifest import Known
from services.intake.store import Store, is_listed
from shared.mongo import Database, Document, find_by_ids
from shared.outbox import Connected

UPDATES_PER_CALL = 50


class TooManyRows(ValueError):
    """The import would take the pickup's asset list past the limit of rows per pickup."""


def _with_place(write: manifest.Write, places: dict[str, int]) -> Document:
    if write.row_id in places:
        return {**write.fields, "seq": places[write.row_id]}
    return write.fields


class ManifestStore:
    """Every call on `manifest`, the rows themselves; their lists are `Store`'s."""

    def __init__(self, connected: Connected, store: Store) -> None:
        self._connected = connected
        self._store = store

    @property
    def _db(self) -> Database:
        return self._connected.db

    async def serial_holders(
        self, pickup_id: UUID, rows: list[manifest.ManifestRow]
    ) -> dict[str, Document]:
        """The pickup's stored rows with the serial key of one of these rows."""
        keys = {r.serial_key for r in rows if r.serial_key is not None}
        folds = {manifest.serial_fold(r.serial_number) for r in rows if r.serial_number is not None}
        holders: dict[str, Document] = {}
        for fold in sorted(folds):
            for doc in await self._store.rows_with_serial(pickup_id, fold):
                if doc.get("serial_key") in keys:
                    holders[doc["serial_key"]] = doc
        return holders

    async def known_for(self, pickup_id: UUID, rows: list[manifest.ManifestRow]) -> Known:
        tags = [r.asset_tag for r in rows if r.asset_tag is not None]
        keys = [r.serial_key for r in rows if r.serial_key is not None]
        ids = [manifest.row_id(pickup_id, r) for r in rows]
        return Known(
            stored=await find_by_ids(self._db.manifest, ids),
            serial_holders=await self.serial_holders(pickup_id, rows) if keys else {},
            devices_by_tag=await self._store.find_by_keys("asset_tag", tags) if tags else {},
            devices_by_serial=await self._store.find_by_keys("serial_key", keys) if keys else {},
        )

    async def store_writes(
        self, pickup_id: UUID, writes: list[manifest.Write], known: Known, max_rows: int
    ) -> None:
        """Give new rows (and rows a crash left unlisted) their places, list their serials,
        write them, then count them; refused whole (TooManyRows) before any write past
        `max_rows`."""
        listed, _ = await self._store.manifest_counts(pickup_id)
        unlisted = [
            w
            for w in writes
            if w.outcome == "created" or not is_listed(known.stored.get(w.row_id), listed)
        ]
        if listed + len(unlisted) > max_rows:
            raise TooManyRows(
                f"the asset list of a pickup has at most {max_rows} rows: it has {listed}, "
                f"and this import would add {len(unlisted)}"
            )
        places = {w.row_id: listed + n for n, w in enumerate(unlisted)}
        await self._store.put_in_slots(pickup_id, places)
        await self._store.list_serials(
            pickup_id,
            {
                w.row_id: w.fields["serial_fold"]
                for w in writes
                if w.fields["serial_fold"] is not None
                and (
                    w.row_id in places
                    or (known.stored.get(w.row_id) or {}).get("serial_fold")
                    != w.fields["serial_fold"]
                )
            },
        )
        created = [w for w in writes if w.outcome == "created"]
        lost_races: list[manifest.Write] = []
        if created:
            try:
                await self._db.manifest.insert_many(
                    [{"_id": w.row_id, **w.fields, "seq": places[w.row_id]} for w in created],
                    ordered=False,
                )
            except BulkWriteError as exc:
                duplicates = {e["index"] for e in exc.details["writeErrors"] if e["code"] == 11000}
                if len(duplicates) < len(exc.details["writeErrors"]):
                    raise
                lost_races = [created[i] for i in sorted(duplicates)]  # another intake process
        changed = [w for w in writes if w.outcome != "created" and w.outcome != "unchanged"]
        relisted = [w for w in writes if w.outcome == "unchanged" and w.row_id in places]
        await self.upsert(changed + lost_races + relisted, places)
        if places:
            await self._store.set_listed(pickup_id, listed + len(places))

    async def upsert(self, writes: list[manifest.Write], places: dict[str, int]) -> None:
        # Batches well below 100 statements: a stand-in store never answered more
        # (docs/store.md).
        for start in range(0, len(writes), UPDATES_PER_CALL):
            batch = writes[start : start + UPDATES_PER_CALL]
            operations = [
                UpdateOne({"_id": w.row_id}, {"$set": _with_place(w, places)}, upsert=True)
                for w in batch
            ]
            await self._db.manifest.bulk_write(operations, ordered=False)

    async def rows_for_code(self, pickup_id: UUID, code: str) -> list[Document]:
        """The rows a scanned code names: the row with that asset tag, else those with that
        serial."""
        by_tag = await self._db.manifest.find_one({"_id": manifest.tag_row_id(pickup_id, code)})
        if by_tag is not None:
            return [by_tag]
        return await self._store.rows_with_serial(pickup_id, manifest.serial_fold(code))

    async def mark_scanned(self, pickup_id: UUID, row_id: str, device_id: UUID) -> None:
        """Record the row's device, and count the row as scanned the first time."""
        async with self._store.manifest_turn(pickup_id):
            row = await self._db.manifest.find_one({"_id": row_id}, {"device_id": 1})
            if row is None or row.get("device_id"):
                return
            await self._db.manifest.update_one(
                {"_id": row_id}, {"$set": {"device_id": str(device_id)}}
            )
            await self._store.count_scanned(pickup_id)

    async def progress(self, pickup_id: UUID) -> tuple[int, int]:
        """(rows scanned, rows on the list) of a pickup's manifest."""
        listed, scanned = await self._store.manifest_counts(pickup_id)
        return scanned, listed
