"""The impact report as HTML (jinja2, inline CSS and SVG) and as PDF (reportlab platypus).

Both are drawn from one list of sections (`sections`), and the flow chart is one reportlab
Drawing rendered to SVG for HTML and drawn as is in the PDF, so the two always agree. The PDF
is built with `invariant=1` and states no time but the period's end: identical reports give
identical bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    TableStyle,
)
from reportlab.platypus import Table as PdfTable

from services.custody.impact import ImpactReport

TEMPLATES = Path(__file__).resolve().parent / "templates"

SERIES = (
    ("received", "Received", "#4a6fa5"),
    ("delivered", "Delivered", "#2e7d4f"),
    ("recycled", "Recycled", "#b5651d"),
)

CHART_WIDTH, CHART_HEIGHT = 480, 220


# ---- content ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    numeric: frozenset[int] = frozenset()
    total: tuple[str, ...] | None = None
    empty: str = "None in this period."


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    chart: bool = False


def count(n: int) -> str:
    return f"{n:,}"


def places(*values: float) -> int:
    """Decimal places that print each of `values` exactly: at least 1, at most 3.

    `impact` keeps every weight to the gram, so three places always suffice, and a table whose
    kg are all printed with its `places` has rows that add up to its total as printed.
    """
    return max([1, *(len(f"{abs(v):.3f}".split(".")[1].rstrip("0")) for v in values)])


def kg(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def kgs(values: Sequence[float]) -> list[str]:
    """One table column of kg, all with the places that print every one of them exactly."""
    decimals = places(*values)
    return [kg(v, decimals) for v in values]


def factor(value: float) -> str:
    return f"{value:g}"


def stage_name(stage: str) -> str:
    return stage.replace("_", " ")


def title_of(report: ImpactReport) -> str:
    return f"Donor impact report: {report.partner_id}"


def period_line(report: ImpactReport) -> str:
    period = report.period
    return f"Period: {period.start} to {period.end} (from 00:00 UTC on the first day, end excluded)"


def as_of_line(report: ImpactReport) -> str:
    line = (
        f"As of {report.as_of:%Y-%m-%d %H:%M} UTC, the period's end: only events that occurred "
        "before it are counted, so this report does not change when later events arrive."
    )
    if report.provisional:
        line += " This period had not ended when the report was made: figures may still grow."
    return line


def _described(name: str) -> str:
    return ImpactReport.model_fields[name].description or ""


def sections(report: ImpactReport) -> list[Section]:
    """Everything the report says, in order, for both renderers."""
    return [
        _summary(report),
        _received(report),
        _delivered(report),
        _recycled(report),
        _in_process(report),
        _co2e(report),
        _landfill(report),
        _flow(report),
        _factors(report),
    ]


def _summary(report: ImpactReport) -> Section:
    students = sum(r.students for r in report.delivered)
    classrooms = sum(r.classrooms for r in report.delivered)
    rows = [
        ("Devices received", count(report.received_total)),
        ("Devices refurbished and delivered", count(report.delivered_total)),
        ("Students reached (as reported)", count(students)),
        ("Classrooms reached (as reported)", count(classrooms)),
        ("Devices recycled", count(report.recycled_total)),
        ("Devices still in process at the period's end", count(report.in_process_total)),
        ("CO2e avoided (kg CO2e)", _co2e_kg(report)[-1]),
        ("Kept from landfill (kg)", _landfill_kg(report)[-1]),
    ]
    return Section(
        "In short",
        tables=[Table(("Figure", "Value"), rows, numeric=frozenset({1}))],
    )


def _received(report: ImpactReport) -> Section:
    *weights, total_kg = kgs(
        [
            *(c.weight_kg for c in report.received),
            round(math.fsum(c.weight_kg for c in report.received), 3),
        ]
    )
    rows = [
        (c.category.value, count(c.devices), w)
        for c, w in zip(report.received, weights, strict=True)
    ]
    models = [(m.category.value, m.make, m.model, count(m.devices)) for m in report.models]
    if report.other_models_devices:
        models.append(("", "other models", "", count(report.other_models_devices)))
    total = ("total", count(report.received_total), total_kg)
    return Section(
        "Devices received, by category",
        [_described("received")],
        [
            Table(
                ("Category", "Devices", "Weight (kg)"),
                rows,
                numeric=frozenset({1, 2}),
                total=total if rows else None,
            ),
            Table(("Category", "Make", "Model", "Devices"), models, numeric=frozenset({3})),
        ],
    )


def _delivered(report: ImpactReport) -> Section:
    rows = [
        (
            r.name,
            count(r.devices),
            count(r.devices_with_usage_report),
            count(r.students),
            count(r.classrooms),
        )
        for r in report.delivered
    ]
    total = (
        "total",
        count(report.delivered_total),
        count(sum(r.devices_with_usage_report for r in report.delivered)),
        count(sum(r.students for r in report.delivered)),
        count(sum(r.classrooms for r in report.delivered)),
    )
    return Section(
        "Refurbished and delivered to schools and NGOs",
        [_described("delivered")],
        [
            Table(
                ("School or NGO", "Devices", "With usage report", "Students", "Classrooms"),
                rows,
                numeric=frozenset({1, 2, 3, 4}),
                total=total if rows else None,
            )
        ],
    )


def _recycled(report: ImpactReport) -> Section:
    fraction_kg = [f.kg for f in report.recycled_fractions]
    *weights, total_kg = kgs([*fraction_kg, round(math.fsum(fraction_kg), 3)])
    fractions = [
        (f.fraction.replace("_", " "), w)
        for f, w in zip(report.recycled_fractions, weights, strict=True)
    ]
    recyclers = [
        (r.recycler, r.certification, count(r.devices), w)
        for r, w in zip(report.recyclers, kgs([r.kg for r in report.recyclers]), strict=True)
    ]
    return Section(
        "Recycled: material weights and downstream recyclers",
        [_described("recycled_fractions"), _described("recyclers")],
        [
            Table(
                ("Material fraction", "Weight (kg)"),
                fractions,
                numeric=frozenset({1}),
                total=("total", total_kg) if fractions else None,
            ),
            Table(
                ("Recycler", "Certification", "Devices", "Weight (kg)"),
                recyclers,
                numeric=frozenset({2, 3}),
            ),
        ],
    )


def _in_process(report: ImpactReport) -> Section:
    stages = [(stage_name(s.stage), count(s.devices)) for s in report.in_process]
    outcomes = [(stage_name(s.stage), count(s.devices)) for s in report.outcomes]
    return Section(
        "Still in process at the period's end, by stage",
        [_described("in_process"), _described("outcomes")],
        [
            Table(
                ("Stage", "Devices"),
                stages,
                numeric=frozenset({1}),
                total=("total", count(report.in_process_total)) if stages else None,
                empty="None: every device received had reached an outcome.",
            ),
            Table(("Outcome", "Devices"), outcomes, numeric=frozenset({1}), empty="None yet."),
        ],
    )


def _co2e_kg(report: ImpactReport) -> list[str]:
    """Each line's kg CO2e, then the total, as printed."""
    return kgs([*(line.kg_co2e for line in report.co2e.lines), report.co2e.total_kg])


