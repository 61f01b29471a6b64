"""What SASL/SCRAM costs: P1 (the lifecycle) and P2 (the raw relay), with and without it, in pairs.

    uv run python -m bench.sasl --pairs 3 --devices 200 --concurrency 32 --raw-messages 5000

Two brokers of the bench's own are started from `infra/kafka/server.properties` on free ports
(data and logs under `.local/bench/sasl-<time>/`): one as `./dev` runs it (SASL/SCRAM-SHA-512,
ACLs), one the same without authentication or authorizer (PLAINTEXT). Both run for the whole
measurement, so each arm shares the machine with the other's idle broker. Each arm is a process
of its own (`python -m bench.sasl arm`) pointed at its broker with `GREENIT_KAFKA_BOOTSTRAP` and
`GREENIT_KAFKA_SECURITY_PROTOCOL`: it runs P1 (the services as processes, the shared store, a
namespace of its own), then P2 with a fixed number of hops and record size, and prints one JSON
line. The order alternates by pair (with, without; without, with; ...) so that a drift of the
machine's speed falls on both arms; the load average is read before each arm. The table gives
each arm's runs, their medians, and the ratios with/without (pair by pair and of the medians).
Last, where SCRAM's work is (once per connection: a TCP connection plus its authentication, then
the same bytes as PLAINTEXT), it times `--connects` connections to each broker, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn

from bench.common import LOGS, cpu_seconds, say, table
from shared.credentials import ADMIN, PLAINTEXT, SECURITY_PROTOCOL
from tools.cluster import free_port
from tools.localinfra import LocalKafka

MARK = "bench.sasl arm result: "
ARMS = ("with SASL", "without")


@dataclass
class Arm:
    name: str
    kafka: LocalKafka

    @property
    def protocol(self) -> str:
        return SECURITY_PROTOCOL if self.kafka.sasl else PLAINTEXT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sasl", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", default="measure", choices=["measure", "arm"])
    p.add_argument("--pairs", type=int, default=3, help="pairs of arms (at least 1)")
    p.add_argument("--devices", type=int, default=200, help="P1 devices per arm")
    p.add_argument("--concurrency", type=int, default=32, help="P1 devices in flight")
    p.add_argument("--raw-messages", type=int, default=5000, help="P2 messages per arm")
    p.add_argument("--hops", type=int, default=5, help="P2 relay hops")
    p.add_argument("--size", type=int, default=630, help="P2 record bytes")
    p.add_argument("--connects", type=int, default=100, help="connections timed per broker")
    p.add_argument("--keep", action="store_true", help="keep the brokers' data and logs")
    return p


# ---- one arm, in a process of its own ---------------------------------------------------------


def arm(args: argparse.Namespace) -> int:
    """P1 then P2 against the broker the environment names; one JSON line at the end."""
    from bench import lifecycle, raw_relay  # they read GREENIT_KAFKA_BOOTSTRAP when imported

    config = lifecycle.LifecycleConfig(devices=args.devices, concurrency=args.concurrency)
    life = asyncio.run(lifecycle.run(config))
    print(lifecycle.report(life), flush=True)
    raw = asyncio.run(raw_relay.chain(args.raw_messages, args.size, args.hops))
    result = {
        "devices": life.devices,
        "completed": life.completed,
        "p1_per_s": life.devices_per_s,
        "cpu_s": sum(life.cpu_s.values()),
        "invariants": life.invariants,
        "raw_per_s": raw.per_s,
    }
    print(MARK + json.dumps(result), flush=True)
    return 0 if life.completed == life.devices and life.invariants == 0 else 1


# ---- the measurement ---------------------------------------------------------------------------


def run_arm(arm_: Arm, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    env = os.environ | {
        "GREENIT_KAFKA_BOOTSTRAP": arm_.kafka.bootstrap,
        "GREENIT_KAFKA_SECURITY_PROTOCOL": arm_.protocol,
    }
    for name in ("GREENIT_KAFKA_USERNAME", "GREENIT_KAFKA_PASSWORD"):
        env.pop(name, None)  # the tools connect as the admin, the services as themselves
    argv = [sys.executable, "-m", "bench.sasl", "arm"]
    for flag in ("devices", "concurrency", "raw_messages", "hops", "size"):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    load = os.getloadavg()[0]
    broker = arm_.kafka.process
    broker_cpu = cpu_seconds(broker.pid) if broker else 0.0
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    lines = [line for line in log.read_text().splitlines() if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"the arm {arm_.name} printed no result (exit {done.returncode}): {log}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(MARK))
    result["broker_cpu_s"] = (cpu_seconds(broker.pid) if broker else 0.0) - broker_cpu
    result["load"] = load
    result["wall_s"] = time.monotonic() - started
    result["exit"] = done.returncode
    return result


def report(runs: list[tuple[int, str, dict[str, Any]]]) -> str:
    rows: list[list[object]] = []
    for pair, name, r in runs:
        cpu_ms = 1000 * (r["cpu_s"] + r["broker_cpu_s"]) / max(r["completed"], 1)
        rows.append([
            f"pair {pair + 1}, {name}", f"{r['load']:.2f}", f"{r['completed']}/{r['devices']}",
            f"{r['p1_per_s']:.2f}", f"{cpu_ms:,.0f}", f"{r['broker_cpu_s']:.1f}",
            f"{r['raw_per_s']:,.0f}", str(r["invariants"]),
        ])  # fmt: skip
    by = {name: [r for _, n, r in runs if n == name] for name in ARMS}

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in by[name])

    for name in ARMS:
        cpu = statistics.median(
            1000 * (r["cpu_s"] + r["broker_cpu_s"]) / max(r["completed"], 1) for r in by[name]
        )
        rows.append([
            f"median, {name}", f"{med(name, 'load'):.2f}", "", f"{med(name, 'p1_per_s'):.2f}",
            f"{cpu:,.0f}", f"{med(name, 'broker_cpu_s'):.1f}", f"{med(name, 'raw_per_s'):,.0f}",
            "",
        ])  # fmt: skip
    pairs = sorted({p for p, _, _ in runs})
    pair_ratio = {
        key: [
            next(r[key] for p, n, r in runs if p == pair and n == ARMS[0])
            / next(r[key] for p, n, r in runs if p == pair and n == ARMS[1])
            for pair in pairs
        ]
        for key in ("p1_per_s", "raw_per_s")
    }
    text = table(
        ["run", "load 1 min", "terminal", "P1 devices/s", "CPU ms/device", "Kafka CPU s",
         "P2 raw msg/s", "invariants"],
        rows,
    )  # fmt: skip
    lines = [text, ""]
    for key, label in (("p1_per_s", "P1 devices/s"), ("raw_per_s", "P2 raw relay msg/s")):
        ratios = pair_ratio[key]
        of_medians = med(ARMS[0], key) / med(ARMS[1], key)
        lines.append(
            f"{label}, with SASL / without: medians {of_medians:.3f} "
            f"(cost {100 * (1 - of_medians):+.1f}%); pair by pair "
            f"{', '.join(f'{x:.3f}' for x in ratios)}, median {statistics.median(ratios):.3f}"
        )
    return "\n".join(lines)


async def connect_ms(brokers: list[LocalKafka], times: int) -> list[list[float]]:
    """Milliseconds to open (and authenticate) one connection to each broker, `times` each,
    the order alternating."""
    took: list[list[float]] = [[] for _ in brokers]
    for i in range(times):
        order = list(enumerate(brokers))
        for n, kafka in order if i % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            conn = await create_conn(
                "127.0.0.1", kafka.port, **kafka.credentials.aiokafka(), client_id=ADMIN
            )
            took[n].append(1000 * (time.perf_counter() - started))
            conn.close()
    return took


def measure(args: argparse.Namespace) -> int:
    base = LOGS / f"sasl-{datetime.now():%Y%m%d-%H%M%S}"
    brokers = {
        name: LocalKafka(
            name=f"kafka ({name})",
            port=free_port(),
            log=base / f"kafka-{i}" / "server.log",
            controller_port=free_port(),
            data=base / f"kafka-{i}",
            sasl=name == ARMS[0],
        )
        for i, name in enumerate(ARMS)
    }
    arms = {name: Arm(name, kafka) for name, kafka in brokers.items()}
    runs: list[tuple[int, str, dict[str, Any]]] = []
    try:
        for kafka in brokers.values():
            say(f"starting {kafka.name} on {kafka.bootstrap}")
            kafka.start()
            asyncio.run(kafka.wait_ready())
        for pair in range(args.pairs):
            order = ARMS if pair % 2 == 0 else ARMS[::-1]
            for name in order:
                log = base / f"pair{pair + 1}-{'sasl' if name == ARMS[0] else 'plain'}.log"
                say(f"pair {pair + 1}: {name} ({arms[name].kafka.bootstrap}), log {log}")
                result = run_arm(arms[name], args, log)
                say(
                    f"  P1 {result['p1_per_s']:.2f} devices/s, P2 {result['raw_per_s']:,.0f} "
                    f"msg/s, load {result['load']:.2f}, exit {result['exit']}"
                )
                runs.append((pair, name, result))
        connects = asyncio.run(connect_ms(list(brokers.values()), args.connects))
    finally:
        for kafka in brokers.values():
            kafka.stop()
        if not args.keep:
            shutil.rmtree(base / "kafka-0" / "logs", ignore_errors=True)
            shutil.rmtree(base / "kafka-1" / "logs", ignore_errors=True)
    cores = os.cpu_count()
    print(f"\nbench.sasl: {args.pairs} pairs, P1 {args.devices} devices ({args.concurrency} in "
          f"flight), P2 {args.raw_messages} x {args.hops} hops x {args.size} B; {cores} CPUs; "
          f"load average at the end {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(report(runs))
    with_ms, without_ms = (statistics.median(ms) for ms in connects)
    print(
        f"one connection, median of {args.connects}: with SASL/SCRAM {with_ms:.1f} ms, "
        f"without {without_ms:.1f} ms (load average {os.getloadavg()[0]:.2f})"
    )
    return 0 if all(r["exit"] == 0 for _, _, r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.pairs < 1:
        parser().error("--pairs must be at least 1")
    return arm(args) if args.command == "arm" else measure(args)


if __name__ == "__main__":
    sys.exit(main())
