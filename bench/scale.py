"""S1: two diagnostics processes in one consumer group.

    uv run python -m bench.scale --devices 2000

Starts two diagnostics processes (same namespace, so the same group) on ports of their own,
publishes `--devices` device.received events (as intake encodes them, keyed by device id over
the topic's 6 partitions) and waits until diagnostics' store holds every device. Reports how
Kafka split the partitions (ConsumerGroupCommand --describe --members --verbose), how many
records each process handled (FastStream's received-messages counter on its /metrics) and its
rate over the build. Then diagnoses and wipes `--diagnose` of the devices over HTTP,
alternating between the two processes, and checks that nothing took effect twice: one store
document per device, each diagnosed one certified, and on device.diagnosed, device.wiped and
device.ready exactly one event per device (a second event id for a device, whatever its
content, is a duplicate effect).
"""

import argparse
import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from bench import common
from bench.common import BOOTSTRAP, STAFF, say
from bench.lifecycle import ALL_PASS
from bench.replay import publish_received
from shared.credentials import tool_credentials
from tools.chaos import read_topic
from tools.cluster import Cluster, running_cluster

RECEIVED = re.compile(r"^faststream_received_messages_total\{(?P<labels>[^}]*)\} (?P<n>[\d.e+]+)$")


@dataclass
class ScaleResult:
    devices: int
    diagnosed: int
    build_s: float = 0.0
    assignment: str = ""
    handled: dict[str, int] = field(default_factory=dict)
    checks: list[tuple[str, object, object, str]] = field(default_factory=list)
    invariants: int = -1
    server_errors: list[str] = field(default_factory=list)


def handled_count(metrics: str) -> int:
    """Records of device.received this process consumed, from its /metrics."""
    total = 0.0
    for line in metrics.splitlines():
        found = RECEIVED.match(line)
        if found and "device.received" in found.group("labels"):
            total += float(found.group("n"))
    return int(total)


async def diagnose_all(
    urls: list[str], key: str, device_ids: list[str], server_errors: list[str]
) -> None:
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:

        async def one(n: int, device_id: str) -> None:
            base = urls[n % len(urls)] + f"/devices/{device_id}"
            report = {
                "specs": {
                    "cpu_model": "Intel Core i5-8350U",
                    "cpu_cores": 4,
                    "ram_gb": 8,
                    "drives": [{"serial": f"D-{n}", "kind": "ssd", "capacity_gb": 256}],
                    "battery_health_pct": 85,
                },
                "tests": ALL_PASS,
                "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
                "location": "Warehouse Brussels",
            }
            erasure = {
                "drive_serial": f"D-{n}",
                "method": "purge",
                "technique": "NVMe secure erase",
                "tool": "nwipe",
                "tool_version": "0.37",
                "verified": True,
                "verification": "full read-back",
                "performed_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "location": "Warehouse Brussels",
            }
            async with gate:
                await post(base + "/reports", report)
                await post(base + "/erasures", erasure)

        async def post(url: str, body: dict[str, object]) -> None:
            """POST; a 5xx (the store said SQLITE_BUSY) is retried, and a 409 after a retry
            means the first try took effect after all."""
            for attempt in range(8):
                r = await http.post(url, json=body, headers={"X-API-Key": key})
                if r.status_code == 201 or (attempt and r.status_code == 409):
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text}")
                server_errors.append(url)
                await asyncio.sleep(0.2 * 2**attempt)
            raise RuntimeError(f"{url}: 5xx after retries")

        await asyncio.gather(*(one(n, d) for n, d in enumerate(device_ids)))


