"""NIST SP 800-88 Rev. 1 sanitization of one drive, with the evidence to prove it.

Clear: every addressable sector is overwritten with a fixed pattern (one pass), flushed, then
read back (all of it by default; `sample_rate` < 1 reads that share of the drive, always its
first and last block, and the rate is recorded). Purge, where the drive says it can: NVMe
sanitize or format with secure erase, ATA secure erase, or `blkdiscard --secure`; verified by
markers written before the purge at sampled places, which must be gone after it.

The drive is written and read with O_DIRECT, so verification reads the medium, not the page
cache. Every step goes into the erasure log; the evidence record carries the log's SHA-256.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import mmap
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from workbench import TOOL_NAME, VERSION, probe
from workbench.snapshot import LSBLK_COLUMNS, DriveInfo, parse_lsblk

CHUNK = 2 * 2**20
"""Bytes per write and per read: small enough to be checked while still in the CPU's cache."""
IN_FLIGHT = 3
"""Blocks written or read at once, so the drive always has the next one queued."""
EVIDENCE_VERSION = "1.1"
Progress = Callable[[str, int, int], None]
"""(phase: "write" | "verify" | "purge", bytes done, bytes in all)"""


class Refused(Exception):
    """The drive must not be erased (the boot drive, a mounted one); nothing was written."""


