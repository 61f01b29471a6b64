"""The manifest: a donor's asset list for a pickup, one stored document per row.

Pure rules only (the store and HTTP live in `manifest_api.py`). A row is valid iff it would
scan: its cells pass the manual scan's own checks (`api.ScanRequest`, without the location,
which the scan station gives) and `domain.decide_scan` accepts it. Each row's id is derived from
the pickup and the row's asset tag (else make and serial), so importing the same list again
finds the same documents: re-running an import is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails

from services.intake import domain
from services.intake.api import ScanRequest
from services.intake.domain import KnownDevice, Pickup, Scan
from shared.domain import IllegalTransition
from shared.events import DeviceCategory
from shared.ids import derive_id
from shared.mongo import Document

MAX_ROWS_PER_CALL = 1000
MAX_LINE = 1_000_000_000
ROW_FIELDS: tuple[str, ...] = tuple(name for name in ScanRequest.model_fields if name != "location")
# What a scanned row may no longer change: the device was registered with these values.
DEVICE_FIELDS = ("asset_tag", "serial_number", "category", "make", "model", "weight_kg")
# decide_scan ignores the location; ScanRequest requires one.
_NO_LOCATION = "manifest"

Outcome = Literal["created", "updated", "unchanged"]


class RowError(BaseModel):
    """Why one row of the donor's list was not stored: its line, the field at fault, the reason."""

    row: int = Field(description="The row's line number in the donor's file")
    field: str | None = Field(description="The field at fault; null when the whole row is")
    reason: str


class UploadRow(BaseModel):
    """One row as sent: its line number, then its cells, which are checked one row at a time."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "description": "Cells: " + ", ".join(ROW_FIELDS) + ". An asset tag or a serial.",
            "examples": [
                {
                    "row": 2,
                    "asset_tag": "ACME-0001",
                    "serial_number": "5CG8123XYZ",
                    "category": "laptop",
                    "make": "HP",
                    "model": "EliteBook 840 G5",
                    "weight_kg": 1.5,
                }
            ],
        },
    )

    row: Annotated[int, Field(ge=1, le=MAX_LINE, description="Line number in the donor's file")]

    @property
    def cells(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ManifestUpload(BaseModel):
    """Up to 1,000 rows of the donor's list; each row's number names it in the answer."""

    model_config = ConfigDict(extra="forbid")

    rows: list[UploadRow] = Field(min_length=1, max_length=MAX_ROWS_PER_CALL)

    @model_validator(mode="after")
    def _row_numbers_unique(self) -> ManifestUpload:
        seen: set[int] = set()
        for upload in self.rows:
            if upload.row in seen:
                raise ValueError(f"row {upload.row} appears twice: each row needs its own number")
            seen.add(upload.row)
        return self


class ImportResult(BaseModel):
    """What one import call did: rows created, changed, already stored as sent, and refused."""

    created: int
    updated: int
    unchanged: int
    errors: list[RowError]


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One valid row: a device the donor says is in the pickup, as a scan would register it."""

    row: int
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    asset_tag: str | None = None
    serial_number: str | None = None

    @property
    def serial_key(self) -> str | None:
        if self.serial_number is None:
            return None
        return domain.serial_key(self.make, self.serial_number)

    def scan(self, location: str) -> Scan:
        return Scan(
            category=self.category,
            make=self.make,
            model=self.model,
            weight_kg=self.weight_kg,
            location=location,
            asset_tag=self.asset_tag,
            serial_number=self.serial_number,
        )


_ROW = TypeAdapter(ManifestRow)


# ---- one row ----------------------------------------------------------------------------------


def validate_row(upload: UploadRow) -> ManifestRow | list[RowError]:
    """The row as a scan would take it, or every reason it would not scan."""
    cells = upload.cells
    errors = [
        RowError(row=upload.row, field=name, reason=_unknown_field(name))
        for name in cells
        if name not in ROW_FIELDS
    ]
    known = {name: value for name, value in cells.items() if name in ROW_FIELDS}
    # Cells are text (as in the file) or numbers; a JSON true/false is neither, even where the
    # scan's lax reading of text would take it as 1 or 0.
    flags = [name for name, value in known.items() if isinstance(value, bool)]
    errors += [RowError(row=upload.row, field=name, reason=_NO_FLAGS) for name in flags]
    try:
        request = ScanRequest.model_validate({**known, "location": _NO_LOCATION})
    except ValidationError as exc:
        found = [_row_error(upload.row, detail) for detail in exc.errors()]
        errors += [e for e in found if e.field not in flags]
    if errors:
        return errors
    if request.asset_tag is None and request.serial_number is None:
        reason = "a row needs an asset tag or a serial number: the station finds it by either"
        return [RowError(row=upload.row, field="asset_tag", reason=reason)]
    return ManifestRow(
        row=upload.row,
        category=request.category,
        make=request.make,
        model=request.model,
        weight_kg=request.weight_kg,
        asset_tag=request.asset_tag,
        serial_number=request.serial_number,
    )


