"""Loop devices over files of random data: real block devices for the erasure tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workbench import erase
from workbench.snapshot import DriveInfo

MIB = 2**20


def _can_make_loops() -> str | None:
    if shutil.which("losetup") is None:
        return "losetup is not installed (Debian package: mount)"
    if os.geteuid() != 0:
        return "loop devices need root"
    probe = subprocess.run(["losetup", "--find"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"this machine cannot create loop devices: {probe.stderr.strip()}"
    return None


loops_needed = pytest.mark.skipif(_can_make_loops() is not None, reason=str(_can_make_loops()))


class Loop:
    def __init__(self, path: Path, size: int, *, read_only: bool = False) -> None:
        self.file = path
        with path.open("wb") as f:
            f.write(os.urandom(size))
        flags = ["--read-only"] if read_only else []
        self.device = subprocess.run(
            ["losetup", "--find", "--show", *flags, str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.name = Path(self.device).name

    def drive(self) -> DriveInfo:
        (drive,) = [d for d in erase.current_drives([self.name]) if d.name == self.name]
        return drive.model_copy(update={"serial": f"LOOP-{self.file.name}"})

    def contents(self) -> bytes:
        return self.file.read_bytes()

    def detach(self) -> None:
        subprocess.run(["losetup", "--detach", self.device], check=False, capture_output=True)


@contextmanager
def attached() -> Iterator[list[Loop]]:
    """Loops made by `make` meanwhile are unmounted and detached at the end."""
    made: list[Loop] = []
    try:
        yield made
    finally:
        for loop in made:
            subprocess.run(["umount", loop.device], check=False, capture_output=True)
            loop.detach()


def make(loops: list[Loop], tmp_path: Path, size: int = 16 * MIB, **kw: bool) -> Loop:
    loop = Loop(tmp_path / f"disk{len(loops)}.img", size, **kw)
    loops.append(loop)
    return loop
