"""Look at dead letters and re-drive them once their cause is fixed.

    python -m tools.deadletters list [--namespace NS] [--limit N]
    python -m tools.deadletters redrive [--namespace NS] [--source-topic T] [--offset P:O ...]
                                        [--all]

A dead letter is a record no consumer could process, kept untouched with the reason in its
`dlq_*` headers (`shared/kafka.py`). `redrive` publishes its original value, key and headers
(without the `dlq_*` ones, plus `dlq_redriven_from`) to the topic it came from. A record too
large to copy whole was dead-lettered cut down (`dlq_cut_down`: a prefix of its value, its
size): the listing says so, and `redrive` refuses it, since its value is not all there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.credentials import tool_credentials
from shared.kafka import CUT_DOWN, ORIGINAL_HEADERS, unpack_headers
from shared.settings import ServiceSettings
from shared.topics import DEAD_LETTER

PAYLOAD_PREVIEW = 200
REDRIVEN_FROM = "dlq_redriven_from"

REDRIVE_HELP = """\
Republish dead letters to their source topic, after the cause was fixed. Consumers apply each
event at most once (they remember the event ids they applied), so re-driving a record that was
already re-driven, or whose effect is already there, is harmless. A record that still cannot be
processed is dead-lettered again, with a fresh reason. A cut-down dead letter (a record too large
to copy whole: only a prefix of its value was kept) is refused, with where the original was; the
others selected are re-driven, and the exit code is 2."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return ""

    @property
    def address(self) -> str:
        """Where the dead letter itself is: `topic-partition-offset`."""
        return f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def source_topic(self) -> str:
        return self.header("dlq_source_topic")

    @property
    def source(self) -> str:
        partition, offset = self.header("dlq_source_partition"), self.header("dlq_source_offset")
        return f"{self.source_topic}[{partition}]@{offset}"

    @property
    def reason(self) -> str:
        return self.header("dlq_reason")

    @property
    def failed_at(self) -> str:
        return self.header("dlq_failed_at")

    @property
    def cut_down(self) -> bool:
        """Only a prefix of the record's value was kept: it was too large to copy whole."""
        return self.header(CUT_DOWN) == "true"

    @property
    def original_size(self) -> int:
        """Bytes of the dead-lettered record's value (also when only a prefix was kept)."""
        size = self.header("dlq_original_value_size")
        return int(size) if size.isdigit() else len(self.value)

    def refusal(self) -> str | None:
        """Why this dead letter cannot be re-driven, if it cannot."""
        if self.cut_down:
            return (
                f"{self.address} was cut down (only {len(self.value)} of its "
                f"{self.original_size} bytes were kept): it cannot be re-driven; the original "
                f"record is at {self.source} as long as that topic's retention keeps it"
            )
        if not self.source_topic:
            return f"{self.address} names no source topic"
        return None

    def redriven_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers (exactly, when the dead letter kept them packed),
        without the markers of an earlier dead-lettering, plus where this one was."""
        packed = self.header(ORIGINAL_HEADERS)
        original = unpack_headers(packed) if packed else self.headers
        kept = [(k, v) for k, v in original if not k.startswith("dlq_")]
        return [*kept, (REDRIVEN_FROM, self.address.encode())]

    def line(self) -> str:
        payload = self.value[:PAYLOAD_PREVIEW].decode(errors="replace")
        cut = f"cut_down=kept {len(self.value)} of {self.original_size} bytes  "
        return (
            f"{self.address}  source={self.source}  group={self.header('dlq_consumer_group')}  "
            f"failed_at={self.failed_at}  reason={self.reason!r}  size={self.original_size}  "
            f"{cut if self.cut_down else ''}payload={payload!r}"
        )


def dead_letter_topic(namespace: str) -> str:
    return namespace + DEAD_LETTER.name


async def read_dead_letters(
    bootstrap: str, namespace: str, *, within_s: float = 30.0
) -> list[DeadLetter]:
    """Every record of the namespace's dead-letter topic, oldest failure first."""
    topic = dead_letter_topic(namespace)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **tool_credentials().aiokafka(),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        if topic not in await consumer.topics():
            return []
        end: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + within_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {within_s}s")
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                letters.extend(
                    DeadLetter(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value or b"",
                        headers=tuple(r.headers or ()),
                    )
                    for r in records
                )
            assigned = consumer.assignment()
            if not assigned:
                continue
            if not end:
                end = await consumer.end_offsets(list(assigned))
            positions = {tp: await consumer.position(tp) for tp in assigned}
            if all(positions[tp] >= end[tp] for tp in assigned):
                break
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda d: (d.failed_at, d.partition, d.offset))


