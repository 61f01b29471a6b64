"""Every HTML answer of every service carries shared.http_security's headers, and the pages
still work under that policy: Chromium renders them and reports no blocked script or style.

The routes are read from the services' apps, so a page added later is walked too; each GET
route is asked with parameters that make the HTML ones answer HTML (a real device and donor).
"""

import re
import time
from datetime import date, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest

from shared.auth import Role
from tests.browser import chromium
from tests.builders import scan_body
from tests.helpers import eventually, get_routes, html_protection_missing, new_pickup
from tools.cluster import SERVICES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DONOR, STAFF = "walk-donor", "walk-staff"
EVERY_SERVICE_HTML = {"/docs", "/docs/oauth2-redirect", "/redoc", "/asyncapi"}
SERVICE_HTML = {"intake": {"/station"}, "custody": {"/verify/{device_id}", "/reports/impact"}}

REDOCLY_LOGO = "img-src https://cdn.redoc.ly/"

# before any script of the page: collects what the Content-Security-Policy blocked
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.effectiveDirective + " " + (e.blockedURI || "inline")));
"""


PARTNERS = {DONOR: Role.DONOR, STAFF: Role.STAFF}


@pytest.fixture(scope="module")
async def device(http, keys) -> dict[str, Any]:
    """One device scanned in from the donor's pickup: /verify and the report have data."""
    pickup = await new_pickup(http, DONOR, STAFF, expected={"laptop": 1})
    scan = scan_body(serial_number=f"WALK{uuid4().hex[:8]}")
    answer = await http(STAFF, "POST", f"/pickups/{pickup['pickup_id']}/devices", json=scan)
    assert answer.status_code == 201, answer.text
    scanned = dict(answer.json())

    async def custody_knows_it() -> bool:
        return (await http(STAFF, "GET", f"/devices/{scanned['device_id']}")).status_code == 200

    await eventually(custody_knows_it, within_s=60)
    return scanned


def filled(path: str, device: dict[str, Any]) -> str:
    known = {"device_id": device["device_id"], "pickup_id": device["pickup_id"], "name": "index.js"}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: known.get(m.group(1), str(uuid4())), path)


def report_query() -> dict[str, str]:
    today = date.today()
    return {
        "format": "html",
        "partner_id": DONOR,
        "start": (today - timedelta(days=30)).isoformat(),
        "end": (today + timedelta(days=1)).isoformat(),
    }


async def test_every_html_answer_of_every_service_carries_the_security_headers(
    cluster, keys, device
):
    apps = {service: f"services.{service}.main:app" for service in SERVICES}
    routes = get_routes(*apps.values())
    html: dict[str, set[str]] = {service: set() for service in SERVICES}
    async with httpx.AsyncClient(timeout=60, headers={"X-API-Key": keys[STAFF]}) as http:
        for service, app in apps.items():
            for path in routes[app]:
                url = cluster.urls[service] + filled(path, device)
                answer = await http.get(url, params=report_query())
                assert answer.status_code < 500, (service, path, answer.text[:300])
                assert answer.headers.get("x-content-type-options") == "nosniff", (service, path)
                if answer.headers.get("content-type", "").startswith("text/html"):
                    assert answer.status_code == 200, (service, path)
                    assert html_protection_missing(answer) == [], (service, path)
                    policy = answer.headers["content-security-policy"]
                    assert ("unsafe-eval" in policy) == (path == "/asyncapi"), (service, path)
                    html[service].add(path)
    for service in SERVICES:
        expected = EVERY_SERVICE_HTML | SERVICE_HTML.get(service, set())
        assert html[service] >= expected, f"{service}: the walk missed an HTML page"


def rendered(driver: Any, script: str, within_s: float = 30) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        shown = driver.execute_script(script)
        if shown:
            return shown
        assert time.monotonic() < deadline, f"not rendered: {script}"
        time.sleep(0.3)


def test_the_pages_work_under_the_policy_in_chromium(cluster, keys, device):
    intake, custody = cluster.urls["intake"], cluster.urls["custody"]
    report = "&".join(f"{k}={v}" for k, v in report_query().items())
    pages = {
        f"{intake}/docs": "return document.querySelectorAll('.swagger-ui .opblock').length",
        f"{intake}/redoc": (
            "return document.querySelectorAll('[data-section-id^=\"operation/\"]').length"
        ),
        f"{intake}/asyncapi": (
            "return document.querySelectorAll('#asyncapi [id^=\"operation-\"]').length"
        ),
        f"{intake}/station": (
            "return document.activeElement && document.activeElement.id === 'api-key'"
        ),
        f"{custody}/verify/{device['device_id']}": (
            "return document.querySelectorAll('table').length"
        ),
        f"{custody}/reports/impact?{report}": (
            "return document.querySelectorAll('svg rect').length"
        ),
    }
    with chromium() as driver:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"X-API-Key": keys[STAFF]}}
        )
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_VIOLATIONS}
        )
        for page, ready in pages.items():
            driver.get(page)
            rendered(driver, ready)
            violations = driver.execute_script("return window.__violations")
            # ReDoc asks its CDN for the Redocly logo: refused, as anything from another host
            assert [v for v in violations if not v.startswith(REDOCLY_LOGO)] == [], page
        # the policy is in force: an inline script without the nonce is refused
        driver.execute_script(
            "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
            "document.body.append(s);"
        )
        assert driver.execute_script("return window.ran") is None
        assert rendered(driver, "return window.__violations.length") == 1
