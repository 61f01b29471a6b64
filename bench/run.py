"""P1 + P5, then P2 and P2b in the same run, and the table with ratios and pass/miss per target.

    uv run python -m bench.run --devices 100000            # the issue's size
    uv run python -m bench.run --devices 500 --profile 30  # what fits in minutes on 2 cores

P1 drives `--devices` through the four services (bench.lifecycle, throughput mode); P2 sends as
many messages as P1 moved devices (at least 5,000) through a raw aiokafka relay chain with as
many hops as P1 saw device events per device, and records of P1's mean event size; P2b is
Kafka's ProducerPerformance with that record size. P3, P4 and S1 have scripts of their own
(bench.replay, bench.lifecycle --rate, bench.scale).
"""

import asyncio
import sys

from bench import lifecycle, raw_relay
from bench.common import say, table

DEVICES_PER_S = 2_000
RATIO = 0.5
RSS_MB = 150


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    p = lifecycle.parser()
    p.prog = "python -m bench.run"
    p.description = __doc__.split("\n")[0]
    p.add_argument("--raw-messages", type=int, default=0, help="0: max(5000, devices)")
    p.add_argument("--perf-records", type=int, default=200_000)
    args = p.parse_args(argv)
    config = lifecycle.config_from(args)

    life = asyncio.run(lifecycle.run(config))
    print(lifecycle.report(life), flush=True)
    per_device = life.events / life.completed if life.completed else 5.0
    hops = max(1, round(per_device))
    size = round(life.mean_event_bytes) or 630
    messages = args.raw_messages or max(5_000, life.devices)
    say(f"P2: {messages} messages, {hops} hops, {size} B")
    raw = asyncio.run(raw_relay.chain(messages, size, hops))
    say("P2b: ProducerPerformance")
    perf = raw_relay.producer_performance(args.perf_records, size)
    print(raw_relay.report(raw, perf), flush=True)

    pipeline = life.devices_per_s
    ratio = pipeline / raw.per_s if raw.per_s else 0.0
    ceiling = raw.per_s / perf.records_per_s if perf.records_per_s else 0.0
    peak = max(life.rss_mb.values(), default=0.0)
    busiest = max(life.rss_mb, key=lambda s: life.rss_mb[s]) if life.rss_mb else "-"
    rows = [
        ("P1 devices/s, scan -> terminal", f"{life.completed:,} devices",
         f"{pipeline:,.1f}", f">= {DEVICES_PER_S:,}", verdict(pipeline >= DEVICES_PER_S)),
        ("P2 raw relay messages/s", f"{messages:,} x {hops} hops, {size} B",
         f"{raw.per_s:,.0f}", "report", "-"),
        ("P2 pipeline / raw", "", f"{ratio:.4f}", f">= {RATIO}", verdict(ratio >= RATIO)),
        ("P2b ProducerPerformance records/s", f"{perf.records:,} x {size} B",
         f"{perf.records_per_s:,.0f}", "report (ceiling)", "-"),
        ("P2b raw / ceiling", "", f"{ceiling:.3f}", "report", "-"),
        ("P5 peak RSS per service, MiB", f"max: {busiest}", f"{peak:,.0f}",
         f"<= {RSS_MB}", verdict(0 < peak <= RSS_MB)),
        ("invariants after P1", "", str(life.invariants), "0", verdict(life.invariants == 0)),
    ]  # fmt: skip
    print()
    print(table(["target", "run", "measured", "target", "result"], rows))
    return 0 if life.completed == life.devices and life.invariants == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
