"""Asset labels, read back from the rendered PDF as a scanner would (tests/barcodes.py)."""

from uuid import uuid4

import pytest

from services.intake.labels import SHEET_LABEL, Label, render, verification_url
from tests.barcodes import needs_decoders, page_sizes_mm, symbols

pytestmark = needs_decoders

CUSTODY = "https://verify.greenit.example"
CELL_W, CELL_H = (v * 25.4 / 72 for v in SHEET_LABEL)  # mm
SHEET_TOP = (297 - 8 * CELL_H) / 2


def label(tag: str, **fields: str) -> Label:
    return Label(
        asset_tag=tag,
        url=verification_url(CUSTODY, uuid4()),
        category=fields.get("category", "laptop"),
        make=fields.get("make", "Lenovo"),
        model=fields.get("model", "ThinkPad T480"),
    )


def read_as(one: Label) -> list[str]:
    return sorted([f"CODE-128:{one.asset_tag}", f"QR-Code:{one.url}"])


def cell(row: int, column: int) -> tuple[float, float, float, float]:
    return (column * CELL_W, SHEET_TOP + row * CELL_H, CELL_W, CELL_H)


def test_a_roll_prints_one_62_mm_label_a_page_each_reading_back_as_its_tag_and_url():
    labels = [label("GIT-00000001"), label("GIT-00012345"), label("ACME-0003")]

    pdf = render(labels, "roll")

    sizes = page_sizes_mm(pdf)
    assert len(sizes) == 3
    assert sizes == [(pytest.approx(62, abs=0.1), pytest.approx(40, abs=0.1))] * 3
    for page, one in enumerate(labels, start=1):
        assert symbols(pdf, page) == read_as(one)


def test_every_label_of_an_a4_sheet_of_3_by_8_reads_back_in_its_own_place():
    # each label's area on its own, as a scanner sees it (zbarimg on a whole page of 24 QR codes
    # misses one now and then; on each label's area it reads every one)
    labels = [label(f"GIT-{n:08d}") for n in range(1, 27)]

    pdf = render(labels, "sheet")

    sizes = page_sizes_mm(pdf)
    assert len(sizes) == 2
    assert sizes[0] == (pytest.approx(210, abs=0.1), pytest.approx(297, abs=0.1))
    for n, one in enumerate(labels[:24]):
        assert symbols(pdf, 1, cell(*divmod(n, 3))) == read_as(one), f"label {n + 1}"
    assert symbols(pdf, 2, cell(0, 0)) == read_as(labels[24])
    assert symbols(pdf, 2, cell(0, 1)) == read_as(labels[25])
    assert symbols(pdf, 2, cell(0, 2)) == [], "the rest of the last sheet stays blank"


@pytest.mark.parametrize("layout", ["roll", "sheet"])
def test_a_long_tag_of_the_donor_still_reads_back(layout):
    one = label("ACME/BXL-2019-LAPTOP-000123")

    assert symbols(render([one], layout)) == read_as(one)


def test_a_tag_code_128_cannot_carry_gets_no_barcode_rather_than_another_tag():
    one = label("ÉCOLE-0001")

    assert symbols(render([one], "roll")) == [f"QR-Code:{one.url}"]


def test_long_and_non_latin_names_are_cut_to_the_label_and_never_break_the_rendering():
    one = label("GIT-00000009", make="联想 Lenovo" * 10, model="ThinkPad " * 30, category="other")

    assert symbols(render([one], "sheet")) == read_as(one)


def test_the_same_labels_render_to_the_same_bytes():
    labels = [label("GIT-00000001")]

    assert render(labels, "roll") == render(labels, "roll")