class Evidence(BaseModel):
    """One drive's erasure as the workbench performed it. Versioned: fields are only added."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = EVIDENCE_VERSION
    device: str
    model: str | None
    serial: str
    size_bytes: int
    kind: str
    method: Literal["clear", "purge"]
    technique: str
    tool: str = TOOL_NAME
    tool_version: str = VERSION
    tools_used: dict[str, str] = Field(default_factory=dict, description="External tools' versions")
    started_at: datetime
    ended_at: datetime
    bytes_written: int = 0
    passes: int = 0
    pattern: str | None = None
    verification: str
    verification_sample_rate: float = Field(description="Share of the drive read back, 0-1")
    bytes_verified: int = 0
    mismatched_blocks: int = 0
    unreadable_sectors: int = 0
    verified: bool = False
    result: Literal["passed", "failed"] = "failed"
    error: str | None = None
    log_file: str = ""
    log_sha256: str = ""
    throughput_write_mb_s: float | None = Field(
        default=None, description="Bytes written / (write_seconds + flush_seconds), in MB/s"
    )
    throughput_verify_mb_s: float | None = None
    write_seconds: float | None = Field(default=None, description="Writing, up to the last write")
    flush_seconds: float | None = Field(default=None, description="The fsync after the last write")
    verify_seconds: float | None = None


@dataclass
class Log:
    """The erasure log: one timestamped line per step, kept beside the snapshot."""

    path: Path
    lines: list[str] = field(default_factory=list)

    def __call__(self, message: str) -> None:
        self.lines.append(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {message}")

    def close(self) -> str:
        data = ("\n".join(self.lines) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()


# ---- which drives may be erased ---------------------------------------------------------------

BOOT_MOUNTS = ("/", "/boot", "/boot/efi", "/run/live/medium", "/lib/live/mount/medium")


def current_drives(loops: list[str] | None = None) -> list[DriveInfo]:
    """The drives as lsblk sees them now; a named loop device is named by its backing file,
    as the snapshot names it."""
    out = probe.run("lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS)
    drives = parse_lsblk(out.stdout, loops or [])
    for i, drive in enumerate(drives):
        backing = Path("/sys/block") / drive.name / "loop" / "backing_file"
        if drive.serial is None and backing.exists():
            serial = f"LOOP-{Path(backing.read_text().strip()).name}"
            drives[i] = drive.model_copy(update={"serial": serial, "model": "loop"})
    return drives


def _swaps() -> set[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {os.path.realpath(line.split()[0]) for line in lines if line.strip()}


def booted_from(drive: DriveInfo) -> bool:
    return any(m in BOOT_MOUNTS for m in drive.mountpoints)


def refusal(drive: DriveInfo) -> str | None:
    """Why this drive must not be erased, or None. Mounts are read fresh from lsblk."""
    fresh = [d for d in current_drives([drive.name]) if d.name == drive.name]
    if fresh:
        drive = drive.model_copy(update={"mountpoints": fresh[0].mountpoints})
    boot = [m for m in drive.mountpoints if m in BOOT_MOUNTS]
    if boot:
        return f"the workbench booted from it ({', '.join(boot)} is on it)"
    if drive.mountpoints:
        return f"it is mounted ({', '.join(drive.mountpoints)})"
    block = Path("/sys/block") / drive.name
    swaps = _swaps()
    parts = [drive.name, *(p.name for p in block.glob(f"{drive.name}*") if p.is_dir())]
    if any(os.path.realpath(f"/dev/{p}") in swaps for p in parts):
        return "it holds active swap"
    holders = [h.name for p in parts for h in (block / p / "holders").glob("*")]
    holders += [h.name for h in (block / "holders").glob("*")]
    if holders:
        return f"it is in use by {', '.join(sorted(set(holders)))}"
    return None


# ---- purge capabilities -----------------------------------------------------------------------


@dataclass(frozen=True)
class Purge:
    technique: str
    tool: str
    commands: list[list[str]]


def nvme_purges(id_ctrl_json: str, controller: str, namespace: str) -> list[Purge]:
    """From `nvme id-ctrl -o json`: sanitize (SANICAP bits 0-2) or format with secure erase
    (OACS bit 1; FNA bit 2 allows a cryptographic erase), best first."""
    data = json.loads(id_ctrl_json)
    sanicap, oacs, fna = (
        int(data.get("sanicap", 0)),
        int(data.get("oacs", 0)),
        int(data.get("fna", 0)),
    )
    found: list[Purge] = []
    for bit, action, name in ((0, 4, "cryptographic erase"), (1, 2, "block erase")):
        if sanicap & (1 << bit):
            found.append(
                Purge(
                    f"NVMe sanitize, {name}",
                    "nvme",
                    [["sanitize", controller, f"--sanact={action}"]],
                )
            )
    if oacs & 0b10:
        ses, name = (2, "cryptographic erase") if fna & 0b100 else (1, "user data erase")
        found.append(
            Purge(
                f"NVMe format, secure erase ({name})",
                "nvme",
                [["format", namespace, f"--ses={ses}", "--force"]],
            )
        )
    return found


def ata_purges(hdparm_identify: str, device: str) -> list[Purge]:
    """From `hdparm -I`: ATA Security Erase, when supported and not frozen (a frozen drive needs
    a suspend/resume first, and is reported so by falling back to Clear)."""
    match = re.search(r"^Security:\s*\n((?:\s+.*\n?)+)", hdparm_identify, re.MULTILINE)
    if match is None:
        return []
    block = match.group(1)
    state = {
        m.group(2): m.group(1) != "not" for m in re.finditer(r"^\s+(not)?\s*(\w+)\s*$", block, re.M)
    }
    if not state.get("supported") or state.get("frozen") or state.get("locked"):
        return []
    enhanced = re.search(r"supported:\s*enhanced erase", block) is not None
    flag = "--security-erase-enhanced" if enhanced else "--security-erase"
    password = "greenit"
    return [
        Purge(
            "ATA Secure Erase" + (" (enhanced)" if enhanced else ""),
            "hdparm",
            [
                ["--user-master", "u", "--security-set-pass", password, device],
                ["--user-master", "u", flag, password, device],
            ],
        )
    ]


def purges_of(drive: DriveInfo) -> list[Purge]:
    """The purge techniques this drive advertises, best first."""
    found: list[Purge] = []
    if drive.kind == "nvme" and probe.have("nvme"):
        controller = re.sub(r"n\d+$", "", drive.path)
        out = probe.run("nvme", "id-ctrl", controller, "-o", "json")
        if out.returncode == 0:
            found += nvme_purges(out.stdout, controller, drive.path)
    if drive.transport in ("sata", "ata") and probe.have("hdparm"):
        out = probe.run("hdparm", "-I", drive.path)
        if out.returncode == 0:
            found += ata_purges(out.stdout, drive.path)
    discard = Path("/sys/block") / drive.name / "queue" / "discard_max_bytes"
    if drive.kind in ("ssd", "emmc") and discard.exists() and int(discard.read_text() or 0) > 0:
        found.append(
            Purge("secure discard (BLKSECDISCARD)", "blkdiscard", [["--secure", drive.path]])
        )
    return found


# ---- the erasure ------------------------------------------------------------------------------


def _open(path: str, flags: int) -> tuple[int, bool]:
    try:
        return os.open(path, flags | os.O_DIRECT), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return os.open(path, flags), False


def _drop_cache(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _sector_size(drive: DriveInfo) -> int:
    path = Path("/sys/block") / drive.name / "queue" / "logical_block_size"
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 512


def _chunks(size: int, chunk: int) -> Iterator[tuple[int, int]]:
    for offset in range(0, size, chunk):
        yield offset, min(chunk, size - offset)


def _sampled(size: int, chunk: int, rate: float, seed: int) -> list[tuple[int, int]]:
    chunks = list(_chunks(size, chunk))
    if rate >= 1 or len(chunks) <= 2:
        return chunks
    rng = random.Random(seed)
    middle = chunks[1:-1]
    picked = rng.sample(middle, max(0, round(rate * len(chunks)) - 2))
    return [chunks[0], *sorted(picked), chunks[-1]]


@dataclass
class Verified:
    bytes_read: int = 0
    mismatched: int = 0
    unreadable: int = 0
    first_problem: str | None = None


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.memcmp.restype = ctypes.c_int

T = TypeVar("T")


def _pipelined(
    regions: list[tuple[int, int]], job: Callable[[int, int, int], T]
) -> Generator[tuple[int, int, T], None, None]:
    """`job(index, offset, length)` for each region, IN_FLIGHT at a time in threads (os.preadv,
    os.pwritev and ctypes release the GIL), yielded in the regions' order. Region i + IN_FLIGHT
    starts only once region i was yielded, so a job may use buffer `index % IN_FLIGHT`. Leaving
    the loop early waits for the jobs still running, and starts no other."""
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="workbench-io") as pool:
        running = deque(
            pool.submit(job, index, *regions[index])
            for index in range(min(IN_FLIGHT, len(regions)))
        )
        for index, (offset, length) in enumerate(regions):
            result = running.popleft().result()
            yield offset, length, result
            following = index + IN_FLIGHT
            if following < len(regions):
                running.append(pool.submit(job, following, *regions[following]))


def _verify(
    fd: int,
    regions: list[tuple[int, int]],
    pattern: int,
    sector: int,
    progress: Progress,
    total: int,
) -> Verified:
    """Read the regions back and compare them with the pattern, IN_FLIGHT blocks at a time.
    Each thread reads its block into its own buffer and checks it in place with libc's memcmp
    (through ctypes: no copy, without the GIL): every byte equals the pattern when the first
    does and memcmp(block, block + 1, length - 1) finds no difference, which reads the block
    once while it is still in the CPU's cache."""
    result = Verified()
    buffers = [mmap.mmap(-1, CHUNK) for _ in range(IN_FLIGHT)]
    pinned = [ctypes.c_char.from_buffer(m) for m in buffers]
    addresses = [ctypes.addressof(p) for p in pinned]
    views = [memoryview(m) for m in buffers]

    def check(index: int, offset: int, length: int) -> OSError | bool:
        slot = index % IN_FLIGHT
        try:
            got = os.preadv(fd, [views[slot][:length]], offset)
        except OSError as exc:
            return exc
        if got != length:
            return OSError(errno.EIO, f"short read: {got} of {length}")
        return buffers[slot][0] == pattern and (
            _libc.memcmp(addresses[slot], addresses[slot] + 1, length - 1) == 0
        )

    try:
        with contextlib.closing(_pipelined(regions, check)) as done:
            for offset, length, outcome in done:
                if outcome is False:
                    result.mismatched += 1
                    result.first_problem = result.first_problem or f"pattern mismatch at {offset}"
                elif isinstance(outcome, OSError):
                    unreadable = _unreadable_sectors(fd, offset, length, sector)
                    result.unreadable += unreadable or length // sector
                    result.first_problem = (
                        result.first_problem or f"read error at byte {offset}: {outcome}"
                    )
                result.bytes_read += length
                progress("verify", result.bytes_read, total)
    finally:
        for view in views:
            view.release()
        pinned.clear()  # the buffers can be closed once nothing points into them
        for buffer in buffers:
            buffer.close()
    return result


