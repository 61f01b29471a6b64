"""Intake's HTTP API: donors ask for pickups; staff scan devices in. What became of each device is
the custody service's to answer (`moved`: the old read paths redirect there)."""

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.intake import handlers
from services.intake.domain import Pickup, PickupStatus, ReceivedDevice, Scan
from services.intake.store import Store
from shared.auth import Principal, Role
from shared.devices import RegisteredDevice
from shared.events import Address, Contact, DeviceCategory, NonEmpty, TimeWindow
from shared.service import Runtime


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _in_utc_range(moment: datetime) -> datetime:
    """A time the store can hold: in UTC it must stay within years 1-9999 (else 422, not 500)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once in UTC") from None
    return moment


StorableTime = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]


class PickupRequest(Body):
    address: Address
    contact: Contact
    window: TimeWindow
    expected: dict[DeviceCategory, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        min_length=1, examples=[{"laptop": 30, "monitor": 10}]
    )
    notes: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _window_storable(self) -> "PickupRequest":
        _in_utc_range(self.window.start)
        _in_utc_range(self.window.end)
        return self


class ScheduleRequest(Body):
    scheduled_for: StorableTime


class CompleteRequest(Body):
    pass


class CancelRequest(Body):
    reason: NonEmpty


class ScanRequest(Body):
    asset_tag: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="The tag on the device; omit it and we generate one to print."
    )
    serial_number: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    category: DeviceCategory
    make: NonEmpty
    model: NonEmpty
    weight_kg: Annotated[float, Field(gt=0, le=500)]
    location: NonEmpty


class PickupView(BaseModel):
    pickup_id: UUID
    partner_id: str
    status: PickupStatus
    address: Address
    contact: Contact
    window: TimeWindow
    expected: dict[DeviceCategory, int]
    notes: str | None
    scheduled_for: datetime | None
    devices_received: int
    created_at: datetime


class DeviceView(RegisteredDevice):
    """A device as intake registered it; its stage, history and certificates are custody's
    (`custody_url`)."""

    custody_url: str = Field(description="The device's custody view: stage, history, certificates")


def pickup_view(pickup: Pickup, devices_received: int) -> PickupView:
    return PickupView.model_validate({**asdict(pickup), "devices_received": devices_received})


def device_view(device: ReceivedDevice, custody_url: str) -> DeviceView:
    url = f"{custody_url.rstrip('/')}/devices/{device.device_id}"
    return DeviceView.model_validate({**asdict(device), "custody_url": url})


def _own(principal: Principal) -> str | None:
    """The partner whose data the caller is limited to; None for staff, who see everything."""
    return None if principal.is_staff else principal.partner_id


def _not_found(exc: LookupError) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0]) if exc.args else "not found")


def router(runtime: Runtime, store: Store, custody_url: str) -> APIRouter:
    api = APIRouter()
    anyone = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))
    donor = Depends(runtime.require(Role.DONOR))
    staff = Depends(runtime.require(Role.STAFF))
    donor_or_staff = Depends(runtime.require(Role.DONOR, Role.STAFF))

    async def pickup_or_404(pickup_id: UUID, principal: Principal) -> Pickup:
        try:
            return await handlers.visible_pickup(store, pickup_id, _own(principal))
        except handlers.UnknownPickup as exc:
            raise _not_found(exc) from exc

    async def view_of(pickup: Pickup) -> PickupView:
        return pickup_view(pickup, await store.count_devices(pickup.pickup_id))

    @api.post(
        "/pickups",
        tags=["pickups"],
        summary="Ask for devices to be collected",
        status_code=status.HTTP_201_CREATED,
    )
    async def request_pickup(
        body: PickupRequest, principal: Annotated[Principal, donor]
    ) -> PickupView:
        pickup = await handlers.request_pickup(
            store,
            partner_id=principal.partner_id,
            address=body.address,
            contact=body.contact,
            window=body.window,
            expected=body.expected,
            notes=body.notes,
        )
        return pickup_view(pickup, 0)

    @api.get("/pickups", tags=["pickups"], summary="Pickups (a donor sees only its own)")
    async def list_pickups(
        principal: Annotated[Principal, anyone],
        partner_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[PickupView]:
        partner = _own(principal) or partner_id
        pickups = await store.find_pickups(partner)
        counts = await store.devices_per_pickup([p.pickup_id for p in pickups])
        return [pickup_view(p, counts[p.pickup_id]) for p in pickups]

    @api.get("/pickups/{pickup_id}", tags=["pickups"], summary="One pickup")
    async def get_pickup(pickup_id: UUID, principal: Annotated[Principal, anyone]) -> PickupView:
        return await view_of(await pickup_or_404(pickup_id, principal))

    @api.post("/pickups/{pickup_id}/schedule", tags=["pickups"], summary="Fix the date of a pickup")
    async def schedule_pickup(
        pickup_id: UUID, body: ScheduleRequest, principal: Annotated[Principal, staff]
    ) -> PickupView:
        try:
            pickup = await handlers.schedule_pickup(
                store, pickup_id, scheduled_for=body.scheduled_for, by=principal.partner_id
            )
        except handlers.UnknownPickup as exc:
            raise _not_found(exc) from exc
        return await view_of(pickup)

    @api.post(
        "/pickups/{pickup_id}/complete",
        tags=["pickups"],
        summary="Close a pickup: no more devices are scanned in under it",
    )
    async def complete_pickup(
        pickup_id: UUID, body: CompleteRequest, principal: Annotated[Principal, staff]
    ) -> PickupView:
        try:
            pickup = await handlers.complete_pickup(store, pickup_id, by=principal.partner_id)
        except handlers.UnknownPickup as exc:
            raise _not_found(exc) from exc
        return await view_of(pickup)

    @api.post(
        "/pickups/{pickup_id}/cancel",
        tags=["pickups"],
        summary="Cancel a pickup before any device was received (its donor, or staff)",
    )
    async def cancel_pickup(
        pickup_id: UUID, body: CancelRequest, principal: Annotated[Principal, donor_or_staff]
    ) -> PickupView:
        try:
            pickup = await handlers.cancel_pickup(
                store, pickup_id, reason=body.reason, visible_to=_own(principal)
            )
        except handlers.UnknownPickup as exc:
            raise _not_found(exc) from exc
        return await view_of(pickup)

    @api.post(
        "/pickups/{pickup_id}/devices",
        tags=["devices"],
        summary="Scan a device in under a pickup (201 new; 200 the same device when repeated)",
        status_code=status.HTTP_201_CREATED,
        responses={200: {"description": "A repeated scan: the device already registered"}},
    )
    async def scan_device(
        pickup_id: UUID,
        body: ScanRequest,
        response: Response,
        principal: Annotated[Principal, staff],
    ) -> DeviceView:
        scan = Scan(**body.model_dump())
        try:
            device, created = await handlers.scan_device(
                store, pickup_id, scan, scanned_by=principal.partner_id
            )
        except handlers.UnknownPickup as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown pickup") from exc
        if not created:
            response.status_code = status.HTTP_200_OK
        return device_view(device, custody_url)

    return api
