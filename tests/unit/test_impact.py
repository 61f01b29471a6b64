"""The donor impact report computed from hand-built custody documents, and rendered."""

import io
import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
from pydantic import ValidationError

from services.custody import impact, impact_render
from services.custody.impact import (
    BUILT_IN_FACTORS,
    Co2eFactor,
    FactorsError,
    ImpactFactors,
    Period,
    compute,
    load_factors,
)
from shared.events import DeviceCategory
from tests.printed_tables import column_sums, rows_with_totals

DONOR = "acme"
MARCH = Period(start=date(2030, 3, 1), end=date(2030, 4, 1))
START, END = MARCH.start_at, MARCH.end_at
DAY = timedelta(days=1)
LAPTOP_69 = ImpactFactors(
    name="test",
    co2e={DeviceCategory.LAPTOP: Co2eFactor(kg_co2e=69, source="PUC Belgium")},
)


def event(event_type: str, at: datetime, **details: Any) -> dict[str, Any]:
    return {"event_type": event_type, "occurred_at": at, "details": details}


def device(
    device_id: str,
    received_at: datetime,
    *events: dict[str, Any],
    category: str = "laptop",
    weight_kg: float = 1.5,
    partner_id: str = DONOR,
    make: str = "HP",
    model: str = "EliteBook 840",
) -> dict[str, Any]:
    return {
        "_id": device_id,
        "partner_id": partner_id,
        "category": category,
        "make": make,
        "model": model,
        "weight_kg": weight_kg,
        "received_at": received_at,
        "history": [event("device.received", received_at), *events],
    }


def delivered(
    at: datetime, recipient: str = "school-1", name: str | None = "Rosa Parks School"
) -> list[dict[str, Any]]:
    return [
        event("device.diagnosed", at - 3 * DAY, decision="refurbish"),
        event("device.wiped", at - 3 * DAY),
        event("device.ready", at - 3 * DAY),
        event("device.allocated", at - 2 * DAY, recipient_id=recipient, recipient_name=name),
        event("device.shipped", at - DAY, recipient_id=recipient),
        event("device.delivered", at, recipient_id=recipient),
    ]


def recycled(at: datetime, recycler: str = "Umicore", **fractions: float) -> list[dict[str, Any]]:
    kg = {f"{name}_kg": weight for name, weight in fractions.items()}
    return [
        event("device.diagnosed", at - 3 * DAY, decision="recycle"),
        event("device.released_for_recycling", at - 3 * DAY),
        event("device.dismantled", at - DAY, fractions=kg),
        event(
            "device.recycled",
            at,
            recycler=recycler,
            recycler_certification="R2v3",
            fractions=kg,
        ),
    ]


def usage(at: datetime, students: int | None, classrooms: int | None, recipient="school-1"):
    return event(
        "device.usage_reported",
        at,
        recipient_id=recipient,
        students=students,
        classrooms=classrooms,
    )


def report(docs, period=MARCH, factors=LAPTOP_69):
    return compute(docs, partner_id=DONOR, period=period, factors=factors)


# ---- period and reproducibility ----------------------------------------------------------------


def test_the_period_includes_its_start_and_excludes_its_end():
    docs = [
        device("at-start", START),
        device("just-before-end", END - timedelta(milliseconds=1)),
        device("at-end", END),
        device("before-start", START - timedelta(milliseconds=1)),
    ]
    result = report(docs)
    assert result.received_total == 2
    assert [s.model_dump() for s in result.in_process] == [{"stage": "received", "devices": 3}]


def test_events_after_the_period_end_do_not_count_so_a_past_report_never_changes():
    docs = [device("d1", START + DAY, *delivered(END - DAY))]
    before = report(docs)
    docs[0]["history"] += [
        usage(END + DAY, 30, 2),
        event("device.returned", END + 2 * DAY, recipient_id="school-1"),
    ]
    docs.append(device("d2", END + DAY))
    after = report(docs)
    assert after == before
    assert impact_render.render_pdf(after) == impact_render.render_pdf(before)
    assert before.delivered[0].students == 0


