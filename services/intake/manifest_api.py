"""A pickup's manifest over HTTP: import the donor's asset list, read it, scan a code off it.

`POST /pickups/{id}/manifest` stores valid rows (one `manifest` document per row, upserted by a
derived id, so a re-import changes nothing) and answers every refused row with its reason (a
donor is not told another donor's pickup, tag or serial); at most `manifest_max_rows` rows per
pickup. `GET /pickups/{id}/manifest` reads it a page at a time. Every read is by `_id` (see
`store`, "manifest lists"), so one pickup's long list slows no other pickup's scans.
`POST /pickups/{id}/scan-code` registers the device a barcode names, through the manual scan's
own use case, so `device.received` is the same as for a manual scan.
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from services.intake import handlers, manifest, station, store
from services.intake.api import DeviceView, device_view
from services.intake.domain import Pickup
from services.intake.manifest import ImportResult, Known, ManifestUpload
from services.intake.settings import Settings
from shared.auth import Principal, Role
from shared.events import DeviceCategory, NonEmpty
from shared.mongo import Database, Document, find_by_ids
from shared.service import Runtime

# ---- the `manifest` collection (its lists: `store`, "manifest lists") ---------------------------

UPDATES_PER_CALL = 50


class TooManyRows(ValueError):
    """The import would take the pickup's asset list past the limit of rows per pickup."""


async def serial_holders(
    db: Database, pickup_id: UUID, rows: list[manifest.ManifestRow]
) -> dict[str, Document]:
    """The pickup's stored rows with the serial key of one of these rows."""
    keys = {r.serial_key for r in rows if r.serial_key is not None}
    folds = {manifest.serial_fold(r.serial_number) for r in rows if r.serial_number is not None}
    holders: dict[str, Document] = {}
    for fold in sorted(folds):
        for doc in await store.rows_with_serial(db, pickup_id, fold):
            if doc.get("serial_key") in keys:
                holders[doc["serial_key"]] = doc
    return holders


async def known_for(db: Database, pickup_id: UUID, rows: list[manifest.ManifestRow]) -> Known:
    tags = [r.asset_tag for r in rows if r.asset_tag is not None]
    keys = [r.serial_key for r in rows if r.serial_key is not None]
    ids = [manifest.row_id(pickup_id, r) for r in rows]
    return Known(
        stored=await find_by_ids(db.manifest, ids),
        serial_holders=await serial_holders(db, pickup_id, rows) if keys else {},
        devices_by_tag=await store.find_by_keys(db, "asset_tag", tags) if tags else {},
        devices_by_serial=await store.find_by_keys(db, "serial_key", keys) if keys else {},
    )


