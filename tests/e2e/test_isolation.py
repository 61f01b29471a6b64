"""Partners see and change only their own data, across the five services as separate processes.

Partner A (a donor and a school) gets a pickup, two scanned and wiped devices, a request, one
delivered shipment and one still on its way; partner B (another donor, another school) then
tries every partner-scoped read and write on them and gets 403 or 404 each time, and A's data
is unchanged afterwards. Keys work only in the services of their role (403 elsewhere), and the
services listen on the loopback interface only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation.settings import Settings as AllocationSettings
from services.custody.settings import Settings as CustodySettings
from services.diagnostics.settings import Settings as DiagnosticsSettings
from services.intake.settings import Settings as IntakeSettings
from services.recycling.settings import Settings as RecyclingSettings
from shared.auth import Role
from tests.builders import pickup_body, request_body, scan_body, schedule_body
from tests.helpers import Caller, until
from tools.cluster import Cluster

pytestmark = pytest.mark.e2e

DONOR_A, DONOR_B = "acme-consulate", "globex-bank"
SCHOOL_A, SCHOOL_B = "school-rosa-parks", "school-malala"
STAFF = "staff-lena"
NOW = datetime.now(UTC)
DENIED = (403, 404)
PICKUP = pickup_body(expected={"laptop": 2})

ALL_PASS = dict.fromkeys(
    ("boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"),
    "pass",
)


@dataclass
class Partners(Caller):
    pickup_id: str = ""
    device_ids: list[str] = field(default_factory=list)
    request_id: str = ""
    delivered_shipment_id: str = ""
    pending_shipment_id: str = ""
    before: dict[str, Any] = field(default_factory=dict)

    @property
    def delivered_device(self) -> str:
        return self.device_ids[0]

    @property
    def shipped_device(self) -> str:
        return self.device_ids[1]


def _scan_body(i: int) -> dict[str, Any]:
    return scan_body(asset_tag=f"ISO-{i:04d}", serial_number=f"SN-ISO-{i:04d}")


def _wipe(p: Partners, device_id: str, i: int) -> None:
    serial = f"DRV-ISO-{i}"
    p.ok(
        "diagnostics",
        STAFF,
        "POST",
        f"/devices/{device_id}/reports",
        json={
            "specs": {
                "cpu_model": "Intel Core i5-8350U",
                "cpu_cores": 4,
                "ram_gb": 8,
                "drives": [{"serial": serial, "kind": "ssd", "capacity_gb": 256}],
                "battery_health_pct": 85,
            },
            "tests": ALL_PASS,
            "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
            "location": "Warehouse Brussels",
        },
    )
    p.ok(
        "diagnostics",
        STAFF,
        "POST",
        f"/devices/{device_id}/erasures",
        json={
            "drive_serial": serial,
            "method": "purge",
            "technique": "NVMe secure erase",
            "tool": "nwipe",
            "tool_version": "0.37",
            "verified": True,
            "verification": "full read-back",
            "performed_at": NOW.isoformat(),
            "location": "Warehouse Brussels",
        },
    )


def _snapshot(p: Partners) -> dict[str, Any]:
    """Everything A can see of its own data, as A sees it."""
    return {
        "pickup": p.ok("intake", DONOR_A, "GET", f"/pickups/{p.pickup_id}"),
        "custody": p.ok("custody", DONOR_A, "GET", "/devices"),
        "request": p.ok("allocation", SCHOOL_A, "GET", f"/requests/{p.request_id}"),
        "shipments": p.ok("allocation", SCHOOL_A, "GET", "/shipments"),
        "devices": p.ok("allocation", SCHOOL_A, "GET", "/devices"),
    }


PARTNERS = {
    DONOR_A: Role.DONOR,
    DONOR_B: Role.DONOR,
    SCHOOL_A: Role.RECIPIENT,
    SCHOOL_B: Role.RECIPIENT,
    STAFF: Role.STAFF,
}


@pytest.fixture(scope="module")
def partners(cluster: Cluster, keys) -> Partners:
    p = Partners(keys=keys, urls=cluster.urls)
    p.pickup_id = p.ok("intake", DONOR_A, "POST", "/pickups", json=PICKUP)["pickup_id"]
    p.ok(
        "intake",
        STAFF,
        "POST",
        f"/pickups/{p.pickup_id}/schedule",
        json=schedule_body(),
    )
    for i in range(2):
        scanned = p.ok(
            "intake", STAFF, "POST", f"/pickups/{p.pickup_id}/devices", json=_scan_body(i)
        )
        p.device_ids.append(scanned["device_id"])
    for i, device_id in enumerate(p.device_ids):
        until(
            lambda d=device_id: p.call("diagnostics", STAFF, "GET", f"/devices/{d}").is_success,
            what="diagnostics to receive the device",
        )
        _wipe(p, device_id, i)
    until(
        lambda: (
            {d["device_id"] for d in p.ok("allocation", STAFF, "GET", "/stock")}
            >= set(p.device_ids)
        ),
        what="allocation to stock both devices",
    )
    p.request_id = p.ok("allocation", SCHOOL_A, "POST", "/requests", json=request_body())[
        "request_id"
    ]
    matched = p.ok("allocation", STAFF, "POST", "/matching/run", json={})
    assert {a["device_id"] for a in matched["allocations"]} == set(p.device_ids)
    for device_id in p.device_ids:
        shipment = p.ok(
            "allocation",
            STAFF,
            "POST",
            "/shipments",
            json={"recipient_id": SCHOOL_A, "device_ids": [device_id]},
        )
        if device_id == p.delivered_device:
            p.delivered_shipment_id = shipment["shipment_id"]
            p.ok(
                "allocation",
                SCHOOL_A,
                "POST",
                f"/shipments/{p.delivered_shipment_id}/accept",
                json={"accepted_by": "Ms. Diallo"},
            )
        else:
            p.pending_shipment_id = shipment["shipment_id"]

    def custody_settled() -> bool:
        # every event of both devices arrived: received ... shipped (6), and delivered (7)
        view = p.ok("custody", DONOR_A, "GET", "/devices")
        return sorted((d["stage"], len(d["history"])) for d in view) == [
            ("delivered", 7),
            ("shipped", 6),
        ]

    until(custody_settled, what="the custody view to show every event")
    p.before = _snapshot(p)
    return p


def _ids(items: list[dict[str, Any]], key: str) -> set[str]:
    return {item[key] for item in items}


def test_another_donor_can_neither_see_nor_change_the_pickup_and_devices(partners: Partners):
    p = partners
    assert p.pickup_id not in _ids(p.ok("intake", DONOR_B, "GET", "/pickups"), "pickup_id")
    assert not _ids(p.ok("custody", DONOR_B, "GET", "/devices"), "device_id") & set(p.device_ids)
    attempts = [
        ("GET", f"/pickups/{p.pickup_id}", None),
        ("POST", f"/pickups/{p.pickup_id}/cancel", {"reason": "changed our mind"}),
        (
            "POST",
            f"/pickups/{p.pickup_id}/schedule",
            {"scheduled_for": (NOW + timedelta(days=9)).isoformat()},
        ),
        ("POST", f"/pickups/{p.pickup_id}/complete", {}),
        ("POST", f"/pickups/{p.pickup_id}/devices", _scan_body(99)),
    ]
    for method, path, body in attempts:
        response = p.call("intake", DONOR_B, method, path, json=body)
        assert response.status_code in DENIED, (method, path, response.status_code)
    for device in (p.delivered_device, p.shipped_device):
        for path in (f"/devices/{device}", f"/devices/{device}/certificates/erasure"):
            response = p.call("custody", DONOR_B, "GET", path)
            assert response.status_code in DENIED, (path, response.status_code)


def test_another_recipient_can_neither_see_nor_change_the_request_shipments_and_devices(
    partners: Partners,
):
    p = partners
    assert p.request_id not in _ids(p.ok("allocation", SCHOOL_B, "GET", "/requests"), "request_id")
    assert not _ids(p.ok("allocation", SCHOOL_B, "GET", "/shipments"), "shipment_id") & {
        p.delivered_shipment_id,
        p.pending_shipment_id,
    }
    assert not _ids(p.ok("allocation", SCHOOL_B, "GET", "/devices"), "device_id") & set(
        p.device_ids
    )
    attempts = [
        ("GET", f"/requests/{p.request_id}", None),
        ("POST", f"/requests/{p.request_id}/cancel", {}),
        ("GET", f"/shipments/{p.delivered_shipment_id}", None),
        ("GET", f"/shipments/{p.pending_shipment_id}", None),
        ("POST", f"/shipments/{p.pending_shipment_id}/accept", {"accepted_by": "Mr. Nobody"}),
        ("GET", f"/devices/{p.delivered_device}", None),
        ("POST", f"/devices/{p.delivered_device}/report", {"condition": "lost"}),
        ("POST", f"/devices/{p.delivered_device}/return", {"reason": "end_of_life"}),
        ("POST", f"/devices/{p.shipped_device}/report", {"condition": "broken"}),
        ("POST", "/shipments", {"recipient_id": SCHOOL_B, "device_ids": [p.shipped_device]}),
        ("POST", "/allocations", {"device_id": p.shipped_device, "request_id": p.request_id}),
        ("POST", "/matching/run", {}),
        ("GET", "/stock", None),
    ]
    for method, path, body in attempts:
        response = p.call("allocation", SCHOOL_B, method, path, json=body)
        assert response.status_code in DENIED, (method, path, response.status_code)


def test_the_owner_itself_is_allowed_what_the_other_partner_was_denied(partners: Partners):
    p = partners
    assert p.call("intake", DONOR_A, "GET", f"/pickups/{p.pickup_id}").status_code == 200
    assert p.call("allocation", SCHOOL_A, "GET", f"/requests/{p.request_id}").status_code == 200
    shipment = p.call("allocation", SCHOOL_A, "GET", f"/shipments/{p.pending_shipment_id}")
    assert shipment.status_code == 200


@pytest.mark.parametrize(
    ("who", "service", "path"),
    [
        (DONOR_A, "allocation", "/requests"),
        (DONOR_A, "diagnostics", "/devices"),
        (DONOR_A, "recycling", "/devices"),
        (SCHOOL_A, "intake", "/pickups"),
        (SCHOOL_A, "custody", "/devices"),
        (SCHOOL_A, "diagnostics", "/devices"),
        (SCHOOL_A, "recycling", "/devices"),
    ],
)
def test_a_partner_key_is_refused_outside_the_services_of_its_role(
    partners: Partners, who: str, service: str, path: str
):
    response = partners.call(service, who, "GET", path)

    assert response.status_code == 403
    assert response.json()["detail"].startswith(f"this role may not use {service}")


def test_staff_cannot_ask_for_a_pickup_as_a_donor(partners: Partners):
    response = partners.call("intake", STAFF, "POST", "/pickups", json=PICKUP)

    assert response.status_code == 403


def test_partner_keys_cannot_read_a_device_in_diagnostics_or_lots_in_recycling(
    partners: Partners,
):
    device = partners.delivered_device
    assert partners.call("diagnostics", SCHOOL_A, "GET", f"/devices/{device}").status_code == 403
    assert partners.call("recycling", DONOR_A, "GET", "/lots").status_code == 403


def test_the_partners_data_is_unchanged_after_the_other_partners_attempts(partners: Partners):
    after = _snapshot(partners)

    assert after == partners.before
    stages = {d["device_id"]: d["stage"] for d in after["custody"]}
    assert stages == {partners.delivered_device: "delivered", partners.shipped_device: "shipped"}
    assert after["pickup"]["status"] == "scheduled"
    assert after["request"]["status"] == "fulfilled"


def test_every_service_defaults_to_the_loopback_interface():
    for settings in (
        IntakeSettings,
        DiagnosticsSettings,
        AllocationSettings,
        RecyclingSettings,
        CustodySettings,
    ):
        assert settings().http_host == "127.0.0.1", settings.service


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list sockets")
def test_every_running_service_listens_on_loopback_only(cluster: Cluster):
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.splitlines()
    for service, url in cluster.urls.items():
        port = url.rsplit(":", 1)[1]
        pid = cluster.processes[service].pid
        local = [
            line.split()[3]
            for line in listening
            if line.split()[3].endswith(f":{port}") or f"pid={pid}," in line
        ]
        assert local, f"{service} is not listening on {port}"
        for address in local:
            assert re.fullmatch(r"(127\.0\.0\.1|\[::1\]):\d+", address), (service, address)
