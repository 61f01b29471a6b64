"""A pickup's manifest over HTTP: import the donor's asset list, read it, scan a code off it.

Routes only: the use cases are `manifest_handlers`'s, the collection `manifest_store`'s.
`POST /pickups/{id}/manifest` stores valid rows (one `manifest` document per row, upserted by a
derived id, so a re-import changes nothing) and answers every refused row with its reason (a
donor is not told another donor's pickup, tag or serial); at most `manifest_max_rows` rows per
pickup. `GET /pickups/{id}/manifest` reads it a page at a time. Every read is by `_id` (see
`store`, "manifest lists"), so one pickup's long list slows no other pickup's scans.
`POST /pickups/{id}/scan-code` registers the device a barcode names, through the manual scan's
own use case, so `device.received` is the same as for a manual scan.
"""

from collections.abc import Mapping
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.intake import handlers, manifest_handlers, station
from services.intake.api import DeviceView, device_view
from services.intake.domain import Pickup
from services.intake.manifest import ImportResult, ManifestUpload
from services.intake.manifest_store import ManifestStore, TooManyRows
from services.intake.settings import Settings
from services.intake.store import Store
from shared.auth import Principal, Role
from shared.events import DeviceCategory, NonEmpty
from shared.service import Runtime


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


def row_view(doc: Mapping[str, Any]) -> ManifestRowView:
    """A stored manifest row (its `device_id` set once scanned)."""
    device_id = doc.get("device_id")
    return ManifestRowView.model_validate(
        {**doc, "scanned": device_id is not None, "device_id": device_id or None}
    )


def _own(principal: Principal) -> str | None:
    return None if principal.is_staff else principal.partner_id


MAX_PAGE = 1000


def router(
    runtime: Runtime, store: Store, rows_store: ManifestStore, settings: Settings
) -> APIRouter:
    api = APIRouter()
    donor_or_staff = Depends(runtime.require(Role.DONOR, Role.STAFF))
    readers = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))
    staff = Depends(runtime.require(Role.STAFF))

    async def pickup_or_404(pickup_id: UUID, principal: Principal) -> Pickup:
        try:
            return await handlers.visible_pickup(store, pickup_id, _own(principal))
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
            return await manifest_handlers.import_rows(
                store,
                rows_store,
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
        docs, following = await store.manifest_page(pickup_id, start, limit)
        scanned, total = await rows_store.progress(pickup_id)
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
            device, created, row = await manifest_handlers.scan_code(
                store, rows_store, pickup_id, body.code, body.location, by=principal.partner_id
            )
        except (handlers.UnknownPickup, manifest_handlers.UnknownCode) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        except manifest_handlers.AmbiguousCode as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        if not created:
            response.status_code = status.HTTP_200_OK
        scanned, total = await rows_store.progress(pickup_id)
        return ScannedDeviceView(
            **device_view(device, settings.custody_url).model_dump(),
            manifest_row=row,
            manifest_scanned=scanned,
            manifest_rows=total,
        )

    api.include_router(station.router(runtime))
    return api
