"""Asset labels as PDF: the Code 128 of the asset tag, a QR code of the device's public
verification URL (custody's `/verify/{id}`), its category, make and model in small text.

Two layouts: `roll`, one 62 x 40 mm label a page for label printers with a 62 mm continuous
roll; `sheet`, A4 sheets of 3 x 8 labels of 70 x 37 mm (the common 24-up label sheet), filled
row by row. The barcode's module width follows the label's width (a longer tag gets thinner
bars), with a quiet zone of 10 modules inside the label on each side, so neighbouring labels on
a sheet never run into each other. Code 128 carries ASCII only: a tag with other characters gets
its text and a note instead of bars (reportlab would silently drop those characters and print a
barcode of another tag).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Literal

from reportlab.graphics.barcode.code128 import Code128
from reportlab.graphics.barcode.qr import QrCode
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

Layout = Literal["roll", "sheet"]

ROLL = (62 * mm, 40 * mm)
SHEET_LABEL = (70 * mm, 37 * mm)
SHEET_COLUMNS, SHEET_ROWS = 3, 8

MARGIN = 2 * mm
BAR_HEIGHT = 10 * mm
QUIET_MODULES = 10
MAX_MODULE = 0.5 * mm
TAG_FONT, TAG_SIZE = "Helvetica-Bold", 9
SMALL_FONT, SMALL_SIZE = "Helvetica", 6.5


@dataclass(frozen=True, slots=True)
class Label:
    asset_tag: str
    url: str
    category: str
    make: str
    model: str


def verification_url(custody_url: str, device_id: object) -> str:
    return f"{custody_url.rstrip('/')}/verify/{device_id}"


def render(labels: Sequence[Label], layout: Layout) -> bytes:
    """One PDF of the labels, in order (at least one label)."""
    out = BytesIO()
    if layout == "roll":
        canvas = Canvas(out, pagesize=ROLL, pageCompression=1, invariant=True)
        for label in labels:
            _draw(canvas, label, 0, 0, *ROLL)
            canvas.showPage()
    else:
        canvas = Canvas(out, pagesize=A4, pageCompression=1, invariant=True)
        width, height = SHEET_LABEL
        top = (A4[1] + SHEET_ROWS * height) / 2
        left = (A4[0] - SHEET_COLUMNS * width) / 2
        per_page = SHEET_COLUMNS * SHEET_ROWS
        for start in range(0, len(labels), per_page):
            for n, label in enumerate(labels[start : start + per_page]):
                row, column = divmod(n, SHEET_COLUMNS)
                x, y = left + column * width, top - (row + 1) * height
                _draw(canvas, label, x, y, width, height)
            canvas.showPage()
    canvas.setTitle("Asset labels")
    canvas.setCreator("Green IT intake")
    canvas.save()
    return out.getvalue()


def encodable(asset_tag: str) -> bool:
    return asset_tag.isascii()


def _draw(canvas: Canvas, label: Label, x: float, y: float, width: float, height: float) -> None:
    bars_top = y + height - MARGIN
    if encodable(label.asset_tag):
        _barcode(canvas, label.asset_tag, x, bars_top - BAR_HEIGHT, width)
    else:
        canvas.setFont(SMALL_FONT, SMALL_SIZE)
        note = "no barcode: Code 128 carries ASCII only"
        canvas.drawCentredString(x + width / 2, bars_top - BAR_HEIGHT / 2, note)
    tag_baseline = bars_top - BAR_HEIGHT - TAG_SIZE * 1.1
    canvas.setFont(TAG_FONT, TAG_SIZE)
    canvas.drawCentredString(
        x + width / 2, tag_baseline, _fit(label.asset_tag, TAG_FONT, TAG_SIZE, width - 2 * MARGIN)
    )

    side = tag_baseline - TAG_SIZE * 0.4 - (y + MARGIN)
    _qr(canvas, label.url, x + MARGIN, y + MARGIN, side)
    text_x = x + 2 * MARGIN + side
    room = x + width - MARGIN - text_x
    lines = [label.category, label.make, label.model, "scan to verify"]
    canvas.setFont(SMALL_FONT, SMALL_SIZE)
    line_y = y + MARGIN + side - SMALL_SIZE
    for line in lines:
        canvas.drawString(text_x, line_y, _fit(line, SMALL_FONT, SMALL_SIZE, room))
        line_y -= SMALL_SIZE * 1.25


def _barcode(canvas: Canvas, value: str, x: float, y: float, width: float) -> None:
    modules, _ = Code128(value, barWidth=1, quiet=False).wrap(0, 0)
    module = min(MAX_MODULE, (width - 2 * MARGIN) / (modules + 2 * QUIET_MODULES))
    bars = Code128(value, barWidth=module, barHeight=BAR_HEIGHT, quiet=False)
    bars.drawOn(canvas, x + (width - modules * module) / 2, y)


def _qr(canvas: Canvas, url: str, x: float, y: float, side: float) -> None:
    # the flowable draws straight onto the canvas, encoding once (the widget, scaled to its
    # bounds, encodes twice and builds a shape per run of modules)
    code = QrCode(url, width=side, height=side, qrLevel="M", qrBorder=4)
    code.drawOn(canvas, x, y)


def _fit(text: str, font: str, size: float, room: float) -> str:
    if stringWidth(text, font, size) <= room:
        return text
    while text and stringWidth(text + "…", font, size) > room:
        text = text[:-1]
    return text + "…"
