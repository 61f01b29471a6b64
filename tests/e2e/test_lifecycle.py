"""One donation of 30 devices through the five services, only through their public HTTP APIs.

Most devices are refurbished and delivered to two schools, several are recycled with
certificates, one has no serial, one is returned at end of life and recycled; at the end every
device's final state, every certificate and the donor's custody view are checked from outside.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from shared.auth import Role
from tests.builders import pickup_body, schedule_body
from tests.helpers import Caller, until
from tools.cluster import project_root

pytestmark = pytest.mark.e2e

DONOR, OTHER_DONOR = "acme-consulate", "globex-bank"
STAFF = "staff-lena"
SCHOOL_A, SCHOOL_B = "school-rosa-parks", "school-malala"
GOOD_LAPTOPS = 24
GOOD_DESKTOPS = 2
BROKEN = 4  # 2 laptops that do not boot, 2 cracked desktops
TOTAL = GOOD_LAPTOPS + GOOD_DESKTOPS + BROKEN
NOW = datetime.now(UTC)

ALL_PASS = {
    "boot": "pass",
    "cpu": "pass",
    "memory": "pass",
    "storage": "pass",
    "screen": "pass",
    "keyboard": "pass",
    "battery": "pass",
    "ports": "pass",
    "network": "pass",
}
PRISTINE = {"casing": "none", "screen_scratches": "none", "cracked": False}


@dataclass
class Donation(Caller):
    pickup_id: str = ""
    devices: list[dict[str, Any]] = field(default_factory=list)


def _drive(i: int, n: int = 0) -> dict[str, Any]:
    return {"serial": f"DRV-{i:03d}-{n}", "kind": "ssd", "capacity_gb": 256}


def _specs(i: int, drives: int = 1) -> dict[str, Any]:
    return {
        "cpu_model": "Intel Core i5-8350U",
        "cpu_cores": 4,
        "ram_gb": 8,
        "drives": [_drive(i, n) for n in range(drives)],
        "battery_health_pct": 85,
    }


def _erasure(serial: str, method: str) -> dict[str, Any]:
    return {
        "drive_serial": serial,
        "method": method,
        "technique": "shredding" if method == "destroy" else "NVMe secure erase",
        "tool": "nwipe" if method != "destroy" else "HSM shredder",
        "tool_version": "0.37",
        "verified": True,
        "verification": "full read-back" if method != "destroy" else "visual inspection",
        "performed_at": NOW.isoformat(),
        "location": "Warehouse Brussels",
    }


PARTNERS = {
    DONOR: Role.DONOR,
    OTHER_DONOR: Role.DONOR,
    STAFF: Role.STAFF,
    SCHOOL_A: Role.RECIPIENT,
    SCHOOL_B: Role.RECIPIENT,
}


@pytest.fixture(scope="module")
def donation(cluster, keys) -> Donation:
    return Donation(keys=keys, urls=cluster.urls)


def test_1_a_donor_requests_a_pickup_and_staff_schedule_it(donation: Donation):
    pickup = donation.ok(
        "intake",
        DONOR,
        "POST",
        "/pickups",
        json=pickup_body(expected={"laptop": 26, "desktop": 4}),
    )
    donation.pickup_id = pickup["pickup_id"]
    assert pickup["status"] == "requested"
    scheduled = donation.ok(
        "intake",
        STAFF,
        "POST",
        f"/pickups/{donation.pickup_id}/schedule",
        json=schedule_body(),
    )
    assert scheduled["status"] == "scheduled"
    assert (
        donation.call("intake", OTHER_DONOR, "GET", f"/pickups/{donation.pickup_id}").status_code
        == 404
    )


def test_2_warehouse_staff_scan_thirty_devices_one_without_a_serial(donation: Donation):
    for i in range(TOTAL):
        category = "desktop" if i in (24, 25, 28, 29) else "laptop"
        body: dict[str, Any] = {
            "category": category,
            "make": "HP" if category == "laptop" else "Dell",
            "model": "EliteBook 840 G5" if category == "laptop" else "OptiPlex 7060",
            "weight_kg": 1.5 if category == "laptop" else 7.8,
            "location": "Warehouse Brussels",
        }
        if i != 0:
            body["serial_number"] = f"SN-{i:04d}"
            body["asset_tag"] = f"ACME-{i:04d}"
        response = donation.call(
            "intake", STAFF, "POST", f"/pickups/{donation.pickup_id}/devices", json=body
        )
        assert response.status_code == 201, response.text
        donation.devices.append(response.json())

    assert donation.devices[0]["asset_tag_generated"] is True
    assert donation.devices[0]["serial_number"] is None
    again = donation.call(
        "intake",
        STAFF,
        "POST",
        f"/pickups/{donation.pickup_id}/devices",
        json={
            "asset_tag": "ACME-0007",
            "serial_number": "SN-0007",
            "category": "laptop",
            "make": "HP",
            "model": "EliteBook 840 G5",
            "weight_kg": 1.5,
            "location": "Warehouse Brussels",
        },
    )
    assert again.status_code == 200
    assert again.json()["device_id"] == donation.devices[7]["device_id"]

    completed = donation.ok(
        "intake", STAFF, "POST", f"/pickups/{donation.pickup_id}/complete", json={}
    )
    assert completed["status"] == "completed"
    assert completed["devices_received"] == TOTAL
    late = donation.call(
        "intake",
        STAFF,
        "POST",
        f"/pickups/{donation.pickup_id}/devices",
        json={"category": "phone", "make": "X", "model": "Y", "weight_kg": 0.2, "location": "W"},
    )
    assert late.status_code == 409


def test_3_diagnostics_grades_decides_and_certifies_erasure(donation: Donation):
    ids = [d["device_id"] for d in donation.devices]
    until(
        lambda: (
            len(donation.ok("diagnostics", STAFF, "GET", "/devices", params={"state": "received"}))
            >= TOTAL
        ),
        what="diagnostics to receive every device",
    )
    early = donation.call("allocation", STAFF, "GET", "/stock").json()
    assert not {d["device_id"] for d in early} & set(ids), "nothing is in stock before its wipe"

    for i, device_id in enumerate(ids):
        recycle = i >= GOOD_LAPTOPS + GOOD_DESKTOPS
        tests = ALL_PASS | ({"boot": "fail"} if i in (26, 27) else {})
        cosmetic = PRISTINE | ({"cracked": True} if i in (28, 29) else {})
        drives = 2 if i == 28 else 1
        diagnosis = donation.ok(
            "diagnostics",
            STAFF,
            "POST",
            f"/devices/{device_id}/reports",
            json={
                "specs": _specs(i, drives),
                "tests": tests,
                "cosmetic": cosmetic,
                "location": "Warehouse Brussels",
            },
        )
        assert diagnosis["decision"] == ("recycle" if recycle else "refurbish"), diagnosis
        assert diagnosis["reason"]
        if not recycle and i == 1:
            # a refurbishable device cannot have its storage destroyed
            refused = donation.call(
                "diagnostics",
                STAFF,
                "POST",
                f"/devices/{device_id}/erasures",
                json=_erasure(_drive(i)["serial"], "destroy"),
            )
            assert refused.status_code == 409
        for n in range(drives):
            donation.ok(
                "diagnostics",
                STAFF,
                "POST",
                f"/devices/{device_id}/erasures",
                json=_erasure(_drive(i, n)["serial"], "destroy" if recycle else "purge"),
            )

    for device_id in ids:
        device = donation.ok("diagnostics", STAFF, "GET", f"/devices/{device_id}")
        certificate = donation.ok(
            "diagnostics", STAFF, "GET", f"/certificates/{device['certificate_id']}"
        )
        assert len(certificate["drives"]) == (2 if device_id == ids[28] else 1)


def test_4_two_schools_request_devices_and_matching_allocates_only_wiped_stock(donation: Donation):
    until(
        lambda: (
            len(donation.ok("allocation", STAFF, "GET", "/stock")) >= GOOD_LAPTOPS + GOOD_DESKTOPS
        ),
        what="allocation to stock every ready device",
    )
    stock = donation.ok("allocation", STAFF, "GET", "/stock")
    recycled_ids = {d["device_id"] for d in donation.devices[GOOD_LAPTOPS + GOOD_DESKTOPS :]}
    assert not recycled_ids & {d["device_id"] for d in stock}

    def open_request(school: str, quantity: int, category: str, priority: int) -> dict[str, Any]:
        return donation.ok(
            "allocation",
            school,
            "POST",
            "/requests",
            json={
                "quantity": quantity,
                "category": category,
                "min_specs": {"ram_gb": 8, "storage_gb": 128},
                "purpose": "Classroom for newly arrived pupils",
                "priority": priority,
            },
        )

    a = open_request(SCHOOL_A, 14, "laptop", 2)
    b = open_request(SCHOOL_B, 10, "laptop", 3)
    b2 = open_request(SCHOOL_B, 2, "desktop", 3)
    assert (
        donation.call("allocation", SCHOOL_B, "GET", f"/requests/{a['request_id']}").status_code
        == 404
    )

    result = donation.ok("allocation", STAFF, "POST", "/matching/run", json={})
    allocated = {x["device_id"]: x["recipient_id"] for x in result["allocations"]}
    assert len(allocated) == GOOD_LAPTOPS + GOOD_DESKTOPS
    for request, quantity in ((a, 14), (b, 10), (b2, 2)):
        view = donation.ok("allocation", STAFF, "GET", f"/requests/{request['request_id']}")
        assert view["allocated"] == quantity
        assert view["status"] == "fulfilled"


def test_5_devices_are_shipped_with_a_bill_of_lading_and_accepted(donation: Donation):
    devices = donation.ok("allocation", STAFF, "GET", "/devices", params={"state": "allocated"})
    by_school: dict[str, list[str]] = {}
    for d in devices:
        by_school.setdefault(d["recipient_id"], []).append(d["device_id"])
    assert sorted(len(v) for v in by_school.values()) == [12, 14]
    for school, device_ids in by_school.items():
        shipment = donation.ok(
            "allocation",
            STAFF,
            "POST",
            "/shipments",
            json={"recipient_id": school, "device_ids": device_ids, "carrier": "Bpost"},
        )
        assert shipment["bill_of_lading"].startswith("BOL-")
        assert {d["device_id"] for d in shipment["devices"]} == set(device_ids)
        twice = donation.call(
            "allocation",
            STAFF,
            "POST",
            "/shipments",
            json={"recipient_id": school, "device_ids": device_ids[:1]},
        )
        assert twice.status_code == 409
        other = SCHOOL_B if school == SCHOOL_A else SCHOOL_A
        sid = shipment["shipment_id"]
        steal = donation.call(
            "allocation", other, "POST", f"/shipments/{sid}/accept", json={"accepted_by": "X"}
        )
        assert steal.status_code == 404
        accepted = donation.ok(
            "allocation",
            school,
            "POST",
            f"/shipments/{sid}/accept",
            json={"accepted_by": "Ms. Diallo"},
        )
        assert accepted["status"] == "delivered"


def test_6_a_delivered_device_cannot_be_recycled_without_a_return(donation: Donation):
    device_id = donation.devices[3]["device_id"]
    refused = donation.call(
        "recycling",
        STAFF,
        "POST",
        f"/devices/{device_id}/dismantle",
        json={"fractions": {"plastics_kg": 1.0}, "hazardous_parts": [], "location": "W"},
    )
    assert refused.status_code == 409
    refusals = donation.ok("recycling", STAFF, "GET", "/refusals")
    assert any(r["subject_id"] == device_id for r in refusals)


def test_7_one_device_is_returned_at_end_of_life(donation: Donation):
    device_id = donation.devices[5]["device_id"]
    school = donation.ok("allocation", STAFF, "GET", f"/devices/{device_id}")["recipient_id"]
    returned = donation.ok(
        "allocation",
        school,
        "POST",
        f"/devices/{device_id}/return",
        json={"reason": "end_of_life", "note": "hinge broken after years of use"},
    )
    assert returned["state"] == "returned"


def test_8_recycling_dismantles_and_certifies_every_recycled_device(donation: Donation):
    to_recycle = [d["device_id"] for d in donation.devices[GOOD_LAPTOPS + GOOD_DESKTOPS :]]
    returned_id = donation.devices[5]["device_id"]
    until(
        lambda: (
            {d["device_id"] for d in donation.ok("recycling", STAFF, "GET", "/devices")}
            >= {*to_recycle, returned_id}
        ),
        what="recycling to receive its devices",
    )
    fractions = {
        "plastics_kg": 0.5,
        "ferrous_kg": 0.3,
        "aluminium_kg": 0.2,
        "circuit_boards_kg": 0.25,
        "batteries_kg": 0.3,
    }
    for device_id in to_recycle:
        donation.ok(
            "recycling",
            STAFF,
            "POST",
            f"/devices/{device_id}/dismantle",
            json={"fractions": fractions, "hazardous_parts": ["li-ion battery"], "location": "W"},
        )
    no_shred = donation.call(
        "recycling",
        STAFF,
        "POST",
        f"/devices/{returned_id}/dismantle",
        json={"fractions": fractions, "hazardous_parts": [], "location": "W"},
    )
    assert no_shred.status_code == 409
    donation.ok(
        "recycling",
        STAFF,
        "POST",
        f"/devices/{returned_id}/dismantle",
        json={
            "fractions": fractions,
            "hazardous_parts": ["li-ion battery"],
            "storage_destroyed": [_erasure(_drive(5)["serial"], "destroy") | {"operator": STAFF}],
            "location": "W",
        },
    )
    lot = donation.ok(
        "recycling",
        STAFF,
        "POST",
        "/lots",
        json={
            "recycler": {"name": "Recupel Metals NV", "certification": "WEEELABEX"},
            "device_ids": [*to_recycle, returned_id],
        },
    )
    assert lot["bill_of_lading"].startswith("BOL-R-")
    assert len(lot["certificates"]) == BROKEN + 1
    assert lot["total_kg"] == pytest.approx(1.55 * (BROKEN + 1))
    for cert in lot["certificates"]:
        certificate = donation.ok(
            "recycling", STAFF, "GET", f"/certificates/{cert['certificate_id']}"
        )
        assert certificate["lot_id"] == lot["lot_id"]


def test_9_the_donor_sees_every_device_final_state_with_its_history(donation: Donation):
    ids = [d["device_id"] for d in donation.devices]
    recycled = {*ids[GOOD_LAPTOPS + GOOD_DESKTOPS :], ids[5]}

    def custody_settled():
        view = donation.ok("custody", DONOR, "GET", "/devices")
        stages = {d["device_id"]: d["stage"] for d in view}
        expected = {i: ("recycled" if i in recycled else "delivered") for i in ids}
        return view if stages == expected else None

    view = until(custody_settled, within_s=90, what="the custody view to settle")
    by_id = {d["device_id"]: d for d in view}
    for device_id in ids:
        device = by_id[device_id]
        kinds = [h["event_type"] for h in device["history"]]
        assert kinds[0] == "device.received"
        assert device["erasure_certificate_id"], device
        if device_id in recycled:
            assert device["recycling_certificate_id"]
            assert kinds[-1] == "device.recycled"
        else:
            assert device["recipient_id"] in (SCHOOL_A, SCHOOL_B)
            assert "device.delivered" in kinds
    returned = by_id[ids[5]]
    assert [
        k
        for k in (h["event_type"] for h in returned["history"])
        if k
        in (
            "device.ready",
            "device.allocated",
            "device.delivered",
            "device.returned",
            "device.recycled",
        )
    ] == [
        "device.ready",
        "device.allocated",
        "device.delivered",
        "device.returned",
        "device.recycled",
    ]

    assert donation.ok("custody", OTHER_DONOR, "GET", "/devices") == []
    assert donation.call("custody", OTHER_DONOR, "GET", f"/devices/{ids[0]}").status_code == 404


def test_10_allocation_and_recycling_agree_on_final_states(donation: Donation):
    ids = [d["device_id"] for d in donation.devices]
    recycled = {*ids[GOOD_LAPTOPS + GOOD_DESKTOPS :], ids[5]}
    for device_id in ids[: GOOD_LAPTOPS + GOOD_DESKTOPS]:
        state = donation.ok("allocation", STAFF, "GET", f"/devices/{device_id}")["state"]
        assert state == ("returned" if device_id == ids[5] else "delivered")
    for device_id in recycled:
        assert (
            donation.ok("recycling", STAFF, "GET", f"/devices/{device_id}")["state"] == "recycled"
        )


def test_10b_a_school_reports_whom_a_delivered_device_serves(donation: Donation):
    device_id = donation.devices[1]["device_id"]
    school = donation.ok("allocation", STAFF, "GET", f"/devices/{device_id}")["recipient_id"]
    other = SCHOOL_B if school == SCHOOL_A else SCHOOL_A
    usage = {"students": 24, "classrooms": 1}
    path = f"/devices/{device_id}/usage"
    assert donation.call("allocation", other, "POST", path, json=usage).status_code == 404
    assert donation.call("allocation", school, "POST", path, json={}).status_code == 422
    returned = f"/devices/{donation.devices[5]['device_id']}/usage"
    assert donation.call("allocation", SCHOOL_A, "POST", returned, json=usage).status_code in (
        404,
        409,
    )
    assert donation.ok("allocation", school, "POST", path, json=usage)["state"] == "delivered"

    def reported():
        view = donation.ok("custody", DONOR, "GET", f"/devices/{device_id}")
        usage_entries = [h for h in view["history"] if h["event_type"] == "device.usage_reported"]
        return (view, usage_entries) if usage_entries else None

    view, entries = until(reported, what="custody to record the usage report")
    assert view["stage"] == "delivered"
    assert entries[0]["details"] == {"recipient_id": school, "students": 24, "classrooms": 1}


def _pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(content)).pages)


def _verify_with_the_topics(base_env, device_id: str, digest: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.verify_certificate", device_id, "--digest", digest],
        env=base_env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_10c_the_donor_downloads_an_erasure_certificate_that_the_topics_confirm(
    donation: Donation, base_env
):
    device = donation.devices[1]
    device_id = device["device_id"]
    path = f"/devices/{device_id}/certificates/erasure"
    certificate = donation.ok("custody", DONOR, "GET", path)
    issued = donation.ok(
        "diagnostics", STAFF, "GET", f"/certificates/{certificate['certificate_id']}"
    )
    assert [d["serial"] for d in issued["drives"]] == [
        e["drive_serial"] for e in certificate["erasures"]
    ]
    assert certificate["device"]["serial_number"] == "SN-0001"
    pdf = donation.call("custody", DONOR, "GET", path, params={"format": "pdf"})
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    text = _pdf_text(pdf.content)
    digest = certificate["evidence"]["digest"]
    for expected in (
        "Certificate of Data Sanitization",
        certificate["certificate_id"],
        "HP",
        "EliteBook 840 G5",
        "SN-0001",
        "ACME-0001",
        _drive(1)["serial"],
        "Purge",
        "NVMe secure erase",
        "nwipe 0.37",
        "full read-back",
        STAFF,
        "Warehouse Brussels",
        digest,
        f"/verify/{device_id}",
    ):
        assert expected in text, expected
    again = donation.call("custody", DONOR, "GET", path, params={"format": "pdf"})
    assert again.content == pdf.content
    assert donation.call("custody", OTHER_DONOR, "GET", path).status_code == 404

    public = httpx.get(
        donation.urls["custody"] + f"/verify/{device_id}", params={"digest": digest}, timeout=30
    )
    assert public.status_code == 200
    assert "matches this device" in public.text
    assert digest in public.text
    for private in (DONOR, STAFF, "SN-0001", _drive(1)["serial"], "Warehouse Brussels"):
        assert private not in public.text, private

    confirmed = _verify_with_the_topics(base_env, device_id, digest)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert f"MATCH: {digest}" in confirmed.stdout
    forged = _verify_with_the_topics(base_env, device_id, "0" * 64)
    assert forged.returncode == 1, forged.stdout


def test_10d_the_returned_device_has_a_recycling_certificate_naming_lot_and_recycler(
    donation: Donation, base_env
):
    device_id = donation.devices[5]["device_id"]
    path = f"/devices/{device_id}/certificates/recycling"
    certificate = donation.ok("custody", DONOR, "GET", path)
    lot = donation.ok("recycling", STAFF, "GET", f"/lots/{certificate['lot_id']}")
    assert certificate["bill_of_lading"] == lot["bill_of_lading"]
    text = _pdf_text(donation.call("custody", DONOR, "GET", path, params={"format": "pdf"}).content)
    for expected in (
        "Certificate of Recycling",
        certificate["certificate_id"],
        "Recupel Metals NV",
        "WEEELABEX",
        lot["lot_id"],
        lot["bill_of_lading"],
        "0.500 kg",
        "1.550 kg",
        "li-ion battery",
        _drive(5)["serial"],
        "Destroy",
        certificate["evidence"]["digest"],
    ):
        assert expected in text, expected
    confirmed = _verify_with_the_topics(base_env, device_id, certificate["evidence"]["digest"])
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    not_yet = donation.call(
        "custody",
        DONOR,
        "GET",
        f"/devices/{donation.devices[2]['device_id']}/certificates/recycling",
    )
    assert not_yet.status_code == 404


def test_11_the_invariants_checker_finds_nothing_wrong_in_the_five_stores(base_env):
    result = subprocess.run(
        [sys.executable, "-m", "tools.invariants"],
        env=base_env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 violation(s)" in result.stdout
