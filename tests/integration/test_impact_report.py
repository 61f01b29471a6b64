"""The donor impact report from a real custody process (fed by intake): devices scanned over
HTTP, their
lifecycle events published on the real Kafka topics, the report fetched as PDF, HTML and JSON."""

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pypdf
import pytest

from shared import events as ev
from shared.auth import Role
from shared.examples import EXAMPLES
from tests.helpers import eventually, new_pickup, publish
from tests.printed_tables import column_sums, rows_with_totals

pytestmark = pytest.mark.integration

AURORA, BOREALIS, STAFF = "donor-aurora", "donor-borealis", "staff-ines"
CIRRUS = "donor-cirrus"
NOW = datetime.now(UTC)
START, END = (NOW - timedelta(days=1)).date(), (NOW + timedelta(days=2)).date()
PERIOD = {"start": START.isoformat(), "end": END.isoformat()}
FACTORS = """\
name: integration test factors
co2e:
  laptop: {kg_co2e: 69, source: PUC Belgium, unit: kg CO2e per reused laptop}
"""
ROSA = ("school-rosa", "Rosa Parks Primary")
HARBOUR = ("ngo-harbour", "Harbour Youth Workshop")
ZANZIBAR = ("ngo-zanzibar", "Zanzibar Youth Collective")
BOREALIS_WORDS = ("Zebracorp", "Zeta-Book", "Zeta-View", "Zanzibar", "Bexley", BOREALIS)
AURORA_WORDS = ("Aurora Labs", "AuroraBook", "Rosa Parks", "Harbour", "Umicore", AURORA)


CLUSTER = ["intake", "custody"]
PARTNERS = {AURORA: Role.DONOR, BOREALIS: Role.DONOR, CIRRUS: Role.DONOR, STAFF: Role.STAFF}


@pytest.fixture(scope="module")
def service_env(tmp_path_factory) -> dict[str, str]:
    factors = tmp_path_factory.mktemp("impact") / "factors.yaml"
    factors.write_text(FACTORS)
    return {"GREENIT_CUSTODY_IMPACT_FACTORS": str(factors)}


def event(cls: type[ev.Event], device_id: str, seconds: float, **fields: Any) -> ev.Event:
    """The catalogue's example of `cls`, about this device, `seconds` after NOW."""
    base = EXAMPLES[cls].model_dump()
    return cls.model_validate(
        base
        | {
            "event_id": uuid4(),
            "device_id": UUID(device_id),
            "occurred_at": NOW + timedelta(seconds=seconds),
        }
        | fields
    )


def delivered_to(device_id: str, recipient: tuple[str, str]) -> list[ev.Event]:
    recipient_id, name = recipient
    return [
        event(ev.DeviceDiagnosed, device_id, 1, decision=ev.Decision.REFURBISH),
        event(ev.DeviceWiped, device_id, 2, certificate_id=uuid4()),
        event(ev.DeviceReady, device_id, 3, erasure_certificate_id=uuid4()),
        event(ev.DeviceAllocated, device_id, 4, recipient_id=recipient_id, recipient_name=name),
        event(ev.DeviceShipped, device_id, 5, recipient_id=recipient_id),
        event(ev.DeviceDelivered, device_id, 6, recipient_id=recipient_id),
    ]


def used_by(device_id: str, recipient: tuple[str, str], students: int, classrooms: int, at=7):
    return event(
        ev.DeviceUsageReported,
        device_id,
        at,
        recipient_id=recipient[0],
        students=students,
        classrooms=classrooms,
    )


def recycled_by(device_id: str, recycler: str, certification: str, **kg: float) -> list[ev.Event]:
    fractions = ev.MaterialFractions.model_validate({f"{k}_kg": v for k, v in kg.items()})
    return [
        event(ev.DeviceDiagnosed, device_id, 1, decision=ev.Decision.RECYCLE),
        event(ev.DeviceReleasedForRecycling, device_id, 2, erasure_certificate_id=uuid4()),
        event(
            ev.DeviceDismantled,
            device_id,
            3,
            fractions=fractions,
            storage_destroyed=[],
        ),
        event(
            ev.DeviceRecycled,
            device_id,
            4,
            recycler=ev.Recycler(name=recycler, certification=certification),
            fractions=fractions,
            lot_id=uuid4(),
            certificate_id=uuid4(),
        ),
    ]


