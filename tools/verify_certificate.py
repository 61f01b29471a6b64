"""Check a certificate against the device's history as it stands on the Kafka topics.

    python -m tools.verify_certificate DEVICE_ID [--digest HEX] [--namespace NS] [--bootstrap B]

Reads the device's events straight from the topics (not from any service's store), recomputes
each event's digest and the evidence digest of each certificate the device has, and prints them.
With `--digest` (the one printed on a certificate) it exits 0 only when a certificate matches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from services.custody.certificates import CITED, Kind
from shared.codec import PoisonMessage, decode
from shared.credentials import tool_credentials
from shared.events import Event
from shared.evidence import event_digest, evidence_digest
from shared.settings import ServiceSettings


async def device_events(bootstrap: str, namespace: str, device_id: UUID) -> list[Event]:
    """The device's events on the topics its certificates cite, each once, oldest first."""
    key = str(device_id).encode()
    names = sorted({namespace + t for kinds in CITED.values() for t in kinds})
    partitions = await _partitions_of(bootstrap, names, key)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **tool_credentials().aiokafka()
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        seen: dict[UUID, Event] = {}
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key != key or record.value is None:
                        continue
                    try:
                        event = decode(record.value)
                    except PoisonMessage:
                        continue
                    seen.setdefault(event.event_id, event)
        return sorted(seen.values(), key=lambda e: e.occurred_at)
    finally:
        await consumer.stop()


async def _partitions_of(bootstrap: str, topics: list[str], key: bytes) -> list[TopicPartition]:
    """The partition of each topic that holds the key, chosen as the producers choose it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **tool_credentials().aiokafka())
    await producer.start()
    try:
        chosen = []
        for topic in topics:
            available = sorted(await producer.partitions_for(topic))
            chosen.append(TopicPartition(topic, DefaultPartitioner()(key, available, available)))
        return chosen
    finally:
        await producer.stop()


def evidence_of(events: list[Event], kind: Kind) -> tuple[list[tuple[Event, str]], str] | None:
    """The cited events with their digests and the evidence digest, if all are on the topics."""
    latest = {e.event_type: e for e in events if e.event_type in CITED[kind]}
    if any(t not in latest for t in CITED[kind]):
        return None
    cited = [(latest[t], event_digest(latest[t])) for t in CITED[kind]]
    return cited, evidence_digest((e.event_id, d) for e, d in cited)


async def _run(args: argparse.Namespace) -> int:
    events = await device_events(args.bootstrap, args.namespace, args.device_id)
    print(f"device {args.device_id}: {len(events)} event(s) on the cited topics")
    matched: Kind | None = None
    for kind in Kind:
        found = evidence_of(events, kind)
        if found is None:
            print(f"{kind} certificate: its events are not all on the topics")
            continue
        cited, digest = found
        print(f"{kind} certificate: evidence digest {digest}")
        for event, event_hash in cited:
            print(f"  {event.event_type:<18} {event.event_id}  {event_hash}")
        if args.digest and digest == args.digest.lower():
            matched = kind
    if not args.digest:
        return 0
    if matched is None:
        print(f"NO MATCH: {args.digest} is not the digest of any certificate of this device")
        return 1
    print(f"MATCH: {args.digest} is this device's {matched} certificate")
    return 0


def main(argv: list[str] | None = None) -> int:
    defaults = ServiceSettings()
    parser = argparse.ArgumentParser(
        prog="python -m tools.verify_certificate",
        description="Check a certificate's evidence digest against the events on the topics.",
    )
    parser.add_argument("device_id", type=UUID)
    parser.add_argument("--digest", help="the evidence digest printed on the certificate")
    parser.add_argument("--namespace", default=defaults.namespace, help="GREENIT_NAMESPACE")
    parser.add_argument(
        "--bootstrap", default=defaults.kafka_bootstrap, help="GREENIT_KAFKA_BOOTSTRAP"
    )
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
