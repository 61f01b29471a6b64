"""Certificates rendered as PDF: the same input always gives the same bytes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.custody.certificates import (
    DonorCertificate,
    ErasureCertificate,
    Evidence,
    RecyclingCertificate,
)
from shared.events import ErasureRecord, SanitizationMethod

_styles = getSampleStyleSheet()
_body = _styles["BodyText"]
_small = ParagraphStyle("small", parent=_body, fontSize=8, leading=10)
_mono = ParagraphStyle("mono", parent=_body, fontName="Courier", fontSize=7, leading=9)
_grid = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
    ]
)


def verification_url(public_url: str, device_id: object) -> str:
    return f"{public_url.rstrip('/')}/verify/{device_id}"


def render(certificate: DonorCertificate, public_url: str) -> bytes:
    url = verification_url(public_url, certificate.device.device_id)
    if isinstance(certificate, ErasureCertificate):
        title, body = "DonorCertificate of Data Sanitization", _erasure(certificate)
    else:
        title, body = "DonorCertificate of Recycling", _recycling(certificate)
    out = BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        invariant=1,
        title=f"{title} {certificate.certificate_id}",
        author="Green IT Lifecycle",
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
    )
    story: list[Flowable] = [
        Paragraph(escape(title), _styles["Title"]),
        Paragraph(f"DonorCertificate {certificate.certificate_id}", _styles["Heading4"]),
        *body,
        *_evidence(certificate.evidence, url),
    ]
    doc.build(story)
    return out.getvalue()


def _text(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _table(rows: Iterable[tuple[str, Any]], widths: tuple[float, float] = (45, 129)) -> Table:
    cells = [
        [Paragraph(escape(label), _small), Paragraph(escape(_text(value)), _small)]
        for label, value in rows
    ]
    table = Table(cells, colWidths=[w * mm for w in widths])
    table.setStyle(_grid)
    return table


def _device(certificate: DonorCertificate) -> list[Flowable]:
    d = certificate.device
    return [
        Paragraph("Device", _styles["Heading3"]),
        _table(
            [
                ("Category", d.category.value),
                ("Manufacturer", d.make),
                ("Model", d.model),
                ("Serial number", d.serial_number or "not readable"),
                ("Asset tag", d.asset_tag),
                ("Device id", d.device_id),
            ]
        ),
    ]


def _source(record: ErasureRecord) -> list[tuple[str, object]]:
    """Whose word the record is: the workbench's own log, or a person's typed record."""
    w = record.workbench
    if w is None:
        return [("Evidence", "typed record: entered by a person, no machine evidence attached")]
    return [
        (
            "Evidence",
            f"recorded by the workbench on the machine ({record.tool} {record.tool_version})",
        ),
        ("Erasure log SHA-256", w.log_sha256),
        ("Started / ended", f"{w.started_at} / {w.ended_at}"),
        ("Bytes written, passes", f"{w.bytes_written:,} bytes, {w.passes} pass(es)"),
        (
            "Read back",
            f"{w.bytes_verified:,} bytes ({w.verification_sample_rate:.0%} of the drive), "
            f"{w.unreadable_sectors} unreadable sectors",
        ),
    ]


def _drive(record: ErasureRecord) -> Table:
    return _table(
        [
            ("Drive serial", record.drive_serial),
            ("Method (NIST SP 800-88)", record.method.value.capitalize()),
            ("Technique", record.technique),
            ("Tool and version", f"{record.tool} {record.tool_version}"),
            ("Verification", record.verification),
            ("Verified", "yes" if record.verified else "NO"),
            ("Operator", record.operator),
            ("Date", record.performed_at),
            ("Place", record.location),
            *_source(record),
        ]
    )


def _drives(title: str, records: list[ErasureRecord], none: str) -> list[Flowable]:
    flow: list[Flowable] = [Paragraph(escape(title), _styles["Heading3"])]
    if not records:
        return [*flow, Paragraph(escape(none), _body)]
    for record in records:
        flow += [_drive(record), Spacer(1, 3 * mm)]
    return flow


def _erasure(c: ErasureCertificate) -> list[Flowable]:
    return [
        Paragraph(
            "Media sanitization per NIST SP 800-88 Rev. 1: each storage drive of the device below "
            "was cleared or purged and the result verified.",
            _body,
        ),
        *_device(c),
        *_drives("Drives", c.erasures, "The device had no storage drive."),
        _table([("Issued", c.issued_at), ("Issued by", f"Green IT Lifecycle {c.issued_by}")]),
    ]


def _recycling(c: RecyclingCertificate) -> list[Flowable]:
    fractions = [
        (name.removesuffix("_kg").replace("_", " ").capitalize(), f"{kg:.3f} kg")
        for name, kg in c.fractions.model_dump().items()
        if kg
    ]
    return [
        Paragraph(
            "The device below was dismantled and its materials handed to a certified recycler.",
            _body,
        ),
        *_device(c),
        Paragraph("Material fractions", _styles["Heading3"]),
        _table([*fractions, ("Total", f"{c.fractions.total_kg:.3f} kg")]),
        Paragraph("Dismantling and downstream recycler", _styles["Heading3"]),
        _table(
            [
                ("Hazardous parts removed", ", ".join(c.hazardous_parts) or "none"),
                ("Dismantled by", c.dismantled_by),
                ("Dismantled at", c.dismantled_at),
                ("Recycler", c.recycler.name),
                ("Recycler certification", c.recycler.certification),
                ("Lot", c.lot_id),
                ("Bill of lading", c.bill_of_lading or "not recorded"),
                ("Issued", c.issued_at),
                ("Issued by", f"Green IT Lifecycle {c.issued_by}"),
            ]
        ),
        *_every_drive(c),
        *_drives(
            "Storage destroyed at dismantling",
            c.storage_destroyed,
            "No drive was destroyed at dismantling (see the erasure certificate).",
        ),
    ]


def _every_drive(c: RecyclingCertificate) -> list[Flowable]:
    flow: list[Flowable] = [Paragraph("Drives of the device", _styles["Heading3"])]
    if c.drive_serials is None:
        return [*flow, Paragraph("Not stated at dismantling: see the drives destroyed.", _body)]
    if not c.drive_serials:
        return [*flow, Paragraph("The device had no storage drive.", _body)]
    destroyed = {
        r.drive_serial
        for r in c.storage_destroyed
        if r.method is SanitizationMethod.DESTROY and r.verified
    }
    certificate = c.erasure_certificate_id or "not stated"
    erased = f"sanitized before release, erasure certificate {certificate}"
    return [
        *flow,
        _table(
            [
                (serial, "destroyed at dismantling" if serial in destroyed else erased)
                for serial in c.drive_serials
            ]
        ),
    ]


def _qr(url: str, size: float = 32 * mm) -> Drawing:
    widget = QrCodeWidget(url, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing


def _evidence(evidence: Evidence, url: str) -> list[Flowable]:
    cited = [
        [
            Paragraph(escape(c.event_type), _small),
            Paragraph(f"{c.event_id}<br/>{c.digest}", _mono),
        ]
        for c in evidence.cited
    ]
    events = Table(cited, colWidths=[40 * mm, 134 * mm])
    events.setStyle(_grid)
    how = (
        "Each event's digest is the SHA-256 of its canonical JSON (keys sorted, no spaces, UTF-8); "
        "the evidence digest is the SHA-256 of the lines '&lt;event id&gt; &lt;digest&gt;', one "
        "per event in the order above, each ending in a newline. Scan the code or open the address "
        "to check this certificate against the device's history."
    )
    verify = Table(
        [[_qr(url), [Paragraph(escape(url), _small), Spacer(1, 2 * mm), Paragraph(how, _small)]]],
        colWidths=[36 * mm, 138 * mm],
    )
    verify.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return [
        Paragraph("Evidence", _styles["Heading3"]),
        Paragraph("Built from these events of the device's history:", _small),
        events,
        Spacer(1, 2 * mm),
        Paragraph(
            f"Evidence digest (SHA-256): <font name='Courier'>{evidence.digest}</font>", _small
        ),
        Spacer(1, 3 * mm),
        verify,
    ]
