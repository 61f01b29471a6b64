"""The workbench's Clear against dd on the same loop device in the same run.

    uv run python -m bench.workbench_erase --size-mb 2048 --rounds 5 [--direct-io]

Writes: `dd if=/dev/zero of=DEV bs=4M oflag=direct` vs the workbench's overwrite up to its last
write (O_DIRECT, 2 MiB blocks, 3 in flight); and `dd ... conv=fsync` vs the same overwrite with
its one fsync at the end (on a loop device the fsync flushes the backing file to its disk),
and that also against dd without fsync (the strictest reading of the target).
Reads: `dd if=DEV of=/dev/null bs=4M iflag=direct` vs the workbench's full read-back
verification (read and compared with the pattern). A first, uncounted dd pass allocates the
backing file, so no round pays for that. Each round runs both sides, alternating which goes
first; the table shows the median MB/s of each side, the ratio of the medians, and the median
and range of the per-round ratios (the two sides of a round ran a few seconds apart, under the
same load). Needs root (loop devices).
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
ROWS = (
    ("overwrite vs `dd if=/dev/zero of=DEV bs=4M oflag=direct`", "dd write", "wb write"),
    ("overwrite + fsync vs the same dd with `conv=fsync`", "dd+fsync write", "wb write+fsync"),
    ("overwrite + fsync vs `dd oflag=direct` without fsync", "dd write", "wb write+fsync"),
    ("read-back verification vs `dd if=DEV of=/dev/null bs=4M iflag=direct`", "dd read", "wb read"),
)


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
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--direct-io",
        action="store_true",
        help="loop device with direct I/O to its backing file (losetup --direct-io=on): writes "
        "reach the disk as they happen, as on a real drive, instead of the backing file's cache",
    )
    args = parser.parse_args()
    image = args.dir / "workbench-bench.img"
    with image.open("wb") as f:
        f.truncate(args.size_mb * 2**20)
    device = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            *(["--direct-io=on"] if args.direct_io else []),
            str(image),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rates: dict[str, list[float]] = {k: [] for _, *kinds in ROWS for k in kinds}
    loads = [os.getloadavg()[0]]
    try:
        name = Path(device).name
        (drive,) = [d for d in erase.current_drives([name]) if d.name == name]
        drive = drive.model_copy(update={"serial": "BENCH"})
        dd(["if=/dev/zero", f"of={device}", "bs=4M", "oflag=direct", "conv=fsync"])  # allocate
        with tempfile.TemporaryDirectory() as out:
            for round_ in range(args.rounds):

                def ours() -> None:
                    evidence = erase.clear(drive, erase.Log(Path(out) / "bench.log"))
                    assert evidence.result == "passed", evidence.error
                    assert evidence.write_seconds
                    assert evidence.flush_seconds is not None
                    written = evidence.bytes_written / MB
                    rates["wb write"].append(written / evidence.write_seconds)
                    rates["wb write+fsync"].append(evidence.throughput_write_mb_s or 0)
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
                loads.append(os.getloadavg()[0])
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        os.unlink(image)
    print(
        f"loop device{' (direct I/O)' if args.direct_io else ''} over a {args.size_mb} MiB file, "
        f"{args.rounds} rounds, "
        f"1-min load average {min(loads):.0f}-{max(loads):.0f} on {os.cpu_count()} CPUs"
    )
    print("| | dd MB/s | workbench MB/s | ratio of medians | per-round ratio: median (range) |")
    print("|---|---:|---:|---:|---:|")
    for label, theirs_, ours_ in ROWS:
        median_theirs = statistics.median(rates[theirs_])
        median_ours = statistics.median(rates[ours_])
        ratios = [o / t for o, t in zip(rates[ours_], rates[theirs_], strict=True)]
        print(
            f"| {label} | {median_theirs:,.0f} | {median_ours:,.0f} | "
            f"{median_ours / median_theirs:.2f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main()
