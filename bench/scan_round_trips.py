"""Store round trips of one scan: the commands intake sends the store for
`POST /pickups/{id}/devices`, and those that apply the resulting `device.received` to the
donor's custody view (intake's own consumer before custody had its own service; custody's now).

    uv run python -m bench.scan_round_trips [--scans 5] [--keep]

Starts intake (and custody, when this checkout has it) in a fresh namespace of the running Kafka
and store with `GREENIT_SLOW_STORE_COMMAND_MS=0.001`, so every store command is logged with its
name, collection and filter shape (PyMongo command monitoring, `shared.mongo.SlowCommands`).
One scan warms up (first-use index and counter documents); then each measured scan is sent and
awaited until the custody view shows it. A log line is the scan's when it carries the request's
`pickup_id` and no event, the apply's when it carries `event_type: device.received`; the
polling reads (`GET /devices/{id}`) carry neither and are left out. Prints per-scan means by
command and collection, with and without the caller's key lookup (`api_keys`, one per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import DONOR, LOGS, STAFF, cleanup, new_namespace, prepare, say, service_env
from tools.cluster import SERVICES, running_cluster

Command = dict[str, Any]


def logged_commands(log: Path, offset: int) -> list[tuple[dict[str, Any], Command]]:
    """(the log line, its store command) of every slow-command line after `offset`."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    found = []
    for line in lines:
        if '"slow store command"' not in line:
            continue
        record = json.loads(line)
        found.append((record, record["store_command"]))
    return found


def shape(command: Command) -> str:
    return f"{command['command']} {command['collection']}".strip()


def summary(commands: list[Command], scans: int) -> list[str]:
    per = Counter(shape(c) for c in commands)
    without_keys = sum(n for s, n in per.items() if not s.endswith(" api_keys"))
    collections = {c["collection"] for c in commands if c["collection"] != "api_keys"}
    lines = [
        f"  {sum(per.values()) / scans:.1f} per scan, {without_keys / scans:.1f} without the key "
        f"lookup, {len(collections)} collection(s): {', '.join(sorted(collections))}"
    ]
    lines += [f"    {n / scans:4.1f}  {s}" for s, n in sorted(per.items())]
    return lines


async def measure(scans: int, keep: bool) -> None:
    namespace = new_namespace("rt")
    keys = await prepare(namespace)
    env = service_env(namespace, "INFO") | {
        "GREENIT_SLOW_STORE_COMMAND_MS": "0.001",
        "GREENIT_LOG_FORMAT": "json",
    }
    services = ["intake", *(["custody"] if "custody" in SERVICES else [])]
    reader = services[-1]  # who serves the custody view
    log_dir = LOGS / namespace
    try:
        with running_cluster(env, log_dir, services) as cluster:
            intake, view = cluster.urls["intake"], cluster.urls[reader]
            staff, donor = {"X-API-Key": keys[STAFF]}, {"X-API-Key": keys[DONOR]}
            async with httpx.AsyncClient(timeout=60) as http:
                now = time.time()
                body = {
                    "address": {
                        "street": "Rue 1",
                        "postal_code": "1040",
                        "city": "Brussels",
                        "country": "BE",
                    },
                    "contact": {"name": "Jo", "email": "it@acme.example"},
                    "window": {
                        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400)),
                        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3 * 86400)),
                    },
                    "expected": {"laptop": scans + 1},
                }
                answer = await http.post(intake + "/pickups", json=body, headers=donor)
                answer.raise_for_status()
                pickup = answer.json()["pickup_id"]
                when = {"scheduled_for": body["window"]["start"]}
                answer = await http.post(
                    f"{intake}/pickups/{pickup}/schedule", json=when, headers=staff
                )
                answer.raise_for_status()

                async def scan(n: int) -> None:
                    device = {
                        "serial_number": f"RT-{namespace}{n}",
                        "category": "laptop",
                        "make": "HP",
                        "model": "EliteBook 840 G5",
                        "weight_kg": 1.5,
                        "location": "Warehouse Brussels",
                    }
                    answer = await http.post(
                        f"{intake}/pickups/{pickup}/devices", json=device, headers=staff
                    )
                    assert answer.status_code == 201, answer.text
                    device_id = answer.json()["device_id"]
                    deadline = time.monotonic() + 60
                    while (
                        await http.get(f"{view}/devices/{device_id}", headers=staff)
                    ).status_code != 200:
                        assert time.monotonic() < deadline, "the custody view never showed it"
                        await asyncio.sleep(0.2)

                await scan(0)  # warm-up
                await asyncio.sleep(2)  # the warm-up's stragglers (relay, summaries) land
                logs = {s: log_dir / f"{s}.log" for s in services}
                offsets = {s: log.stat().st_size for s, log in logs.items()}
                for n in range(1, scans + 1):
                    await scan(n)
                await asyncio.sleep(2)
        by_role: dict[str, list[Command]] = {"scan": [], "apply": [], "other": []}
        for service in services:
            for record, command in logged_commands(logs[service], offsets[service]):
                if record.get("event_type") == "device.received":
                    by_role["apply"].append(command | {"service": service})
                elif record.get("pickup_id") == pickup and "event_id" not in record:
                    by_role["scan"].append(command | {"service": service})
                elif "device_id" not in record:  # not a polling read by device id
                    by_role["other"].append(command | {"service": service})
        say(f"{scans} scans measured; the custody view served by {reader}")
        print("intake, POST /pickups/{id}/devices:")
        print("\n".join(summary(by_role["scan"], scans)))
        appliers = sorted({c["service"] for c in by_role["apply"]})
        print(f"{', '.join(appliers)}, applying device.received:")
        print("\n".join(summary(by_role["apply"], scans)))
        if by_role["other"]:
            print("unattributed (background):")
            print("\n".join(summary(by_role["other"], scans)))
    finally:
        if not keep:
            await cleanup(namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scan_round_trips", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--scans", type=int, default=5, help="measured scans (after a warm-up)")
    parser.add_argument("--keep", action="store_true", help="keep the namespace's data")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.scans, args.keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
