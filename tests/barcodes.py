"""Reads printed labels back as a scanner would: `pdftoppm` (Debian's poppler-utils) rasterises a
PDF page, or one label's area of it, at 300 dpi; `zbarimg` (zbar-tools) decodes every barcode and
QR code in the image. Both are installed by `./dev provision`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

DPI = 300
TOOLS = {"pdftoppm": "poppler-utils", "pdfinfo": "poppler-utils", "zbarimg": "zbar-tools"}


def missing_tools() -> list[str]:
    return [f"{tool} ({package})" for tool, package in TOOLS.items() if not shutil.which(tool)]


needs_decoders = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"decoding labels needs {', '.join(missing_tools())}: run ./dev provision",
)


def page_sizes_mm(pdf: bytes) -> list[tuple[float, float]]:
    """Each page's width and height in millimetres (from `pdfinfo`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.pdf"
        path.write_bytes(pdf)
        info = subprocess.run(
            ["pdfinfo", "-f", "1", "-l", "100000", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", info)
    return [(float(w) * 25.4 / 72, float(h) * 25.4 / 72) for w, h in sizes]


def symbols(
    pdf: bytes, page: int = 1, area_mm: tuple[float, float, float, float] | None = None
) -> list[str]:
    """What a scanner reads on one page (1-based), or in one area of it (left, top, width,
    height in mm from the page's top left corner), as `CODE-128:<data>` / `QR-Code:<data>`,
    sorted."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.pdf"
        path.write_bytes(pdf)
        crop: list[str] = []
        if area_mm is not None:
            left, top, width, height = (round(v / 25.4 * DPI) for v in area_mm)
            crop = ["-x", str(left), "-y", str(top), "-W", str(width), "-H", str(height)]
        image = Path(tmp) / "page"
        pages = ["-f", str(page), "-l", str(page)]
        subprocess.run(
            [
                "pdftoppm",
                "-r",
                str(DPI),
                "-gray",
                "-png",
                "-singlefile",
                *pages,
                *crop,
                str(path),
                str(image),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        read = subprocess.run(
            ["zbarimg", "-q", "-Sdisable", "-Scode128.enable", "-Sqrcode.enable", f"{image}.png"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if read.returncode not in (0, 4):  # 4: no symbol found
        raise RuntimeError(f"zbarimg failed ({read.returncode}): {read.stderr[-500:]}")
    return sorted(line for line in read.stdout.splitlines() if line)
