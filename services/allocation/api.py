"""Allocation's HTTP API: requests (recipients), matching and shipping (staff), delivery,
reports and returns (recipients). A recipient sees only its own requests, shipments and
devices; another's are answered 404."""

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.allocation import handlers
from services.allocation.domain import (
    DeviceState,
    Request,
    RequestStatus,
    Shipment,
    ShipmentStatus,
    StockDevice,
)
from services.allocation.store import Store
from shared.auth import Principal, Role
from shared.events import DeviceCategory, Grade, HardwareSpecs, MinSpecs
from shared.service import Runtime
from shared.usecase import Unknown

Text = Annotated[str, Field(min_length=1, max_length=200)]
Note = Annotated[str, Field(max_length=2000)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NewRequest(Body):
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    category: DeviceCategory
    min_specs: MinSpecs = MinSpecs()
    purpose: Text
    priority: Annotated[int, Field(ge=1, le=5, description="1 = most urgent")] = 3
    deadline: date | None = None


class RequestView(BaseModel):
    request_id: UUID
    recipient_id: str
    status: RequestStatus
    quantity: int
    allocated: int = Field(description="Devices allocated to this request (derived from stock).")
    category: DeviceCategory
    min_specs: MinSpecs
    purpose: str
    priority: int
    deadline: date | None
    opened_at: datetime
    device_ids: list[UUID]


class NewAllocation(Body):
    device_id: UUID
    request_id: UUID


class AllocationView(BaseModel):
    device_id: UUID
    request_id: UUID
    recipient_id: str
    allocation_id: UUID


class MatchingResult(BaseModel):
    allocations: list[AllocationView]
    open_requests: int = Field(description="Requests still open after this run.")


class NewShipment(Body):
    recipient_id: Text
    device_ids: Annotated[list[UUID], Field(min_length=1, max_length=1000)]
    carrier: Text | None = None


class ShippedDevice(BaseModel):
    device_id: UUID
    category: DeviceCategory
    specs: HardwareSpecs
    cosmetic_grade: Grade
    functional_grade: Grade
    erasure_certificate_id: UUID


class ShipmentView(BaseModel):
    shipment_id: UUID
    bill_of_lading: str
    recipient_id: str
    carrier: str | None
    status: ShipmentStatus
    devices: list[ShippedDevice]
    created_at: datetime
    accepted_by: str | None
    delivered_at: datetime | None


class Acceptance(Body):
    accepted_by: Text


class DeviceView(BaseModel):
    device_id: UUID
    state: DeviceState
    category: DeviceCategory
    specs: HardwareSpecs
    cosmetic_grade: Grade
    functional_grade: Grade
    erasure_certificate_id: UUID
    in_stock_since: datetime
    request_id: UUID | None
    recipient_id: str | None
    allocation_id: UUID | None
    allocated_at: datetime | None
    shipment_id: UUID | None
    note: str | None
    updated_at: datetime | None


class Report(Body):
    condition: Literal["broken", "lost"]
    note: Note | None = None


class Usage(Body):
    students: Annotated[int, Field(ge=0, le=100_000, strict=True)] | None = None
    classrooms: Annotated[int, Field(ge=0, le=10_000, strict=True)] | None = None
    note: Note | None = None

    @model_validator(mode="after")
    def _says_something(self) -> "Usage":
        if self.students is None and self.classrooms is None:
            raise ValueError("give students, classrooms or both")
        return self


class Return(Body):
    reason: Literal["end_of_life", "broken"]
    note: Note | None = None


def device_view(d: StockDevice) -> DeviceView:
    return DeviceView(
        device_id=d.device_id,
        state=d.state,
        category=d.category,
        specs=d.specs,
        cosmetic_grade=d.cosmetic_grade,
        functional_grade=d.functional_grade,
        erasure_certificate_id=d.erasure_certificate_id,
        in_stock_since=d.ready_at,
        request_id=d.request_id,
        recipient_id=d.recipient_id,
        allocation_id=d.allocation_id,
        allocated_at=d.allocated_at,
        shipment_id=d.shipment_id,
        note=d.note,
        updated_at=d.updated_at,
    )


def _allocation_view(a: handlers.Allocation) -> AllocationView:
    return AllocationView(
        device_id=a.device_id,
        request_id=a.request_id,
        recipient_id=a.recipient_id,
        allocation_id=a.allocation_id,
    )


def _sees(principal: Principal, owner: str | None) -> bool:
    return principal.is_staff or (owner is not None and principal.partner_id == owner)


def router(runtime: Runtime, store: Store) -> APIRouter:
    api = APIRouter()
    recipient = runtime.require(Role.RECIPIENT)
    anyone = runtime.require(Role.RECIPIENT, Role.STAFF, Role.OPERATIONS)
    staff = runtime.require(Role.STAFF)
    staff_view = runtime.require(Role.STAFF, Role.OPERATIONS)
    owner_or_staff = runtime.require(Role.RECIPIENT, Role.STAFF)

    async def request_view(r: Request) -> RequestView:
        device_ids = await store.allocated_ids(r)
        return RequestView(
            request_id=r.request_id,
            recipient_id=r.recipient_id,
            status=r.status,
            quantity=r.quantity,
            allocated=len(device_ids),
            category=r.category,
            min_specs=r.min_specs,
            purpose=r.purpose,
            priority=r.priority,
            deadline=r.deadline,
            opened_at=r.opened_at,
            device_ids=device_ids,
        )

    async def shipment_view(s: Shipment) -> ShipmentView:
        by_id = await store.load_devices(s.device_ids)
        devices = [
            ShippedDevice(
                device_id=d.device_id,
                category=d.category,
                specs=d.specs,
                cosmetic_grade=d.cosmetic_grade,
                functional_grade=d.functional_grade,
                erasure_certificate_id=d.erasure_certificate_id,
            )
            for d in (by_id[i] for i in s.device_ids if i in by_id)
        ]
        return ShipmentView(
            shipment_id=s.shipment_id,
            bill_of_lading=s.bill_of_lading,
            recipient_id=s.recipient_id,
            carrier=s.carrier,
            status=s.status,
            devices=devices,
            created_at=s.created_at,
            accepted_by=s.accepted_by,
            delivered_at=s.delivered_at,
        )

    async def visible_request(request_id: UUID, principal: Principal) -> Request:
        r = await store.load_request(request_id)
        if r is None or not _sees(principal, r.recipient_id):
            raise Unknown(f"no request {request_id}")
        return r

    async def visible_shipment(shipment_id: UUID, principal: Principal) -> Shipment:
        s = await store.load_shipment(shipment_id)
        if s is None or not _sees(principal, s.recipient_id):
            raise Unknown(f"no shipment {shipment_id}")
        return s

    async def visible_device(device_id: UUID, principal: Principal) -> StockDevice:
        d = await store.load_device(device_id)
        if d is None or not _sees(principal, d.recipient_id):
            raise Unknown(f"no device {device_id} in allocation")
        return d

    # ---- requests ---------------------------------------------------------------------------

    @api.post(
        "/requests",
        tags=["requests"],
        summary="Ask for devices (recipients)",
        status_code=status.HTTP_201_CREATED,
    )
    async def post_request(
        body: NewRequest, principal: Annotated[Principal, Depends(recipient)]
    ) -> RequestView:
        r = await handlers.open_request(
            store,
            recipient_id=principal.partner_id,
            quantity=body.quantity,
            category=body.category,
            min_specs=body.min_specs,
            purpose=body.purpose,
            priority=body.priority,
            deadline=body.deadline,
            recipient_name=principal.name,
        )
        return await request_view(r)

    @api.get("/requests", tags=["requests"], summary="Requests: a recipient's own, or all (staff)")
    async def list_requests(
        principal: Annotated[Principal, Depends(anyone)],
        status_: Annotated[RequestStatus | None, Query(alias="status")] = None,
    ) -> list[RequestView]:
        query: dict[str, str] = {} if principal.is_staff else {"recipient_id": principal.partner_id}
        if status_ is not None:
            query["status"] = status_.value
        return [await request_view(r) for r in await store.find_requests(query)]

    @api.get("/requests/{request_id}", tags=["requests"], summary="One request")
    async def get_request(
        request_id: UUID, principal: Annotated[Principal, Depends(anyone)]
    ) -> RequestView:
        return await request_view(await visible_request(request_id, principal))

    @api.post(
        "/requests/{request_id}/cancel",
        tags=["requests"],
        summary="Withdraw an open request (its recipient or staff)",
    )
    async def cancel_request(
        request_id: UUID, principal: Annotated[Principal, Depends(owner_or_staff)]
    ) -> RequestView:
        r = await visible_request(request_id, principal)
        return await request_view(await handlers.cancel_request(store, r))

    # ---- matching and stock -----------------------------------------------------------------

    @api.post(
        "/matching/run",
        tags=["matching"],
        summary="Allocate available stock to open requests by the matching policy (staff)",
    )
    async def run_matching(principal: Annotated[Principal, Depends(staff)]) -> MatchingResult:
        allocations, still_open = await handlers.run_matching(store)
        return MatchingResult(
            allocations=[_allocation_view(a) for a in allocations], open_requests=still_open
        )

    @api.post(
        "/allocations",
        tags=["matching"],
        summary="Allocate one device to a request by hand (staff); same rules as matching",
        status_code=status.HTTP_201_CREATED,
    )
    async def post_allocation(
        body: NewAllocation, principal: Annotated[Principal, Depends(staff)]
    ) -> AllocationView:
        r = await visible_request(body.request_id, principal)
        allocation = await handlers.allocate_one(store, body.device_id, r)
        return _allocation_view(allocation)

    @api.get("/stock", tags=["matching"], summary="Devices available for allocation (staff)")
    async def get_stock(
        principal: Annotated[Principal, Depends(staff_view)],
        category: DeviceCategory | None = None,
    ) -> list[DeviceView]:
        query = {"state": DeviceState.AVAILABLE.value}
        if category is not None:
            query["category"] = category.value
        return [device_view(d) for d in await store.find_devices(query)]

    # ---- shipments --------------------------------------------------------------------------

    @api.post(
        "/shipments",
        tags=["shipments"],
        summary="Ship allocated devices to their recipient with a bill of lading (staff)",
        status_code=status.HTTP_201_CREATED,
    )
    async def post_shipment(
        body: NewShipment, principal: Annotated[Principal, Depends(staff)]
    ) -> ShipmentView:
        s = await handlers.create_shipment(
            store,
            recipient_id=body.recipient_id,
            device_ids=body.device_ids,
            carrier=body.carrier,
        )
        return await shipment_view(s)

    @api.get("/shipments", tags=["shipments"], summary="Shipments: a recipient's own, or all")
    async def list_shipments(
        principal: Annotated[Principal, Depends(anyone)],
    ) -> list[ShipmentView]:
        query = {} if principal.is_staff else {"recipient_id": principal.partner_id}
        return [await shipment_view(s) for s in await store.find_shipments(query)]

    @api.get("/shipments/{shipment_id}", tags=["shipments"], summary="One shipment")
    async def get_shipment(
        shipment_id: UUID, principal: Annotated[Principal, Depends(anyone)]
    ) -> ShipmentView:
        return await shipment_view(await visible_shipment(shipment_id, principal))

    @api.post(
        "/shipments/{shipment_id}/accept",
        tags=["shipments"],
        summary="Accept a delivery (its recipient): every device in it is delivered",
    )
    async def accept_shipment(
        shipment_id: UUID,
        body: Acceptance,
        principal: Annotated[Principal, Depends(recipient)],
    ) -> ShipmentView:
        s = await visible_shipment(shipment_id, principal)
        done = await handlers.accept_shipment(store, s, accepted_by=body.accepted_by)
        return await shipment_view(done)

    # ---- devices ----------------------------------------------------------------------------

    @api.get(
        "/devices", tags=["devices"], summary="Devices: those allocated to a recipient, or all"
    )
    async def list_devices(
        principal: Annotated[Principal, Depends(anyone)],
        state: DeviceState | None = None,
    ) -> list[DeviceView]:
        query = {} if principal.is_staff else {"recipient_id": principal.partner_id}
        if state is not None:
            query["state"] = state.value
        return [device_view(d) for d in await store.find_devices(query)]

    @api.get("/devices/{device_id}", tags=["devices"], summary="One device")
    async def get_device(
        device_id: UUID, principal: Annotated[Principal, Depends(anyone)]
    ) -> DeviceView:
        return device_view(await visible_device(device_id, principal))

    @api.post(
        "/devices/{device_id}/report",
        tags=["devices"],
        summary="Report a delivered device broken or lost (its recipient)",
    )
    async def report_device(
        device_id: UUID, body: Report, principal: Annotated[Principal, Depends(recipient)]
    ) -> DeviceView:
        await visible_device(device_id, principal)  # 404 unless it is the caller's
        after = await handlers.report_device(
            store, device_id, condition=body.condition, note=body.note
        )
        return device_view(after)

    @api.post(
        "/devices/{device_id}/usage",
        tags=["devices"],
        summary="Say whom a delivered device serves: students, classrooms (its recipient)",
    )
    async def report_usage(
        device_id: UUID, body: Usage, principal: Annotated[Principal, Depends(recipient)]
    ) -> DeviceView:
        await visible_device(device_id, principal)  # 404 unless it is the caller's
        after = await handlers.report_usage(
            store,
            device_id,
            students=body.students,
            classrooms=body.classrooms,
            note=body.note,
        )
        return device_view(after)

    @api.post(
        "/devices/{device_id}/return",
        tags=["devices"],
        summary="Return a delivered or broken device (its recipient or staff)",
    )
    async def return_device(
        device_id: UUID, body: Return, principal: Annotated[Principal, Depends(owner_or_staff)]
    ) -> DeviceView:
        await visible_device(device_id, principal)  # 404 unless it is the caller's
        after = await handlers.return_device(store, device_id, reason=body.reason, note=body.note)
        return device_view(after)

    return api
