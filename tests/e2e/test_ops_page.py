"""The operations page in headless Chromium shows what the system says.

Intake and custody run as processes and `python -m tools.ops web` as another; devices are scanned
in and moved on by events, and a stopped diagnostics service is simulated by its consumer group
having committed nothing past the beginning of `device.received`. The page's stage counts, consumer
lag and dead letters must equal the truth computed here independently (custody's device list,
Kafka's admin API, the dead-letter topic read record by record), also after a poison message,
and a device search must show the device's history in order.

The page holds no key: it shows a sign-in, and its API answers 401 without an operations or
staff key (even with GREENIT_OPS_API_KEY in its environment), 400 to a foreign Host header
(DNS rebinding) and 403 to a state-changing call from another origin.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from selenium.webdriver.common.by import By

from shared.auth import Role
from shared.events import (
    DeviceDiagnosed,
    DeviceWiped,
)
from shared.topics import DEVICE_PARTITIONS, device_topics
from tests.browser import chromium
from tests.builders import diagnosed, scan_body, wiped
from tests.conftest import BOOTSTRAP, kafka_auth
from tests.helpers import (
    eventually,
    html_protection_missing,
    new_pickup,
    publish,
    publish_raw,
    running_ops_page,
    until,
)
from tools.cluster import Cluster, project_root
from tools.deadletters import read_dead_letters
from tools.ops import Collector, OpsSettings, web_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

DONOR, STAFF, OPS = "acme", "staff-lena", "ops-omar"
T = TypeVar("T")
PARTITIONS = range(DEVICE_PARTITIONS)  # every device topic has as many (shared/topics.py)

READ_PAGE = """
const cells = (rows, key, field) => Object.fromEntries([...document.querySelectorAll(rows)]
  .map(r => [r.dataset[key], r.querySelector('[data-field="' + field + '"]').textContent]));
