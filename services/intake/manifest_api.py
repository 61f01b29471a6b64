"""A pickup's manifest over HTTP: import the donor's asset list, read it, scan a code off it.

`POST /pickups/{id}/manifest` stores valid rows (one `manifest` document per row, upserted by a
derived id, so a re-import changes nothing) and answers every refused row with its reason;
`POST /pickups/{id}/scan-code` registers the device a barcode names, through the manual scan's
own use case, so `device.received` is the same as for a manual scan.
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from services.intake import handlers, manifest, station, store
from services.intake.api import DeviceView, device_view
from services.intake.domain import KnownDevice, Pickup
from services.intake.manifest import ImportResult, Known, ManifestUpload
from shared.auth import Principal, Role
from shared.events import DeviceCategory, NonEmpty
from shared.mongo import Database, Document
from shared.service import Runtime

# ---- the `manifest` collection ----------------------------------------------------------------

UPDATES_PER_CALL = 50


async def stored_rows(db: Database, row_ids: list[str]) -> dict[str, Document]:
    cursor = db.manifest.find({"_id": {"$in": row_ids}})
    return {doc["_id"]: doc async for doc in cursor}


async def serial_holders(db: Database, pickup_id: UUID, keys: list[str]) -> dict[str, Document]:
    query = {"pickup_id": str(pickup_id), "serial_key": {"$in": keys}}
    return {doc["serial_key"]: doc async for doc in db.manifest.find(query)}


async def devices_by(db: Database, field: str, values: list[str]) -> dict[str, KnownDevice]:
    projection = {"_id": 1, "pickup_id": 1, "asset_tag": 1, "stage": 1, field: 1}
    cursor = db.devices.find({field: {"$in": values}}, projection)
    return {doc[field]: store.known_device(doc) async for doc in cursor}


async def known_for(db: Database, pickup_id: UUID, rows: list[manifest.ManifestRow]) -> Known:
    tags = [r.asset_tag for r in rows if r.asset_tag is not None]
    keys = [r.serial_key for r in rows if r.serial_key is not None]
    return Known(
        stored=await stored_rows(db, [manifest.row_id(pickup_id, r) for r in rows]),
        serial_holders=await serial_holders(db, pickup_id, keys) if keys else {},
        devices_by_tag=await devices_by(db, "asset_tag", tags) if tags else {},
        devices_by_serial=await devices_by(db, "serial_key", keys) if keys else {},
    )


async def store_writes(db: Database, writes: list[manifest.Write]) -> None:
    """Insert new rows in one call, then update changed ones (a row a concurrent import just
    inserted is updated instead)."""
    created = [w for w in writes if w.outcome == "created"]
    lost_races: list[manifest.Write] = []
    if created:
        try:
            await db.manifest.insert_many(
                [{"_id": w.row_id, **w.fields} for w in created], ordered=False
            )
        except BulkWriteError as exc:
            duplicates = {e["index"] for e in exc.details["writeErrors"] if e["code"] == 11000}
            if len(duplicates) < len(exc.details["writeErrors"]):
                raise
            lost_races = [created[i] for i in sorted(duplicates)]
    await upsert(db, [w for w in writes if w.outcome == "updated"] + lost_races)


async def upsert(db: Database, writes: list[manifest.Write]) -> None:
    # FerretDB v1 never answers an update command of 100 statements or more: stay well below.
    for start in range(0, len(writes), UPDATES_PER_CALL):
        batch = writes[start : start + UPDATES_PER_CALL]
        operations = [UpdateOne({"_id": w.row_id}, {"$set": w.fields}, upsert=True) for w in batch]
        await db.manifest.bulk_write(operations, ordered=False)


async def rows_of(db: Database, pickup_id: UUID) -> list[Document]:
    cursor = db.manifest.find({"pickup_id": str(pickup_id)}).sort("row", ASCENDING)
    return [doc async for doc in cursor]


async def rows_for_code(db: Database, pickup_id: UUID, code: str) -> list[Document]:
    """The rows a scanned code names: the row with that asset tag, else those with that serial."""
    by_tag = await db.manifest.find_one({"_id": manifest.tag_row_id(pickup_id, code)})
    if by_tag is not None:
        return [by_tag]
    query = {"pickup_id": str(pickup_id), "serial_fold": manifest.serial_fold(code)}
    return [doc async for doc in db.manifest.find(query)]


async def mark_scanned(db: Database, row_id: str, device_id: UUID) -> None:
    await db.manifest.update_one(
        {"_id": row_id, "device_id": {"$ne": str(device_id)}},
        {"$set": {"device_id": str(device_id)}},
    )


async def progress(db: Database, pickup_id: UUID) -> tuple[int, int]:
    """(rows scanned, rows on the list) of a pickup's manifest."""
    rows = await db.manifest.count_documents({"pickup_id": str(pickup_id)})
    scanned = await db.manifest.count_documents(
        {"pickup_id": str(pickup_id), "device_id": {"$exists": True}}
    )
    return scanned, rows


# ---- use cases --------------------------------------------------------------------------------


async def import_rows(
    runtime: Runtime, pickup: Pickup, upload: ManifestUpload, *, by: str
) -> ImportResult:
    manifest.ensure_open(
        pickup,
        "import asset list",
        f"the asset list of a {pickup.status.value} pickup can no longer change",
    )
    rows, invalid = manifest.validate_upload(upload.rows)
    if not rows:
        return manifest.result_of([], invalid)
    known = await known_for(runtime.db, pickup.pickup_id, rows)
    decisions = manifest.plan_import(pickup, rows, known, now=handlers.now(), by=by)
    await store_writes(runtime.db, manifest.writes_of(decisions))
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
    await mark_scanned(runtime.db, row["_id"], UUID(device["_id"]))
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
    pickup_id: UUID
    rows_total: int
    rows_scanned: int
    rows: list[ManifestRowView]


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


def router(runtime: Runtime) -> APIRouter:
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
        responses={409: {"description": "The pickup is completed or cancelled"}},
    )
    async def import_manifest(
        pickup_id: UUID, body: ManifestUpload, principal: Annotated[Principal, donor_or_staff]
    ) -> ImportResult:
        pickup = await pickup_or_404(pickup_id, principal)
        return await import_rows(runtime, pickup, body, by=principal.partner_id)

    @api.get(
        "/pickups/{pickup_id}/manifest",
        tags=["manifest"],
        summary="The pickup's asset list, and which rows were scanned in",
    )
    async def get_manifest(
        pickup_id: UUID, principal: Annotated[Principal, readers]
    ) -> ManifestView:
        await pickup_or_404(pickup_id, principal)
        rows = [row_view(doc) for doc in await rows_of(runtime.db, pickup_id)]
        return ManifestView(
            pickup_id=pickup_id,
            rows_total=len(rows),
            rows_scanned=sum(r.scanned for r in rows),
            rows=rows,
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
