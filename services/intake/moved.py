"""The read side's old addresses on intake (deprecated; kept for one release): each answers 308
to the same path and query on the custody service, which now serves them. Certificates issued
before custody had its own service print `<intake>/verify/{id}` in their QR codes: those keep
resolving through here."""

from collections.abc import Awaitable, Callable
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Request, Response, status

MOVED = (
    "/devices",
    "/devices/{device_id}",
    "/devices/{device_id}/certificates/{kind}",
    "/reports/impact",
    "/ops/stages",
    "/ops/devices",
    "/ops/me",
    "/verify/{device_id}",
)
"""The paths custody serves that intake served before (GET), in the order README lists them."""


Endpoint = Callable[..., Awaitable[Any]]


def router(custody_url: str) -> APIRouter:
    api = APIRouter(tags=["moved to custody (deprecated)"])
    base = custody_url.rstrip("/")

    def moved(request: Request) -> Response:
        query = request.url.query
        location = base + request.url.path + (f"?{query}" if query else "")
        return Response(
            status_code=status.HTTP_308_PERMANENT_REDIRECT, headers={"Location": location}
        )

    def route(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
        return api.get(
            path,
            summary=f"Deprecated, moved: {summary}",
            status_code=status.HTTP_308_PERMANENT_REDIRECT,
            deprecated=True,
            response_class=Response,
            responses={308: {"description": "Moved to the custody service: see `Location`"}},
        )

    @route("/devices", "custody's GET /devices")
    async def devices(request: Request) -> Response:
        return moved(request)

    @route("/devices/{device_id}", "custody's GET /devices/{device_id}")
    async def device(request: Request, device_id: UUID) -> Response:
        return moved(request)

    @route("/devices/{device_id}/certificates/{kind}", "custody's certificate of a device")
    async def certificate(
        request: Request, device_id: UUID, kind: Literal["erasure", "recycling"]
    ) -> Response:
        return moved(request)

    @route("/reports/impact", "custody's GET /reports/impact")
    async def impact(request: Request) -> Response:
        return moved(request)

    @route("/ops/stages", "custody's GET /ops/stages")
    async def stages(request: Request) -> Response:
        return moved(request)

    @route("/ops/devices", "custody's GET /ops/devices")
    async def search(request: Request) -> Response:
        return moved(request)

    @route("/ops/me", "custody's GET /ops/me")
    async def who_am_i(request: Request) -> Response:
        return moved(request)

    @route(
        "/verify/{device_id}",
        "custody's public verification page (QR codes of issued certificates)",
    )
    async def verify(request: Request, device_id: UUID) -> Response:
        return moved(request)

    return api