return {
  refreshes: Number(document.body.dataset.refreshes),
  stages: cells('#stages tbody tr', 'stage', 'count'),
  total: document.getElementById('stages-total').textContent,
  lag: cells('#lag tbody tr', 'service', 'lag'),
  members: cells('#lag tbody tr', 'service', 'members'),
  dead: document.getElementById('deadletters-total').textContent,
  deadBySource: cells('#deadletters tbody tr', 'source', 'count'),
  topics: cells('#topics tbody tr', 'topic', 'messages'),
  error: document.getElementById('status').textContent,
  stagesError: document.getElementById('stages-error').textContent,
};
"""


@pytest.fixture(scope="module")
def log_dir(namespace):
    return project_root() / ".local" / "test-logs" / namespace


CLUSTER = ["intake", "custody"]
PARTNERS = {DONOR: Role.DONOR, STAFF: Role.STAFF, OPS: Role.OPERATIONS}


@pytest.fixture(scope="module")
def intake(cluster: Cluster) -> Cluster:
    return cluster


@pytest.fixture(scope="module")
def ops_page(intake, keys, base_env, log_dir) -> Iterator[str]:
    # an operations key in its environment, which the page must not use on anyone's behalf
    # custody's address under its deprecated name (the page read intake's before custody had its
    # own service): still honoured for one release
    env = base_env | {
        "GREENIT_OPS_API_KEY": keys[OPS],
        "GREENIT_INTAKE_URL": intake.urls["custody"],
    }
    args = ("--poll", "1", "--stages-every", "1")
    with running_ops_page(env, log_dir / "ops-web.log", *args) as url:
        yield url


def _diagnosed(device: dict[str, Any]) -> DeviceDiagnosed:
    return diagnosed(UUID(device["device_id"]), UUID(device["pickup_id"]), datetime.now(UTC))


def _wiped(device: dict[str, Any]) -> DeviceWiped:
    return wiped(UUID(device["device_id"]), UUID(device["pickup_id"]), datetime.now(UTC))


@pytest.fixture(scope="module")
async def devices(http, namespace) -> list[dict[str, Any]]:
    """Five devices scanned in; three diagnosed, one of them also wiped."""
    pid = (await new_pickup(http, DONOR, STAFF, expected={"laptop": 5}))["pickup_id"]
    scanned = []
    for n in range(5):
        scan = scan_body(serial_number=f"5CG8OPS{n}")
        response = await http(STAFF, "POST", f"/pickups/{pid}/devices", json=scan)
        assert response.status_code == 201, response.text
        scanned.append(response.json())
    await publish(namespace, *(_diagnosed(d) for d in scanned[:3]))
    await publish(namespace, _wiped(scanned[0]))

    async def settled() -> bool:
        stages = Counter(d["stage"] for d in (await http(STAFF, "GET", "/devices")).json())
        return stages == Counter({"received": 2, "diagnosed": 2, "wiped": 1})

    await eventually(settled, within_s=60)
    return scanned


@pytest.fixture(scope="module")
async def stopped_diagnostics(namespace, devices) -> str:
    """Diagnostics' group has committed the beginning of `device.received` and read nothing
    since, as if the service had been down all along: its lag is every device received."""
    group = namespace + "diagnostics"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, **kafka_auth(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        received = [device_partition(namespace, "device.received", p) for p in PARTITIONS]
        consumer.assign(received)
        await consumer.commit({tp: 0 for tp in received})
    finally:
        await consumer.stop()
    return group


# ---- the truth, computed without tools.ops ----------------------------------------------------


async def group_lag_truth(namespace: str, service: str, topics: list[str]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_auth())
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, **kafka_auth(), group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(namespace + service)
        partitions = [device_partition(namespace, t, p) for t in topics for p in PARTITIONS]
        end = await consumer.end_offsets(partitions)
        first = await consumer.beginning_offsets(partitions)
        return sum(
            end[tp] - (committed[tp].offset if tp in committed else first[tp]) for tp in partitions
        )
    finally:
        await consumer.stop()
        await admin.close()


def device_partition(namespace: str, topic: str, partition: int) -> TopicPartition:
    return TopicPartition(namespace + topic, partition)


async def messages_truth(namespace: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, **kafka_auth(), group_id=None)
    await consumer.start()
    try:
        partitions = [device_partition(namespace, topic, p) for p in PARTITIONS]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def truth(http, namespace: str) -> dict[str, Any]:
    listed = (await http(STAFF, "GET", "/devices")).json()
    letters = await read_dead_letters(BOOTSTRAP, namespace)
    return {
        "stages": Counter(d["stage"] for d in listed),
        "total": len(listed),
        "lag": {
            "custody": await group_lag_truth(namespace, "custody", device_topics()),
            "diagnostics": await group_lag_truth(namespace, "diagnostics", ["device.received"]),
        },
        "dead": len(letters),
        "dead_by_source": Counter(d.source_topic.removeprefix(namespace) for d in letters),
        "received_messages": await messages_truth(namespace, "device.received"),
    }


def mismatches(page: dict[str, Any], want: dict[str, Any]) -> list[str]:
    shown_stages = {s: int(n) for s, n in page["stages"].items()}
    wrong = []
    if {s: n for s, n in shown_stages.items() if n} != dict(want["stages"]):
        wrong.append(f"stages {shown_stages} != {dict(want['stages'])}")
    if page["total"] != str(want["total"]):
        wrong.append(f"total {page['total']} != {want['total']}")
    for service, lag in want["lag"].items():
        if page["lag"].get(service) != str(lag):
            wrong.append(f"{service} lag {page['lag'].get(service)} != {lag}")
    if page["dead"] != str(want["dead"]):
        wrong.append(f"dead letters {page['dead']} != {want['dead']}")
    by_source = {s: int(n) for s, n in page["deadBySource"].items()}
    if by_source != dict(want["dead_by_source"]):
        wrong.append(f"dead letters by source {by_source} != {dict(want['dead_by_source'])}")
    if page["topics"].get("device.received") != str(want["received_messages"]):
        wrong.append(f"device.received {page['topics'].get('device.received')}")
    return wrong


async def until_page_matches(driver, http, namespace: str, within_s: float = 90) -> Any:
    """Poll the page and the truth together until they agree (both settle once idle)."""
    deadline = time.monotonic() + within_s
    while True:
        page = driver.execute_script(READ_PAGE)
        want = await truth(http, namespace)
        wrong = mismatches(page, want)
        if not wrong and page["refreshes"] > 0:
            return page, want
        if time.monotonic() > deadline:
            raise AssertionError(f"the page disagrees with the system: {wrong}; page: {page}")
        await asyncio.sleep(1.0)


def sign_in(driver: Any, key: str) -> None:
    box = driver.find_element(By.ID, "api-key")
    box.clear()
    box.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


def signed_in(driver: Any) -> bool:
    return bool(driver.execute_script("return document.body.dataset.signedIn === 'true'"))


@pytest.fixture(scope="module")
def browser(ops_page, keys) -> Iterator[Any]:
    with chromium() as driver:
        driver.get(ops_page + "/")
        sign_in(driver, keys[OPS])
        until(lambda: signed_in(driver))
        yield driver


def api_routes() -> list[str]:
    app = web_app(Collector(OpsSettings()))
    return sorted(r.path for r in app.routes if getattr(r, "path", "").startswith("/api/"))


# ---- tests ------------------------------------------------------------------------------------


async def test_the_page_shows_the_stage_counts_lag_and_dead_letters_the_system_has(
    browser, http, namespace, devices, stopped_diagnostics
):
    page, want = await until_page_matches(browser, http, namespace)
    assert want["stages"] == Counter({"received": 2, "diagnosed": 2, "wiped": 1})
    assert page["stages"]["received"] == "2"
    assert page["stages"]["recycled"] == "0", "every stage is listed, empty ones too"
    assert want["lag"]["diagnostics"] >= 5, "at least every scanned device is waiting"
    assert int(page["members"]["custody"]) >= 1, "custody's consumer is running"
    assert page["lag"]["intake"] == "-", "intake, a pure producer, consumes nothing"
    assert page["lag"]["allocation"] == "-", "a group that never ran has no lag to show"
    assert page["error"] == ""
    assert page["stagesError"] == ""


async def test_a_poison_message_raises_the_dead_letter_count_on_the_page(
    browser, http, namespace, devices, stopped_diagnostics
):
    before, _ = await until_page_matches(browser, http, namespace)
    await publish_raw(namespace, "device.received", b"{not json", key=b"poison")

    async def dead_lettered() -> bool:
        return len(await read_dead_letters(BOOTSTRAP, namespace)) == int(before["dead"]) + 1

    await eventually(dead_lettered, within_s=60)
    page, want = await until_page_matches(browser, http, namespace)
    assert int(page["dead"]) == int(before["dead"]) + 1 == want["dead"]
    assert page["deadBySource"]["device.received"] == str(want["dead_by_source"]["device.received"])
    assert int(page["lag"]["diagnostics"]) == int(before["lag"]["diagnostics"]) + 1


async def test_searching_a_serial_shows_the_devices_timeline_in_order(browser, http, devices):
    device = devices[0]
    history = (await http(STAFF, "GET", f"/devices/{device['device_id']}")).json()["history"]
    box = browser.find_element(By.ID, "search-q")
    box.clear()
    box.send_keys(device["serial_number"].lower())
    browser.find_element(By.ID, "search-button").click()
    status = browser.find_element(By.ID, "search-status")
    until(lambda: status.get_attribute("data-state") == "found")
    blocks = browser.find_elements(By.CSS_SELECTOR, "#search-results [data-device-id]")
    assert [b.get_attribute("data-device-id") for b in blocks] == [device["device_id"]]
    rows = blocks[0].find_elements(By.CSS_SELECTOR, "tr[data-event-type]")
    shown = [r.find_element(By.CSS_SELECTOR, '[data-field="event-type"]').text for r in rows]
    assert shown == [h["event_type"] for h in history]
    assert shown == ["device.received", "device.diagnosed", "device.wiped"]
    assert device["asset_tag"] in blocks[0].text


async def test_searching_an_unknown_serial_says_so(browser):
    box = browser.find_element(By.ID, "search-q")
    box.clear()
    box.send_keys("NO-SUCH-SERIAL")
    browser.find_element(By.ID, "search-button").click()
    status = browser.find_element(By.ID, "search-status")
    until(lambda: status.get_attribute("data-state") == "not-found")
    assert "no device has asset tag or serial number" in status.text
    assert browser.find_elements(By.CSS_SELECTOR, "#search-results [data-device-id]") == []


# ---- signing in, hosts and origins ------------------------------------------------------------


async def test_every_api_route_answers_401_without_a_key_and_403_to_a_donor(ops_page, keys):
    routes = api_routes()
    assert routes == ["/api/devices", "/api/me", "/api/overview"]
    async with httpx.AsyncClient(base_url=ops_page, timeout=60) as page:
        for path in routes:
            for key, status in ((None, 401), ("git_not-a-key", 401), (keys[DONOR], 403)):
                headers = {"X-API-Key": key} if key else {}
                answer = await page.get(path, params={"q": "5CG8OPS0"}, headers=headers)
                assert answer.status_code == status, (path, key, answer.text)
                assert keys[OPS] not in answer.text
        me = await page.get("/api/me", headers={"X-API-Key": keys[STAFF]})
        assert me.status_code == 200
        assert (me.json()["partner_id"], me.json()["role"]) == (STAFF, "staff")


async def test_a_foreign_host_header_is_refused_with_400(ops_page, keys):
    signed = {"X-API-Key": keys[OPS]}
    async with httpx.AsyncClient(base_url=ops_page, timeout=60) as page:
        for host in ("attacker.example", "attacker.example:" + ops_page.rsplit(":", 1)[1]):
            for path in ("/", "/api/overview", "/api/me"):
                answer = await page.get(path, headers=signed | {"Host": host})
                assert answer.status_code == 400, (host, path)
                assert "answers only to Host" in answer.json()["detail"]
        for host in ("localhost", "127.0.0.1"):
            assert (await page.get("/api/me", headers=signed | {"Host": host})).status_code == 200


async def test_a_state_changing_call_from_another_origin_is_refused_with_403(ops_page, keys):
    signed = {"X-API-Key": keys[OPS]}
    async with httpx.AsyncClient(base_url=ops_page, timeout=60) as page:
        for origin in ("http://attacker.example", "null", ops_page.replace("127.0.0.1", "evil")):
            answer = await page.post("/api/overview", headers=signed | {"Origin": origin})
            assert answer.status_code == 403, origin
        own = await page.post("/api/overview", headers=signed | {"Origin": ops_page})
        assert own.status_code == 405, "the page's own origin passes; no POST route exists"


async def test_the_page_carries_the_security_headers(ops_page):
    async with httpx.AsyncClient(base_url=ops_page, timeout=60) as page:
        answer = await page.get("/")
        assert answer.headers["content-type"].startswith("text/html")
        assert html_protection_missing(answer) == []
        nonce = answer.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
        assert answer.text.count(f'nonce="{nonce}"') == 2, "its style and its script"


def test_without_a_key_the_page_shows_the_sign_in_and_its_api_answers_401(ops_page, keys):
    with chromium() as driver:
        driver.get(ops_page + "/")
        until(lambda: driver.find_element(By.ID, "api-key").is_displayed())
        assert not driver.find_element(By.ID, "console").is_displayed()
        status = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/overview').then(r => done(r.status), e => done(String(e)));"
        )
        assert status == 401

        sign_in(driver, "git_not-a-key")
        error = driver.find_element(By.ID, "signin-error")
        until(lambda: "This key was refused" in error.text)
        sign_in(driver, keys[DONOR])
        until(lambda: "This key cannot see operations" in error.text)
        assert not signed_in(driver)
        assert driver.execute_script("return sessionStorage.getItem('greenit.ops.key')") is None

        sign_in(driver, keys[OPS])
        until(lambda: signed_in(driver))
        assert OPS in driver.find_element(By.ID, "user").text
        until(lambda: driver.execute_script("return Number(document.body.dataset.refreshes)") > 0)
        stored = driver.execute_script("return sessionStorage.getItem('greenit.ops.key')")
        assert stored == keys[OPS]
        assert keys[OPS] not in driver.current_url

        driver.refresh()  # the tab keeps its key
        until(lambda: signed_in(driver))
        driver.find_element(By.ID, "signout").click()
        until(lambda: driver.find_element(By.ID, "api-key").is_displayed())
        assert driver.execute_script("return sessionStorage.getItem('greenit.ops.key')") is None
