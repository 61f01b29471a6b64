"""The error answers every service gives, declared in its OpenAPI document.

FastAPI declares what a route returns and 422; the errors raised by dependencies and exception
handlers (no key, wrong role, unknown id, refused transition, busy store) it cannot see. They
follow from the route's shape, so they are added to the generated document by rule:

- a route that takes a body: 400 when the body cannot be parsed at all (FastAPI's own answer),
  413 when it is over the service's size limit (`shared.bodies`);
- a route that needs an API key (it has a security requirement): 401, 403 and 429 (too many
  failed authentications from the caller's address, with Retry-After);
- a route about one resource (a path parameter), or changing state with ids in its body: 404;
- a route changing state (POST/PUT/PATCH/DELETE): 409;
- every route reads the store: 503 when it is busy or unreachable (with Retry-After).

A route answering another error for its own reasons declares it itself (`responses=`).

Declared answers are what clients and fuzzers (schemathesis) check responses against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

PROBLEM = "Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM,
    "type": "object",
    "description": "Why the request was not done.",
    "properties": {
        "detail": {"type": "string", "description": "The reason, for a person to read"},
        "action": {"type": "string", "description": "409: the refused action"},
        "state": {"type": "string", "description": "409: the state that refused it"},
        "refusal_id": {"type": "string", "description": "409: the recorded refusal's id"},
    },
    "required": ["detail"],
}

ANSWERS: dict[int, str] = {
    400: "The body could not be parsed (not JSON, or not in the declared encoding)",
    401: "No API key, or an unknown or revoked one (X-API-Key)",
    403: "The key's role may not do this",
    429: "Too many unknown or revoked keys from this address: try again after Retry-After seconds",
    404: "No such resource, or one this partner may not see",
    409: "Refused in the resource's current state (the refusal is recorded and published)",
    413: "The body is larger than the service's limit for this route (the reason names it)",
    503: "The store is busy or unreachable, or the subject kept changing: try again after "
    "Retry-After seconds",
}

CHANGES = {"post", "put", "patch", "delete"}


def error_answers(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """Which of ANSWERS this operation may give."""
    has_body = "requestBody" in operation
    changes = method in CHANGES
    codes = [400, 413] if has_body else []
    if operation.get("security"):
        codes += [401, 403, 429]
    if "{" in path or (changes and has_body):
        codes.append(404)
    if changes:
        codes.append(409)
    codes.append(503)
    return codes


def declare_error_answers(app: FastAPI) -> None:
    """Make `app.openapi()` declare the error answers of every operation."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})[PROBLEM] = PROBLEM_SCHEMA
        problem = {"application/json": {"schema": {"$ref": f"#/components/schemas/{PROBLEM}"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for code in error_answers(path, method, operation):
                    responses.setdefault(
                        str(code), {"description": ANSWERS[code], "content": problem}
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