async def scan(http, donor: str, devices: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A pickup for `donor` with `devices` scanned in; their ids by the names given."""
    pickup = (await new_pickup(http, donor, STAFF, expected={"laptop": len(devices)}))["pickup_id"]
    ids = {}
    for name, fields in devices.items():
        scanned = await http(
            STAFF,
            "POST",
            f"/pickups/{pickup}/devices",
            json={"asset_tag": f"{name}-{uuid4().hex[:6]}", "location": "Brussels", **fields},
        )
        assert scanned.status_code == 201, scanned.text
        ids[name] = scanned.json()["device_id"]
    return ids


async def wait_for_custody(http, donor: str, events: list[ev.Event]) -> None:
    expected: dict[str, int] = {}
    for e in events:
        expected[str(e.subject_id)] = expected.get(str(e.subject_id), 1) + 1

    async def applied():
        listed = (await http(STAFF, "GET", "/devices", params={"partner_id": donor})).json()
        seen = {d["device_id"]: len(d["history"]) for d in listed}
        return all(seen.get(device) == n for device, n in expected.items())

    await eventually(applied, within_s=60)


@pytest.fixture(scope="module")
async def donations(http, namespace) -> dict[str, dict[str, str]]:
    aurora = await scan(
        http,
        AURORA,
        {
            "L1": {
                "category": "laptop",
                "make": "Aurora Labs",
                "model": "AuroraBook 13",
                "weight_kg": 1.8,
            },
            "L2": {
                "category": "laptop",
                "make": "Aurora Labs",
                "model": "AuroraBook 13",
                "weight_kg": 2.0,
            },
            "L3": {
                "category": "laptop",
                "make": "Aurora Labs",
                "model": "AuroraBook 15",
                "weight_kg": 2.2,
            },
            "T1": {
                "category": "tablet",
                "make": "Aurora Labs",
                "model": "AuroraPad",
                "weight_kg": 0.6,
            },
            "M1": {
                "category": "monitor",
                "make": "Aurora Labs",
                "model": "AuroraView 24",
                "weight_kg": 4.2,
            },
            "D1": {
                "category": "desktop",
                "make": "Aurora Labs",
                "model": "AuroraTower",
                "weight_kg": 7.5,
            },
        },
    )
    borealis = await scan(
        http,
        BOREALIS,
        {
            "L1": {
                "category": "laptop",
                "make": "Zebracorp",
                "model": "Zeta-Book 9",
                "weight_kg": 1.9,
            },
            "M1": {
                "category": "monitor",
                "make": "Zebracorp",
                "model": "Zeta-View 27",
                "weight_kg": 5.1,
            },
        },
    )
    after_the_end = (datetime.combine(END, datetime.min.time(), UTC) - NOW).total_seconds() + 3600
    aurora_events = [
        *delivered_to(aurora["L1"], ROSA),
        used_by(aurora["L1"], ROSA, 28, 1),
        used_by(aurora["L1"], ROSA, 999, 99, at=after_the_end),
        *delivered_to(aurora["L2"], HARBOUR),
        used_by(aurora["L2"], HARBOUR, 12, 2),
        *delivered_to(aurora["L3"], ROSA),
        *delivered_to(aurora["T1"], HARBOUR),
        *recycled_by(
            aurora["M1"],
            "Umicore Hoboken",
            "R2v3",
            plastics=1.1,
            ferrous=0.9,
            glass=1.5,
            circuit_boards=0.4,
        ),
        event(ev.DeviceDiagnosed, aurora["D1"], 1),
    ]
    borealis_events = [
        *delivered_to(borealis["L1"], ZANZIBAR),
        used_by(borealis["L1"], ZANZIBAR, 77, 7),
        *recycled_by(borealis["M1"], "Bexley Metals", "e-Stewards", glass=9.9),
    ]
    await publish(namespace, *aurora_events, *borealis_events)
    await wait_for_custody(http, AURORA, aurora_events)
    await wait_for_custody(http, BOREALIS, borealis_events)
    return {AURORA: aurora, BOREALIS: borealis}


async def report(http, who: str, fmt: str, **params: str) -> httpx.Response:
    response = await http(who, "GET", "/reports/impact", params=PERIOD | {"format": fmt} | params)
    assert response.status_code == 200, response.text
    return response


def pdf_text(pdf: bytes) -> str:
    pages = pypdf.PdfReader(io.BytesIO(pdf)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


async def test_the_pdf_report_states_the_donors_numbers(donations, http):
    response = await report(http, AURORA, "pdf")
    assert response.headers["content-type"] == "application/pdf"
    text = pdf_text(response.content)
    assert f"Donor impact report: {AURORA}" in text
    assert f"Period: {START} to {END}" in text
    assert f"As of {END} 00:00 UTC" in text
    # received, by category: devices and kg as scanned
    assert "laptop 3 6.0" in text
    assert "desktop 1 7.5" in text
    assert "monitor 1 4.2" in text
    assert "tablet 1 0.6" in text
    assert "total 6 18.3" in text
    assert "laptop Aurora Labs AuroraBook 13 2" in text
    # delivered per recipient: devices, with a usage report, students, classrooms
    assert "Rosa Parks Primary 2 1 28 1" in text
    assert "Harbour Youth Workshop 2 1 12 2" in text
    assert "total 4 2 40 3" in text
    assert "999" not in text, "a usage report after the period's end is not counted"
    # recycled: kg per fraction and the downstream recycler
    assert "glass 1.5" in text
    assert "plastics 1.1" in text
    assert "ferrous 0.9" in text
    assert "circuit boards 0.4" in text
    assert "Umicore Hoboken R2v3 1 3.9" in text
    # still in process at the end
    assert "diagnosed 1" in text
    # CO2e = reused laptops x the configured factor; the tablet has no factor
    assert "laptop 3 69 kg CO2e per reused laptop PUC Belgium 207.0" in text
    assert "tablet 1 none kg CO2e no factor configured 0.0" in text
    assert "CO2e avoided (kg CO2e) 207.0" in text
    # kept from landfill: reused weights 6.6 + recycled materials 3.9
    assert "Kept from landfill (kg) 10.5" in text
    assert "Factor set: integration test factors" in text


async def test_the_json_and_html_reports_agree_with_the_pdf(donations, http):
    body = (await report(http, AURORA, "json")).json()
    assert body["partner_id"] == AURORA
    assert body["provisional"] is True
    assert {r["category"]: r["devices"] for r in body["received"]} == {
        "laptop": 3,
        "tablet": 1,
        "monitor": 1,
        "desktop": 1,
    }
    assert [(r["name"], r["devices"], r["students"]) for r in body["delivered"]] == [
        ("Harbour Youth Workshop", 2, 12),
        ("Rosa Parks Primary", 2, 28),
    ]
    assert body["co2e"]["total_kg"] == 207.0
    assert body["landfill"] == body["landfill"] | {
        "reused_devices_kg": 6.6,
        "recycled_materials_kg": 3.9,
        "total_kg": 10.5,
    }
    assert [(s["stage"], s["devices"]) for s in body["in_process"]] == [("diagnosed", 1)]
    assert sum(b["received"] for b in body["flow"]) == 6
    assert sum(b["delivered"] for b in body["flow"]) == 4

    html = await report(http, AURORA, "html")
    assert html.headers["content-type"].startswith("text/html")
    page = html.text
    assert "<svg" in page
    assert "Rosa Parks Primary" in page
    assert ">207.0<" in page
    assert ">10.5<" in page


@pytest.fixture(scope="module")
async def small_parts(http, namespace) -> dict[str, str]:
    """A donor of small parts: every weight a few grams."""
    parts = {
        f"P{i}": {"category": category, "make": "Cirrus", "model": "Part", "weight_kg": 0.02}
        for i, category in enumerate(("phone", "tablet", "other", "laptop"))
    }
    ids = await scan(http, CIRRUS, parts | {"D": parts["P0"] | {"weight_kg": 0.44}})
    events = [
        *delivered_to(ids["P0"], ROSA),
        *delivered_to(ids["P1"], ROSA),
        *delivered_to(ids["D"], ROSA),
        *recycled_by(
            ids["P2"], "Umicore Hoboken", "R2v3", plastics=0.02, ferrous=0.02, copper=0.02
        ),
    ]
    await publish(namespace, *events)
    await wait_for_custody(http, CIRRUS, events)
    return ids


async def test_printed_kg_rows_add_up_to_the_printed_total(small_parts, http):
    html = (await report(http, CIRRUS, "html")).text
    sums = column_sums(html)
    assert [s for s in sums if not s.adds_up] == []
    assert [(sorted(s.rows), s.total) for s in sums if s.column == "Weight (kg)"] == [
        (["0.02", "0.02", "0.02", "0.46"], "0.52"),  # received: phones (0.02 + 0.44), the rest
        (["0.02", "0.02", "0.02"], "0.06"),  # recycled: plastics, ferrous, copper
        (["0.06", "0.48"], "0.54"),  # kept from landfill: reused, recycled
    ]
    text = pdf_text((await report(http, CIRRUS, "pdf")).content)
    assert [row for row in rows_with_totals(html) if row not in text] == []
    assert "Kept from landfill (kg) 0.54" in text


async def test_another_donors_data_never_appears_in_a_donors_report(donations, http):
    for fmt in ("pdf", "html", "json"):
        response = await report(http, AURORA, fmt)
        text = pdf_text(response.content) if fmt == "pdf" else response.text
        assert [w for w in BOREALIS_WORDS if w in text] == [], fmt
    theirs = pdf_text((await report(http, BOREALIS, "pdf")).content)
    assert "Zanzibar Youth Collective 1 1 77 7" in theirs
    assert "Bexley Metals e-Stewards 1 9.9" in theirs
    assert [w for w in AURORA_WORDS if w in theirs] == []


async def test_the_same_request_gives_byte_identical_pdfs(donations, http):
    first = (await report(http, AURORA, "pdf")).content
    second = (await report(http, AURORA, "pdf")).content
    assert first == second
    by_staff = (await report(http, STAFF, "pdf", partner_id=AURORA)).content
    assert by_staff == first, "the report depends on the donor and period, not on who asks"
    pages = [(await report(http, AURORA, "html")).text for _ in range(2)]
    nonces = [re.findall(r'nonce="([^"]+)"', page) for page in pages]
    assert nonces[0] != nonces[1], "each answer has its own Content-Security-Policy nonce"
    without = [re.sub(r'nonce="[^"]+"', "", page) for page in pages]
    assert without[0] == without[1], "otherwise the same page"


async def test_a_donor_asking_for_another_partners_report_is_refused(donations, http):
    theirs = await http(AURORA, "GET", "/reports/impact", params=PERIOD | {"partner_id": BOREALIS})
    assert theirs.status_code == 403
    own = await http(AURORA, "GET", "/reports/impact", params=PERIOD | {"partner_id": AURORA})
    assert own.status_code == 200
    assert (await http(None, "GET", "/reports/impact", params=PERIOD)).status_code == 401


@pytest.mark.parametrize(
    ("who", "params", "reason"),
    [
        (AURORA, {"start": "2030-03-01", "end": "2030-03-01"}, "must end after it starts"),
        (AURORA, {"start": "2030-03-02", "end": "2030-03-01"}, "must end after it starts"),
        (AURORA, {"start": "2020-01-01", "end": "2030-06-01"}, "at most ten years"),
        (AURORA, {"start": "2030-13-01", "end": "2031-01-01"}, "date"),
        (AURORA, {"start": "20300101", "end": "2031-01-01"}, "YYYY-MM-DD"),
        (AURORA, {"start": "2030-01-01"}, "Field required"),
        (AURORA, {"start": "2030-01-01", "end": "2030-02-01", "format": "docx"}, "json"),
        (STAFF, {"start": "2030-01-01", "end": "2030-02-01"}, "must name the donor"),
    ],
    ids=[
        "empty",
        "reversed",
        "too long",
        "no such month",
        "compact",
        "no end",
        "format",
        "staff without donor",
    ],
)
async def test_a_bad_period_or_request_is_refused_with_422_and_the_reason(
    http, who, params, reason
):
    response = await http(who, "GET", "/reports/impact", params=params)
    assert response.status_code == 422, response.text
    assert reason in str(response.json()["detail"])
