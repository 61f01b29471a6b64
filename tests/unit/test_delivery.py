"""The consumer's retry loop (`shared.kafka._handle_with_retries`) with fake handlers.

No broker: a record is a plain object, dead letters are collected in a list, and
`asyncio.sleep` is replaced by a recorder so backoff delays are seen, not waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from pymongo.errors import AutoReconnect, ConnectionFailure, OperationFailure

import shared.kafka
from shared.domain import IllegalTransition
from shared.events import DeviceReady, Event
from shared.examples import EXAMPLES
from shared.kafka import (
    RetryPolicy,
    Unprocessable,
    _bulk_with_retries,
    _handle_with_retries,
    is_transient,
)
from shared.service import store_error_response
from shared.usecase import Busy
from tests.fakes import fake_sleep_in
from tools.localinfra import _cluster_id

EVENT = EXAMPLES[DeviceReady]
GROUP = "tallocation"
DEFAULT_RETRY = RetryPolicy()


@dataclass
class Record:
    topic: str = "device.ready"
    partition: int = 2
    offset: int = 41
    key: bytes = b"k"
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeDeadLetters:
    sent: list[tuple[Any, str, str]] = field(default_factory=list)

    async def send(self, record: Any, group_id: str, reason: str) -> None:
        self.sent.append((record, group_id, reason))


class FlakyHandler:
    """Fails with the given errors in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.handled: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.handled.append(event)


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    fake_sleep_in(monkeypatch, shared.kafka, sleep)
    return recorded


async def _run(
    handler: Any,
    dead_letters: FakeDeadLetters,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_refused: Any = None,
    record: Record | None = None,
) -> None:
    fake: Any = dead_letters  # duck-typed: only `send` is used
    await _handle_with_retries(EVENT, record or Record(), handler, fake, GROUP, retry, on_refused)


async def test_a_transient_store_error_is_retried_with_growing_backoff_then_succeeds(delays):
    handler = FlakyHandler(AutoReconnect("primary gone"), ConnectionFailure("refused"))
    dead_letters = FakeDeadLetters()

    await _run(handler, dead_letters)

    assert handler.handled == [EVENT]
    assert handler.calls == 3
    assert delays == [0.2, 0.4]
    assert dead_letters.sent == []


async def test_backoff_doubles_up_to_its_ceiling(delays):
    retry = RetryPolicy(attempts=8, base_delay_s=0.5, max_delay_s=3.0)
    handler = FlakyHandler(*(ConnectionFailure("down") for _ in range(7)))

    await _run(handler, FakeDeadLetters(), retry)

    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert handler.handled == [EVENT]


async def test_a_broker_error_and_a_retryable_write_are_transient_too(delays):
    retryable = OperationFailure("stepped down", details={"errorLabels": ["RetryableWriteError"]})
    handler = FlakyHandler(KafkaConnectionError(), retryable, TimeoutError())

    await _run(handler, FakeDeadLetters())

    assert handler.calls == 4
    assert len(delays) == 3


async def test_a_use_case_that_gave_up_busy_is_retried_not_dead_lettered(delays):
    handler = FlakyHandler(Busy("device kept changing"), Busy("device kept changing"))
    dead_letters = FakeDeadLetters()

    await _run(handler, dead_letters)

    assert handler.handled == [EVENT]
    assert delays == [0.2, 0.4]
    assert dead_letters.sent == []


async def test_a_permanent_error_is_dead_lettered_once_without_retry(delays):
    handler = FlakyHandler(KeyError("specs"))
    dead_letters = FakeDeadLetters()
    record = Record(offset=7)

    await _run(handler, dead_letters, record=record)

    assert handler.calls == 1
    assert delays == []
    assert len(dead_letters.sent) == 1
    sent_record, group, reason = dead_letters.sent[0]
    assert sent_record is record
    assert group == GROUP
    assert reason.startswith("handler failed: KeyError")


async def test_an_operation_failure_without_a_retry_label_is_permanent(delays):
    handler = FlakyHandler(OperationFailure("document failed validation"))
    dead_letters = FakeDeadLetters()

    await _run(handler, dead_letters)

    assert handler.calls == 1
    assert delays == []
    assert [reason for _, _, reason in dead_letters.sent] == [
        "handler failed: OperationFailure: document failed validation"
    ]


async def test_an_unprocessable_record_is_dead_lettered_with_its_reason(delays):
    dead_letters = FakeDeadLetters()

    await _run(FlakyHandler(Unprocessable("unknown device")), dead_letters)

    assert [reason for _, _, reason in dead_letters.sent] == ["unprocessable: unknown device"]
    assert delays == []