async def store_writes(
    db: Database, pickup_id: UUID, writes: list[manifest.Write], known: Known, max_rows: int
) -> None:
    """Give new rows (and rows a crash left unlisted) their places, list their serials, write
    them, then count them; refused whole (TooManyRows) before any write past `max_rows`."""
    listed, _ = await store.manifest_counts(db, pickup_id)
    unlisted = [
        w
        for w in writes
        if w.outcome == "created" or not store.is_listed(known.stored.get(w.row_id), listed)
    ]
    if listed + len(unlisted) > max_rows:
        raise TooManyRows(
            f"the asset list of a pickup has at most {max_rows} rows: it has {listed}, "
            f"and this import would add {len(unlisted)}"
        )
    places = {w.row_id: listed + n for n, w in enumerate(unlisted)}
    await store.put_in_slots(db, pickup_id, places)
    await store.list_serials(
        db,
        pickup_id,
        {
            w.row_id: w.fields["serial_fold"]
            for w in writes
            if w.fields["serial_fold"] is not None
            and (
                w.row_id in places
                or (known.stored.get(w.row_id) or {}).get("serial_fold") != w.fields["serial_fold"]
            )
        },
    )
    created = [w for w in writes if w.outcome == "created"]
    lost_races: list[manifest.Write] = []
    if created:
        try:
            await db.manifest.insert_many(
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
    await upsert(db, changed + lost_races + relisted, places)
    if places:
        await store.set_listed(db, pickup_id, listed + len(places))


async def upsert(db: Database, writes: list[manifest.Write], places: dict[str, int]) -> None:
    # FerretDB v1 never answers an update command of 100 statements or more: stay well below.
    for start in range(0, len(writes), UPDATES_PER_CALL):
        batch = writes[start : start + UPDATES_PER_CALL]
        operations = [
            UpdateOne({"_id": w.row_id}, {"$set": _with_place(w, places)}, upsert=True)
            for w in batch
        ]
        await db.manifest.bulk_write(operations, ordered=False)


def _with_place(write: manifest.Write, places: dict[str, int]) -> Document:
    if write.row_id in places:
        return {**write.fields, "seq": places[write.row_id]}
    return write.fields


async def rows_for_code(db: Database, pickup_id: UUID, code: str) -> list[Document]:
    """The rows a scanned code names: the row with that asset tag, else those with that serial."""
    by_tag = await db.manifest.find_one({"_id": manifest.tag_row_id(pickup_id, code)})
    if by_tag is not None:
        return [by_tag]
    return await store.rows_with_serial(db, pickup_id, manifest.serial_fold(code))


async def mark_scanned(db: Database, pickup_id: UUID, row_id: str, device_id: UUID) -> None:
    """Record the row's device, and count the row as scanned the first time."""
    async with store.manifest_turn(db, pickup_id):
        row = await db.manifest.find_one({"_id": row_id}, {"device_id": 1})
        if row is None or row.get("device_id"):
            return
        await db.manifest.update_one({"_id": row_id}, {"$set": {"device_id": str(device_id)}})
        await store.count_scanned(db, pickup_id)


async def progress(db: Database, pickup_id: UUID) -> tuple[int, int]:
    """(rows scanned, rows on the list) of a pickup's manifest."""
    listed, scanned = await store.manifest_counts(db, pickup_id)
    return scanned, listed


# ---- use cases --------------------------------------------------------------------------------


async def import_rows(
    runtime: Runtime,
    pickup: Pickup,
    upload: ManifestUpload,
    *,
    by: str,
    shown_to: str | None,
    max_rows: int,
) -> ImportResult:
    """Store the valid rows; `shown_to` is the partner reading the refusals (None: staff)."""
    manifest.ensure_open(
        pickup,
        "import asset list",
        f"the asset list of a {pickup.status.value} pickup can no longer change",
    )
    rows, invalid = manifest.validate_upload(upload.rows)
    if not rows:
        return manifest.result_of([], invalid)
    db = runtime.db
    async with store.manifest_turn(db, pickup.pickup_id):
        known = await known_for(db, pickup.pickup_id, rows)
        decisions = manifest.plan_import(
            pickup, rows, known, now=handlers.now(), by=by, shown_to=shown_to
        )
        writes = [d for d in decisions if isinstance(d, manifest.Write)]
        await store_writes(db, pickup.pickup_id, writes, known, max_rows)
    return manifest.result_of(decisions, invalid)


class UnknownCode(LookupError):
    """The scanned code names no row of the pickup's manifest."""


class AmbiguousCode(LookupError):
    """The scanned serial is on several rows (of different makes)."""


async def scan_code(
    runtime: Runtime, pickup_id: UUID, code: str, location: str, *, by: str
) -> tuple[Document, bool, int]:
    """Register the device on the manifest row the code names; (device, new?, row number)."""
    pickup = await handlers.visible_pickup(runtime, pickup_id, None)
    manifest.ensure_open(
        pickup, "scan device", f"no device can be scanned into a {pickup.status.value} pickup"
    )
    found = await rows_for_code(runtime.db, pickup_id, code)
    if not found:
        raise UnknownCode(f"code {code} is not on the manifest of pickup {pickup_id}")
    if len(found) > 1:
        rows = ", ".join(str(doc["row"]) for doc in sorted(found, key=lambda d: d["row"]))
        raise AmbiguousCode(f"serial {code} is on rows {rows} of the manifest: scan the asset tag")
    row = found[0]
    scan = manifest.row_from_doc(row).scan(location)
    device, created = await handlers.scan_device(runtime, pickup_id, scan, scanned_by=by)
    await mark_scanned(runtime.db, pickup_id, row["_id"], UUID(device["_id"]))
    return device, created, row["row"]


# ---- HTTP -------------------------------------------------------------------------------------


class ManifestRowView(BaseModel):
    row: int
    asset_tag: str | None
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    scanned: bool
    device_id: UUID | None


class ManifestView(BaseModel):
    """One page of a pickup's asset list, rows in the order they were first imported."""

    pickup_id: UUID
    rows_total: int
    rows_scanned: int
    rows: list[ManifestRowView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


class ScanCodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: Annotated[str, Field(min_length=1, max_length=128, description="Asset tag or serial")]
    location: NonEmpty


class ScannedDeviceView(DeviceView):
    """The device a code registered, and how far the pickup's manifest is scanned."""

    manifest_row: int
    manifest_scanned: int
    manifest_rows: int


def row_view(doc: Document) -> ManifestRowView:
    device_id = doc.get("device_id")
    return ManifestRowView(
        row=doc["row"],
        asset_tag=doc.get("asset_tag"),
        serial_number=doc.get("serial_number"),
        category=DeviceCategory(doc["category"]),
        make=doc["make"],
        model=doc["model"],
        weight_kg=doc["weight_kg"],
        scanned=device_id is not None,
        device_id=UUID(device_id) if device_id else None,
    )


def _own(principal: Principal) -> str | None:
    return None if principal.is_staff else principal.partner_id


MAX_PAGE = 1000


def router(runtime: Runtime, settings: Settings) -> APIRouter:
    api = APIRouter()
    donor_or_staff = Depends(runtime.require(Role.DONOR, Role.STAFF))
    readers = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))
    staff = Depends(runtime.require(Role.STAFF))

    async def pickup_or_404(pickup_id: UUID, principal: Principal) -> Pickup:
        try:
            return await handlers.visible_pickup(runtime, pickup_id, _own(principal))
        except handlers.UnknownPickup as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc

    @api.post(
        "/pickups/{pickup_id}/manifest",
        tags=["manifest"],
        summary="Import rows of the donor's asset list (each row checked on its own; idempotent)",
        responses={
            409: {"description": "The pickup is completed or cancelled"},
            413: {"description": "The list would pass the limit of rows per pickup"},
        },
    )
    async def import_manifest(
        pickup_id: UUID, body: ManifestUpload, principal: Annotated[Principal, donor_or_staff]
    ) -> ImportResult:
        pickup = await pickup_or_404(pickup_id, principal)
        try:
            return await import_rows(
                runtime,
                pickup,
                body,
                by=principal.partner_id,
                shown_to=_own(principal),
                max_rows=settings.manifest_max_rows,
            )
        except TooManyRows as exc:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc)) from exc

    @api.get(
        "/pickups/{pickup_id}/manifest",
        tags=["manifest"],
        summary="The pickup's asset list, a page at a time, and which rows were scanned in",
    )
    async def get_manifest(
        pickup_id: UUID,
        principal: Annotated[Principal, readers],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page")] = 500,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,9}$", description="`next_cursor` of the previous page"),
        ] = None,
    ) -> ManifestView:
        await pickup_or_404(pickup_id, principal)
        start = 0 if cursor is None else int(cursor)
        docs, following = await store.manifest_page(runtime.db, pickup_id, start, limit)
        scanned, total = await progress(runtime.db, pickup_id)
        return ManifestView(
            pickup_id=pickup_id,
            rows_total=total,
            rows_scanned=scanned,
            rows=[row_view(doc) for doc in docs],
            next_cursor=None if following is None else str(following),
        )

    @api.post(
        "/pickups/{pickup_id}/scan-code",
        tags=["manifest"],
        summary="Scan a barcode: register the device of the manifest row with that asset tag or "
        "serial (201 new; 200 the same device again)",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"description": "A repeated scan: the device already registered"},
            404: {"description": "Unknown pickup, or a code not on its manifest"},
            409: {"description": "The pickup is closed, or the code is ambiguous"},
        },
    )
    async def scan_code_in(
        pickup_id: UUID,
        body: ScanCodeRequest,
        response: Response,
        principal: Annotated[Principal, staff],
    ) -> ScannedDeviceView:
        try:
            device, created, row = await scan_code(
                runtime, pickup_id, body.code, body.location, by=principal.partner_id
            )
        except (handlers.UnknownPickup, UnknownCode) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        except AmbiguousCode as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        if not created:
            response.status_code = status.HTTP_200_OK
        scanned, total = await progress(runtime.db, pickup_id)
        return ScannedDeviceView(
            **device_view(device).model_dump(),
            manifest_row=row,
            manifest_scanned=scanned,
            manifest_rows=total,
        )

    api.include_router(station.router(runtime))
    return api
