"""Error answers are declared in every service's OpenAPI document by the route's shape."""

from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.security import APIKeyHeader

from shared.openapi import PROBLEM, declare_error_answers

key = APIKeyHeader(name="X-API-Key", auto_error=False)


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/public/{thing_id}")
    async def public(thing_id: str) -> dict[str, str]:
        return {}

    @app.get("/things")
    async def things(k: Annotated[str | None, Depends(key)]) -> list[str]:
        return []

    @app.post("/things")
    async def add(body: dict[str, str], k: Annotated[str | None, Depends(key)]) -> dict[str, str]:
        return {}

    @app.post("/things/{thing_id}/ship")
    async def ship(thing_id: str, k: Annotated[str | None, Depends(key)]) -> dict[str, str]:
        return {}

    declare_error_answers(app)
    return app


def _codes(schema: dict, path: str, method: str) -> set[str]:
    return set(schema["paths"][path][method]["responses"])


def test_answers_follow_from_the_route_shape():
    schema = _app().openapi()
    assert _codes(schema, "/public/{thing_id}", "get") == {"200", "404", "422", "503"}
    assert _codes(schema, "/things", "get") == {"200", "401", "403", "429", "503"}
    ship = {"200", "401", "403", "404", "409", "422", "429", "503"}
    assert _codes(schema, "/things/{thing_id}/ship", "post") == ship
    assert _codes(schema, "/things", "post") == ship | {"400", "413"}  # a body: ids, parse, size


def test_error_answers_have_the_problem_body_and_a_reason():
    schema = _app().openapi()
    conflict = schema["paths"]["/things/{thing_id}/ship"]["post"]["responses"]["409"]
    assert "Refused" in conflict["description"]
    ref = conflict["content"]["application/json"]["schema"]["$ref"]
    assert ref == f"#/components/schemas/{PROBLEM}"
    assert schema["components"]["schemas"][PROBLEM]["required"] == ["detail"]


def test_the_document_is_built_once():
    app = _app()
    assert app.openapi() is app.openapi()
