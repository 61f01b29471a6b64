"""Custody's HTTP API: a donor follows its own devices; staff and operations see every device."""

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from services.custody.store import Store
from shared.auth import Principal, Role
from shared.devices import RegisteredDevice
from shared.service import Runtime
from shared.stages import Stage


class HistoryView(BaseModel):
    event_id: UUID
    event_type: str
    occurred_at: datetime
    producer: str
    details: dict[str, Any]


class DeviceView(RegisteredDevice):
    stage: str
    recipient_id: str | None
    erasure_certificate_id: UUID | None
    recycling_certificate_id: UUID | None
    history: list[HistoryView]


def device_view(doc: Mapping[str, Any]) -> DeviceView:
    """A device's custody view from its stored document (`_id` is the device id)."""
    history = sorted(doc.get("history") or (), key=lambda h: h["occurred_at"])
    stage = doc.get("stage") or "received"
    return DeviceView.model_validate(
        {**doc, "device_id": doc["_id"], "stage": stage, "history": history}
    )


def own(principal: Principal) -> str | None:
    """The partner whose data the caller is limited to; None for staff, who see everything."""
    return None if principal.is_staff else principal.partner_id


def router(runtime: Runtime, store: Store) -> APIRouter:
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
            partner_id=own(principal) or partner_id,
            pickup_id=pickup_id,
            stage=stage,
        )
        return [device_view(d) for d in docs]

    @api.get(
        "/devices/{device_id}", tags=["devices"], summary="One device and its chain of custody"
    )
    async def get_device(device_id: UUID, principal: Annotated[Principal, anyone]) -> DeviceView:
        doc = await store.load_device(device_id)
        mine = own(principal)
        if doc is None or (mine is not None and doc["partner_id"] != mine):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id}")
        return device_view(doc)

    return api
