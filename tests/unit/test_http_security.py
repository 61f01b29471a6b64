"""shared.http_security on a small app: headers on HTML answers only, a nonce per answer, the
policy a route cannot replace, and the host and origin guard."""

import re

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from shared.http_security import (
    HostGuard,
    SecurityHeaders,
    allowed_hosts,
    csp_nonce,
    stamp_nonce,
    widen,
)
from tests.helpers import html_protection_missing


def app_with(*, guard: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/page")
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(f'<script nonce="{csp_nonce(request)}">1</script>')

    @app.get("/own-policy")
    async def own_policy() -> HTMLResponse:
        return HTMLResponse("<p>", headers={"Content-Security-Policy": "script-src *"})

    @app.get("/widened")
    async def widened(request: Request) -> HTMLResponse:
        widen(request, "worker-src", "blob:")
        return HTMLResponse("<p>")

    @app.get("/data")
    async def data() -> dict[str, int]:
        return {"n": 1}

    @app.post("/change")
    async def change() -> dict[str, bool]:
        return {"changed": True}

    app.add_middleware(SecurityHeaders)
    if guard:
        app.add_middleware(HostGuard, hosts=allowed_hosts("127.0.0.1", ["ops.example"]))
    return app


def client(app: FastAPI, host: str = "127.0.0.1:8005") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


def nonce_of(answer: httpx.Response) -> str:
    found = re.search(r"'nonce-([^']+)'", answer.headers["content-security-policy"])
    assert found
    return found.group(1)


async def test_an_html_answer_gets_a_fresh_nonce_its_page_uses_and_no_framing():
    async with client(app_with()) as http:
        first, second = await http.get("/page"), await http.get("/page")
    assert html_protection_missing(first) == []
    assert f'nonce="{nonce_of(first)}"' in first.text
    assert nonce_of(first) != nonce_of(second)
    assert first.headers["referrer-policy"] == "no-referrer"


async def test_a_json_answer_gets_nosniff_but_no_policy():
    async with client(app_with()) as http:
        answer = await http.get("/data")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in answer.headers


async def test_a_route_cannot_replace_the_policy_only_widen_one_directive():
    async with client(app_with()) as http:
        own, widened = await http.get("/own-policy"), await http.get("/widened")
    assert html_protection_missing(own) == []
    assert "script-src *" not in own.headers["content-security-policy"]
    assert "worker-src blob:" in widened.headers["content-security-policy"]
    assert html_protection_missing(widened) == []


def test_stamping_marks_every_script_and_style_element():
    page = '<style>a{}</style><script src="/x.js"></script><scripts>'
    stamped = stamp_nonce(page, "N")
    assert stamped == '<style nonce="N">a{}</style><script nonce="N" src="/x.js"></script><scripts>'


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8005", 200),
        ("localhost:8005", 200),
        ("ops.example", 200),
        ("attacker.example", 400),
        ("attacker.example:8005", 400),
        ("127.0.0.1.attacker.example", 400),
    ],
)
async def test_only_the_bind_address_and_configured_names_are_answered(host, status):
    async with client(app_with(guard=True), host) as http:
        answer = await http.get("/data")
    assert answer.status_code == status, answer.text
    if status == 400:
        assert "answers only to Host" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 200),
        ("http://127.0.0.1:8005", 200),
        ("http://attacker.example", 403),
        ("http://127.0.0.1:9999", 403),
        ("null", 403),
    ],
)
async def test_a_state_changing_call_must_come_from_the_pages_own_origin(origin, status):
    headers = {"Origin": origin} if origin else {}
    async with client(app_with(guard=True)) as http:
        answer = await http.post("/change", headers=headers)
        read = await http.get("/data", headers={"Origin": "http://attacker.example"})
    assert answer.status_code == status, answer.text
    assert read.status_code == 200, "a read is guarded by the Host check and the key"