def test_a_delivery_just_after_the_end_leaves_the_device_shipped_and_in_process():
    docs = [device("d1", START + DAY, *delivered(END))]
    result = report(docs)
    assert result.delivered == []
    assert [(s.stage, s.devices) for s in result.in_process] == [("shipped", 1)]
    assert result.co2e.total_kg == 0


def test_the_same_documents_in_any_order_give_the_same_report():
    docs = [
        device(f"d{i}", START + i * timedelta(hours=7), *delivered(START + (i + 5) * DAY))
        for i in range(20)
    ] + [
        device(f"r{i}", START, *recycled(START + 9 * DAY, plastics=0.1 * i, glass=0.3))
        for i in range(20)
    ]
    shuffled = docs[:]
    random.Random(7).shuffle(shuffled)
    assert report(shuffled) == report(docs)
    assert impact_render.render_pdf(report(shuffled)) == impact_render.render_pdf(report(docs))


def test_another_partners_documents_are_ignored():
    docs = [
        device("mine", START + DAY),
        device("theirs", START + DAY, *delivered(START + 5 * DAY), partner_id="globex"),
    ]
    result = report(docs)
    assert result.received_total == 1
    assert result.delivered == []


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (date(2030, 3, 1), date(2030, 3, 1), "must end after it starts"),
        (date(2030, 3, 2), date(2030, 3, 1), "must end after it starts"),
        (date(2020, 1, 1), date(2030, 1, 3), "at most ten years"),
    ],
)
def test_a_period_ends_after_it_starts_and_spans_at_most_ten_years(start, end, message):
    with pytest.raises(ValidationError, match=message):
        Period(start=start, end=end)


def test_a_ten_year_period_ending_at_the_last_representable_day_is_computed():
    period = Period(start=date(9990, 1, 2), end=date(9999, 12, 31))
    result = report([device("d1", period.start_at + DAY)], period=period)
    assert result.bucket == "month"
    assert result.flow[0].start == period.start
    assert result.flow[-1].end == period.end
    assert result.received_total == 1


# ---- the figures -------------------------------------------------------------------------------


def test_devices_received_are_counted_by_category_with_their_weight_and_models():
    docs = [
        device("l1", START, weight_kg=1.5),
        device("l2", START + DAY, weight_kg=2.25, make="Lenovo", model="T480"),
        device("m1", START + DAY, category="monitor", weight_kg=4.2, make="Dell", model="P2419H"),
    ]
    result = report(docs)
    assert [(c.category, c.devices, c.weight_kg) for c in result.received] == [
        ("laptop", 2, 3.75),
        ("monitor", 1, 4.2),
    ]
    assert {(m.make, m.model, m.devices) for m in result.models} == {
        ("HP", "EliteBook 840", 1),
        ("Lenovo", "T480", 1),
        ("Dell", "P2419H", 1),
    }


def test_delivered_devices_are_counted_per_recipient_with_their_latest_usage_report():
    docs = [
        device("a", START, *delivered(START + 5 * DAY), usage(START + 6 * DAY, 10, 1)),
        device(
            "b",
            START,
            *delivered(START + 5 * DAY),
            usage(START + 6 * DAY, 40, 9),
            usage(START + 20 * DAY, 25, 2),
        ),
        device("c", START, *delivered(START + 5 * DAY)),
        device("d", START, *delivered(START + 7 * DAY, "ngo-7", None)),
        device("e", START, *delivered(START - DAY)),
    ]
    result = report(docs)
    rows = {r.recipient_id: r for r in result.delivered}
    assert set(rows) == {"school-1", "ngo-7"}
    school = rows["school-1"]
    assert (school.name, school.devices, school.devices_with_usage_report) == (
        "Rosa Parks School",
        3,
        2,
    )
    assert (school.students, school.classrooms) == (35, 3)
    assert rows["ngo-7"].name == "ngo-7", "without a name given at allocation, the id"
    assert result.delivered[0].recipient_id == "school-1", "most devices first"


def test_a_usage_report_without_students_counts_the_device_but_no_students():
    docs = [device("a", START, *delivered(START + 5 * DAY), usage(START + 6 * DAY, None, 3))]
    row = report(docs).delivered[0]
    assert (row.devices_with_usage_report, row.students, row.classrooms) == (1, 0, 3)


