"""The scan station in headless Chromium, driven by the keyboard only, as a warehouse does with a
USB barcode scanner (it types the code, then Enter). Nothing is ever clicked."""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from shared.auth import Role
from tests import helpers
from tests.barcodes import missing_tools, symbols
from tests.browser import chromium
from tests.builders import pickup_body, schedule_body
from tools.cluster import Cluster

pytestmark = pytest.mark.e2e

DONOR, STAFF = "acme", "staff-lena"
LOCATION = "Warehouse Brussels"
ROWS = [
    {
        "row": 2,
        "asset_tag": "ST-0001",
        "category": "laptop",
        "make": "HP",
        "model": "EliteBook 840 G5",
        "weight_kg": "1.5",
    },
    {
        "row": 3,
        "serial_number": "PF1ABCDE",
        "category": "laptop",
        "make": "Lenovo",
        "model": "ThinkPad T480",
        "weight_kg": "1.6",
    },
    {
        "row": 4,
        "asset_tag": "ST-0003",
        "category": "monitor",
        "make": "Dell",
        "model": "P2419H",
        "weight_kg": "4.2",
    },
]


CLUSTER = ["intake", "custody"]
PARTNERS = {DONOR: Role.DONOR, STAFF: Role.STAFF}


def call(
    cluster: Cluster, key: str, method: str, path: str, service: str = "intake", **kw: Any
) -> httpx.Response:
    with httpx.Client(base_url=cluster.urls[service], timeout=60) as client:
        return client.request(method, path, headers={"X-API-Key": key}, **kw)


def new_pickup(cluster: Cluster, keys: dict[str, str], *, schedule: bool) -> str:
    body = pickup_body()
    created = call(cluster, keys[DONOR], "POST", "/pickups", json=body)
    assert created.status_code == 201, created.text
    pid = str(created.json()["pickup_id"])
    if schedule:
        when = schedule_body()
        scheduled = call(cluster, keys[STAFF], "POST", f"/pickups/{pid}/schedule", json=when)
        assert scheduled.status_code == 200, scheduled.text
    return pid


@pytest.fixture(scope="module")
def pickup_id(cluster, keys) -> str:
    """The second of two open pickups, with a three-row asset list."""
    new_pickup(cluster, keys, schedule=False)
    pid = new_pickup(cluster, keys, schedule=True)
    imported = call(cluster, keys[DONOR], "POST", f"/pickups/{pid}/manifest", json={"rows": ROWS})
    assert imported.json() == {"created": 3, "updated": 0, "unchanged": 0, "errors": []}
    return pid


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def focused_id(driver: WebDriver) -> str:
    return str(driver.switch_to.active_element.get_attribute("id"))


def wait_focus(driver: WebDriver, element_id: str) -> None:
    until(driver, lambda d: focused_id(d) == element_id)


def type_keys(driver: WebDriver, *keys: str) -> None:
    """What a keyboard or a barcode scanner does: keys into whatever has the focus."""
    driver.switch_to.active_element.send_keys(*keys)


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def scan(driver: WebDriver, code: str, *, expect: Callable[[WebDriver], Any]) -> None:
    type_keys(driver, code, Keys.ENTER)
    until(driver, expect)
    assert focused_id(driver) == "scan-code", "the scan field keeps the focus"
    assert driver.find_element(By.ID, "scan-code").get_attribute("value") == ""


def shows_device(asset_tag: str, status: str, count: str) -> Callable[[WebDriver], bool]:
    def check(driver: WebDriver) -> bool:
        return (
            driver.find_element(By.ID, "result").is_displayed()
            and text(driver, "result-asset-tag") == asset_tag
            and text(driver, "result-status") == status
            and text(driver, "count") == count
        )

    return check


def shows_error(fragment: str) -> Callable[[WebDriver], bool]:
    def check(driver: WebDriver) -> bool:
        return fragment in text(driver, "error")

    return check


def offers_label(driver: WebDriver, asset_tag: str) -> str:
    """The "print label" link of a generated tag, once its PDF is fetched: its blob URL."""
    until(driver, lambda d: d.find_element(By.ID, "label").is_displayed())
    link = driver.find_element(By.ID, "print-label")
    assert link.text == f"Print label {asset_tag}"
    origin = driver.execute_script("return location.origin")
    until(driver, lambda d: str(link.get_attribute("href") or "").startswith(f"blob:{origin}/"))
    assert "Tab, Enter" in text(driver, "label-hint")
    return str(link.get_attribute("href"))


