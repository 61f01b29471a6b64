"""What every service process is: an HTTP app whose lifespan opens the store and the broker.

`/health` answers 200 only when both Kafka and the store answer; `/docs` is the OpenAPI UI
and `/asyncapi` the AsyncAPI viewer, both served from local files (no CDN).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared import mongo
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI_VIEWER = ROOT / ".local" / "web" / "asyncapi"

Setup = Callable[[AsyncDatabase[mongo.Document]], Awaitable[None]]


class Runtime:
    """The live connections of one service process, available once the app has started."""

    client: AsyncMongoClient[mongo.Document]
    db: AsyncDatabase[mongo.Document]


def create_app(
    *,
    settings: ServiceSettings,
    broker: KafkaBroker,
    asyncapi: AsyncAPI,
    runtime: Runtime,
    setup: Setup,
    routers: Sequence[APIRouter] = (),
    description: str = "",
) -> FastAPI:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.client = mongo.connect(settings)
        runtime.db = mongo.database(runtime.client, settings)
        await setup(runtime.db)
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            await runtime.client.close()

    app = FastAPIOffline(
        title=f"Green IT Lifecycle: {settings.service}",
        description=description,
        version="0.1.0",
        lifespan=lifespan,
    )
    for router in routers:
        app.include_router(router)

    @app.get(
        "/health", tags=["operations"], summary="Is the service connected to Kafka and its store?"
    )
    async def health() -> JSONResponse:
        kafka_ok = await broker.ping(timeout=2.0)
        store_ok = await mongo.ping(runtime.client)
        body: dict[str, Any] = {
            "service": settings.service,
            "status": "ok" if kafka_ok and store_ok else "degraded",
            "kafka": kafka_ok,
            "store": store_ok,
        }
        return JSONResponse(body, status_code=200 if kafka_ok and store_ok else 503)

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(asyncapi.to_specification().to_jsonable())

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_page() -> HTMLResponse:
        return HTMLResponse(_ASYNCAPI_PAGE.replace("{title}", app.title))

    @app.get("/asyncapi/static/{name}", include_in_schema=False)
    async def asyncapi_static(name: str) -> Response:
        path = ASYNCAPI_VIEWER / name
        if name not in _VIEWER_FILES or not path.is_file():
            detail = f"{name}: no such viewer file (./dev provision installs the viewer)"
            return JSONResponse({"detail": detail}, status_code=404)
        return FileResponse(path)

    return app


def serve(app_path: str, settings: ServiceSettings) -> None:
    """Run one service process (what `python -m services.<name>` does)."""
    import uvicorn

    uvicorn.run(
        app_path,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


_VIEWER_FILES = {"index.js", "default.min.css"}

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