def test_recycled_material_weights_are_summed_per_fraction_and_per_recycler():
    docs = [
        device("r1", START, *recycled(START + 5 * DAY, plastics=1.1, glass=1.5)),
        device("r2", START, *recycled(START + 6 * DAY, plastics=0.4, ferrous=0.9)),
        device("r3", START, *recycled(START + 7 * DAY, "Galloo", copper=0.2)),
        device("r4", START, *recycled(END + DAY, "Late Metals", copper=9.0)),
    ]
    result = report(docs)
    assert {f.fraction: f.kg for f in result.recycled_fractions} == {
        "plastics": 1.5,
        "glass": 1.5,
        "ferrous": 0.9,
        "copper": 0.2,
    }
    assert [(r.recycler, r.certification, r.devices, r.kg) for r in result.recyclers] == [
        ("Umicore", "R2v3", 2, 3.9),
        ("Galloo", "R2v3", 1, 0.2),
    ]
    assert [(s.stage, s.devices) for s in result.in_process] == [("awaiting_recycling", 1)]


def test_stages_at_the_end_separate_devices_in_process_from_outcomes():
    docs = [
        device("received", START),
        device("diagnosed", START, event("device.diagnosed", START + DAY)),
        device("ready", START, *delivered(END + DAY)[:3]),
        device("delivered", START, *delivered(START + 5 * DAY)),
        device(
            "broken",
            START,
            *delivered(START + 5 * DAY),
            event("device.reported", START + 8 * DAY, recipient_id="s", condition="broken"),
        ),
        device("recycled", START, *recycled(START + 5 * DAY, plastics=1)),
    ]
    result = report(docs)
    assert [(s.stage, s.devices) for s in result.in_process] == [
        ("received", 1),
        ("diagnosed", 1),
        ("ready", 1),
    ]
    assert [(s.stage, s.devices) for s in result.outcomes] == [
        ("delivered", 1),
        ("broken", 1),
        ("recycled", 1),
    ]


def test_co2e_is_reused_devices_times_their_factor_and_a_category_without_one_counts_zero():
    docs = [
        *(device(f"l{i}", START, *delivered(START + 5 * DAY)) for i in range(3)),
        device("t1", START, *delivered(START + 5 * DAY), category="tablet", weight_kg=0.6),
        device("m1", START, *recycled(START + 5 * DAY, glass=3), category="monitor"),
    ]
    co2e = report(docs).co2e
    assert [(x.category, x.reused_devices, x.factor_kg_co2e, x.kg_co2e) for x in co2e.lines] == [
        ("laptop", 3, 69, 207.0),
        ("tablet", 1, None, 0.0),
    ]
    assert co2e.lines[0].source == "PUC Belgium"
    assert co2e.lines[1].source == impact.NO_FACTOR
    assert co2e.total_kg == 207.0


def test_kg_kept_from_landfill_counts_reused_weights_and_recycled_materials_once():
    docs = [
        device("reused", START, *delivered(START + 5 * DAY), weight_kg=1.8),
        device("recycled", START, *recycled(START + 5 * DAY, plastics=1.2, glass=2.0)),
        device(
            "both",
            START,
            *delivered(START + 2 * DAY),
            event("device.returned", START + 9 * DAY, recipient_id="school-1"),
            *recycled(START + 20 * DAY, ferrous=1.0)[2:],
            weight_kg=1.4,
        ),
    ]
    landfill = report(docs).landfill
    assert (landfill.reused_devices_kg, landfill.recycled_materials_kg) == (1.8, 4.2)
    assert landfill.total_kg == 6.0
    assert landfill.unit == "kg"


def test_the_landfill_method_can_leave_reused_weights_out():
    factors = ImpactFactors.model_validate({"landfill": {"count_reused_devices": False}})
    docs = [device("reused", START, *delivered(START + 5 * DAY), weight_kg=1.8)]
    assert report(docs, factors=factors).landfill.total_kg == 0


