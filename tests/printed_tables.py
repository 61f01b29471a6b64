"""The tables of a rendered impact report as a reader sees them: cells as printed, and whether
the rows of a column, as printed, add up to its total as printed."""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(html: str) -> list[list[list[str]]]:
    """Each table of the page: its rows (the header first), each row its cells' text."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def number(cell: str) -> Decimal | None:
    try:
        return Decimal(cell.replace(",", ""))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class ColumnSum:
    column: str
    rows: list[str]
    total: str

    @property
    def rows_sum(self) -> Decimal:
        """The rows as printed, added up; a row saying e.g. "not counted" adds nothing."""
        return sum((n for n in map(number, self.rows) if n is not None), Decimal(0))

    @property
    def adds_up(self) -> bool:
        return self.rows_sum == number(self.total)


def column_sums(html: str) -> list[ColumnSum]:
    """Every numeric column of every table with a total row."""
    sums = []
    for header, *rows in html_tables(html):
        if not rows or rows[-1][0] != "total":
            continue
        *body, total = rows
        for i, cell in enumerate(total):
            if i and number(cell) is not None:
                sums.append(ColumnSum(header[i], [row[i] for row in body], cell))
    return sums


def rows_with_totals(html: str) -> list[str]:
    """The rows of the tables with a total row (the total too), cells joined by spaces: how
    they read in the PDF's text once its whitespace is collapsed."""
    return [
        " ".join(cell for cell in row if cell)
        for _, *rows in html_tables(html)
        if rows and rows[-1][0] == "total"
        for row in rows
    ]
