"""What every service process is: an HTTP app whose lifespan opens the store and the broker.

`/health` answers 200 only when both Kafka and the store answer and no consumer of the
process is stuck (its `consumers` section says how each consumer group fares); `/docs` (Swagger
UI) and `/redoc` show the OpenAPI document and `/asyncapi` the AsyncAPI one, all served from
local files (no CDN); `/metrics` is the process's Prometheus metrics (`shared.observability`).
Every HTML answer carries the headers of `shared.http_security` (a nonce-based
Content-Security-Policy, no framing, nosniff).
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError
from starlette.routing import Route

from shared import bodies, mongo, observability
from shared.auth import FailedAuthentications, Principal, Role, authenticator, require
from shared.domain import IllegalTransition
from shared.events import Event, ServiceName, TransitionRefused
from shared.http_security import SecurityHeaders, csp_nonce, stamp_nonce, widen
from shared.kafka import EventBus, is_transient
from shared.kafka_access import check_credentials, refusal
from shared.openapi import declare_error_answers
from shared.outbox import Relay
from shared.outbox import running as outbox_running
from shared.refusals import record_refusal, refusal_view
from shared.settings import ServiceSettings
from shared.usecase import Busy, Unknown

log = logging.getLogger("greenit.service")

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI_VIEWER = ROOT / ".local" / "web" / "asyncapi"

Setup = Callable[[mongo.Database], Awaitable[None]]


OutboxCollections = Callable[[mongo.Database], Sequence[AsyncCollection[mongo.Document]]]


class Runtime:
    """What handlers and endpoints of one service process use; connected once the app started."""

    client: AsyncMongoClient[mongo.Document]
    db: mongo.Database
    relay: Relay

    def __init__(self, settings: ServiceSettings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.failed_authentications = FailedAuthentications(settings.auth_failures_per_minute)
        self.authenticate = authenticator(
            lambda: self.db, settings.service, self.failed_authentications
        )

    @property
    def producer(self) -> ServiceName:
        return cast(ServiceName, self.settings.service)

    def require(self, *roles: Role) -> Callable[..., Awaitable[Principal]]:
        return require(self.authenticate, *roles)

    async def refuse(
        self, refused: IllegalTransition, causation_id: UUID | None = None
    ) -> TransitionRefused:
        return await record_refusal(self.db, self.relay, self.producer, refused, causation_id)

    async def on_refused(self, refused: IllegalTransition, cause: Event) -> None:
        await self.refuse(refused, cause.event_id)


def store_error_response(exc: PyMongoError) -> JSONResponse:
    """A store that is busy or unreachable is a 503 to retry, not a server error."""
    if is_transient(exc):
        log.warning("store unavailable, answered 503: %r", exc)
        return JSONResponse(
            {"detail": "the store is busy or unreachable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    log.error("store error: %r", exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def create_app(
    *,
    settings: ServiceSettings,
    broker: KafkaBroker,
    asyncapi: AsyncAPI,
    runtime: Runtime,
    setup: Setup,
    outbox: OutboxCollections = lambda db: (),
    routers: Sequence[APIRouter] = (),
    description: str = "",
    body_limits: Sequence[bodies.BodyLimit] = (),
) -> FastAPI:
    observability.configure_logging(settings.service, settings.log_level, settings.log_format)
    observability.configure_tracing(settings.service, settings.otel_exporter)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.client = mongo.connect(settings)
        runtime.db = mongo.database(runtime.client, settings)
        await mongo.check_access(runtime.db, settings)  # a refused user stops here, named
        await setup(runtime.db)
        await runtime.db.refusals.create_index([("occurred_at", DESCENDING)])
        runtime.relay = Relay(runtime.bus, [*outbox(runtime.db), runtime.db.refusals])
        await check_credentials(settings)  # a wrong password stops here, naming the setting
        await broker.start()
        try:
            async with outbox_running(runtime.relay, full_sweep_s=settings.outbox_full_sweep_s):
                yield
        finally:
            await broker.stop()
            await runtime.client.close()

    app = FastAPIOffline(
        title=f"Green IT Lifecycle: {settings.service}",
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own request span starts before routing, so its trace cannot be the
        # device's; HttpObservability makes that span instead
        telemetry={"tracing": False},
        # the pages are served below, with the nonce of shared.http_security's policy
        docs_url=None,
        redoc_url=None,
    )
    for router in routers:
        app.include_router(router)
    declare_error_answers(app)

    @app.exception_handler(PyMongoError)
    async def store_failed(_: Request, exc: PyMongoError) -> JSONResponse:
        return store_error_response(exc)

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        log.info("gave up on a use case, answered 503: %s", exc)
        detail = f"{exc}; it is being changed concurrently, try again shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Unknown)
    async def unknown(_: Request, exc: Unknown) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(IllegalTransition)
    async def refused(_: Request, exc: IllegalTransition) -> JSONResponse:
        event = await runtime.refuse(exc)
        body = {
            "detail": exc.reason,
            "action": exc.action,
            "state": exc.state,
            "refusal_id": str(event.event_id),
        }
        return JSONResponse(body, status_code=409)

    staff = runtime.require(Role.STAFF, Role.OPERATIONS)

    @app.get("/refusals", tags=["operations"], summary="Refused transitions, newest first")
    async def refusals(
        principal: Annotated[Principal, Depends(staff)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        cursor = runtime.db.refusals.find().sort("occurred_at", DESCENDING).limit(limit)
        return [refusal_view(d) async for d in cursor]

    @app.get(
        "/health",
        tags=["operations"],
        summary="Is the service connected to Kafka and its store, and are its consumers moving?",
        description="200 with status `ok`, or `retrying` while a consumer retries a failure; "
        "503 with status `degraded` when Kafka or the store does not answer or a consumer is "
        "stuck (a batch failed GREENIT_CONSUMER_STUCK_AFTER deliveries in a row).",
    )
    async def health() -> JSONResponse:
        kafka_ok = await broker.ping(timeout=2.0)
        store_ok = await mongo.ping(runtime.client)
        consumers = observability.consumers_view()
        states = {c["state"] for c in consumers.values()}
        healthy = kafka_ok and store_ok and "stuck" not in states
        status = "degraded" if not healthy else "retrying" if "retrying" in states else "ok"
        body: dict[str, Any] = {
            "service": settings.service,
            "status": status,
            "kafka": kafka_ok,
            "store": store_ok,
            "consumers": consumers,
        }
        if not kafka_ok:  # say whether the broker refused our credentials
            body["kafka_refused"] = await refusal(settings)
        if not store_ok:  # and whether the store did
            body["store_refused"] = await mongo.refusal(runtime.db)
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = observability.metrics_page()
        return Response(body, media_type=content_type)

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(asyncapi.to_specification().to_jsonable())

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_page(request: Request) -> HTMLResponse:
        page = _ASYNCAPI_PAGE.replace("{title}", app.title)
        widen(request, "script-src", "'unsafe-eval'")  # its schema validators (ajv) need it
        return HTMLResponse(stamp_nonce(page, csp_nonce(request)))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=_OAUTH2_REDIRECT,
            swagger_js_url=f"{_DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_STATIC}/favicon.png",
        )
        return _stamped(page, request)

    @app.get(_OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return _stamped(get_swagger_ui_oauth2_redirect_html(), request)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        # ReDoc's own page would leave its styles without the nonce: it takes it as an option
        nonce = csp_nonce(request)
        widen(request, "style-src", _REDOC_LOAD_STYLE)
        widen(request, "worker-src", "blob:")  # its search index runs in a worker it builds
        page = _REDOC_PAGE.replace("{title}", app.title).replace("{nonce}", nonce)
        return HTMLResponse(stamp_nonce(page, nonce))

    @app.get("/asyncapi/static/{name}", include_in_schema=False)
    async def asyncapi_static(name: str) -> Response:
        path = ASYNCAPI_VIEWER / name
        if name not in _VIEWER_FILES or not path.is_file():
            detail = f"{name}: no such viewer file (./dev provision installs the viewer)"
            return JSONResponse({"detail": detail}, status_code=404)
        return FileResponse(path)

    bodies.install(app, max_bytes=settings.max_body_bytes, limits=body_limits)
    own = [r for r in app.router.routes if isinstance(r, Route)]
    included = [r for router in routers for r in router.routes if isinstance(r, Route)]
    app.add_middleware(SecurityHeaders)
    app.add_middleware(observability.HttpObservability, routes=[*own, *included])
    return app


def _stamped(page: HTMLResponse, request: Request) -> HTMLResponse:
    """A library's page, built from constants, with this request's nonce on its scripts."""
    html = bytes(page.body).decode("utf-8")
    return HTMLResponse(stamp_nonce(html, csp_nonce(request)))


def serve(app_path: str, settings: ServiceSettings) -> None:
    """Run one service process (what `python -m services.<name>` does)."""
    import uvicorn

    observability.configure_logging(settings.service, settings.log_level, settings.log_format)
    uvicorn.run(
        app_path,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our JSON handler on the root logger, not uvicorn's own
        access_log=False,  # shared.observability writes one access line per request instead
    )


_VIEWER_FILES = {"index.js", "default.min.css"}
_DOCS_STATIC = "/static-offline-docs"  # where fastapi_offline mounts Swagger UI and ReDoc
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"

_ASYNCAPI_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: AsyncAPI</title>
<link rel="stylesheet" href="/asyncapi/static/default.min.css"></head>
<body><div id="asyncapi"></div>
<script src="/asyncapi/static/index.js"></script>
<script>
AsyncApiStandalone.render({schema: {url: "/asyncapi.json", options: {method: "GET"}},
  config: {show: {sidebar: true}}}, document.getElementById("asyncapi"));
</script></body></html>
"""

# The CSS ReDoc's bundle inserts as it loads, before it was given the nonce, allowed by its hash,
# and the empty style element it starts with (tests/e2e/test_security_headers.py sees either
# blocked if a new bundle changes them).
_REDOC_LOAD_STYLE = (
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=' "
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
)

_REDOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static-offline-docs/favicon.png">
<style>body { margin: 0; padding: 0; }</style></head>
<body><div id="redoc"></div>
<script src="/static-offline-docs/redoc.standalone.js"></script>
<script>
Redoc.init("/openapi.json", {nonce: "{nonce}"}, document.getElementById("redoc"));
</script></body></html>
"""
