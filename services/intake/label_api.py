"""Asset labels over HTTP: one device's, or a pickup's devices in scan order, up to MAX_LABELS
a PDF (`start` and `limit` page through a larger pickup; `X-Labels-Total` says how many).

Readers as for pickups: staff and operations any device, a donor only its own (another donor's
device or pickup is answered exactly as one that does not exist). The QR code names custody's
public verification page (`GREENIT_CUSTODY_PUBLIC_URL`). Rendering runs in a worker thread, so a
pickup's sheets do not hold up the service's other requests.
"""

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from services.intake import handlers
from services.intake.domain import ReceivedDevice
from services.intake.labels import Label, Layout, render, verification_url
from services.intake.store import Store
from shared.auth import Principal, Role
from shared.service import Runtime

MAX_LABELS = 240
"""Labels in one PDF at most (10 sheets): rendering is CPU work, about linear in the labels."""

PDF: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The labels, as PDF",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    }
}
LayoutQuery = Annotated[
    Layout,
    Query(
        description="`roll`: one 62 x 40 mm label a page (62 mm continuous roll); "
        "`sheet`: A4 sheets of 3 x 8 labels of 70 x 37 mm"
    ),
]


def label_of(device: ReceivedDevice, custody_url: str) -> Label:
    return Label(
        asset_tag=device.asset_tag,
        url=verification_url(custody_url, str(device.device_id)),
        category=device.category.value,
        make=device.make,
        model=device.model,
    )


def pdf(content: bytes, name: str) -> Response:
    disposition = f'inline; filename="{name}.pdf"'
    return Response(
        content, media_type="application/pdf", headers={"Content-Disposition": disposition}
    )


def router(runtime: Runtime, store: Store, custody_url: str) -> APIRouter:
    api = APIRouter(tags=["labels"])
    readers = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))

    async def labels(devices: list[ReceivedDevice], layout: Layout) -> bytes:
        return await asyncio.to_thread(render, [label_of(d, custody_url) for d in devices], layout)

    @api.get(
        "/devices/{device_id}/label",
        summary="A device's asset label (PDF): Code 128 of its tag, QR of its verification page",
        response_class=Response,
        responses=PDF,
    )
    async def device_label(
        device_id: UUID, principal: Annotated[Principal, readers], layout: LayoutQuery = "roll"
    ) -> Response:
        device = await store.load_device(device_id)
        if device is None or not (principal.is_staff or device.partner_id == principal.partner_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id}")
        return pdf(await labels([device], layout), f"label-{device_id}")

    @api.get(
        "/pickups/{pickup_id}/labels",
        summary="The asset labels of the devices scanned into a pickup (PDF), in scan order",
        response_class=Response,
        responses=PDF,
    )
    async def pickup_labels(
        pickup_id: UUID,
        principal: Annotated[Principal, readers],
        layout: LayoutQuery = "sheet",
        start: Annotated[
            int, Query(ge=0, le=1_000_000, description="Skip this many devices (scan order)")
        ] = 0,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LABELS, description="Labels at most in this PDF")
        ] = MAX_LABELS,
    ) -> Response:
        own = None if principal.is_staff else principal.partner_id
        try:
            await handlers.visible_pickup(store, pickup_id, own)
        except handlers.UnknownPickup as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        ids = await store.device_ids_of_pickup(pickup_id)
        docs = await store.devices_of_pickup(pickup_id, ids[start : start + limit])
        if not docs and start == 0:
            detail = f"no device was scanned into pickup {pickup_id} yet: no label to print"
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
        if not docs:
            detail = f"pickup {pickup_id} has {len(ids)} device(s): none from start={start}"
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
        answer = pdf(await labels(docs, layout), f"labels-{pickup_id}")
        answer.headers["X-Labels-Total"] = str(len(ids))
        return answer

    return api
