"""P2, P2b: what Kafka and aiokafka alone move on this machine, as the yardstick for P1.

    uv run python -m bench.raw_relay --messages 20000 --size 630 --hops 5
    uv run python -m bench.raw_relay --perf-only --messages 200000 --size 630

P2: an injector produces `--messages` records of `--size` bytes (keyed by a device id, 6
partitions, as the device topics) to raw0; `--hops` relay processes each consume raw{i-1} in a
consumer group and produce every record to raw{i} (acks=all, idempotent, as the services'
producers; offsets committed after each fetched batch's sends are acknowledged); a sink reads
the last topic. No store, no validation, no JSON. Messages/s end to end = messages / (last
record at the sink - first record sent). One message through the chain stands for one device
through the pipeline: the hop count defaults to the device events per device of a lifecycle run.

P2b: Kafka's own ProducerPerformance (org.apache.kafka.tools.ProducerPerformance, acks=all)
against the same broker with records of the same size: the ceiling of one producer.
"""

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import common
from bench.common import BOOTSTRAP, say
from shared.credentials import tool_credentials

PARTITIONS = 6


@dataclass
class RawResult:
    messages: int
    size: int
    hops: int
    elapsed_s: float
    rss_mb: list[float]

    @property
    def per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class PerfResult:
    records: int
    size: int
    records_per_s: float
    mb_per_s: float
    avg_latency_ms: float
    line: str


async def make_topics(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **tool_credentials().aiokafka())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=n, num_partitions=PARTITIONS, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def drop_topics(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **tool_credentials().aiokafka())
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


# ---- one relay (its own process) ---------------------------------------------------------------


async def relay(source: str, target: str, group: str) -> None:
    """Consume `source`, produce each record to `target` with its key, commit per batch."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        **tool_credentials().aiokafka(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        **tool_credentials().aiokafka(),
        acks="all",
        enable_idempotence=True,
    )
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            sends = [
                await producer.send(target, r.value, key=r.key)
                for records in batches.values()
                for r in records
            ]
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


# ---- the chain ---------------------------------------------------------------------------------


async def chain(messages: int, size: int, hops: int) -> RawResult:
    prefix = f"braw{uuid.uuid4().hex[:6]}_"
    topics = [f"{prefix}raw{i}" for i in range(hops + 1)]
    await make_topics(topics)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    relays = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock runs
            [sys.executable, "-m", "bench.raw_relay", "--relay", topics[i - 1], topics[i],
             f"{prefix}relay{i}"],
            env=env,
        )
        for i in range(1, hops + 1)
    ]  # fmt: skip
    try:
        sink = AIOKafkaConsumer(
            topics[-1],
            bootstrap_servers=BOOTSTRAP,
            **tool_credentials().aiokafka(),
            auto_offset_reset="earliest",
            group_id=None,
        )
        await sink.start()
        payload = os.urandom(size)
        producer = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            **tool_credentials().aiokafka(),
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        await _warm_up(producer, sink, topics[0], payload)
        started = time.time()
        inject = asyncio.create_task(_inject(producer, topics[0], payload, messages))
        seen = 0
        last = started
        while seen < messages:
            batches = await sink.getmany(timeout_ms=1000)
            got = sum(len(r) for r in batches.values())
            if got:
                seen += got
                last = time.time()
            elif time.time() - last > 60:
                raise RuntimeError(f"raw relay stalled at {seen}/{messages}")
        await inject
        await producer.stop()
        await sink.stop()
        rss = [common.peak_rss_mb(p.pid) for p in relays]
        return RawResult(messages, size, hops, last - started, rss)
    finally:
        for p in relays:
            p.terminate()
        for p in relays:
            p.wait(timeout=30)
        await drop_topics(topics)


async def _warm_up(
    producer: AIOKafkaProducer, sink: AIOKafkaConsumer, topic: str, payload: bytes
) -> None:
    """One record per partition through the whole chain before the clock starts: the relays
    have joined their groups and every new partition has its leader."""
    for partition in range(PARTITIONS):
        await producer.send_and_wait(topic, payload, key=b"warm-up", partition=partition)
    seen = 0
    deadline = time.monotonic() + 120
    while seen < PARTITIONS:
        seen += sum(len(r) for r in (await sink.getmany(timeout_ms=500)).values())
        if time.monotonic() > deadline:
            raise RuntimeError("the relay chain did not pass the warm-up records")


async def _inject(producer: AIOKafkaProducer, topic: str, payload: bytes, messages: int) -> None:
    pending = []
    for i in range(messages):
        key = uuid.UUID(int=i).bytes
        pending.append(await producer.send(topic, payload, key=key))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


# ---- ProducerPerformance -----------------------------------------------------------------------

PERF_LINE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency"
)


def producer_performance(records: int, size: int) -> PerfResult:
    topic = f"bperf{uuid.uuid4().hex[:6]}"
    asyncio.run(make_topics([topic]))
    try:
        out = common.java_tool(
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic", topic, "--num-records", str(records), "--record-size", str(size),
            "--throughput", "-1",
            "--producer-props", f"bootstrap.servers={BOOTSTRAP}", "acks=all",
            "--producer.config", str(tool_credentials().properties_file()),
        )  # fmt: skip
    finally:
        asyncio.run(drop_topics([topic]))
    final = [m for m in PERF_LINE.finditer(out)][-1]
    return PerfResult(
        records=int(final.group(1)),
        size=size,
        records_per_s=float(final.group(2)),
        mb_per_s=float(final.group(3)),
        avg_latency_ms=float(final.group(4)),
        line=final.group(0),
    )


def report(raw: RawResult | None, perf: PerfResult | None) -> str:
    rows = []
    if raw is not None:
        rows.append(
            (f"P2 raw aiokafka relay, {raw.hops} hops, {raw.size} B", raw.messages, raw.per_s,
             f"relay peak RSS {max(raw.rss_mb, default=0):.0f} MiB")
        )  # fmt: skip
    if perf is not None:
        rows.append(
            (f"P2b ProducerPerformance acks=all, {perf.size} B", perf.records, perf.records_per_s,
             f"{perf.mb_per_s:.1f} MB/s, avg latency {perf.avg_latency_ms:.0f} ms")
        )  # fmt: skip
    return common.table(["run", "messages", "messages/s", "note"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.raw_relay", description=__doc__.split("\n")[0]
    )
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--size", type=int, default=630, help="bytes per record (our mean event)")
    p.add_argument("--hops", type=int, default=5)
    p.add_argument("--perf-records", type=int, default=200_000)
    p.add_argument("--perf-only", action="store_true")
    p.add_argument("--no-perf", action="store_true")
    p.add_argument(
        "--relay", nargs=3, metavar=("SOURCE", "TARGET", "GROUP"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.relay:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(*args.relay))
        return 0
    raw = None if args.perf_only else asyncio.run(chain(args.messages, args.size, args.hops))
    if raw is not None:
        say(f"raw relay: {raw.messages} messages in {raw.elapsed_s:.1f} s")
    perf = None if args.no_perf else producer_performance(args.perf_records, args.size)
    print(report(raw, perf))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