def parse_offset(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected PARTITION:OFFSET, e.g. 0:12")
    return int(partition), int(offset)


def select(
    letters: Iterable[DeadLetter],
    namespace: str,
    *,
    source_topic: str | None = None,
    offsets: Sequence[tuple[int, int]] = (),
) -> list[DeadLetter]:
    """The dead letters from `source_topic` (with or without the namespace) at `offsets`."""
    chosen = list(letters)
    if source_topic:
        names = {source_topic, namespace + source_topic}
        chosen = [d for d in chosen if d.source_topic in names]
    if offsets:
        wanted = set(offsets)
        chosen = [d for d in chosen if (d.partition, d.offset) in wanted]
    return chosen


async def redrive(bootstrap: str, letters: Sequence[DeadLetter]) -> int:
    """Republish each dead letter to its source topic; returns how many were sent. Refuses
    (ValueError, before sending any) if one of them cannot be re-driven."""
    refusals = [r for r in (letter.refusal() for letter in letters) if r]
    if refusals:
        raise ValueError("; ".join(refusals))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        **tool_credentials().aiokafka(),
    )
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(
                letter.source_topic,
                letter.value,
                key=letter.key,
                headers=letter.redriven_headers(),
            )
    finally:
        await producer.stop()
    return len(letters)


async def _run(args: argparse.Namespace) -> int:
    letters = await read_dead_letters(args.bootstrap, args.namespace)
    if args.command == "list":
        shown = letters[-args.limit :] if args.limit else letters
        for letter in shown:
            print(letter.line())
        print(f"{len(letters)} dead letter(s) in {dead_letter_topic(args.namespace)}")
        return 0
    chosen = select(letters, args.namespace, source_topic=args.source_topic, offsets=args.offset)
    missing = set(args.offset) - {(d.partition, d.offset) for d in chosen}
    if missing:
        where = ", ".join(f"{p}:{o}" for p, o in sorted(missing))
        print(f"no such dead letter (or not from that source topic): {where}", file=sys.stderr)
        return 2
    refused = [d for d in chosen if d.refusal()]
    for letter in refused:
        print(f"refused: {letter.refusal()}", file=sys.stderr)
    chosen = [d for d in chosen if not d.refusal()]
    sent = await redrive(args.bootstrap, chosen)
    for letter in chosen:
        print(f"re-drove {letter.address} to {letter.source}")
    print(f"re-drove {sent} dead letter(s)")
    if refused:
        print(f"refused {len(refused)} dead letter(s) that cannot be re-driven", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    defaults = ServiceSettings()
    parser = argparse.ArgumentParser(
        prog="python -m tools.deadletters",
        description="List dead letters and re-drive them after a fix.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=defaults.namespace, help="GREENIT_NAMESPACE")
    common.add_argument(
        "--bootstrap", default=defaults.kafka_bootstrap, help="GREENIT_KAFKA_BOOTSTRAP"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser(
        "list",
        parents=[common],
        help="print each dead letter: where it is, where it came from, when, why, payload",
    )
    listing.add_argument("--limit", type=int, default=0, help="only the N most recent")
    again = sub.add_parser(
        "redrive",
        parents=[common],
        help="republish dead letters to their source topic (harmless to repeat: consumers "
        "are idempotent)",
        description=REDRIVE_HELP,
    )
    again.add_argument("--source-topic", help="only dead letters from this topic")
    again.add_argument(
        "--offset",
        type=parse_offset,
        action="extend",
        nargs="+",
        default=[],
        metavar="P:O",
        help="dead letters at these partition:offset positions of the dead-letter topic",
    )
    again.add_argument("--all", action="store_true", help="every dead letter (of --source-topic)")
    args = parser.parse_args(argv)
    if args.command == "redrive" and not (args.all or args.offset or args.source_topic):
        parser.error("redrive needs --all, --source-topic or --offset: say what to re-drive")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
