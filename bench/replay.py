"""P3: rebuild one service's state from the topics alone, and how fast.

    uv run python -m bench.replay --events 5000

Which service: diagnostics. Its store is built from one topic, device.received (one device
document per event, state `received`); everything else in it comes from staff over HTTP. Intake
cannot be rebuilt that way: its device documents are created by scans over HTTP, and its
consumer refuses (dead-letters) events about a device it never scanned. Allocation (from
device.ready) and recycling (from released/returned) could be, but they see only a share of the
devices; device.received carries every one.

The run: `--events` device.received events (the catalogue's example with fresh ids, encoded as
intake encodes them) are published to the namespace's topic; diagnostics starts and consumes
them (the first build, timed too); then diagnostics is stopped (SIGTERM: it leaves its group),
its consumer group is reset to the earliest offsets with Kafka's ConsumerGroupCommand, its
database is dropped, and it is started again. Timed until its store holds one document per
event: events/s from the first document written (consumption alone) and from the process start
(with start-up and group join).
"""

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from bench import common
from bench.common import BOOTSTRAP, say
from shared import events as ev
from shared.codec import encode, headers_for
from shared.credentials import tool_credentials
from shared.examples import EXAMPLES
from shared.topics import topic_of
from tools.cluster import Cluster


@dataclass
class Build:
    events: int
    from_start_s: float
    from_first_s: float

    @property
    def per_s(self) -> float:
        return self.events / self.from_first_s if self.from_first_s else 0.0

    @property
    def per_s_with_start(self) -> float:
        return self.events / self.from_start_s if self.from_start_s else 0.0


async def publish_received(namespace: str, count: int) -> None:
    example = EXAMPLES[ev.DeviceReceived]
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        enable_idempotence=True,
        **tool_credentials().aiokafka(),
    )
    await producer.start()
    try:
        pending = []
        for i in range(count):
            event = example.model_copy(
                update={
                    "event_id": uuid.uuid4(),
                    "device_id": uuid.uuid4(),
                    "asset_tag": f"RP-{i:07d}",
                    "serial_number": f"RP-SN-{i:07d}",
                }
            )
            pending.append(
                await producer.send(
                    namespace + topic_of(event).name,
                    encode(event),
                    key=str(event.subject_id).encode(),
                    headers=[(k, v.encode()) for k, v in headers_for(event).items()],
                )
            )
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def timed_build(cluster: Cluster, namespace: str, events: int, timeout_s: float) -> Build:
    """Start diagnostics and wait until its store holds `events` devices."""
    client = common.mongo_client()
    devices = client[f"{namespace}greenit_diagnostics"].devices
    started = time.monotonic()
    first = 0.0
    try:
        cluster.start("diagnostics")
        while True:
            count = await devices.count_documents({})
            now = time.monotonic()
            if count and not first:
                first = now
            if count >= events:
                return Build(events, now - started, now - first)
            if now - started > timeout_s:
                raise RuntimeError(f"diagnostics rebuilt {count}/{events} in {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def reset_group(namespace: str) -> str:
    return common.java_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", BOOTSTRAP, "--group", common.group_id(namespace, "diagnostics"),
        "--command-config", str(tool_credentials().properties_file()),
        "--reset-offsets", "--to-earliest", "--all-topics", "--execute",
    )  # fmt: skip


async def run(events: int, timeout_s: float, keep: bool) -> tuple[Build, Build]:
    namespace = common.new_namespace("replay")
    await common.prepare(namespace)
    try:
        say(f"replay {namespace}: publishing {events} device.received")
        await publish_received(namespace, events)
        env = common.service_env(namespace)
        cluster = Cluster(
            env=env | {"PYTHONUNBUFFERED": "1"}, log_dir=common.LOGS / namespace.rstrip("_")
        )
        cluster.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            first = await timed_build(cluster, namespace, events, timeout_s)
            say(f"first build: {first.per_s:,.0f} events/s; stopping diagnostics, resetting")
            cluster.stop("diagnostics")
            say(reset_group(namespace).strip().splitlines()[0])
            client = common.mongo_client()
            await client.drop_database(f"{namespace}greenit_diagnostics")
            await client.close()
            replay = await timed_build(cluster, namespace, events, timeout_s)
            say(f"replay: {replay.per_s:,.0f} events/s")
        finally:
            for service in list(cluster.processes):
                cluster.stop(service)
        return first, replay
    finally:
        if not keep:
            await common.cleanup(namespace)


def report(first: Build, replay: Build) -> str:
    return common.table(
        ["diagnostics from device.received", "events", "s (from 1st doc)", "events/s",
         "s (from start)", "events/s incl. start"],
        [
            (name, b.events, b.from_first_s, b.per_s, b.from_start_s, b.per_s_with_start)
            for name, b in (("first build", first), ("replay after reset + drop", replay))
        ],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=5_000)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    first, replay = asyncio.run(run(args.events, args.timeout, args.keep))
    print(report(first, replay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
