"""Import a donor's asset list (CSV) into a pickup's manifest, through intake's HTTP API.

    GREENIT_API_KEY=<donor or staff key> python -m tools.import_assets FILE.csv --pickup ID \
        [--url http://127.0.0.1:8001] [--chunk 500]

The first line names the columns, in any order: `asset_tag`, `serial_number`, `category`,
`make`, `model`, `weight_kg` (case, surrounding spaces and a UTF-8 byte-order mark are ignored;
"Serial Number" reads as `serial_number`). Every row needs `category`, `make`, `model`,
`weight_kg` and an asset tag or a serial. Columns are separated by commas, or by semicolons or
tabs when the header uses those; with semicolons a decimal comma (`1,5`) is read as `1.5`.

Rows go to intake in chunks, with a progress bar; each refused row is printed with its line in
the file and the field at fault, then one summary line. Importing the same file again changes
nothing (every row `unchanged`). The whole file is read before any row is sent: a line the CSV
reader cannot read (a cell over 128 KiB, ...) refuses the file, naming the line. Exit code: 0
every row stored, 1 some rows refused, 2 nothing could be imported (file, key, pickup,
connection, or the pickup's limit of rows).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.intake.domain import serial_key

COLUMNS = ("asset_tag", "serial_number", "category", "make", "model", "weight_kg")
REQUIRED = ("category", "make", "model", "weight_kg")
MAX_CHUNK = 1000
ATTEMPTS = 4
KEY_VARIABLE = "GREENIT_API_KEY"
_DELIMITERS = (",", ";", "\t")
_DECIMAL_COMMA = re.compile(r"^\d+,\d+$")

Row = dict[str, Any]
T = TypeVar("T")


class FileRefused(ValueError):
    """The file as a whole cannot be imported (its header, its encoding)."""


class ImportFailed(RuntimeError):
    """Intake refused or could not take the import (key, pickup, connection)."""


@dataclass(frozen=True, slots=True)
class LineError:
    """A refused row: its line in the file, the field at fault (None: the whole row), why."""

    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}: {self.field}" if self.field else f"line {self.line}"
        return f"{where}: {self.reason}"


@dataclass
class Parsed:
    """The rows to send (each with its line number as `row`) and the rows refused already."""

    rows: list[Row] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


@dataclass
class Totals:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[LineError] = field(default_factory=list)

    def add(self, answer: dict[str, Any]) -> None:
        self.created += int(answer["created"])
        self.updated += int(answer["updated"])
        self.unchanged += int(answer["unchanged"])
        self.errors += [LineError(e["row"], e.get("field"), e["reason"]) for e in answer["errors"]]

    def summary(self) -> str:
        return (
            f"created {self.created}, updated {self.updated}, "
            f"unchanged {self.unchanged}, errors {len(self.errors)}"
        )


# ---- reading the file (pure) ------------------------------------------------------------------


def column_name(header_cell: str) -> str:
    """`" Serial Number"` -> `serial_number`: case, spaces and hyphens do not matter."""
    return re.sub(r"[\s\-]+", "_", header_cell.strip().casefold())


def delimiter_of(header_line: str) -> str:
    return max(_DELIMITERS, key=header_line.count)


def columns_of(header: Sequence[str]) -> list[str]:
    """The header's column names, or a FileRefused naming what is wrong with it."""
    names = [column_name(cell) for cell in header]
    unnamed = [str(i + 1) for i, name in enumerate(names) if not name]
    if unnamed:
        raise FileRefused(f"header: column(s) {', '.join(unnamed)} have no name")
    unknown = [header[i].strip() for i, name in enumerate(names) if name not in COLUMNS]
    if unknown:
        raise FileRefused(
            f"header: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FileRefused(f"header: column(s) {', '.join(repeated)} appear more than once")
    missing = [name for name in REQUIRED if name not in names]
    if "asset_tag" not in names and "serial_number" not in names:
        missing.append("asset_tag or serial_number")
    if missing:
        raise FileRefused(f"header: missing column(s) {', '.join(missing)}")
    return names


def parse_csv(text: str) -> Parsed:
    """Rows of the file as intake takes them: blank cells left out, `row` the line number."""
    text = text.removeprefix("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = delimiter_of(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise FileRefused("the file is empty: the first line must name the columns")
        columns = columns_of(header)
        parsed = Parsed()
        line = reader.line_num + 1
        for cells in reader:
            row_or_error = _row(cells, columns, line, decimal_comma=delimiter == ";")
            if isinstance(row_or_error, LineError):
                parsed.errors.append(row_or_error)
            elif row_or_error:
                parsed.rows.append(row_or_error)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise FileRefused(f"line {line}: {_unreadable(exc)}; nothing was imported") from exc
    return _without_repeats(parsed)


def _unreadable(exc: csv.Error) -> str:
    """Why the csv module could not read a line, in the donor's terms."""
    if "field larger than field limit" in str(exc):
        return f"a cell is longer than {csv.field_size_limit():,} characters"
    return f"the line cannot be read as CSV ({exc})"


def _row(
    cells: list[str], columns: list[str], line: int, *, decimal_comma: bool
) -> Row | LineError:
    values = [cell.strip() for cell in cells]
    if len(values) > len(columns) and any(values[len(columns) :]):
        return LineError(line, None, f"{len(values)} cells, but the header names {len(columns)}")
    row: Row = {name: value for name, value in zip(columns, values, strict=False) if value}
    if not row:
        return {}
    if decimal_comma and _DECIMAL_COMMA.match(row.get("weight_kg", "")):
        row["weight_kg"] = row["weight_kg"].replace(",", ".")
    return {"row": line, **row}


def _without_repeats(parsed: Parsed) -> Parsed:
    """A device listed twice in the file is refused on its later line (chunks go separately, so
    intake cannot see such a repeat itself)."""
    kept = Parsed(errors=list(parsed.errors))
    tags: dict[str, int] = {}
    serials: dict[str, int] = {}
    for row in parsed.rows:
        tag, key = row.get("asset_tag"), _serial_key(row)
        if tag is not None and tag in tags:
            kept.errors.append(
                LineError(row["row"], "asset_tag", f"{tag} is also on line {tags[tag]}")
            )
        elif key is not None and key in serials:
            reason = f"{row['make']} serial {row['serial_number']} is also on line {serials[key]}"
            kept.errors.append(LineError(row["row"], "serial_number", reason))
        else:
            if tag is not None:
                tags[tag] = row["row"]
            if key is not None:
                serials[key] = row["row"]
            kept.rows.append(row)
    kept.errors.sort(key=lambda e: e.line)
    return kept


def _serial_key(row: Row) -> str | None:
    if "serial_number" not in row or "make" not in row:
        return None
    return serial_key(row["make"], row["serial_number"])


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- talking to intake ------------------------------------------------------------------------


def send_chunk(client: httpx.Client, pickup_id: UUID, rows: Sequence[Row]) -> dict[str, Any]:
    """POST one chunk; a lost connection or a 5xx is retried (an import is idempotent)."""
    path = f"/pickups/{pickup_id}/manifest"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = client.post(path, json={"rows": list(rows)})
        except httpx.TransportError as exc:
            if attempt == ATTEMPTS:
                raise ImportFailed(f"intake at {client.base_url} did not answer: {exc}") from exc
        else:
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
            if response.status_code < 500 or attempt == ATTEMPTS:
                raise ImportFailed(
                    f"intake refused the import ({response.status_code}): {_detail(response)}"
                )
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)


def import_rows(
    client: httpx.Client, pickup_id: UUID, parsed: Parsed, chunk: int, progress: Progress
) -> Totals:
    totals = Totals(errors=list(parsed.errors))
    task = progress.add_task("importing", total=len(parsed.rows) + len(parsed.errors))
    progress.advance(task, len(parsed.errors))
    for rows in chunks(parsed.rows, chunk):
        totals.add(send_chunk(client, pickup_id, rows))
        progress.advance(task, len(rows))
    totals.errors.sort(key=lambda e: e.line)
    return totals


def _chunk_size(value: str) -> int:
    size = int(value)
    if not 1 <= size <= MAX_CHUNK:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_CHUNK}")
    return size


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.import_assets",
        description=f"Import a donor's asset list (CSV) into a pickup. The API key is read from "
        f"${KEY_VARIABLE}.",
    )
    parser.add_argument("file", type=Path, help="the CSV file")
    parser.add_argument("--pickup", required=True, type=UUID, help="the pickup's id")
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="intake's address")
    parser.add_argument("--chunk", type=_chunk_size, default=500, help="rows per request")
    return parser.parse_args(argv)


def read_file(path: Path) -> Parsed:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise FileRefused(
            f"{path} is not UTF-8 text (byte {exc.start}): save it as CSV UTF-8"
        ) from exc
    return parse_csv(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        print(f"error: set {KEY_VARIABLE} to your donor or staff API key", file=sys.stderr)
        return 2
    try:
        parsed = read_file(args.file)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        headers = {"X-API-Key": key}
        with (
            httpx.Client(
                base_url=args.url, headers=headers, timeout=120, trust_env=False
            ) as client,
            progress,
        ):
            totals = import_rows(client, args.pickup, parsed, args.chunk, progress)
    except (FileRefused, ImportFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for error in totals.errors:
        print(error)
    print(totals.summary())
    return 1 if totals.errors else 0


if __name__ == "__main__":
    sys.exit(main())