async def test_retries_are_bounded_and_the_record_is_left_for_redelivery(delays):
    handler = FlakyHandler(*(ConnectionFailure("still down") for _ in range(10)))
    dead_letters = FakeDeadLetters()

    with pytest.raises(RuntimeError, match="gave up after 3 attempts"):
        await _run(handler, dead_letters, RetryPolicy(attempts=3))

    assert handler.calls == 3
    assert handler.handled == []
    assert dead_letters.sent == []
    assert delays == [0.2, 0.4], "no pointless sleep after the last attempt"


def _refusal() -> IllegalTransition:
    return IllegalTransition(
        subject_kind="device",
        subject_id=EVENT.subject_id,
        action="allocate",
        state="received",
        reason="device was not wiped",
    )


async def test_an_illegal_transition_goes_to_on_refused_not_to_dead_letters(delays):
    refused: list[tuple[IllegalTransition, Event]] = []

    async def on_refused(exc: IllegalTransition, event: Event) -> None:
        refused.append((exc, event))

    dead_letters = FakeDeadLetters()
    handler = FlakyHandler(_refusal())

    await _run(handler, dead_letters, on_refused=on_refused)

    assert [(r.reason, e) for r, e in refused] == [("device was not wiped", EVENT)]
    assert handler.calls == 1
    assert dead_letters.sent == []
    assert delays == []


async def test_an_illegal_transition_without_on_refused_is_dead_lettered(delays):
    dead_letters = FakeDeadLetters()

    await _run(FlakyHandler(_refusal()), dead_letters)

    assert [reason for _, _, reason in dead_letters.sent] == ["refused: device was not wiped"]


async def test_recording_a_refusal_while_the_store_is_down_is_retried_with_backoff(delays):
    calls = 0

    async def on_refused(exc: IllegalTransition, event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise AutoReconnect("store restarting")

    await _run(
        FlakyHandler(_refusal(), _refusal(), _refusal()), FakeDeadLetters(), on_refused=on_refused
    )

    assert calls == 3
    assert delays == [0.2, 0.4]


async def test_a_kafka_error_that_no_retry_can_fix_is_dead_lettered(delays):
    from aiokafka.errors import MessageSizeTooLargeError

    dead_letters = FakeDeadLetters()
    await _run(FlakyHandler(MessageSizeTooLargeError()), dead_letters)

    assert len(dead_letters.sent) == 1
    assert delays == []


def test_a_store_busy_with_another_writer_is_retried_not_dead_lettered():
    busy = OperationFailure("database is locked (5) (SQLITE_BUSY)", code=1)
    assert is_transient(busy)
    assert not is_transient(OperationFailure("unknown operator: $foo", code=2))


def test_over_http_a_busy_store_is_a_503_to_retry_and_other_store_errors_a_500():
    busy = store_error_response(OperationFailure("database is locked (SQLITE_BUSY)", code=1))
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert store_error_response(AutoReconnect("connection reset")).status_code == 503
    assert store_error_response(OperationFailure("bad query", code=2)).status_code == 500


def test_a_generated_kafka_cluster_id_never_looks_like_an_option():
    ids = [_cluster_id() for _ in range(2000)]  # about 1 in 64 base64 ids start with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)


async def test_a_bulk_apply_is_retried_on_transient_errors_and_reports_what_it_applied(delays):
    calls: list[int] = []

    async def bulk(events: Any) -> set[Any]:
        calls.append(len(events))
        if len(calls) < 3:
            raise AutoReconnect("primary gone")
        return {e.event_id for e in events}

    assert await _bulk_with_retries(bulk, [EVENT], DEFAULT_RETRY) == {EVENT.event_id}
    assert calls == [1, 1, 1]
    assert delays == [0.2, 0.4]


async def test_a_failing_bulk_apply_leaves_the_whole_batch_to_the_per_event_handler(delays):
    async def broken(events: Any) -> set[Any]:
        raise ValueError("a bug in the bulk path")

    async def down(events: Any) -> set[Any]:
        raise ConnectionFailure("still down")

    assert await _bulk_with_retries(broken, [EVENT], DEFAULT_RETRY) == set()
    assert delays == []  # a bug is not retried
    assert await _bulk_with_retries(down, [EVENT], DEFAULT_RETRY) == set()
    assert len(delays) == DEFAULT_RETRY.attempts - 1
