"""What every service refuses in a request body before, and while, validating it.

- A body over its limit is refused with 413 and the limit in the reason, read from the stream
  with a cap (a Content-Length above the limit is refused before reading; a chunked body or a
  lying Content-Length is cut off at the limit), so an oversized body is never held whole.
- A JSON body is parsed strictly first: `NaN`, `Infinity`, `-Infinity`, a number too large for a
  float (`1e309`), an integer beyond 64 bits (the store could not keep it), a string or key
  holding a lone surrogate (`"\\ud800"`, not UTF-8) and a key repeated in one object are refused
  with 422 naming the field (`loc`), never echoing the value.
- Numbers, booleans and strings in a body are strict: `true` is not 1, `1` is not `true`, `"5"`
  is not 5, a number is not a date-time; an integer is still a valid number. Checked against
  the operation's body schema in the app's
  OpenAPI document, at every depth, so every body model and every model nested in one is
  covered without changing the models (their lax reading stays for other uses, e.g. the
  manifest's text cells).
- A 422 never echoes what JSON cannot carry: an input or context that cannot be encoded is left
  out of the error, and a location naming an unencodable key is escaped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")


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
        openapi: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.app = app
        self.openapi = openapi
        self._schemas: BodySchemas | None = None
        self.default = BodyLimit("", max_bytes, setting)
        self.limits = list(limits)

    @property
    def schemas(self) -> BodySchemas:
        if self._schemas is None:
            self._schemas = BodySchemas(self.openapi())
        return self._schemas

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
            schema = self.schemas.of(scope["method"], scope["path"])
            if not problems and schema is not None:
                problems = list(self.schemas.problems_in(schema, body))
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


INT64 = (-(2**63), 2**63 - 1)
"""The integers the store can keep (BSON's int64): a larger one would fail at the write."""


@dataclass(frozen=True)
class _HugeInt:
    literal: str


def _int(literal: str) -> int | _HugeInt:
    value = int(literal)
    return value if INT64[0] <= value <= INT64[1] else _HugeInt(literal)


def strict_json_problems(body: bytes) -> Iterator[dict[str, Any]]:
    """What the strict reading refuses in a JSON body, as FastAPI's 422 errors (loc from
    "body"). A body that is not JSON at all yields nothing here: FastAPI answers it."""
    try:
        parsed = json.loads(
            body,
            object_pairs_hook=_object,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_NonFinite,
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
    elif isinstance(value, _HugeInt):
        yield _error(
            loc,
            "int_range",
            f"Input should be an integer from {INT64[0]:,} to {INT64[1]:,} (64 bits)",
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


# ---- strict numbers -------------------------------------------------------------------------

# Where the body's schema wants a number, a boolean or a string, these JSON types are refused
# although pydantic's lax reading would coerce them (true to 1, "5" to 5, 1 to true, a number
# to a date-time as Unix time).
_COERCED = {
    "number": {"boolean", "string"},
    "integer": {"boolean", "string"},
    "boolean": {"integer", "number", "string"},
    "string": {"boolean", "integer", "number"},
}
_EXPECTED = {
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "string": ("string_type", "Input should be a valid string"),
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class BodySchemas:
    """The JSON schema of each operation's body, from the app's OpenAPI document."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self.components = openapi.get("components", {}).get("schemas", {})
        self.bodies: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for path, operations in openapi.get("paths", {}).items():
            for method, operation in operations.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    schema = content["application/json"].get("schema", {})
                    self.bodies.append((_compiled(path), method.upper(), schema))

    def of(self, method: str, path: str) -> dict[str, Any] | None:
        return next(
            (s for regex, m, s in self.bodies if m == method and regex.fullmatch(path)), None
        )

    def resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            schema = self.components.get(schema["$ref"].rsplit("/", 1)[1], {})
            seen += 1
        return schema

    def members(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        schema = self.resolved(schema)
        choices = schema.get("anyOf") or schema.get("oneOf")
        if choices:
            return [m for c in choices for m in self.members(c)]
        return [schema]

    def admitted(self, members: list[dict[str, Any]]) -> set[str] | None:
        """The JSON types these schemas take; None when one of them takes anything."""
        types: set[str] = set()
        for member in members:
            if "type" in member:
                kind = member["type"]
                types |= set(kind) if isinstance(kind, list) else {kind}
            elif "enum" in member or "const" in member:
                types |= {_json_type(v) for v in member.get("enum", [member.get("const")])}
            else:
                return None
        if "number" in types:
            types.add("integer")
        return types

    def problems_in(self, schema: dict[str, Any], body: bytes) -> Iterator[dict[str, Any]]:
        try:
            value = json.loads(body)
        except ValueError:  # not JSON: FastAPI answers it
            return
        yield from self.problems(schema, value, ("body",))

    def problems(
        self, schema: dict[str, Any], value: Any, loc: tuple[str | int, ...], depth: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Numbers, booleans and strings sent as another JSON type, at any depth of the body."""
        if depth > 32:
            return
        members = self.members(schema)
        admitted = self.admitted(members)
        kind = _json_type(value)
        if admitted is not None and kind not in admitted:
            for wanted in ("number", "integer", "boolean", "string"):
                if wanted in admitted and kind in _COERCED[wanted]:
                    error, msg = _EXPECTED[wanted]
                    yield _error(loc, error, f"{msg} (strict: {kind} is not taken for one)")
                    return
        fitting = [m for m in members if kind in (self.admitted([m]) or {kind})]
        for member in fitting[:1]:
            if isinstance(value, dict):
                properties = member.get("properties", {})
                extra = member.get("additionalProperties")
                for key, item in value.items():
                    sub = properties.get(key, extra if isinstance(extra, dict) else None)
                    if sub is not None:
                        yield from self.problems(sub, item, (*loc, safe_text(key)), depth + 1)
            elif isinstance(value, list) and isinstance(member.get("items"), dict):
                for i, item in enumerate(value):
                    yield from self.problems(member["items"], item, (*loc, i), depth + 1)


def install(app: FastAPI, *, max_bytes: int, limits: Sequence[BodyLimit] = ()) -> None:
    """Every rule above, on one app (the middleware goes inside those added after it)."""
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_middleware(BodyRules, max_bytes=max_bytes, limits=limits, openapi=app.openapi)
