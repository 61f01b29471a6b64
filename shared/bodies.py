"""What every service refuses in a request body before, and while, validating it.

- A body over its limit is refused with 413 and the limit in the reason, read from the stream
  with a cap (a Content-Length above the limit is refused before reading; a chunked body or a
  lying Content-Length is cut off at the limit), so an oversized body is never held whole.
- A JSON body is parsed strictly first: `NaN`, `Infinity`, `-Infinity`, a number too large for a
  float (`1e309`), a string or key holding a lone surrogate (`"\\ud800"`, not UTF-8) and a key
  repeated in one object are refused with 422 naming the field (`loc`), never echoing the value.
- Numbers (and booleans) in a body are strict: `true` is not 1, `1` is not `true`, `"5"` is not 5;
  an integer is still a valid float. This applies to the JSON bodies FastAPI validates, every
  model nested in them included, without changing the models (events keep their own rules).
- A 422 never echoes what JSON cannot carry: an input or context that cannot be encoded is left
  out of the error, and a location naming an unencodable key is escaped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic_core import CoreSchema, SchemaValidator
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRICT_TYPES = {"int", "float", "decimal", "bool"}


# ---- size -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyLimit:
    """Bodies of the routes matching `path` (a route template) may be up to `max_bytes` long."""

    path: str
    max_bytes: int
    setting: str

    def matches(self, path: str) -> bool:
        return _compiled(self.path).fullmatch(path) is not None


def _compiled(template: str) -> re.Pattern[str]:
    regex, _, _ = compile_path(template)
    return regex


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


class BodyRules:
    """ASGI middleware: the size cap and the strict JSON parse, before the app sees the body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        setting: str = "GREENIT_MAX_BODY_BYTES",
        limits: Sequence[BodyLimit] = (),
    ) -> None:
        self.app = app
        self.default = BodyLimit("", max_bytes, setting)
        self.limits = list(limits)

    def limit_for(self, path: str) -> BodyLimit:
        return next((limit for limit in self.limits if limit.matches(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit.max_bytes:
            await _too_large(limit)(scope, receive, send)
            return
        try:
            body = await _read_capped(receive, limit.max_bytes)
        except _TooLarge:
            await _too_large(limit)(scope, receive, send)
            return
        except _Gone:
            return
        if body and _is_json(headers.get("content-type", "")):
            problems = list(strict_json_problems(body))
            if problems:
                refused = JSONResponse({"detail": problems[:MAX_ERRORS]}, status_code=422)
                await refused(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_capped(receive: Receive, max_bytes: int) -> bytes:
    """The whole body, or _TooLarge as soon as more than max_bytes arrived (_Gone when the
    client left before sending all of it)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: BodyLimit) -> JSONResponse:
    detail = (
        f"the request body is larger than the limit of {limit.max_bytes} bytes ({limit.setting})"
    )
    return JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# ---- strict JSON ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NonFinite:
    literal: str


class _Object(dict[str, Any]):
    repeated: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.repeated = []
    for key, value in pairs:
        if key in obj and key not in obj.repeated:
            obj.repeated.append(key)
        obj[key] = value
    return obj


def _float(literal: str) -> float | _NonFinite:
    value = float(literal)
    return value if math.isfinite(value) else _NonFinite(literal)


def strict_json_problems(body: bytes) -> Iterator[dict[str, Any]]:
    """What the strict reading refuses in a JSON body, as FastAPI's 422 errors (loc from
    "body"). A body that is not JSON at all yields nothing here: FastAPI answers it."""
    try:
        parsed = json.loads(
            body, object_pairs_hook=_object, parse_float=_float, parse_constant=_NonFinite
        )
    except ValueError:
        return
    yield from _problems(parsed, ("body",))


def _problems(value: Any, loc: tuple[str | int, ...]) -> Iterator[dict[str, Any]]:
    if isinstance(value, _NonFinite):
        yield _error(
            loc,
            "finite_number",
            "Input should be a finite number (JSON has no NaN, "
            "Infinity or numbers beyond a float's range)",
        )
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            yield _error(loc, "string_unicode", _UNICODE)
    elif isinstance(value, _Object):
        for key in value.repeated:
            yield _error(
                (*loc, safe_text(key)),
                "duplicate_key",
                "This key appears more than once in its object: send each key once",
            )
        for key, item in value.items():
            if _SURROGATE.search(key):
                yield _error((*loc, safe_text(key)), "string_unicode", _UNICODE)
            yield from _problems(item, (*loc, safe_text(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _problems(item, (*loc, i))


_UNICODE = "Input should be valid Unicode: it holds a lone surrogate, which UTF-8 cannot encode"


def _error(loc: tuple[str | int, ...], kind: str, msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": list(loc), "msg": msg}


def safe_text(text: str) -> str:
    """`text`, with any lone surrogate written as its escape (`\\ud800`), so JSON can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---- the 422 ----------------------------------------------------------------------------------


def _encodable(value: Any) -> bool:
    try:
        json.dumps(jsonable_encoder(value), allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError):
        return False
    return True


def encodable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as JSON can carry them: an unencodable input or context is left out."""
    kept = []
    for error in errors:
        error = dict(error)
        error["loc"] = [safe_text(p) if isinstance(p, str) else p for p in error.get("loc", ())]
        error["msg"] = safe_text(str(error.get("msg", "")))
        for part in ("input", "ctx"):
            if part in error and not _encodable(error[part]):
                del error[part]
        kept.append(jsonable_encoder(error))
    return kept


async def validation_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": encodable_errors(exc.errors())}, status_code=422)


# ---- strict numbers ---------------------------------------------------------------------------


def strict_numbers(schema: Any) -> Any:
    """A copy of a pydantic core schema whose number and boolean schemas are strict."""
    if isinstance(schema, dict):
        copied = {k: strict_numbers(v) for k, v in schema.items()}
        if copied.get("type") in _STRICT_TYPES:
            copied["strict"] = True
        return copied
    if isinstance(schema, list):
        return [strict_numbers(v) for v in schema]
    return schema


def make_bodies_strict(app: FastAPI) -> None:
    """Validate every route's body with numbers and booleans strict (nested models included)."""
    for route in app.router.routes:
        if not isinstance(route, APIRoute):
            continue
        fields = [route.body_field, *route.dependant.body_params]
        for field in fields:
            if field is None:
                continue
            adapter = field._type_adapter
            schema: CoreSchema = strict_numbers(adapter.core_schema)
            adapter.validator = SchemaValidator(schema)


def install(app: FastAPI, *, max_bytes: int, limits: Sequence[BodyLimit] = ()) -> None:
    """Every rule above, on one app (the middleware goes inside those added after it)."""
    app.add_exception_handler(RequestValidationError, validation_failed)
    make_bodies_strict(app)
    app.add_middleware(BodyRules, max_bytes=max_bytes, limits=limits)
