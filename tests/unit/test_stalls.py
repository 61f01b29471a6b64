"""Nothing stalls silently, without a broker: dead letters whole or cut down, a dead letter that
cannot be published, an event on the wrong topic, and how a consumer's health is told."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from rich.console import Console

import shared.kafka
from shared import observability
from shared.codec import PoisonMessage, decode_on, encode
from shared.events import DeviceReceived, DeviceUsageReported
from shared.examples import EXAMPLES
from shared.kafka import (
    CUT_DOWN,
    ORIGINAL_HEADERS,
    VALUE_PREFIX_BYTES,
    DeadLetters,
    DeadLetterUnpublished,
    RetryPolicy,
    make_broker,
    subscribe,
)
from shared.settings import ServiceSettings
from tests.conftest import settings_in
from tests.fakes import fake_sleep_in
from tools.deadletters import DeadLetter, redrive
from tools.ops import Overview, ServiceConsumers, consumers_table


@dataclass
class Record:
    topic: str = "tunit_device.received"
    partition: int = 1
    offset: int = 7
    key: bytes | None = b"device-1"
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = (("event_id", b"e-1"),)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sleep(_: float) -> None:
        return None

    fake_sleep_in(monkeypatch, shared.kafka, sleep)


@pytest.fixture
def dead_letters(monkeypatch: pytest.MonkeyPatch, no_sleep: None) -> tuple[DeadLetters, list[Any]]:
    settings = ServiceSettings(namespace="tunit_")
    letters = DeadLetters(make_broker(settings), settings)
    sent: list[Any] = []

    async def publish(value: bytes, **kwargs: Any) -> None:
        sent.append((value, kwargs))

    monkeypatch.setattr(letters._publisher, "publish", publish)
    return letters, sent


async def test_a_record_that_fits_is_dead_lettered_whole(dead_letters):
    letters, sent = dead_letters
    await letters.send(Record(value=b"x" * 1000), "tgroup", "invalid event: x")  # type: ignore[arg-type]

    [(value, kwargs)] = sent
    assert value == b"x" * 1000
    assert kwargs["key"] == b"device-1"
    assert kwargs["headers"]["event_id"] == "e-1"
    assert CUT_DOWN not in kwargs["headers"]


async def test_a_record_too_large_to_copy_is_dead_lettered_cut_down_without_trying_it_whole(
    dead_letters,
):
    letters, sent = dead_letters
    large = b"y" * (letters.max_size - 200)
    await letters.send(Record(value=large), "tgroup", "invalid event: y")  # type: ignore[arg-type]

    [(value, kwargs)] = sent
    headers = kwargs["headers"]
    assert value == large[:VALUE_PREFIX_BYTES]
    assert kwargs["key"] == b"device-1"
    assert headers[CUT_DOWN] == "true"
    assert headers["dlq_original_value_size"] == str(len(large))
    assert headers["dlq_reason"] == "invalid event: y"
    assert headers["dlq_source_topic"] == "tunit_device.received"
    assert (headers["dlq_source_partition"], headers["dlq_source_offset"]) == ("1", "7")
    assert ORIGINAL_HEADERS in headers


async def test_a_dead_letter_the_broker_finds_too_large_is_sent_again_cut_down(
    dead_letters, monkeypatch
):
    letters, sent = dead_letters
    tried: list[bytes] = []

    async def publish(value: bytes, **kwargs: Any) -> None:
        tried.append(value)
        if len(tried) == 1:
            raise MessageSizeTooLargeError()
        sent.append((value, kwargs))

    monkeypatch.setattr(letters._publisher, "publish", publish)
    record = Record(value=b"z" * (VALUE_PREFIX_BYTES * 2))
    await letters.send(record, "tgroup", "refused: no")  # type: ignore[arg-type]

    assert tried[0] == record.value
    [(value, kwargs)] = sent
    assert value == record.value[:VALUE_PREFIX_BYTES]
    assert kwargs["headers"][CUT_DOWN] == "true"


async def test_a_dead_letter_that_cannot_be_published_says_what_is_left_of_the_record(
    dead_letters, monkeypatch
):
    letters, _ = dead_letters
    calls = 0

    async def publish(value: bytes, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise TopicAuthorizationFailedError()

    monkeypatch.setattr(letters._publisher, "publish", publish)
    with pytest.raises(DeadLetterUnpublished) as raised:
        await letters.send(Record(value=b"v" * 10_000), "tgroup", "bad")  # type: ignore[arg-type]

    assert calls == 2  # whole, then cut down; neither retried: not transient
    description = raised.value.description
    assert description["dlq_reason"] == "bad"
    assert description["dlq_original_value_size"] == "10000"
    assert description["key"] == "device-1"
    assert description["value_prefix"] == "v" * VALUE_PREFIX_BYTES
    assert description["dlq_source_offset"] == "7"


async def test_a_transient_failure_to_publish_a_dead_letter_is_retried_then_reported(
    dead_letters, monkeypatch
):
    letters, _ = dead_letters
    calls = 0

    async def publish(value: bytes, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise KafkaConnectionError()

    monkeypatch.setattr(letters._publisher, "publish", publish)
    with pytest.raises(DeadLetterUnpublished):
        await letters.send(Record(), "tgroup", "bad")  # type: ignore[arg-type]
    assert calls == letters.retry.attempts


def test_an_event_on_another_types_topic_is_poison_naming_both():
    usage = EXAMPLES[DeviceUsageReported]
    with pytest.raises(PoisonMessage) as raised:
        decode_on("device.recycled", encode(usage))
    assert str(raised.value) == (
        "wrong topic: a device.usage_reported event arrived on device.recycled; "
        "device.usage_reported events belong on device.usage_reported"
    )
    assert decode_on("device.usage_reported", encode(usage)) == usage


# ---- the consumer: give up on an unpublishable dead letter, health ---------------------------


@dataclass
class FakeBroker:
    consumers: list[Any] = field(default_factory=list)

    def subscriber(self, *topics: str, **kwargs: Any) -> Any:
        return self.consumers.append


@dataclass
class UnpublishableDeadLetters:
    namespace: str = "tunit_"
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=1))
    batch: int = 10
    stuck_after: int = 2
    give_up_after: int = 3
    tried: int = 0

    async def send(self, record: Any, group_id: str, reason: str) -> None:
        self.tried += 1
        raise DeadLetterUnpublished({"dlq_reason": reason}, TopicAuthorizationFailedError())


@dataclass
class Message:
    raw_message: tuple[Record, ...]


async def test_a_record_whose_dead_letter_cannot_be_published_is_skipped_after_some_deliveries(
    caplog,
):
    broker, letters = FakeBroker(), UnpublishableDeadLetters()

    async def handler(_: Any) -> None:
        raise AssertionError("a poison record reaches no handler")

    subscribe(
        broker,  # type: ignore[arg-type]
        settings_in("tunit_", "skip"),
        events=[DeviceReceived],
        handler=handler,
        dead_letters=letters,  # type: ignore[arg-type]
    )
    [consume] = broker.consumers
    batch = Message((Record(value=b"not json"),))
    health = observability.CONSUMERS["tunit_skip"]
    for delivery in range(1, letters.give_up_after):
        with pytest.raises(DeadLetterUnpublished):
            await consume(batch)
        assert health.failed_deliveries == delivery
    assert health.state == "stuck"

    with caplog.at_level(logging.CRITICAL, logger="shared.kafka"):
        await consume(batch)  # returns: the offset is committed, the partition moves on

    assert letters.tried == letters.give_up_after
    assert health.state == "ok"
    assert health.dead_letters_unpublished == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "dead letter not published after 3 deliveries, record skipped" in line
    assert "tunit_device.received[1]@7" in line
    assert '"dlq_reason": "malformed JSON' in line
    sample = observability.REGISTRY.get_sample_value(
        "greenit_dead_letters_unpublished_total", {"group": "tunit_skip"}
    )
    assert sample == 1


def test_a_consumer_is_retrying_from_its_first_failure_and_stuck_after_failed_deliveries(
    monkeypatch,
):
    clock = [100.0]
    monkeypatch.setattr("shared.observability.time.monotonic", lambda: clock[0])
    health = observability.consumer_health("tunit_health", stuck_after=2)
    batch = [Record(offset=5), Record(offset=6), Record(partition=2, offset=1)]
    assert (health.state, health.oldest_unprocessed_age_s()) == ("ok", 0.0)

    health.received(batch)
    clock[0] += 3
    health.attempt_failed(ConnectionError())
    assert health.state == "retrying"
    health.delivery_failed(RuntimeError("gave up"))
    assert health.state == "retrying"
    health.received(batch)  # the same batch again: its age counts from the first delivery
    clock[0] += 4
    health.delivery_failed(RuntimeError("gave up"))

    view = health.view()
    assert view["state"] == "stuck"
    assert view["failed_deliveries"] == 2
    assert view["oldest_unprocessed_age_s"] == 7
    stuck = {"group": "tunit_health"}
    assert observability.REGISTRY.get_sample_value("greenit_consumer_stuck", stuck) == 1
    age = "greenit_consumer_oldest_unprocessed_age_seconds"
    assert observability.REGISTRY.get_sample_value(age, stuck) == 7

    health.finished(batch)
    assert health.view()["state"] == "ok"
    assert health.view()["oldest_unprocessed_age_s"] == 0
    assert health.view()["last_error"] is None
    assert observability.REGISTRY.get_sample_value("greenit_consumer_stuck", stuck) == 0


# ---- tools --------------------------------------------------------------------------------------


def cut_down_letter() -> DeadLetter:
    headers = {
        CUT_DOWN: "true",
        "dlq_original_value_size": "1048000",
        "dlq_source_topic": "device.received",
        "dlq_source_partition": "4",
        "dlq_source_offset": "12",
        "dlq_reason": "invalid event: padding: Extra inputs are not permitted",
    }
    return DeadLetter(
        "deadletter", 0, 3, b"k", b"{" * 4096, tuple((k, v.encode()) for k, v in headers.items())
    )


async def test_a_cut_down_dead_letter_is_listed_as_such_and_never_redriven():
    letter = cut_down_letter()
    assert letter.cut_down
    assert "size=1048000  cut_down=kept 4096 of 1048000 bytes  payload=" in letter.line()
    assert letter.refusal() == (
        "deadletter-0-3 was cut down (only 4096 of its 1048000 bytes were kept): it cannot be "
        "re-driven; the original record is at device.received[4]@12 as long as that topic's "
        "retention keeps it"
    )
    with pytest.raises(ValueError, match="cannot be re-driven"):
        await redrive("127.0.0.1:1", [letter])  # refused before connecting anywhere


def test_the_console_shows_each_services_consumers_and_the_stuck_ones():
    overview = Overview.model_validate(
        {
            "namespace": "",
            "taken_at": "2026-01-01T00:00:00Z",
            "window_s": None,
            "topics": [],
            "messages_total": 0,
            "per_second_total": None,
            "groups": [],
            "dead_letters": {"total": 0, "by_source": {}},
            "stages": None,
            "stages_error": None,
            "stuck_after": None,
            "consumers": [
                ServiceConsumers(
                    service="intake",
                    url="http://127.0.0.1:8001",
                    status="degraded",
                    consumers={
                        "intake": {
                            "state": "stuck",
                            "failed_deliveries": 4,
                            "oldest_unprocessed_age_s": 125.0,
                            "last_error": "AutoReconnect",
                        }
                    },
                ).model_dump(),
                {
                    "service": "recycling",
                    "url": "http://127.0.0.1:8004",
                    "status": "unreachable",
                    "consumers": {},
                    "error": "ConnectError('refused')",
                },
            ],
        }
    )
    console = Console(width=200, record=True)
    console.print(consumers_table(overview))
    text = console.export_text()
    intake = next(line for line in text.splitlines() if "intake" in line)
    for cell in ("degraded", "stuck", "4", "2m 5s", "AutoReconnect"):
        assert cell in intake
    recycling = next(line for line in text.splitlines() if "recycling" in line)
    assert "unreachable" in recycling
    assert "ConnectError" in recycling


def test_a_failed_batch_never_redelivered_here_is_forgotten_but_one_in_flight_is_not(
    monkeypatch,
):
    clock = [100.0]
    monkeypatch.setattr("shared.observability.time.monotonic", lambda: clock[0])
    health = observability.consumer_health("tunit_revoked", stuck_after=1)
    batch = [Record()]
    health.received(batch)
    health.delivery_failed(RuntimeError("gave up"))
    assert health.state == "stuck"

    health.received(batch)  # redelivered, and hanging in the handler
    clock[0] += observability.REVOKED_AFTER_S + 1
    assert health.state == "stuck"

    health.delivery_failed(RuntimeError("gave up"))
    clock[0] += observability.REVOKED_AFTER_S + 1  # no redelivery: the partition went elsewhere
    assert health.state == "ok"
    assert health.oldest_unprocessed_age_s() == 0