_NO_FLAGS = "a cell is text or a number, not true or false"


def _unknown_field(name: str) -> str:
    if name == "location":
        return "the location is given at the scan station, not in the asset list"
    return f"unknown field; a row has: row, {', '.join(ROW_FIELDS)}"


def _row_error(row: int, detail: ErrorDetails) -> RowError:
    field = str(detail["loc"][0]) if detail["loc"] else None
    given = detail.get("input")
    shown = "" if given is None or isinstance(given, dict) else f" (got {_short(given)})"
    return RowError(row=row, field=field, reason=f"{detail['msg']}{shown}")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_upload(uploads: Sequence[UploadRow]) -> tuple[list[ManifestRow], list[RowError]]:
    """Every valid row once: a row repeating an earlier row's asset tag or make and serial is
    refused, naming the earlier row."""
    rows: list[ManifestRow] = []
    errors: list[RowError] = []
    by_tag: dict[str, int] = {}
    by_serial: dict[str, int] = {}
    for upload in uploads:
        checked = validate_row(upload)
        if isinstance(checked, list):
            errors += checked
            continue
        repeated = _repeated(checked, by_tag, by_serial)
        if repeated is not None:
            errors.append(repeated)
            continue
        if checked.asset_tag is not None:
            by_tag[checked.asset_tag] = checked.row
        if checked.serial_key is not None:
            by_serial[checked.serial_key] = checked.row
        rows.append(checked)
    return rows, errors


def _repeated(
    row: ManifestRow, by_tag: Mapping[str, int], by_serial: Mapping[str, int]
) -> RowError | None:
    if row.asset_tag is not None and row.asset_tag in by_tag:
        reason = f"asset tag {row.asset_tag} is also on row {by_tag[row.asset_tag]}"
        return RowError(row=row.row, field="asset_tag", reason=reason)
    if row.serial_key is not None and row.serial_key in by_serial:
        earlier = by_serial[row.serial_key]
        reason = f"{row.make} serial {row.serial_number} is also on row {earlier}"
        return RowError(row=row.row, field="serial_number", reason=reason)
    return None


# ---- identity and stored form -----------------------------------------------------------------


def row_id(pickup_id: UUID, row: ManifestRow) -> str:
    """The same device on the same pickup's list always gets the same id."""
    if row.asset_tag is not None:
        return tag_row_id(pickup_id, row.asset_tag)
    return str(derive_id("intake", "manifest", pickup_id, "serial", row.serial_key))


def tag_row_id(pickup_id: UUID, asset_tag: str) -> str:
    return str(derive_id("intake", "manifest", pickup_id, "asset_tag", asset_tag))


def serial_fold(serial_number: str) -> str:
    """What a scanned serial is compared by: trimmed, case-insensitive."""
    return serial_number.strip().casefold()


def row_fields(pickup: Pickup, row: ManifestRow) -> Document:
    """The row's stored fields (without `_id`, `imported_at` and `device_id`)."""
    return {
        "pickup_id": str(pickup.pickup_id),
        "partner_id": pickup.partner_id,
        "row": row.row,
        "asset_tag": row.asset_tag,
        "serial_number": row.serial_number,
        "serial_key": row.serial_key,
        "serial_fold": None if row.serial_number is None else serial_fold(row.serial_number),
        "category": row.category.value,
        "make": row.make,
        "model": row.model,
        "weight_kg": row.weight_kg,
    }


def row_from_doc(doc: Document) -> ManifestRow:
    return _ROW.validate_python(doc)


# ---- what an import changes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Known:
    """What the store holds that bears on a batch of rows of one pickup."""

    stored: Mapping[str, Document]  # manifest rows by id
    serial_holders: Mapping[str, Document]  # manifest rows of the pickup by serial key
    devices_by_tag: Mapping[str, KnownDevice]
    devices_by_serial: Mapping[str, KnownDevice]