def _landfill_kg(report: ImpactReport) -> list[str]:
    """Reused devices' kg, recycled materials' kg, then the total, as printed."""
    landfill = report.landfill
    return kgs([landfill.reused_devices_kg, landfill.recycled_materials_kg, landfill.total_kg])


def _co2e(report: ImpactReport) -> Section:
    *line_kg, total_kg = _co2e_kg(report)
    rows = [
        (
            line.category.value,
            count(line.reused_devices),
            "none" if line.factor_kg_co2e is None else factor(line.factor_kg_co2e),
            line.unit,
            line.source,
            printed,
        )
        for line, printed in zip(report.co2e.lines, line_kg, strict=True)
    ]
    return Section(
        "CO2e avoided by reuse",
        [_described("co2e"), report.published_range],
        [
            Table(
                ("Category", "Reused", "Factor", "Unit", "Source", "kg CO2e"),
                rows,
                numeric=frozenset({1, 2, 5}),
                total=("total", "", "", "", "", total_kg) if rows else None,
            )
        ],
    )


def _landfill(report: ImpactReport) -> Section:
    method = report.factors.landfill
    reused_kg, materials_kg, total_kg = _landfill_kg(report)
    rows = [
        (
            "Devices reused (weight scanned at intake)",
            reused_kg if method.count_reused_devices else "not counted",
        ),
        (
            "Materials recycled (certified fraction weights)",
            materials_kg if method.count_recycled_materials else "not counted",
        ),
    ]
    return Section(
        "Kept from landfill",
        [
            _described("landfill"),
            f"Source: {report.landfill.source}. Unit: {report.landfill.unit}.",
        ],
        [
            Table(
                ("Counted", f"Weight ({report.landfill.unit})"),
                rows,
                numeric=frozenset({1}),
                total=("total", total_kg),
            )
        ],
    )