def test_the_flow_is_weekly_for_short_periods_and_monthly_for_long_ones():
    docs = [
        device("a", START, *delivered(START + 8 * DAY)),
        device("b", START + 13 * DAY, *recycled(END - timedelta(seconds=1), plastics=1)),
    ]
    weekly = report(docs)
    assert weekly.bucket == "week"
    assert [(b.start.day, b.end.day) for b in weekly.flow] == [
        (1, 8),
        (8, 15),
        (15, 22),
        (22, 29),
        (29, 1),
    ]
    assert [(b.received, b.delivered, b.recycled) for b in weekly.flow] == [
        (1, 0, 0),
        (1, 1, 0),
        (0, 0, 0),
        (0, 0, 0),
        (0, 0, 1),
    ]
    year = Period(start=date(2030, 1, 15), end=date(2031, 1, 15))
    monthly = report(docs, period=year)
    assert monthly.bucket == "month"
    assert len(monthly.flow) == 13
    assert (monthly.flow[0].start, monthly.flow[0].end) == (date(2030, 1, 15), date(2030, 2, 1))
    assert monthly.flow[-1].start == date(2031, 1, 1)
    assert [(b.start.month, b.received) for b in monthly.flow if b.received] == [(3, 2)]


# ---- factors ------------------------------------------------------------------------------------


def test_the_built_in_factors_name_their_published_sources():
    laptop = BUILT_IN_FACTORS.co2e[DeviceCategory.LAPTOP]
    monitor = BUILT_IN_FACTORS.co2e[DeviceCategory.MONITOR]
    assert (laptop.kg_co2e, laptop.source) == (18.6, "Labdoo")
    assert (monitor.kg_co2e, monitor.source) == (520, "3StepIT/EY, Inrego/IVL")
    assert set(BUILT_IN_FACTORS.co2e) == {DeviceCategory.LAPTOP, DeviceCategory.MONITOR}
    assert load_factors(None) == BUILT_IN_FACTORS


def test_a_factors_file_replaces_the_built_in_factors(tmp_path: Path):
    path = tmp_path / "factors.yaml"
    path.write_text(
        "name: Inrego 2030\n"
        "co2e:\n"
        "  laptop: {kg_co2e: 250, source: Inrego/IVL, unit: kg CO2e per reused laptop}\n"
        "  phone: {kg_co2e: 40.5, source: our study}\n"
        "landfill:\n"
        "  count_recycled_materials: false\n"
    )
    factors = load_factors(path)
    assert factors.name == "Inrego 2030"
    assert factors.co2e[DeviceCategory.PHONE].kg_co2e == 40.5
    assert factors.co2e[DeviceCategory.PHONE].unit == "kg CO2e per reused device"
    assert DeviceCategory.MONITOR not in factors.co2e
    assert factors.landfill.count_recycled_materials is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("co2e: [laptop", "not valid YAML"),
        ("- laptop\n", "expected a mapping"),
        ("co2e:\n  laptop: {kg_co2e: -1, source: x}\n", "co2e.laptop.kg_co2e: Input should be"),
        ("co2e:\n  toaster: {kg_co2e: 1, source: x}\n", "co2e.toaster.[key]"),
        ("co2e:\n  laptop: {kg_co2e: 18.6}\n", "co2e.laptop.source: Field required"),
        ("co2e: {}\ncolour: green\n", "colour: Extra inputs are not permitted"),
        ("landfill: {unit: t}\n", "landfill.unit"),
    ],
)
def test_a_bad_factors_file_is_refused_with_the_file_and_the_reason(tmp_path, text, message):
    path = tmp_path / "factors.yaml"
    path.write_text(text)
    with pytest.raises(FactorsError) as raised:
        load_factors(path)
    assert str(raised.value).startswith(f"impact factors {path}: ")
    assert message in str(raised.value)


def test_a_missing_factors_file_is_refused_with_its_path(tmp_path):
    with pytest.raises(FactorsError, match=r"nowhere\.yaml: cannot be read"):
        load_factors(tmp_path / "nowhere.yaml")


# ---- rendering ----------------------------------------------------------------------------------