def _unreadable_sectors(fd: int, offset: int, length: int, sector: int) -> int:
    buffer = mmap.mmap(-1, max(sector, mmap.PAGESIZE))
    bad = 0
    for at in range(offset, offset + length, sector):
        view = memoryview(buffer)[:sector]
        try:
            if os.preadv(fd, [view], at) != sector:
                bad += 1
        except OSError:
            bad += 1
        finally:
            view.release()
    buffer.close()
    return bad


def _overwrite(fd: int, size: int, pattern: int, progress: Progress) -> tuple[int, OSError | None]:
    """Write the pattern over [0, size), IN_FLIGHT blocks at a time from one buffer filled once.
    Returns the bytes written in order from byte 0 (a failed block ends the count) and the
    first failure."""
    buffer = mmap.mmap(-1, CHUNK)
    buffer.write(bytes([pattern]) * CHUNK)
    whole = memoryview(buffer)

    def write(index: int, offset: int, length: int) -> OSError | None:
        try:
            done = os.pwritev(fd, [whole[:length]], offset)
        except OSError as exc:
            return exc
        if done != length:
            return OSError(errno.EIO, f"short write at byte {offset}: {done} of {length}")
        return None

    written = 0
    failure: OSError | None = None
    try:
        # closing: the writes still in flight end before the buffer is released
        with contextlib.closing(_pipelined(list(_chunks(size, CHUNK)), write)) as done:
            for _, length, outcome in done:
                if outcome is not None:
                    failure = outcome
                    break
                written += length
                progress("write", written, size)
    finally:
        whole.release()
        buffer.close()
    return written, failure


