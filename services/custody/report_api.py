"""The donor impact report over HTTP: one donor, one period, as JSON, HTML or PDF."""

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BeforeValidator, ValidationError

from services.custody import impact, impact_render
from services.custody.settings import Settings
from services.custody.store import Store
from shared.auth import Principal, Role
from shared.http_security import csp_nonce
from shared.service import Runtime

ReportFormat = Literal["json", "html", "pdf"]

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    """Only YYYY-MM-DD: no timestamps, week dates or compact forms read as a date."""
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


def _invalid(name: str, value: Any, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, so the answer matches the OpenAPI schema."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def report_donor(principal: Principal, partner_id: str | None) -> str:
    """Whose report: a donor's own (403 for another's); staff and operations name the donor."""
    if principal.is_staff:
        if partner_id is None:
            raise _invalid("partner_id", None, "staff and operations must name the donor")
        return partner_id
    if partner_id is not None and partner_id != principal.partner_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a donor sees only its own impact report")
    return principal.partner_id


def report_period(start: date, end: date) -> impact.Period:
    try:
        return impact.Period(start=start, end=end)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise _invalid("end", str(end), message) from None


def render(report: impact.ImpactReport, report_format: ReportFormat, nonce: str = "") -> Response:
    if report_format == "html":
        page = impact_render.render_html(report, nonce)
        return Response(page, media_type="text/html; charset=utf-8")
    if report_format == "pdf":
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", report.partner_id)
        filename = f"impact-{name}-{report.period.start}-{report.period.end}.pdf"
        return Response(
            impact_render.render_pdf(report),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{filename}"'},
        )
    return Response(report.model_dump_json(), media_type="application/json")


def router(runtime: Runtime, store: Store, settings: Settings) -> APIRouter:
    factors = impact.load_factors(settings.impact_factors)
    api = APIRouter()
    reader = Depends(runtime.require(Role.DONOR, Role.STAFF, Role.OPERATIONS))

    def build(
        docs: Sequence[Mapping[str, Any]],
        partner_id: str,
        period: impact.Period,
        fmt: ReportFormat,
        nonce: str,
    ) -> Response:
        report = impact.compute(
            docs,
            partner_id=partner_id,
            period=period,
            factors=factors,
            provisional=period.end_at > datetime.now(UTC),
        )
        return render(report, fmt, nonce)

    @api.get(
        "/reports/impact",
        tags=["reports"],
        summary="A donor's impact report for a period (JSON, HTML or PDF)",
        response_model=impact.ImpactReport,
        responses={
            200: {
                "description": "The report; `format` picks JSON, HTML or PDF",
                "content": {"text/html": {}, "application/pdf": {}},
            },
            403: {"description": "A donor asked for another partner's report"},
        },
    )
    async def impact_report(
        request: Request,
        principal: Annotated[Principal, reader],
        start: Annotated[IsoDate, Query(description="First day (UTC), included")],
        end: Annotated[IsoDate, Query(description="Day after the last (UTC), excluded")],
        report_format: Annotated[ReportFormat, Query(alias="format")] = "json",
        partner_id: Annotated[
            str | None,
            Query(min_length=1, max_length=200, description="The donor (staff and operations)"),
        ] = None,
    ) -> Response:
        donor = report_donor(principal, partner_id)
        period = report_period(start, end)
        docs = await store.donor_devices(donor)
        nonce = csp_nonce(request)
        return await asyncio.to_thread(build, docs, donor, period, report_format, nonce)

    return api
