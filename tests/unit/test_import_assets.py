"""The asset-list import without infrastructure: reading the CSV, checking rows, planning writes."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from pydantic import ValidationError

from services.intake import manifest
from services.intake.domain import KnownDevice, Pickup, PickupStatus
from services.intake.manifest import Known, ManifestRow, ManifestUpload, RowError, UploadRow
from shared.domain import IllegalTransition
from shared.events import Address, Contact, DeviceCategory, TimeWindow
from tools import import_assets
from tools.import_assets import (
    FileRefused,
    LineError,
    Totals,
    chunks,
    column_name,
    parse_csv,
)

T0 = datetime(2030, 3, 2, 9, 0, tzinfo=UTC)
PICKUP_ID = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
OTHER_PICKUP = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a02")
DEVICE_ID = UUID("0b8f3e52-52b7-4a47-8a44-3bbf2c1d7e02")
HEADER = "asset_tag,serial_number,category,make,model,weight_kg\n"


def pickup(status: PickupStatus = PickupStatus.SCHEDULED) -> Pickup:
    return Pickup(
        pickup_id=PICKUP_ID,
        partner_id="acme",
        status=status,
        address=Address(
            street="Rue de la Loi 42", postal_code="1040", city="Brussels", country="BE"
        ),
        contact=Contact(name="Jo Peeters", email="it@acme.example"),
        window=TimeWindow(start=T0, end=T0 + timedelta(days=2)),
        expected={DeviceCategory.LAPTOP: 3},
        notes=None,
        created_at=T0,
    )


def upload(row: int = 2, **cells: Any) -> UploadRow:
    base = {"category": "laptop", "make": "HP", "model": "EliteBook 840 G5", "weight_kg": "1.5"}
    return UploadRow.model_validate({"row": row, **base, **cells})


def laptop(row: int = 2, **fields: Any) -> ManifestRow:
    base: dict[str, Any] = {
        "category": DeviceCategory.LAPTOP,
        "make": "HP",
        "model": "EliteBook 840 G5",
        "weight_kg": 1.5,
        "asset_tag": "ACME-0001",
        "serial_number": "5CG8123XYZ",
    }
    return ManifestRow(row=row, **(base | fields))


NOTHING_KNOWN = Known(stored={}, serial_holders={}, devices_by_tag={}, devices_by_serial={})


def plan(
    *rows: ManifestRow, known: Known = NOTHING_KNOWN, shown_to: str | None = None
) -> list[manifest.Write | RowError]:
    return manifest.plan_import(pickup(), rows, known, now=T0, by="staff-lena", shown_to=shown_to)


def stored(row: ManifestRow, **extra: Any) -> dict[str, Any]:
    doc = {"_id": manifest.row_id(PICKUP_ID, row), **manifest.row_fields(pickup(), row)}
    return doc | {"imported_at": T0} | extra


# ---- reading the CSV --------------------------------------------------------------------------


def test_header_names_ignore_case_spaces_and_hyphens():
    assert column_name("  Serial Number ") == "serial_number"
    assert column_name("Asset-Tag") == "asset_tag"
    assert column_name("WEIGHT_KG") == "weight_kg"


def test_rows_carry_their_line_number_and_leave_blank_cells_out():
    text = "\ufeff Asset Tag , Serial Number ,Category, Make ,Model,Weight_kg\n"
    text += "ACME-1, ,laptop, HP ,EliteBook,1.5\n\n,SN-2,monitor,Dell,P2419H,4.2\n"
    parsed = parse_csv(text)
    assert parsed.errors == []
    assert parsed.rows == [
        {
            "row": 2,
            "asset_tag": "ACME-1",
            "category": "laptop",
            "make": "HP",
            "model": "EliteBook",
            "weight_kg": "1.5",
        },
        {
            "row": 4,
            "serial_number": "SN-2",
            "category": "monitor",
            "make": "Dell",
            "model": "P2419H",
            "weight_kg": "4.2",
        },
    ]


def test_a_quoted_cell_over_two_lines_keeps_later_line_numbers_right():
    text = HEADER + 'A1,,laptop,HP,"EliteBook\n840",1.5\nA2,,laptop,HP,T480,1.6\n'
    rows = parse_csv(text).rows
    assert [r["row"] for r in rows] == [2, 4]
    assert rows[0]["model"] == "EliteBook\n840"


def test_semicolons_and_decimal_commas_as_spreadsheets_write_them_in_europe():
    text = "asset_tag;category;make;model;weight_kg\nA1;laptop;HP;T480;1,5\n"
    assert parse_csv(text).rows[0]["weight_kg"] == "1.5"


def test_tab_separated_files_are_read():
    text = "asset_tag\tcategory\tmake\tmodel\tweight_kg\nA1\tlaptop\tHP\tT480\t1.5\n"
    assert parse_csv(text).rows[0]["model"] == "T480"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("asset_tag,category,make,model,weight_kg,colour\n", "unknown column(s) colour"),
        ("asset_tag,category,make,model\n", "missing column(s) weight_kg"),
        ("category,make,model,weight_kg\n", "missing column(s) asset_tag or serial_number"),
        ("asset_tag,Asset Tag,category,make,model,weight_kg\n", "asset_tag appear more than once"),
        ("asset_tag,,category,make,model,weight_kg\n", "column(s) 2 have no name"),
    ],
)
def test_a_header_that_cannot_be_read_refuses_the_file_with_the_reason(header, message):
    with pytest.raises(FileRefused, match=re.escape(message)):
        parse_csv(header + "A1,laptop,HP,T480,1.5\n")


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\nA1,laptop\n", " , ,\n"])
def test_a_file_without_a_header_is_refused(text):
    with pytest.raises(FileRefused, match="the file is empty"):
        parse_csv(text)


def test_the_unknown_column_error_lists_the_known_ones():
    with pytest.raises(FileRefused) as refused:
        parse_csv("tag,category,make,model,weight_kg\n")
    assert "the columns are asset_tag, serial_number, category, make, model, weight_kg" in str(
        refused.value
    )


def test_a_row_with_more_cells_than_the_header_is_refused_but_trailing_empties_are_not():
    text = HEADER + "A1,S1,laptop,HP,T480,1.5,,\nA2,S2,laptop,HP,T480,1.5,extra\n"
    parsed = parse_csv(text)
    assert [r["row"] for r in parsed.rows] == [2]
    assert parsed.errors == [LineError(3, None, "7 cells, but the header names 6")]


def test_a_device_listed_twice_in_the_file_is_refused_on_its_later_line():
    text = HEADER + (
        "A1,S1,laptop,HP,T480,1.5\n"
        "A2,S2,laptop,HP,T480,1.5\n"
        "A1,S3,laptop,HP,T480,1.5\n"
        "A4,S2,laptop,hp ,T480,1.5\n"
    )
    parsed = parse_csv(text)
    assert [r["row"] for r in parsed.rows] == [2, 3]
    assert parsed.errors == [
        LineError(4, "asset_tag", "A1 is also on line 2"),
        LineError(5, "serial_number", "hp serial S2 is also on line 3"),
    ]


def test_rows_go_in_chunks_of_the_given_size():
    assert [len(c) for c in chunks(list(range(1200)), 500)] == [500, 500, 200]


def test_totals_add_up_each_answer_and_sort_errors_by_line():
    totals = Totals(errors=[LineError(9, None, "local")])
    totals.add({"created": 2, "updated": 1, "unchanged": 0, "errors": []})
    totals.add(
        {
            "created": 0,
            "updated": 0,
            "unchanged": 4,
            "errors": [{"row": 3, "field": "make", "reason": "x"}],
        }
    )
    assert totals.summary() == "created 2, updated 1, unchanged 4, errors 2"
    assert str(LineError(3, "make", "x")) == "line 3: make: x"


# ---- checking a row as a scan would -----------------------------------------------------------


def test_a_valid_row_becomes_what_the_scan_would_register():
    row = manifest.validate_row(upload(asset_tag=" ACME-1 ", serial_number="SN-1"))
    assert row == ManifestRow(
        row=2,
        category=DeviceCategory.LAPTOP,
        make="HP",
        model="EliteBook 840 G5",
        weight_kg=1.5,
        asset_tag="ACME-1",
        serial_number="SN-1",
    )


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        ({"weight_kg": "-1"}, "weight_kg", "greater than 0 (got '-1')"),
        ({"weight_kg": "heavy"}, "weight_kg", "valid number"),
        ({"weight_kg": "501"}, "weight_kg", "less than or equal to 500"),
        ({"category": "toaster"}, "category", "'laptop'"),
        ({"make": "  "}, "make", "at least 1 character"),
        ({"asset_tag": "T" * 65}, "asset_tag", "at most 64 characters"),
        ({"colour": "grey"}, "colour", "unknown field"),
        ({"location": "Brussels"}, "location", "given at the scan station"),
        ({"weight_kg": True}, "weight_kg", "not true or false"),
        ({"make": False}, "make", "not true or false"),
    ],
)
def test_a_row_that_would_not_scan_is_refused_naming_the_field(cells, field, reason):
    errors = manifest.validate_row(upload(row=7, **({"asset_tag": "ACME-1"} | cells)))
    assert isinstance(errors, list)
    assert [(e.row, e.field) for e in errors] == [(7, field)]
    assert reason in errors[0].reason


def test_a_row_missing_a_required_field_is_refused():
    errors = manifest.validate_row(UploadRow.model_validate({"row": 3, "asset_tag": "A"}))
    assert isinstance(errors, list)
    assert {e.field for e in errors} == {"category", "make", "model", "weight_kg"}


def test_a_row_without_asset_tag_or_serial_is_refused():
    errors = manifest.validate_row(upload())
    assert isinstance(errors, list)
    assert errors[0].field == "asset_tag"
    assert "asset tag or a serial number" in errors[0].reason


def test_a_repeated_device_within_one_call_is_refused_on_the_later_row():
    rows, errors = manifest.validate_upload(
        [
            upload(2, asset_tag="A1", serial_number="S1"),
            upload(3, asset_tag="A1", serial_number="S9"),
            upload(4, serial_number="S1", make="hp"),
            upload(5, asset_tag="A5"),
        ]
    )
    assert [r.row for r in rows] == [2, 5]
    assert [(e.row, e.field) for e in errors] == [(3, "asset_tag"), (4, "serial_number")]
    assert "also on row 2" in errors[0].reason


def test_an_upload_is_malformed_with_a_repeated_row_number_or_too_many_rows():
    with pytest.raises(ValidationError, match="row 2 appears twice"):
        ManifestUpload.model_validate({"rows": [{"row": 2}, {"row": 2}]})
    with pytest.raises(ValidationError):
        ManifestUpload.model_validate({"rows": [{"row": n} for n in range(1, 1002)]})
    with pytest.raises(ValidationError):
        ManifestUpload.model_validate({"rows": [{"row": 0}]})
    with pytest.raises(ValidationError):
        ManifestUpload.model_validate({"rows": []})


# ---- identity and what an import changes ------------------------------------------------------


def test_a_rows_id_depends_on_its_pickup_and_tag_else_its_make_and_serial():
    tagged = laptop()
    assert manifest.row_id(PICKUP_ID, tagged) == manifest.row_id(PICKUP_ID, laptop(row=9))
    assert manifest.row_id(PICKUP_ID, tagged) != manifest.row_id(OTHER_PICKUP, tagged)
    assert manifest.row_id(PICKUP_ID, tagged) == manifest.tag_row_id(PICKUP_ID, "ACME-0001")
    untagged = laptop(asset_tag=None)
    assert manifest.row_id(PICKUP_ID, untagged) == manifest.row_id(
        PICKUP_ID, laptop(asset_tag=None, make=" hp")
    )
    assert manifest.row_id(PICKUP_ID, untagged) != manifest.row_id(PICKUP_ID, tagged)


def test_new_rows_are_created_and_stamped():
    [decision] = plan(laptop())
    assert isinstance(decision, manifest.Write)
    assert decision.outcome == "created"
    assert decision.fields["imported_at"] == T0
    assert decision.fields["serial_fold"] == "5cg8123xyz"
    assert manifest.writes_of([decision]) == [decision]


def test_a_row_stored_as_sent_is_unchanged_and_not_written():
    row = laptop()
    known = replace(NOTHING_KNOWN, stored={manifest.row_id(PICKUP_ID, row): stored(row)})
    decisions = plan(row, known=known)
    assert [d.outcome for d in decisions if isinstance(d, manifest.Write)] == ["unchanged"]
    assert manifest.writes_of(decisions) == []


def test_a_row_whose_values_changed_is_updated():
    row = laptop()
    known = replace(
        NOTHING_KNOWN, stored={manifest.row_id(PICKUP_ID, row): stored(replace(row, model="T480"))}
    )
    [decision] = plan(row, known=known)
    assert isinstance(decision, manifest.Write)
    assert decision.outcome == "updated"


def test_a_scanned_row_may_move_line_but_its_device_cannot_change():
    row = laptop(row=5)
    scanned = stored(laptop(row=2), device_id=str(DEVICE_ID))
    known = replace(NOTHING_KNOWN, stored={manifest.row_id(PICKUP_ID, row): scanned})
    [moved] = plan(row, known=known)
    assert isinstance(moved, manifest.Write)
    assert moved.outcome == "updated"
    [changed] = plan(replace(row, weight_kg=2.0), known=known)
    assert isinstance(changed, RowError)
    assert f"already scanned in as device {DEVICE_ID}" in changed.reason


def test_a_serial_already_on_another_row_of_the_list_is_refused():
    other = laptop(asset_tag="ACME-0099", row=9)
    known = replace(NOTHING_KNOWN, serial_holders={"hp|5CG8123XYZ": stored(other)})
    [decision] = plan(laptop(), known=known)
    assert isinstance(decision, RowError)
    assert decision.field == "serial_number"
    assert "row 9, asset tag ACME-0099" in decision.reason


def test_a_row_whose_tag_belongs_to_a_device_of_another_pickup_is_refused_as_a_scan_would_be():
    elsewhere = KnownDevice(
        device_id=DEVICE_ID, pickup_id=OTHER_PICKUP, asset_tag="ACME-0001", stage="ready"
    )
    known = replace(NOTHING_KNOWN, devices_by_tag={"ACME-0001": elsewhere})
    [decision] = plan(laptop(), known=known)
    assert isinstance(decision, RowError)
    assert decision.field == "asset_tag"
    assert str(OTHER_PICKUP) in decision.reason


@pytest.mark.parametrize(
    ("holder", "field"),
    [("devices_by_tag", "ACME-0001"), ("devices_by_serial", "hp|5CG8123XYZ")],
)
def test_a_donor_is_told_only_that_another_donor_holds_the_tag_or_serial(holder, field):
    elsewhere = KnownDevice(
        device_id=DEVICE_ID,
        pickup_id=OTHER_PICKUP,
        asset_tag="GLOBEX-7",
        stage="ready",
        partner_id="globex",
    )
    known = replace(NOTHING_KNOWN, **{holder: {field: elsewhere}})
    [for_donor] = plan(laptop(), known=known, shown_to="acme")
    [for_staff] = plan(laptop(), known=known, shown_to=None)
    assert isinstance(for_donor, RowError)
    assert isinstance(for_staff, RowError)
    assert for_donor.reason.endswith("is already registered to another donor"), for_donor.reason
    assert str(OTHER_PICKUP) not in for_donor.reason
    assert "GLOBEX-7" not in for_donor.reason
    assert str(OTHER_PICKUP) in for_staff.reason or "GLOBEX-7" in for_staff.reason


def test_a_donor_is_told_the_details_of_its_own_other_pickup():
    own = KnownDevice(
        device_id=DEVICE_ID,
        pickup_id=OTHER_PICKUP,
        asset_tag="ACME-0001",
        stage="received",
        partner_id="acme",
    )
    known = replace(NOTHING_KNOWN, devices_by_tag={"ACME-0001": own})
    [decision] = plan(laptop(), known=known, shown_to="acme")
    assert isinstance(decision, RowError)
    assert str(OTHER_PICKUP) in decision.reason


def test_a_row_whose_device_was_already_scanned_into_this_pickup_is_fine():
    here = KnownDevice(
        device_id=DEVICE_ID, pickup_id=PICKUP_ID, asset_tag="ACME-0001", stage="received"
    )
    known = replace(NOTHING_KNOWN, devices_by_tag={"ACME-0001": here})
    [decision] = plan(laptop(), known=known)
    assert isinstance(decision, manifest.Write)


def test_a_serial_registered_under_another_tag_is_refused():
    other = KnownDevice(
        device_id=DEVICE_ID, pickup_id=PICKUP_ID, asset_tag="GIT-00000001", stage="received"
    )
    known = replace(NOTHING_KNOWN, devices_by_serial={"hp|5CG8123XYZ": other})
    [decision] = plan(laptop(), known=known)
    assert isinstance(decision, RowError)
    assert decision.field == "serial_number"
    assert "already registered as asset tag GIT-00000001" in decision.reason


def test_the_result_counts_each_outcome_and_lists_errors_by_row():
    created = manifest.Write("a", {}, "created")
    unchanged = manifest.Write("b", {}, "unchanged")
    late = RowError(row=9, field=None, reason="x")
    early = RowError(row=3, field="make", reason="y")
    result = manifest.result_of([created, unchanged, late], [early])
    assert (result.created, result.updated, result.unchanged) == (1, 0, 1)
    assert [e.row for e in result.errors] == [3, 9]


@pytest.mark.parametrize("status", [PickupStatus.COMPLETED, PickupStatus.CANCELLED])
def test_a_closed_pickup_takes_no_list(status):
    with pytest.raises(IllegalTransition) as refused:
        manifest.ensure_open(pickup(status), "import asset list", "closed")
    assert refused.value.state == status.value


def test_an_open_pickup_takes_a_list():
    manifest.ensure_open(pickup(PickupStatus.REQUESTED), "import asset list", "closed")


def test_a_cell_over_the_csv_limit_refuses_the_file_naming_its_line_and_sends_nothing(
    tmp_path, monkeypatch, capsys
):
    sent: list[httpx.Request] = []

    def record(client: httpx.Client, request: httpx.Request, **_: Any) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"created": 1, "updated": 0, "unchanged": 0, "errors": []})

    monkeypatch.setattr(httpx.Client, "send", record)
    monkeypatch.setenv("GREENIT_API_KEY", "donor-key")
    huge = "x" * (128 * 1024 + 1)
    path = tmp_path / "assets.csv"
    path.write_text(
        HEADER
        + "ACME-1,SN1,laptop,HP,T,1.5\n"
        + "ACME-2,SN2,laptop,HP,T,1.5\n"
        + f'ACME-3,SN3,laptop,HP,"{huge}",1.5\n'
        + "ACME-4,SN4,laptop,HP,T,1.5\n"
    )
    code = import_assets.main([str(path), "--pickup", str(PICKUP_ID), "--url", "http://intake"])
    err = capsys.readouterr().err
    assert code == 2
    assert "line 4: a cell is longer than 131,072 characters" in err
    assert "Traceback" not in err
    assert sent == []