def pdf_text(pdf: bytes) -> str:
    """The text of every page, whitespace (line breaks included) collapsed to single spaces."""
    pages = pypdf.PdfReader(io.BytesIO(pdf)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


def test_the_pdf_states_the_numbers_factors_and_definitions_and_is_reproducible():
    docs = [
        *(device(f"l{i}", START, *delivered(START + 5 * DAY)) for i in range(3)),
        device("t1", START, *delivered(START + 5 * DAY), category="tablet", weight_kg=0.6),
    ]
    result = report(docs)
    pdf = impact_render.render_pdf(result)
    assert pdf.startswith(b"%PDF")
    assert impact_render.render_pdf(report(list(reversed(docs)))) == pdf
    text = pdf_text(pdf)
    assert "Donor impact report: acme" in text
    assert "As of 2030-04-01 00:00 UTC" in text
    assert "207.0" in text
    assert "PUC Belgium" in text
    assert impact.NO_FACTOR in text
    assert "18.6 kg CO2e (Labdoo)" in text, "the published range is always stated"
    assert "Rosa Parks School" in text
    assert "(a student using two devices counts twice)" in text, "definitions are printed"


def test_the_html_escapes_what_partners_typed_and_carries_the_chart_inline():
    docs = [
        device(
            "x",
            START,
            *delivered(START + 5 * DAY, name="<script>alert(1)</script> & Co"),
            make="<b>Evil</b>",
        )
    ]
    html = impact_render.render_html(report(docs))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html
    assert "&lt;b&gt;Evil&lt;/b&gt;" in html
    assert html.count("<svg") == 1
    assert "<?xml" not in html
    assert impact_render.render_html(report(docs)) == html


def grams_report() -> impact.ImpactReport:
    """Rows of a few grams each: to one decimal, 0.02 kg prints as 0.0 while five make 0.1."""
    grams = ImpactFactors(
        name="grams",
        co2e={
            c: Co2eFactor(kg_co2e=0.02, source="test")
            for c in (DeviceCategory.LAPTOP, DeviceCategory.TABLET, DeviceCategory.PHONE)
        },
    )
    docs = [
        device(c, START, *delivered(START + 5 * DAY), category=c, weight_kg=0.02)
        for c in ("laptop", "tablet", "phone", "monitor")
    ]
    docs.append(device("d", START, *delivered(START + 5 * DAY), category="desktop", weight_kg=0.44))
    tiny = {name: 0.02 for name in ("plastics", "ferrous", "aluminium", "copper", "glass")}
    docs.append(
        device("r", START, *recycled(START + 5 * DAY, **tiny), category="other", weight_kg=0.02)
    )
    return report(docs, factors=grams)


def test_printed_kg_rows_add_up_to_the_printed_total_in_html_and_pdf():
    result = grams_report()
    html = impact_render.render_html(result)
    sums = column_sums(html)
    assert [s for s in sums if not s.adds_up] == []
    kg_columns = [s for s in sums if "kg" in s.column]
    assert [(s.column, s.total) for s in kg_columns] == [
        ("Weight (kg)", "0.54"),
        ("Weight (kg)", "0.10"),
        ("kg CO2e", "0.06"),
        ("Weight (kg)", "0.62"),
    ]
    assert "0.02" in kg_columns[0].rows
    text = pdf_text(impact_render.render_pdf(result))
    assert [row for row in rows_with_totals(html) if row not in text] == []
    assert "CO2e avoided (kg CO2e) 0.06" in text
    assert "Kept from landfill (kg) 0.62" in text


@pytest.mark.parametrize(
    ("values", "printed"),
    [
        ((207.0, 0.0), ["207.0", "0.0"]),
        ((0.02, 0.44, 0.46), ["0.02", "0.44", "0.46"]),
        ((1234.5, 0.001), ["1,234.500", "0.001"]),
        ((0.1 + 0.2, 0.3), ["0.3", "0.3"]),
        ((), []),
    ],
)
def test_a_kg_column_prints_with_the_places_its_values_need(values, printed):
    assert impact_render.kgs(values) == printed


def test_the_chart_has_no_style_attributes_the_pages_policy_would_drop():
    docs = [device("x", START, *delivered(START + 5 * DAY))]
    svg = impact_render.chart_svg(report(docs))
    assert "style=" not in svg
    assert 'fill="rgb(' in svg
    assert 'stroke="' in svg
