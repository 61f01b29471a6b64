"""The workbench's Clear against dd on the same loop device in the same run.

    uv run python -m bench.workbench_erase --size-mb 1024 --rounds 3

Writes: `dd if=/dev/zero of=DEV bs=4M oflag=direct` (and with `conv=fsync`: the workbench's
time includes its fsync, which on a loop device flushes the backing file) vs the workbench's
overwrite (O_DIRECT, 4 MiB chunks); reads: `dd if=DEV of=/dev/null bs=4M iflag=direct` vs its
full read-back verification. Each round runs both, alternating which goes first; the table
shows the median MB/s and the ratio (target: >= 0.9 for both). Needs root (loop devices).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from workbench import erase

MB = 1_000_000


def dd(args: list[str]) -> float:
    began = time.monotonic()
    # dd without count= ends with "No space left on device" (exit 1) at the device's end
    done = subprocess.run(["dd", *args], capture_output=True, text=True, check=False)
    seconds = time.monotonic() - began
    copied = re.search(r"^(\d+) bytes", done.stderr, re.MULTILINE)
    assert copied is not None, done.stderr
    return int(copied.group(1)) / MB / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    image = args.dir / "workbench-bench.img"
    with image.open("wb") as f:
        f.truncate(args.size_mb * 2**20)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    kinds = ("dd write", "dd+fsync write", "wb write", "dd read", "wb read")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        name = Path(device).name
        (drive,) = [d for d in erase.current_drives([name]) if d.name == name]
        drive = drive.model_copy(update={"serial": "BENCH"})
        with tempfile.TemporaryDirectory() as out:
            for round_ in range(args.rounds):

                def ours() -> None:
                    evidence = erase.clear(drive, erase.Log(Path(out) / "bench.log"))
                    assert evidence.result == "passed", evidence.error
                    rates["wb write"].append(evidence.throughput_write_mb_s or 0)
                    rates["wb read"].append(evidence.throughput_verify_mb_s or 0)

                def theirs() -> None:
                    rates["dd write"].append(
                        dd(["if=/dev/zero", f"of={device}", "bs=4M", "oflag=direct"])
                    )
                    rates["dd+fsync write"].append(
                        dd(["if=/dev/zero", f"of={device}", "bs=4M", "oflag=direct", "conv=fsync"])
                    )
                    rates["dd read"].append(
                        dd([f"if={device}", "of=/dev/null", "bs=4M", "iflag=direct"])
                    )

                for step in (ours, theirs) if round_ % 2 == 0 else (theirs, ours):
                    step()
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        os.unlink(image)
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"loop device over a {args.size_mb} MiB file, {args.rounds} rounds, median MB/s")
    print("| | dd | workbench | ratio |")
    print("|---|---:|---:|---:|")
    rows = (
        ("overwrite vs `dd oflag=direct`", "dd write", "wb write"),
        ("overwrite vs `dd oflag=direct conv=fsync`", "dd+fsync write", "wb write"),
        ("read-back verification vs `dd iflag=direct`", "dd read", "wb read"),
    )
    for label, theirs_, ours_ in rows:
        ratio = median[ours_] / median[theirs_]
        print(f"| {label} | {median[theirs_]:,.0f} | {median[ours_]:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