def clear(
    drive: DriveInfo,
    log: Log,
    *,
    pattern: int = 0x00,
    sample_rate: float = 1.0,
    progress: Progress = lambda phase, done, total: None,
) -> Evidence:
    """Overwrite every addressable byte with `pattern`, flush, and read back."""
    started = datetime.now(UTC)
    size = drive.size_bytes
    verification = (
        "full read-back" if sample_rate >= 1 else f"sampled read-back ({sample_rate:.0%})"
    )
    evidence = Evidence(
        device=drive.path,
        model=drive.model,
        serial=drive.serial or drive.name,
        size_bytes=size,
        kind=drive.kind,
        method="clear",
        technique=f"single-pass overwrite with 0x{pattern:02X}",
        started_at=started,
        ended_at=started,
        pattern=f"0x{pattern:02X}",
        verification=verification,
        verification_sample_rate=min(1.0, sample_rate),
    )
    log(f"{TOOL_NAME} {VERSION}: Clear (NIST SP 800-88 Rev. 1) of {drive.path}")
    log(f"drive model={drive.model} serial={drive.serial} size={size} kind={drive.kind}")
    log(
        f"technique: {evidence.technique}, blocks of {CHUNK} bytes, {IN_FLIGHT} in flight, "
        "O_DIRECT, one fsync after the last write"
    )
    try:
        fd, direct = _open(drive.path, os.O_WRONLY)
    except OSError as exc:
        log(f"open for writing failed: {exc}")
        return _finish(evidence, log, error=f"cannot open for writing: {exc}")
    log(f"opened for writing ({'O_DIRECT' if direct else 'buffered, O_DIRECT refused'})")
    written = 0
    began = time.monotonic()
    try:
        written, failure = _overwrite(fd, size, pattern, progress)
        if failure is not None:
            raise failure
        wrote = time.monotonic()
        os.fsync(fd)
    except OSError as exc:
        log(f"write failed after {written} bytes: {exc}")
        os.close(fd)
        return _finish(
            evidence, log, error=f"write failed at byte {written}: {exc}", written=written
        )
    flushed = time.monotonic()
    os.close(fd)
    evidence.write_seconds = round(wrote - began, 3)
    evidence.flush_seconds = round(flushed - wrote, 3)
    log(
        f"wrote {written} bytes in {wrote - began:.2f} s, "
        f"then flushed them to the drive (fsync) in {flushed - wrote:.2f} s"
    )
    evidence.passes = 1
    evidence.throughput_write_mb_s = round(written / 1e6 / max(flushed - began, 1e-9), 1)

    seed = random.SystemRandom().randrange(2**32)
    regions = _sampled(size, CHUNK, sample_rate, seed)
    log(
        f"verification: {verification}, {len(regions)} blocks of up to {CHUNK} bytes, "
        f"{IN_FLIGHT} in flight" + (f", seed {seed}" if sample_rate < 1 else "")
    )
    try:
        fd, direct = _open(drive.path, os.O_RDONLY)
    except OSError as exc:
        log(f"open for verification failed: {exc}")
        return _finish(evidence, log, error=f"cannot open for verification: {exc}", written=written)
    if not direct:
        _drop_cache(fd)
    began = time.monotonic()
    checked = _verify(
        fd, regions, pattern, _sector_size(drive), progress, sum(n for _, n in regions)
    )
    verify_seconds = time.monotonic() - began
    os.close(fd)
    evidence.bytes_verified = checked.bytes_read
    evidence.mismatched_blocks = checked.mismatched
    evidence.unreadable_sectors = checked.unreadable
    evidence.verify_seconds = round(verify_seconds, 3)
    evidence.throughput_verify_mb_s = round(checked.bytes_read / 1e6 / max(verify_seconds, 1e-9), 1)
    log(
        f"read back {checked.bytes_read} bytes in {verify_seconds:.2f} s: "
        f"{checked.mismatched} mismatched blocks, {checked.unreadable} unreadable sectors"
    )
    error = checked.first_problem
    return _finish(evidence, log, error=error, written=written, verified=error is None)


