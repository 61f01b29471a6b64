"""`workbench` (or `python -m workbench`): snapshot, test, erase, run, upload.

Settings come from flags or the environment (`GREENIT_WORKBENCH_*`), so a stick's start script
can set them once. The key is read from a file on the stick and never printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from workbench import TOOL_NAME, VERSION, checks, erase, snapshot, station
from workbench.outbox import Queue, Services, Unreachable

console = Console(highlight=False)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GREENIT_WORKBENCH_{name}", default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__)
    p.add_argument("--version", action="version", version=f"{TOOL_NAME} {VERSION}")
    p.add_argument("--stick", type=Path, default=Path(_env("STICK", "workbench-stick")))
    p.add_argument("--diagnostics", default=_env("DIAGNOSTICS_URL", "http://127.0.0.1:8002"))
    p.add_argument("--intake", default=_env("INTAKE_URL", "http://127.0.0.1:8001"))
    p.add_argument("--key-file", type=Path, default=None, help="default: <stick>/workbench.key")
    p.add_argument("--location", default=_env("LOCATION", "workbench"))
    sub = p.add_subparsers(dest="command", required=True)

    def drives(s: argparse.ArgumentParser, what: str) -> None:
        s.add_argument(
            "--drive",
            action="append",
            default=[],
            metavar="DEV",
            help=f"{what} only this drive (repeatable); loop devices count only when named",
        )

    s = sub.add_parser("snapshot", help="read the hardware, write the snapshot, print a summary")
    drives(s, "describe")
    s.add_argument("--out", type=Path, help="default: a new directory under <stick>/machines")

    t = sub.add_parser("test", help="run the tests diagnostics grades")
    drives(t, "test")
    _test_options(t)
    t.add_argument("--out", type=Path)

    e = sub.add_parser("erase", help="sanitize drives (NIST SP 800-88 Rev. 1)")
    e.add_argument("devices", nargs="*", metavar="DEV", help="e.g. /dev/sda; none: every drive")
    _erase_options(e)
    e.add_argument("--out", type=Path)

    r = sub.add_parser("run", help="identify, snapshot, test, erase, post: the station flow")
    drives(r, "erase")
    r.add_argument("--asset-tag", help="the tag on the device; else the firmware's serial")
    r.add_argument("--pickup", help="register an unknown device under this pickup id")
    r.add_argument("--weight", type=float, help="kg, to register an unknown device")
    r.add_argument("--casing", choices=["none", "light", "heavy"])
    r.add_argument("--scratches", choices=["none", "light", "heavy"], dest="screen_scratches")
    r.add_argument("--cracked", action="store_true")
    _test_options(r)
    _erase_options(r)

    sub.add_parser("upload", help="send what is queued on the stick")
    return p


def _test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-mb", type=int, default=256, help="memory to test (bounded)")
    p.add_argument("--cpu-seconds", type=float, default=5.0)
    p.add_argument("--no-self-test", action="store_true", help="skip SMART short self-tests")
    for name in ("screen", "keyboard", "ports"):
        p.add_argument(f"--{name}", choices=["pass", "fail", "n/a"], help="the technician's check")


def _erase_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["auto", "clear", "purge"], default="auto")
    p.add_argument(
        "--sample-rate",
        type=float,
        default=1.0,
        help="share of the drive read back after Clear (1 = full read-back, the default)",
    )
    p.add_argument("--pattern", type=lambda v: int(v, 0), default=0, help="byte, e.g. 0x00")
    p.add_argument("--yes", action="store_true", help="erase without asking (station policy)")


def _machine_dir(args: argparse.Namespace, snap: snapshot.Snapshot | None = None) -> Path:
    if getattr(args, "out", None):
        out: Path = args.out
    else:
        name = (snap.serial if snap and snap.serial else None) or "machine"
        stamp = station.now().strftime("%Y%m%dT%H%M%SZ")
        out = args.stick / "machines" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _loops(devices: list[str]) -> list[str]:
    return [Path(d).name for d in devices if Path(d).name.startswith("loop")]


def _snapshot(args: argparse.Namespace) -> tuple[snapshot.Snapshot, Path, Path]:
    snap, raw = snapshot.take(loops=_loops(args.drive))
    if args.drive:
        wanted = {Path(d).name for d in args.drive}
        snap.drives = [d for d in snap.drives if d.name in wanted]
    out = _machine_dir(args, snap)
    snapshot.save_raw(raw, out / "raw")
    path = out / "snapshot.json"
    path.write_text(snap.model_dump_json(indent=2))
    for name in (k for k in raw if k.startswith("missing-")):
        tool = name.removeprefix("missing-")
        console.print(f"[yellow]{tool} is not installed: apt-get install {raw[name]}[/]")
    console.print(snapshot.summary(snap), markup=False)
    console.print(f"snapshot: {path}")
    return snap, out, path


def _tests(
    args: argparse.Namespace, snap: snapshot.Snapshot, out: Path
) -> tuple[checks.TestRun, Path]:
    operator: dict[str, Any] = {
        n: getattr(args, n) for n in ("screen", "keyboard", "ports") if getattr(args, n)
    }
    console.print("testing: cpu load, memory, SMART, battery ...")
    run = checks.run_checks(
        snap,
        memory_mb=args.memory_mb,
        cpu_seconds=args.cpu_seconds,
        smart_self_test=not args.no_self_test,
        operator=operator,
    )
    path = out / "tests.json"
    path.write_text(run.model_dump_json(indent=2))
    for name, check in run.checks.items():
        colour = {"pass": "green", "fail": "red", "n/a": "dim"}[check.outcome]
        console.print(f"  {name:9} [{colour}]{check.outcome:4}[/] {escape(check.summary)}")
    console.print(f"tests: {path}")
    return run, path


@contextmanager
def _bar() -> Iterator[erase.Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}
        shown: dict[str, float] = {}

        def update(phase: str, done: int, total: int) -> None:
            # called for every block written or read: the bar is updated 10 times a second
            now = time.monotonic()
            if done < total and now - shown.get(phase, 0.0) < 0.1:
                return
            shown[phase] = now
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield update


def _confirm(drives: list[snapshot.DriveInfo], yes: bool) -> bool:
    for d in drives:
        console.print(
            f"  ERASE {d.path}: {d.model or '?'} serial {station.drive_serial(d)}, "
            f"{d.size_bytes:,} bytes = {d.size_bytes / 1e9:,.2f} GB ({d.kind})"
        )
    if yes:
        return True
    if not sys.stdin.isatty():
        console.print("[red]not confirmed: no terminal to ask; pass --yes where policy allows[/]")
        return False
    return console.input("Everything on these drives will be destroyed. Type YES: ") == "YES"


def _erase(
    args: argparse.Namespace, drives: list[snapshot.DriveInfo], out: Path
) -> list[erase.Evidence]:
    allowed: list[snapshot.DriveInfo] = []
    for d in drives:
        why = erase.refusal(d)
        if why is None:
            allowed.append(d)
        else:
            console.print(
                f"[yellow]{escape(f'refused {d.path} ({d.model}, {d.serial}): {why}')}[/]"
            )
    if not allowed or not _confirm(allowed, args.yes):
        return []
    results = []
    for d in allowed:
        drive = d.model_copy(update={"serial": station.drive_serial(d)})
        console.print(f"erasing {d.path} ...")
        with _bar() as progress:
            try:
                evidence = erase.erase(
                    drive,
                    out,
                    method=args.method,
                    sample_rate=args.sample_rate,
                    pattern=args.pattern,
                    progress=progress,
                )
            except erase.Refused as exc:
                console.print(f"[yellow]{escape(str(exc))}[/]")
                continue
        colour = "green" if evidence.result == "passed" else "red"
        console.print(
            f"  [{colour}]{evidence.result}[/] {evidence.method} ({evidence.technique}), "
            f"{evidence.bytes_written:,} bytes written, {evidence.verification}: "
            f"{evidence.bytes_verified:,} bytes read back"
            + escape(f" - {evidence.error}" if evidence.error else "")
        )
        console.print(f"  log {out / evidence.log_file} sha256 {evidence.log_sha256}")
        results.append(evidence)
    return results


def _services(args: argparse.Namespace) -> Services:
    key_file = args.key_file or Path(_env("KEY_FILE", str(args.stick / "workbench.key")))
    return Services(diagnostics=args.diagnostics, intake=args.intake, key_file=key_file)


def _ask(prompt: str, choices: list[str]) -> str:
    if not sys.stdin.isatty():
        raise SystemExit(f"{prompt}: give it as a flag (no terminal to ask)")
    while True:
        answer = console.input(f"{prompt} [{'/'.join(choices)}]: ").strip()
        if answer in choices:
            return answer


def cmd_run(args: argparse.Namespace) -> int:
    services = _services(args)
    queue = Queue(args.stick)
    snap, out, snap_path = _snapshot(args)
    identify = {"asset_tag": args.asset_tag, "serial": None if args.asset_tag else snap.serial}
    if not identify["asset_tag"] and not identify["serial"]:
        raise SystemExit("no asset tag given and the firmware has no serial: pass --asset-tag")
    device: dict[str, Any] | None = None
    try:
        device = station.identify(services, asset_tag=args.asset_tag, serial=identify["serial"])
        if device is None:
            console.print(f"[yellow]{escape(f'diagnostics knows no device with {identify}')}[/]")
            wants = (
                args.pickup
                and args.weight
                and (args.yes or _ask("Register it?", ["y", "n"]) == "y")
            )
            if not wants:
                raise SystemExit(
                    "unknown device: scan it in at the station first, or pass --pickup and "
                    "--weight to register it here"
                )
            device = station.register(
                services,
                pickup_id=args.pickup,
                snap=snap,
                asset_tag=args.asset_tag,
                weight_kg=args.weight,
                location=args.location,
            )
        console.print(f"device {device['device_id']} (asset tag {device['asset_tag']})")
    except Unreachable as exc:
        console.print(f"[yellow]{escape(f'offline ({exc}): results are queued on the stick')}[/]")
    cosmetic = {
        "casing": args.casing or _ask("Casing wear", ["none", "light", "heavy"]),
        "screen_scratches": args.screen_scratches
        or _ask("Screen scratches", ["none", "light", "heavy"]),
        "cracked": args.cracked,
    }
    tests, tests_path = _tests(args, snap, out)
    # The machine's own drives: not the stick the workbench booted from, nor other removables.
    drives = [d for d in snap.drives if not d.removable and not erase.booted_from(d)]
    evidence = _erase(args, drives, out)
    report = station.report_body(
        snap,
        tests,
        drives=drives,
        cosmetic=cosmetic,
        location=args.location,
        snapshot_sha256=station.file_sha256(snap_path),
        tests_sha256=station.file_sha256(tests_path),
        report_id=uuid4(),
    )
    station.enqueue(
        queue,
        device_id=device["device_id"] if device else None,
        identify=identify,
        report=report,
        erasures=[station.erasure_body(e, location=args.location) for e in evidence],
    )
    for line in station.send(queue, services):
        console.print(line, markup=False)
    return 0 if not queue.pending else 3


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "snapshot":
        _snapshot(args)
        return 0
    if args.command == "test":
        snap, out, _ = _snapshot(args)
        run, _ = _tests(args, snap, out)
        return 0 if "fail" not in run.results.values() else 1
    if args.command == "erase":
        wanted = {Path(d).name for d in args.devices}
        drives = [
            d
            for d in erase.current_drives(_loops(args.devices))
            if (d.name in wanted) or (not wanted and not d.removable)
        ]
        missing = wanted - {d.name for d in drives}
        if missing:
            raise SystemExit(f"no such drive: {', '.join(sorted(missing))}")
        evidence = _erase(args, drives, _machine_dir(args))
        return 0 if evidence and all(e.result == "passed" for e in evidence) else 1
    if args.command == "run":
        return cmd_run(args)
    if args.command == "upload":
        queue = Queue(args.stick)
        console.print(f"{len(queue.pending)} post(s) queued")
        for line in station.send(queue, _services(args)):
            console.print(line, markup=False)
        return 0 if not queue.pending else 3
    return 2
