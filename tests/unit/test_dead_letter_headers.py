"""A dead letter keeps the original record's headers exactly, for the redrive."""

from dataclasses import dataclass
from typing import Any

from shared.kafka import ORIGINAL_HEADERS, DeadLetters, make_broker, pack_headers, unpack_headers
from shared.settings import ServiceSettings
from tools.deadletters import REDRIVEN_FROM, DeadLetter

ORIGINAL = [
    ("event_type", b"device.diagnosed"),
    ("tag", b"first"),
    ("tag", b"second"),  # a name given twice
    ("blob", b"\xff\xfe\x00raw"),  # not UTF-8
]


@dataclass
class Record:
    topic: str = "device.diagnosed"
    partition: int = 3
    offset: int = 17
    key: bytes = b"k"
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = tuple(ORIGINAL)


def test_packed_headers_round_trip_in_order_with_repeats_and_raw_bytes():
    assert unpack_headers(pack_headers(ORIGINAL)) == ORIGINAL


async def test_the_dead_letter_carries_the_original_headers_packed(monkeypatch):
    # nothing connects: any credentials do
    settings = ServiceSettings(namespace="tunit_", kafka_username="unit", kafka_password="unused")
    dead_letters = DeadLetters(make_broker(settings), settings)
    sent: list[dict[str, Any]] = []

    async def publish(value: bytes, **kwargs: Any) -> None:
        sent.append(kwargs)

    monkeypatch.setattr(dead_letters._publisher, "publish", publish)
    await dead_letters.send(Record(), "tgroup", "refused: because")  # type: ignore[arg-type]

    headers = sent[0]["headers"]
    assert headers["dlq_reason"] == "refused: because"
    assert unpack_headers(headers[ORIGINAL_HEADERS]) == ORIGINAL


def test_a_redrive_restores_the_original_headers_exactly():
    dead = [(k, v.decode(errors="replace").encode()) for k, v in dict(ORIGINAL).items()]
    letter = DeadLetter(
        topic="deadletter",
        partition=0,
        offset=5,
        key=b"k",
        value=b"{}",
        headers=(
            *dead,
            ("dlq_reason", b"refused"),
            (
                ORIGINAL_HEADERS,
                pack_headers([*ORIGINAL, (REDRIVEN_FROM, b"deadletter-0-1")]).encode(),
            ),
        ),
    )
    assert letter.redriven_headers() == [*ORIGINAL, (REDRIVEN_FROM, b"deadletter-0-5")]


def test_a_dead_letter_from_before_the_packed_headers_is_redriven_from_the_readable_ones():
    letter = DeadLetter(
        topic="deadletter",
        partition=0,
        offset=6,
        key=b"k",
        value=b"{}",
        headers=(("event_type", b"device.diagnosed"), ("dlq_reason", b"refused")),
    )
    assert letter.redriven_headers() == [
        ("event_type", b"device.diagnosed"),
        (REDRIVEN_FROM, b"deadletter-0-6"),
    ]