MARKER = b"GREENIT-WORKBENCH-PURGE-MARKER:"


def purge(
    drive: DriveInfo,
    technique: Purge,
    log: Log,
    *,
    markers: int = 64,
    progress: Progress = lambda phase, done, total: None,
) -> Evidence:
    """Run the drive's own purge, verified by markers that must not survive it."""
    started = datetime.now(UTC)
    evidence = Evidence(
        device=drive.path,
        model=drive.model,
        serial=drive.serial or drive.name,
        size_bytes=drive.size_bytes,
        kind=drive.kind,
        method="purge",
        technique=technique.technique,
        tools_used={technique.tool: probe.version(technique.tool)},
        started_at=started,
        ended_at=started,
        verification=f"sampled read-back of {markers} marker blocks written before the purge",
        verification_sample_rate=min(1.0, markers * mmap.PAGESIZE / drive.size_bytes),
    )
    log(
        f"{TOOL_NAME} {VERSION}: Purge (NIST SP 800-88 Rev. 1) of {drive.path}: "
        f"{technique.technique}"
    )
    log(
        f"drive model={drive.model} serial={drive.serial} size={drive.size_bytes} kind={drive.kind}"
    )
    page = mmap.PAGESIZE
    spots = sorted(
        {0, drive.size_bytes - page}
        | {random.randrange(0, drive.size_bytes // page) * page for _ in range(markers - 2)}
    )
    buffer = mmap.mmap(-1, page)
    try:
        fd, _ = _open(drive.path, os.O_WRONLY)
        for spot in spots:
            buffer.seek(0)
            buffer.write((MARKER + str(spot).encode()).ljust(page, b"\xa5"))
            os.pwritev(fd, [buffer], spot)
        os.fsync(fd)
        os.close(fd)
    except OSError as exc:
        log(f"writing the markers failed: {exc}")
        return _finish(evidence, log, error=f"writing the verification markers failed: {exc}")
    log(f"wrote {len(spots)} marker blocks")
    for command in technique.commands:
        shown = ["***" if arg == "greenit" else arg for arg in command]
        log(f"run: {technique.tool} {' '.join(shown)}")
        out = probe.run(technique.tool, *command, timeout=24 * 3600)
        log(f"exit {out.returncode}: {(out.stdout + out.stderr).strip()[:2000]}")
        if out.returncode != 0:
            return _finish(
                evidence, log, error=f"{technique.tool} failed: {out.stderr.strip()[:300]}"
            )
    progress("purge", 1, 1)
    surviving = 0
    fd, direct = _open(drive.path, os.O_RDONLY)
    if not direct:
        _drop_cache(fd)
    for spot in spots:
        try:
            os.preadv(fd, [buffer], spot)
        except OSError as exc:
            evidence.unreadable_sectors += page // _sector_size(drive)
            log(f"marker at {spot} unreadable: {exc}")
            continue
        if buffer[: len(MARKER)] == MARKER:
            surviving += 1
    os.close(fd)
    buffer.close()
    evidence.bytes_verified = len(spots) * page
    evidence.mismatched_blocks = surviving
    log(f"verification: {surviving} of {len(spots)} markers survived")
    error = f"{surviving} marker blocks survived the purge" if surviving else None
    if evidence.unreadable_sectors:
        error = error or f"{evidence.unreadable_sectors} sectors unreadable after the purge"
    return _finish(evidence, log, error=error, verified=error is None)


def _finish(
    evidence: Evidence, log: Log, *, error: str | None, written: int = 0, verified: bool = False
) -> Evidence:
    evidence.ended_at = datetime.now(UTC)
    evidence.bytes_written = max(evidence.bytes_written, written)
    evidence.error = error
    evidence.verified = verified and error is None
    evidence.result = "passed" if evidence.verified else "failed"
    log(f"result: {evidence.result}" + (f" ({error})" if error else ""))
    evidence.log_file = log.path.name
    evidence.log_sha256 = log.close()
    return evidence


Method = Literal["auto", "clear", "purge"]


def erase(
    drive: DriveInfo,
    directory: Path,
    *,
    method: Method = "auto",
    sample_rate: float = 1.0,
    pattern: int = 0x00,
    progress: Progress = lambda phase, done, total: None,
) -> Evidence:
    """Sanitize one drive; the evidence JSON and the log go to `directory`. Raises Refused for
    a drive that must not be erased, before anything is written."""
    why = refusal(drive)
    if why is not None:
        raise Refused(f"{drive.path} ({drive.model}, serial {drive.serial}) is refused: {why}")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", drive.serial or drive.name)
    log = Log(directory / f"erasure-{name}.log")
    techniques = purges_of(drive) if method != "clear" else []
    if method == "purge" and not techniques:
        raise Refused(f"{drive.path} advertises no purge technique (use --method clear or auto)")
    if techniques:
        evidence = purge(drive, techniques[0], log, progress=progress)
        if evidence.result == "failed" and method == "auto":
            log = Log(log.path, list(log.lines))
            log(f"purge failed ({evidence.error}); falling back to Clear")
            evidence = clear(
                drive, log, sample_rate=sample_rate, pattern=pattern, progress=progress
            )
    else:
        log("no purge technique advertised: Clear")
        evidence = clear(drive, log, sample_rate=sample_rate, pattern=pattern, progress=progress)
    (directory / f"erasure-{name}.json").write_text(evidence.model_dump_json(indent=2))
    return evidence
