"""Recycling's HTTP API, for staff and operations only."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.recycling import handlers
from services.recycling.domain import Device, RecyclingRecord, Source, State
from services.recycling.store import Store, lot_from
from shared.auth import Principal, Role
from shared.events import (
    DeviceCategory,
    ErasureRecord,
    MaterialFractions,
    NonEmpty,
    Recycler,
)
from shared.service import Runtime
from shared.usecase import Unknown


class DismantleBody(BaseModel):
    # Stripped as the contracts strip them: "\r" must fail here (422), not in the event (500).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    fractions: MaterialFractions
    hazardous_parts: list[NonEmpty] = Field(default_factory=list, max_length=50)
    storage_destroyed: list[ErasureRecord] = Field(
        default_factory=list,
        max_length=16,
        description="Drives destroyed at dismantling; a returned device needs a verified destroy "
        "of every one of its drives.",
    )
    location: NonEmpty

    @field_validator("fractions")
    @classmethod
    def _weighs_something(cls, value: MaterialFractions) -> MaterialFractions:
        if value.total_kg <= 0:
            raise ValueError("material fractions must weigh more than 0 kg in total")
        return value


class LotBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    recycler: Recycler
    device_ids: list[UUID] = Field(min_length=1, max_length=1000)

    @field_validator("device_ids")
    @classmethod
    def _each_once(cls, value: list[UUID]) -> list[UUID]:
        if len(set(value)) != len(value):
            raise ValueError("a device may appear only once in a lot")
        return value


class DeviceView(BaseModel):
    device_id: UUID
    state: State
    category: DeviceCategory
    source: Source
    correlation_id: UUID
    admitted_at: datetime
    erasure_certificate_id: UUID | None
    drive_serials: list[str] | None = Field(
        description="Every drive of the device (empty: none); null when recycling was not told."
    )
    fractions: MaterialFractions | None
    total_kg: float | None
    hazardous_parts: list[str]
    storage_destroyed: list[ErasureRecord]
    dismantled_by: str | None
    dismantled_at: datetime | None
    location: str | None
    lot_id: UUID | None
    recycling_certificate_id: UUID | None

    @classmethod
    def of(cls, device: Device) -> "DeviceView":
        d = device.dismantling
        return cls(
            device_id=device.device_id,
            state=device.state,
            category=device.category,
            source=device.source,
            correlation_id=device.correlation_id,
            admitted_at=device.admitted_at,
            erasure_certificate_id=device.erasure_certificate_id,
            drive_serials=None if device.drive_serials is None else list(device.drive_serials),
            fractions=d.fractions if d else None,
            total_kg=round(d.fractions.total_kg, 6) if d else None,
            hazardous_parts=list(d.hazardous_parts) if d else [],
            storage_destroyed=list(d.storage_destroyed) if d else [],
            dismantled_by=d.dismantled_by if d else None,
            dismantled_at=d.dismantled_at if d else None,
            location=d.location if d else None,
            lot_id=device.lot_id if device.state is State.RECYCLED else None,
            recycling_certificate_id=device.certificate.certificate_id
            if device.certificate
            else None,
        )


class CertificateRef(BaseModel):
    device_id: UUID
    certificate_id: UUID


class LotView(BaseModel):
    lot_id: UUID
    status: str = Field(description="dispatching (being written) or dispatched")
    bill_of_lading: str
    recycler: Recycler
    device_ids: list[UUID]
    fractions: MaterialFractions
    total_kg: float
    dispatched_at: datetime
    certificates: list[CertificateRef]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "LotView":
        lot = lot_from(doc)
        certificates: list[dict[str, Any]] = handlers.lot_certificates(doc)
        return cls(
            lot_id=lot.lot_id,
            status=doc["status"],
            bill_of_lading=lot.bill_of_lading,
            recycler=lot.recycler,
            device_ids=list(lot.device_ids),
            fractions=lot.fractions,
            total_kg=lot.total_kg,
            dispatched_at=lot.dispatched_at,
            certificates=[CertificateRef.model_validate(c) for c in certificates],
        )


class CertificateView(BaseModel):
    certificate_id: UUID
    device_id: UUID
    category: DeviceCategory
    source: Source
    correlation_id: UUID
    fractions: MaterialFractions
    total_kg: float
    recycler: Recycler
    lot_id: UUID
    bill_of_lading: str
    erasure_certificate_id: UUID | None
    drive_serials: list[str] = Field(
        description="Every drive of the device, each destroyed at dismantling (storage_destroyed) "
        "or erased under the erasure certificate."
    )
    storage_destroyed: list[ErasureRecord]
    issued_at: datetime

    @classmethod
    def of(cls, c: RecyclingRecord) -> "CertificateView":
        return cls(
            certificate_id=c.certificate_id,
            device_id=c.device_id,
            category=c.category,
            source=c.source,
            correlation_id=c.correlation_id,
            fractions=c.fractions,
            total_kg=round(c.fractions.total_kg, 6),
            recycler=c.recycler,
            lot_id=c.lot_id,
            bill_of_lading=c.bill_of_lading,
            erasure_certificate_id=c.erasure_certificate_id,
            drive_serials=list(c.drive_serials),
            storage_destroyed=list(c.storage_destroyed),
            issued_at=c.issued_at,
        )


def router(runtime: Runtime, store: Store) -> APIRouter:
    api = APIRouter(tags=["recycling"])
    Staff = Annotated[Principal, Depends(runtime.require(Role.STAFF))]
    Reader = Annotated[Principal, Depends(runtime.require(Role.STAFF, Role.OPERATIONS))]

    @api.get("/devices", summary="Devices recycling holds, optionally in one state")
    async def list_devices(_: Reader, state: State | None = None) -> list[DeviceView]:
        return [DeviceView.of(d) for d in await store.load_devices(state)]

    @api.get("/devices/{device_id}", summary="One device recycling holds")
    async def get_device(_: Reader, device_id: UUID) -> DeviceView:
        device = await store.load_device(device_id)
        if device is None:
            raise Unknown(f"device {device_id} is not here")
        return DeviceView.of(device)

    @api.post(
        "/devices/{device_id}/dismantle",
        status_code=status.HTTP_201_CREATED,
        summary="Record a device's dismantling: weighed fractions, hazardous parts, drives",
    )
    async def dismantle(principal: Staff, device_id: UUID, body: DismantleBody) -> DeviceView:
        device = await handlers.dismantle(
            store,
            device_id,
            fractions=body.fractions,
            hazardous_parts=body.hazardous_parts,
            destroyed=body.storage_destroyed,
            dismantled_by=principal.partner_id,
            location=body.location,
        )
        return DeviceView.of(device)

    @api.post(
        "/lots",
        status_code=status.HTTP_201_CREATED,
        summary="Dispatch dismantled devices to a certified recycler under a bill of lading",
    )
    async def create_lot(
        _: Staff,
        body: LotBody,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=200,
                description="A retried POST with the same key returns the same lot.",
            ),
        ] = None,
    ) -> LotView:
        doc = await handlers.create_lot(
            store,
            recycler=body.recycler,
            device_ids=body.device_ids,
            idempotency_key=idempotency_key,
        )
        return LotView.of(doc)

    @api.get("/lots", summary="Lots, newest first")
    async def list_lots(
        _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[LotView]:
        return [LotView.of(d) for d in await store.lot_docs(limit)]

    @api.get("/lots/{lot_id}", summary="One lot")
    async def get_lot(_: Reader, lot_id: UUID) -> LotView:
        doc = await store.load_lot_doc(lot_id)
        if doc is None:
            raise Unknown(f"lot {lot_id} does not exist")
        return LotView.of(doc)

    @api.get("/certificates/{certificate_id}", summary="A device's recycling certificate")
    async def get_certificate(_: Reader, certificate_id: UUID) -> CertificateView:
        certificate = await store.load_certificate(certificate_id)
        if certificate is None:
            raise Unknown(f"certificate {certificate_id} does not exist")
        return CertificateView.of(certificate)

    return api