def _flow(report: ImpactReport) -> Section:
    rows = [
        (f"{b.start} to {b.end}", count(b.received), count(b.delivered), count(b.recycled))
        for b in report.flow
    ]
    return Section(
        f"Flow over time, by {report.bucket}",
        [_described("bucket"), _described("flow")],
        [
            Table(
                (report.bucket.capitalize(), "Received", "Delivered", "Recycled"),
                rows,
                numeric=frozenset({1, 2, 3}),
            )
        ],
        chart=True,
    )


def _factors(report: ImpactReport) -> Section:
    factors = report.factors
    rows = [
        (category.value, factor(f.kg_co2e), f.unit, f.source, f.note or "")
        for category, f in sorted(factors.co2e.items())
    ]
    method = factors.landfill
    counted = [
        what
        for what, on in (
            ("the weight of each reused device", method.count_reused_devices),
            (
                "the certified material weights of each recycled device",
                method.count_recycled_materials,
            ),
        )
        if on
    ]
    return Section(
        "Factors used",
        [
            f"Factor set: {factors.name}. Categories not listed have no factor configured and "
            "count 0 kg CO2e.",
            report.published_range,
            f"Kept from landfill counts {' and '.join(counted) or 'nothing'}; "
            f"source: {method.source}; unit: {method.unit}.",
        ],
        [
            Table(
                ("Category", "kg CO2e", "Unit", "Source", "Note"),
                rows,
                numeric=frozenset({1}),
                empty="No CO2e factor configured: CO2e avoided counts 0.",
            )
        ],
    )


# ---- the chart --------------------------------------------------------------------------------


def flow_chart(report: ImpactReport) -> Drawing:
    """Devices received, delivered and recycled per week or month, as grouped bars."""
    drawing = Drawing(CHART_WIDTH, CHART_HEIGHT)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 40, 45, CHART_WIDTH - 55, CHART_HEIGHT - 80
    chart.data = [[getattr(b, name) for b in report.flow] for name, _, _ in SERIES]
    chart.categoryAxis.categoryNames = _axis_labels(report)
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 30
    chart.categoryAxis.labels.boxAnchor = "ne"
    chart.valueAxis.valueMin = 0
    peak = max(1, *(max(b.received, b.delivered, b.recycled) for b in report.flow))
    step = _nice_step(peak / 5)
    chart.valueAxis.valueMax = math.ceil(peak / step) * step
    chart.valueAxis.valueStep = step
    chart.valueAxis.labels.fontSize = 7
    chart.valueAxis.labelTextFormat = "{:,.0f}".format
    chart.groupSpacing = 2 if len(report.flow) < 30 else 1
    chart.barSpacing = 0
    for i, (_, _, colour) in enumerate(SERIES):
        chart.bars[i].fillColor = colors.HexColor(colour)
        chart.bars[i].strokeColor = None
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = 45, CHART_HEIGHT - 12
    legend.alignment = "right"
    legend.columnMaximum = 1
    legend.fontSize = 8
    legend.fontName = "Helvetica"
    legend.colorNamePairs = [(colors.HexColor(c), label) for _, label, c in SERIES]
    legend.deltax = 80
    drawing.add(legend)
    drawing.add(
        String(
            CHART_WIDTH - 5,
            CHART_HEIGHT - 14,
            f"devices per {report.bucket}",
            fontName="Helvetica",
            fontSize=8,
            textAnchor="end",
        )
    )
    return drawing


def _nice_step(rough: float) -> int:
    """The smallest of 1, 2 or 5 times a power of ten that is at least `rough` (and 1)."""
    power: int = 10 ** max(0, math.floor(math.log10(max(rough, 1))))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def _axis_labels(report: ImpactReport) -> list[str]:
    every = max(1, math.ceil(len(report.flow) / 12))
    fmt = "%Y-%m" if report.bucket == "month" else "%m-%d"
    return [b.start.strftime(fmt) if i % every == 0 else "" for i, b in enumerate(report.flow)]


_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


def _presentation_attributes(match: re.Match[str]) -> str:
    declarations = (d.partition(":") for d in match.group(1).split(";"))
    return "".join(
        f' {name.strip()}="{escape(value.strip(), {chr(34): "&quot;"})}"'
        for name, _, value in declarations
        if name.strip()
    )


