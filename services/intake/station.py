"""The warehouse scan station: one keyboard-only page served by intake, calling its HTTP API.

The page (templates/station.html, inline script, no external assets) asks for the staff key
(kept in the tab's sessionStorage), a pickup and the location, then registers each scanned
barcode with `POST /pickups/{id}/scan-code`. A device whose tag intake generated gets a "print
label" link: the page fetches `GET /devices/{id}/label` with the key (a plain link could not send
it) and links the PDF from memory (a `blob:` URL). Its headers are shared.http_security's: the
request's nonce lets only the page's own inline script and style run.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel

from shared.auth import Principal, Role
from shared.http_security import csp_nonce
from shared.service import Runtime

_templates = Environment(
    loader=PackageLoader("services.intake", "templates"), autoescape=select_autoescape()
)


class StationUser(BaseModel):
    partner_id: str
    name: str
    role: Role


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter()
    staff = Depends(runtime.require(Role.STAFF))

    @api.get("/station", include_in_schema=False)
    async def station_page(request: Request) -> HTMLResponse:
        page = _templates.get_template("station.html").render(nonce=csp_nonce(request))
        return HTMLResponse(page)

    @api.get(
        "/station/me",
        tags=["station"],
        summary="Whose staff key this is (the scan station's sign-in check)",
    )
    async def who_am_i(principal: Annotated[Principal, staff]) -> StationUser:
        return StationUser(
            partner_id=principal.partner_id, name=principal.name, role=principal.role
        )

    return api
