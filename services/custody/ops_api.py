"""Operations' HTTP routes over the custody view: devices per stage, and a device's timeline
found by its serial number or asset tag (decisions in `ops`, reads in `store`)."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from services.custody.api import device_view
from services.custody.ops import (
    BadThresholds,
    DeviceSearch,
    StagesView,
    defaults_text,
    stuck_thresholds,
    summarize,
)
from services.custody.store import Store
from shared.auth import Principal, Role
from shared.service import Runtime
from shared.stages import TERMINAL_STAGES


def _invalid(name: str, value: Any, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, so the answer matches the OpenAPI schema."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


class Operator(BaseModel):
    partner_id: str
    name: str
    role: Role


def router(runtime: Runtime, store: Store) -> APIRouter:
    api = APIRouter()
    operations = Depends(runtime.require(Role.OPERATIONS, Role.STAFF))

    @api.get(
        "/ops/me",
        tags=["operations"],
        summary="Whose operations or staff key this is (the operations page's sign-in check)",
    )
    async def who_am_i(principal: Annotated[Principal, operations]) -> Operator:
        return Operator(partner_id=principal.partner_id, name=principal.name, role=principal.role)

    @api.get(
        "/ops/stages",
        tags=["operations"],
        summary="Devices per stage, the oldest in each, and those stuck longer than a threshold",
    )
    async def stages(
        principal: Annotated[Principal, operations],
        stuck_after: Annotated[
            str | None,
            Query(
                max_length=2000,
                description='Seconds for every stage, or JSON per stage: {"received": 3600}. '
                f"Defaults: {defaults_text()}. Terminal stages "
                f"({', '.join(sorted(TERMINAL_STAGES))}) are never stuck.",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=0, le=100, description="Stuck devices listed")] = 10,
    ) -> StagesView:
        try:
            thresholds = stuck_thresholds(stuck_after)
        except BadThresholds as exc:
            raise _invalid("stuck_after", stuck_after, str(exc)) from None
        rows = await store.stage_rows()
        return summarize(rows, now=datetime.now(UTC), thresholds=thresholds, limit=limit)

    @api.get(
        "/ops/devices",
        tags=["operations"],
        summary="Find a device by asset tag or serial number: its identity and timeline",
        responses={404: {"description": "No device has that asset tag or serial number"}},
    )
    async def search(
        principal: Annotated[Principal, operations],
        q: Annotated[str, Query(min_length=1, max_length=128, description="Tag or serial")],
    ) -> DeviceSearch:
        query = q.strip()
        if not query:
            raise _invalid("q", q, "give an asset tag or a serial number")
        docs = await store.find_by_tag_or_serial(query)
        if not docs:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no device has asset tag or serial number {query!r}",
            )
        return DeviceSearch(query=query, devices=[device_view(d) for d in docs])

    return api
