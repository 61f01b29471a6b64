"""Custody's HTTP API: a donor follows its own devices; staff and operations see every device."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from services.custody import store
from shared.auth import Principal, Role
from shared.events import DeviceCategory
from shared.mongo import Document
from shared.service import Runtime
from shared.stages import Stage


class HistoryView(BaseModel):
    event_id: UUID
    event_type: str
    occurred_at: datetime
    producer: str
    details: dict[str, Any]


class DeviceView(BaseModel):
    device_id: UUID
    pickup_id: UUID
    partner_id: str
    asset_tag: str
    asset_tag_generated: bool
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    stage: str
    recipient_id: str | None
    erasure_certificate_id: UUID | None
    recycling_certificate_id: UUID | None
    received_at: datetime
    history: list[HistoryView]


def device_view(doc: Document) -> DeviceView:
    history = sorted(doc.get("history") or (), key=lambda h: h["occurred_at"])
    return DeviceView(
        device_id=UUID(doc["_id"]),
        pickup_id=UUID(doc["pickup_id"]),
        partner_id=doc["partner_id"],
        asset_tag=doc["asset_tag"],
        asset_tag_generated=doc["asset_tag_generated"],
        serial_number=doc.get("serial_number"),
        category=DeviceCategory(doc["category"]),
        make=doc["make"],
        model=doc["model"],
        weight_kg=doc["weight_kg"],
        stage=doc.get("stage") or "received",
        recipient_id=doc.get("recipient_id"),
        erasure_certificate_id=doc.get("erasure_certificate_id"),
        recycling_certificate_id=doc.get("recycling_certificate_id"),
        received_at=doc["received_at"],
        history=[HistoryView.model_validate(h) for h in history],
    )


def own(principal: Principal) -> str | None:
    """The partner whose data the caller is limited to; None for staff, who see everything."""
    return None if principal.is_staff else principal.partner_id


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter()
    anyone = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))

    @api.get("/devices", tags=["devices"], summary="Devices and what became of them")
    async def list_devices(
        principal: Annotated[Principal, anyone],
        pickup_id: UUID | None = None,
        stage: Stage | None = None,
        partner_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[DeviceView]:
        docs = await store.find_devices(
            runtime.db,
            partner_id=own(principal) or partner_id,
            pickup_id=pickup_id,
            stage=stage,
        )
        return [device_view(d) for d in docs]

    @api.get(
        "/devices/{device_id}", tags=["devices"], summary="One device and its chain of custody"
    )
    async def get_device(device_id: UUID, principal: Annotated[Principal, anyone]) -> DeviceView:
        doc = await store.load_device(runtime.db, device_id)
        mine = own(principal)
        if doc is None or (mine is not None and doc["partner_id"] != mine):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id}")
        return device_view(doc)

    return api
