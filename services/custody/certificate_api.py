"""Certificates as documents for donors, and each device's public verification page."""

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from services.custody.certificate_pdf import render
from services.custody.certificates import (
    DonorCertificate,
    ErasureCertificate,
    Kind,
    NotIssued,
    PublicDevice,
    RecyclingCertificate,
    Unverifiable,
    certificate,
    public_view,
)
from services.custody.settings import Settings
from services.custody.store import Store
from shared.auth import Principal, Role
from shared.http_security import csp_nonce
from shared.service import Runtime

_templates = Environment(
    loader=PackageLoader("services.custody", "templates"), autoescape=select_autoescape()
)

Digest = Annotated[str, Query(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256, hex")]


def router(runtime: Runtime, store: Store, settings: Settings) -> APIRouter:
    api = APIRouter()
    anyone = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))

    @api.get(
        "/devices/{device_id}/certificates/{kind}",
        tags=["certificates"],
        summary="A device's erasure or recycling certificate, as JSON or PDF",
        response_model=ErasureCertificate | RecyclingCertificate,
        responses={200: {"content": {"application/pdf": {}}}},
    )
    async def get_certificate(
        device_id: UUID,
        kind: Kind,
        principal: Annotated[Principal, anyone],
        format: Literal["json", "pdf"] = "json",
    ) -> DonorCertificate | Response:
        doc = await store.load_device(device_id)
        if doc is None or not (principal.is_staff or doc["partner_id"] == principal.partner_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id}")
        try:
            issued = certificate(doc, kind)
        except NotIssued as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        except Unverifiable as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the certificate cannot be shown: {exc}"
            ) from exc
        if format == "json":
            return issued
        return Response(
            render(issued, settings.public_url),
            media_type="application/pdf",
            headers={
                "Content-Disposition": (
                    f'inline; filename="{kind}-certificate-{issued.certificate_id}.pdf"'
                )
            },
        )

    @api.get(
        "/verify/{device_id}",
        tags=["verification"],
        summary="Public: what a device's history proves (no personal data; no key needed)",
        response_model=PublicDevice,
        responses={200: {"content": {"text/html": {}}}},
    )
    async def verify(
        request: Request,
        device_id: UUID,
        digest: Digest | None = None,
        format: Literal["html", "json"] = "html",
    ) -> PublicDevice | Response:
        doc = await store.load_device(device_id)
        if doc is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id}")
        view = public_view(doc, digest)
        if format == "json":
            return view
        nonce = csp_nonce(request)
        page = _templates.get_template("verify.html").render(device=view, nonce=nonce)
        return HTMLResponse(page)

    return api