async def run(devices: int, diagnose: int, keep: bool) -> ScaleResult:
    namespace = common.new_namespace("scale")
    keys = await common.prepare(namespace)
    result = ScaleResult(devices, diagnosed=diagnose)
    env = common.service_env(namespace)
    logs = common.LOGS / namespace.rstrip("_")
    client = common.mongo_client()
    db = client[f"{namespace}greenit_diagnostics"]
    try:
        with running_cluster(env, logs, ["diagnostics"]) as first:
            second = Cluster(env=first.env, log_dir=logs / "second")
            second.log_dir.mkdir(parents=True, exist_ok=True)
            second.start("diagnostics")
            try:
                second.wait_healthy("diagnostics")
                urls = [first.urls["diagnostics"], second.urls["diagnostics"]]
                await asyncio.sleep(5)  # the second member joins; the group rebalances
                say(f"scale {namespace}: publishing {devices} device.received")
                started = time.monotonic()
                await publish_received(namespace, devices)
                while (count := await db.devices.count_documents({})) < devices:
                    if time.monotonic() - started > 1800:
                        raise RuntimeError(f"only {count}/{devices} received")
                    await asyncio.sleep(0.2)
                result.build_s = time.monotonic() - started
                result.assignment = common.java_tool(
                    "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                    "--bootstrap-server", BOOTSTRAP, "--describe", "--members", "--verbose",
                    "--command-config", str(tool_credentials().properties_file()),
                    "--group", common.group_id(namespace, "diagnostics"),
                )  # fmt: skip
                async with httpx.AsyncClient(trust_env=False) as http:
                    for n, url in enumerate(urls, 1):
                        page = (await http.get(url + "/metrics")).text
                        result.handled[f"diagnostics #{n}"] = handled_count(page)
                print(consumption(result), flush=True)
                ids = [str(d["_id"]) async for d in db.devices.find({}, {"_id": 1})][:diagnose]
                say(f"diagnosing {len(ids)} devices over both instances")
                await diagnose_all(urls, keys[STAFF], ids, result.server_errors)
                await asyncio.sleep(6)
            finally:
                second.stop("diagnostics")
        await check(result, client, namespace, ids)
    finally:
        await client.close()
        if not keep:
            await common.cleanup(namespace)
    return result


async def check(result: ScaleResult, client: object, namespace: str, ids: list[str]) -> None:
    db = common.mongo_client()[f"{namespace}greenit_diagnostics"]
    n = result.devices
    docs = [d async for d in db.devices.find({}, {"_id": 1, "state": 1, "certificate": 1})]
    distinct = len({str(d["_id"]) for d in docs})
    n_diagnosed = len(ids)
    result.checks.append(
        ("store: one document per device", n, distinct, _ok(distinct == len(docs) == n))
    )
    certified = sum(1 for d in docs if (d.get("certificate") or {}).get("certificate_id"))
    result.checks.append(
        ("store: certified (ready)", n_diagnosed, certified, _ok(certified == n_diagnosed))
    )
    handled = sum(result.handled.values())
    result.checks.append(("records handled, both instances", n, handled, _ok(handled >= n)))
    for topic in ("device.diagnosed", "device.wiped", "device.ready"):
        records = await read_topic(BOOTSTRAP, namespace + topic)
        per_device = Counter(r.key.decode() for r in records)
        twice = sum(1 for c in per_device.values() if c > 1)
        result.checks.append((f"{topic}: events per device > 1", 0, twice, _ok(twice == 0)))
        found = len(per_device)
        result.checks.append((f"{topic}: devices", n_diagnosed, found, _ok(found == n_diagnosed)))


def _ok(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def consumption(result: ScaleResult) -> str:
    rows = [
        (name, count, count / result.build_s if result.build_s else 0.0)
        for name, count in result.handled.items()
    ]
    total = sum(result.handled.values())
    rows.append(("both", total, total / result.build_s if result.build_s else 0.0))
    assignment = "\n".join(
        line for line in result.assignment.splitlines() if line.strip() and "GROUP" not in line[:6]
    )
    return "\n".join(
        [
            f"S1: {result.devices:,} device.received consumed by two diagnostics processes in "
            f"{result.build_s:.1f} s",
            "",
            common.table(["instance", "records handled", "records/s"], rows),
            "",
            "partition assignment (ConsumerGroupCommand --describe --members --verbose):",
            result.assignment.strip() or assignment,
        ]
    )


def report(result: ScaleResult) -> str:
    return "\n".join(
        [
            f"duplicate effects after diagnosing {result.diagnosed} devices over both processes:",
            common.table(["check", "expected", "observed", "result"], result.checks),
            f"HTTP 5xx answers retried while diagnosing: {len(result.server_errors)}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=2_000)
    p.add_argument("--diagnose", type=int, default=200, help="devices diagnosed over HTTP")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.devices, args.diagnose, args.keep))
    print(report(result))
    return 0 if all(c[3] == "ok" for c in result.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