def test_a_warehouse_scans_a_pickup_in_with_the_keyboard_only(browser, cluster, keys, pickup_id):
    driver = browser
    driver.get(cluster.urls["intake"] + "/station")
    wait_focus(driver, "api-key")
    alert = driver.find_element(By.ID, "error")
    assert alert.get_attribute("role") == "alert"

    type_keys(driver, "git_not-a-key", Keys.ENTER)
    until(driver, shows_error("This key was refused: unknown or revoked API key"))
    assert focused_id(driver) == "api-key"
    type_keys(driver, keys[DONOR], Keys.ENTER)
    until(driver, shows_error("This key cannot scan devices"))
    assert focused_id(driver) == "api-key"

    type_keys(driver, keys[STAFF], Keys.ENTER)
    wait_focus(driver, "pickup-list")
    assert keys[STAFF] not in driver.current_url
    stored = driver.execute_script("return sessionStorage.getItem('greenit.station.key')")
    assert stored == keys[STAFF]
    options = driver.find_elements(By.CSS_SELECTOR, "#pickup-list [role=option]")
    assert len(options) == 2
    for _ in options:
        chosen = driver.find_element(By.CSS_SELECTOR, "[role=option][aria-selected=true]")
        if chosen.get_attribute("data-pickup-id") == pickup_id:
            break
        type_keys(driver, Keys.ARROW_DOWN)
    type_keys(driver, Keys.ENTER)

    wait_focus(driver, "location")
    type_keys(driver, LOCATION, Keys.ENTER)
    wait_focus(driver, "scan-code")
    until(driver, lambda d: text(d, "count") == "0 / 3 scanned")

    scan(driver, "ST-0001", expect=shows_device("ST-0001", "new", "1 / 3 scanned"))
    assert (text(driver, "result-make"), text(driver, "result-model")) == ("HP", "EliteBook 840 G5")
    assert text(driver, "result-category") == "laptop"
    assert not driver.find_element(By.ID, "label").is_displayed(), "a tag of its own: no label"
    scan(driver, "ST-0001", expect=shows_device("ST-0001", "already scanned", "1 / 3 scanned"))
    scan(driver, "pf1abcde", expect=lambda d: text(d, "result-make") == "Lenovo")
    until(driver, lambda d: text(d, "count") == "2 / 3 scanned")
    generated = text(driver, "result-asset-tag")
    assert generated.startswith("GIT-")
    label_link = offers_label(driver, generated)
    type_keys(driver, Keys.TAB)
    wait_focus(driver, "print-label")
    type_keys(driver, Keys.ESCAPE)
    wait_focus(driver, "scan-code")
    station = driver.current_window_handle
    type_keys(driver, Keys.TAB)
    wait_focus(driver, "print-label")
    type_keys(driver, Keys.ENTER)
    until(driver, lambda d: len(d.window_handles) == 2)
    driver.switch_to.window(next(h for h in driver.window_handles if h != station))
    until(driver, lambda d: d.execute_script("return document.contentType") == "application/pdf")
    assert driver.current_url == label_link
    driver.close()
    driver.switch_to.window(station)
    wait_focus(driver, "scan-code")

    scan(
        driver,
        "NOPE-404",
        expect=shows_error(f"code NOPE-404 is not on the manifest of pickup {pickup_id}"),
    )
    assert not driver.find_element(By.ID, "result").is_displayed()
    assert not driver.find_element(By.ID, "label").is_displayed()

    driver.execute_script("document.activeElement.blur()")
    wait_focus(driver, "scan-code")

    def in_custody() -> list[dict[str, Any]]:
        listed = call(
            cluster, keys[STAFF], "GET", "/devices", "custody", params={"pickup_id": pickup_id}
        )
        devices: list[dict[str, Any]] = listed.json()
        return devices if len(devices) == 2 else []

    devices = helpers.until(in_custody, what="custody to list the two scanned devices")
    assert sorted(d["asset_tag"] for d in devices) == sorted(["ST-0001", generated])
    labelled = next(d for d in devices if d["asset_tag"] == generated)
    label = call(cluster, keys[STAFF], "GET", f"/devices/{labelled['device_id']}/label")
    assert label.headers["content-type"] == "application/pdf"
    if not missing_tools():  # decoding itself: tests/integration/test_labels.py
        url = f"{cluster.urls['custody']}/verify/{labelled['device_id']}"
        assert symbols(label.content) == sorted([f"CODE-128:{generated}", f"QR-Code:{url}"])
    assert {d["history"][0]["details"]["location"] for d in devices} == {LOCATION}

    scan(driver, "ST-0001", expect=shows_device("ST-0001", "already scanned", "2 / 3 scanned"))
    assert text(driver, "error") == ""
    completed = call(cluster, keys[STAFF], "POST", f"/pickups/{pickup_id}/complete", json={})
    assert completed.status_code == 200, completed.text
    scan(driver, "ST-0003", expect=shows_error("no device can be scanned into a completed pickup"))

    cluster.stop("intake")
    scan(driver, "ST-0003", expect=shows_error("Network failure"))
    assert "ST-0003 was NOT registered" in text(driver, "error")