def chart_svg(report: ImpactReport) -> str:
    """The chart with SVG presentation attributes instead of `style="..."`, which the pages'
    Content-Security-Policy (no inline style attributes) would drop."""
    svg = renderSVG.drawToString(flow_chart(report))
    return _STYLE_ATTRIBUTE.sub(_presentation_attributes, svg[svg.index("<svg") :])


# ---- HTML -------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: ImpactReport, nonce: str = "") -> str:
    """`nonce`: the request's Content-Security-Policy nonce, for the page's inline style."""
    template = _environment().get_template("impact.html")
    return template.render(
        nonce=nonce,
        title=title_of(report),
        period=period_line(report),
        as_of=as_of_line(report),
        sections=sections(report),
        chart=Markup(chart_svg(report)),  # reportlab escapes every text it draws
    )


# ---- PDF --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Styles:
    title: ParagraphStyle
    heading: ParagraphStyle
    body: ParagraphStyle
    small: ParagraphStyle
    cell: ParagraphStyle
    head: ParagraphStyle


@cache
def _styles() -> _Styles:
    sample = getSampleStyleSheet()
    body = ParagraphStyle("Body", parent=sample["BodyText"])
    cell = ParagraphStyle("Cell", parent=body, fontSize=8, leading=10)
    return _Styles(
        title=ParagraphStyle("Title", parent=sample["Title"]),
        heading=ParagraphStyle("Heading", parent=sample["Heading2"]),
        body=body,
        small=ParagraphStyle("Small", parent=body, fontSize=8.5, leading=11),
        cell=cell,
        head=ParagraphStyle("Head", parent=cell, fontName="Helvetica-Bold"),
    )


def _pdf_table(table: Table, width: float) -> Flowable:
    styles = _styles()
    if not table.rows:
        return Paragraph(escape(table.empty), styles.small)

    def cell(text: str, column: int, style: ParagraphStyle) -> Paragraph:
        aligned = ParagraphStyle("c", parent=style, alignment=2 if column in table.numeric else 0)
        return Paragraph(escape(text), aligned)

    data = [[cell(t, i, styles.head) for i, t in enumerate(table.header)]]
    data += [[cell(t, i, styles.cell) for i, t in enumerate(row)] for row in table.rows]
    if table.total is not None:
        data.append([cell(t, i, styles.head) for i, t in enumerate(table.total)])
    pdf = PdfTable(data, colWidths=_column_widths(table, width), repeatRows=1)
    style: list[Any] = [
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#555555")),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#cccccc")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2ee")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    if table.total is not None:
        style.append(("LINEABOVE", (0, -1), (-1, -1), 0.6, colors.HexColor("#555555")))
    pdf.setStyle(TableStyle(style))
    return pdf


def _column_widths(table: Table, width: float) -> list[float]:
    """Numeric columns narrow, text columns share the rest."""
    columns = len(table.header)
    numeric = len(table.numeric)
    narrow = min(28 * mm, width / columns)
    text_width = (width - narrow * numeric) / max(1, columns - numeric)
    return [narrow if i in table.numeric else text_width for i in range(columns)]


def render_pdf(report: ImpactReport) -> bytes:
    buffer = BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=title_of(report),
        author="Green IT Lifecycle",
        subject=f"{report.period.start} to {report.period.end}",
        creator="Green IT Lifecycle custody service",
        invariant=1,
    )
    styles = _styles()
    story: list[Flowable] = [
        Paragraph(escape(title_of(report)), styles.title),
        Paragraph(escape(period_line(report)), styles.body),
        Paragraph(escape(as_of_line(report)), styles.small),
    ]
    for section in sections(report):
        story += _pdf_section(section, report, document.width)
    footer = f"{title_of(report)} | {report.period.start} to {report.period.end}"

    def on_page(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(doc.leftMargin, 10 * mm, footer)
        canvas.drawRightString(A4[0] - doc.rightMargin, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


def _pdf_section(section: Section, report: ImpactReport, width: float) -> list[Flowable]:
    styles = _styles()
    heading: list[Flowable] = [Spacer(1, 4 * mm), Paragraph(escape(section.title), styles.heading)]
    heading += [Paragraph(escape(p), styles.small) for p in section.paragraphs]
    if section.chart:
        heading.append(flow_chart(report))
    body: list[Flowable] = []
    for table in section.tables:
        body += [Spacer(1, 2 * mm), _pdf_table(table, width)]
    return [KeepTogether(heading + body[:2]), *body[2:]]