@dataclass(frozen=True, slots=True)
class Write:
    row_id: str
    fields: Document
    outcome: Outcome


def plan_import(
    pickup: Pickup,
    rows: Iterable[ManifestRow],
    known: Known,
    *,
    now: datetime,
    by: str,
    shown_to: str | None,
) -> list[Write | RowError]:
    """Decide each valid row: refused (with the reason as the partner `shown_to` may read it;
    None: staff), or created, updated or unchanged."""
    return [_decide_row(pickup, row, known, now=now, by=by, shown_to=shown_to) for row in rows]


def writes_of(decisions: Iterable[Write | RowError]) -> list[Write]:
    """What must be stored: created and updated rows (an unchanged row is not written)."""
    return [d for d in decisions if isinstance(d, Write) and d.outcome != "unchanged"]


def _decide_row(
    pickup: Pickup, row: ManifestRow, known: Known, *, now: datetime, by: str, shown_to: str | None
) -> Write | RowError:
    refused = scan_refusal(pickup, row, known, shown_to=shown_to)
    if refused is not None:
        return refused
    this_id = row_id(pickup.pickup_id, row)
    holder = known.serial_holders.get(row.serial_key) if row.serial_key else None
    if holder is not None and holder["_id"] != this_id:
        reason = (
            f"{row.make} serial {row.serial_number} is already on this pickup's list "
            f"(row {holder['row']}, asset tag {holder.get('asset_tag') or 'none'})"
        )
        return RowError(row=row.row, field="serial_number", reason=reason)
    fields = row_fields(pickup, row)
    stored = known.stored.get(this_id)
    outcome = classify(fields, stored)
    if outcome == "unchanged":
        return Write(row_id=this_id, fields=fields, outcome=outcome)
    if stored is not None and _scanned_device_changes(stored, fields):
        reason = f"already scanned in as device {stored['device_id']}: it cannot change"
        return RowError(row=row.row, field=None, reason=reason)
    return Write(
        row_id=this_id, fields={**fields, "imported_at": now, "imported_by": by}, outcome=outcome
    )


def _scanned_device_changes(stored: Document, fields: Document) -> bool:
    """A scanned row's device was registered with its values; only its line number may move."""
    return bool(stored.get("device_id")) and any(
        stored.get(name) != fields[name] for name in DEVICE_FIELDS
    )


def classify(fields: Document, stored: Document | None) -> Outcome:
    """Created when new; unchanged when every field is already stored as sent; else updated."""
    if stored is None:
        return "created"
    if all(stored.get(name) == value for name, value in fields.items()):
        return "unchanged"
    return "updated"


def scan_refusal(
    pickup: Pickup, row: ManifestRow, known: Known, *, shown_to: str | None
) -> RowError | None:
    """Why scanning this row's device would be refused (a device of another pickup holds its
    tag or serial, ...), judged by the scan's own rule; another donor's pickup, tag or serial
    is named to staff (`shown_to` None) only."""
    by_tag = known.devices_by_tag.get(row.asset_tag) if row.asset_tag else None
    by_serial = known.devices_by_serial.get(row.serial_key) if row.serial_key else None
    try:
        domain.decide_scan(pickup, row.scan(_NO_LOCATION), by_tag=by_tag, by_serial=by_serial)
    except IllegalTransition as refused:
        field = "asset_tag" if row.asset_tag is not None and by_tag is not None else "serial_number"
        return RowError(row=row.row, field=field, reason=domain.reason_for(refused, shown_to))
    return None


def result_of(decisions: Iterable[Write | RowError], invalid: Iterable[RowError]) -> ImportResult:
    outcomes = [d.outcome for d in decisions if isinstance(d, Write)]
    refused = [d for d in decisions if isinstance(d, RowError)]
    return ImportResult(
        created=outcomes.count("created"),
        updated=outcomes.count("updated"),
        unchanged=outcomes.count("unchanged"),
        errors=sorted([*invalid, *refused], key=lambda e: e.row),
    )


def ensure_open(pickup: Pickup, action: str, reason: str) -> None:
    """Only a requested or scheduled pickup takes an asset list or a scan."""
    if not pickup.is_open:
        raise IllegalTransition(
            subject_kind="pickup",
            subject_id=pickup.pickup_id,
            action=action,
            state=pickup.status.value,
            reason=reason,
            correlation_id=pickup.pickup_id,
        )
