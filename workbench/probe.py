"""Running the Debian tools the workbench reads the hardware with.

A missing tool is not an error of the workbench: it is reported naming the Debian package
that brings it, and the fields it would have filled are listed as unread.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

PACKAGES = {
    "lshw": "lshw",
    "dmidecode": "dmidecode",
    "lsblk": "util-linux",
    "lscpu": "util-linux",
    "findmnt": "util-linux",
    "blkdiscard": "util-linux",
    "smartctl": "smartmontools",
    "nvme": "nvme-cli",
    "hdparm": "hdparm",
    "memtester": "memtester",
}


class MissingTool(Exception):
    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.package = PACKAGES.get(tool, tool)
        super().__init__(f"{tool} is not installed (Debian package: {self.package})")


@dataclass(frozen=True)
class Output:
    tool: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def run(tool: str, *args: str, timeout: float = 120) -> Output:
    """Run `tool args`; MissingTool when it is not installed. A non-zero exit is returned, not
    raised: smartctl, for one, encodes findings in its exit bits."""
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(tool)
    argv = [path, *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return Output(tool, [tool, *args], done.returncode, done.stdout, done.stderr)


def version(tool: str) -> str:
    """The tool's version as it states it, or "missing"."""
    flags = {
        "smartctl": "--version",
        "nvme": "version",
        "hdparm": "-V",
        "dmidecode": "--version",
        "lshw": "-version",
    }
    try:
        out = run(tool, flags.get(tool, "--version"), timeout=10)
    except (MissingTool, OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"
