"""Kafka plumbing every service uses: the broker, publishing events, consuming them safely.

Delivery is at-least-once: a consumer commits a record's offset only after its handler
returned. A record that can never be processed (malformed, wrong schema, unknown event
type, an event on another type's topic, or a handler's `Unprocessable`) goes to the
dead-letter topic with the reason and consumption moves on; a transient failure (store or
broker down) is retried with exponential backoff, then the record is redelivered, never in a
tight loop.

Nothing stalls silently: a record too large to copy whole into a dead letter is dead-lettered
cut down; a dead letter that cannot be published at all is retried for a few deliveries and
then logged (CRITICAL) and counted instead, so its partition moves on; and a consumer whose
batch keeps failing is reported stuck (`shared.observability.ConsumerHealth`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faststream import AckPolicy
from faststream.context import ContextRepo
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.publisher.usecase import DefaultPublisher
from pymongo.errors import ConnectionFailure, OperationFailure

import shared.examples  # noqa: F401  (attaches examples to the schemas in the AsyncAPI docs)
from shared import observability, store_adapter
from shared.codec import PoisonMessage, decode_on, encode, headers_for
from shared.credentials import MissingCredential
from shared.domain import IllegalTransition
from shared.events import Event, TransitionRefused
from shared.settings import ServiceSettings
from shared.topics import DEAD_LETTER, topic_of
from shared.usecase import Busy

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    KafkaError,
    ConnectionError,
    TimeoutError,
    Busy,
)


class Unprocessable(Exception):
    """Raised by a handler for a record that retrying cannot fix (e.g. an unknown device)."""


Handler = Callable[[Event], Awaitable[None]]
BulkHandler = Callable[[Sequence[Event]], Awaitable[set[UUID]]]
"""Applies many events of a batch at once (e.g. one bulk insert); returns the ids of those it
applied completely, which are then not handed to the per-event handler."""
OnRefused = Callable[[IllegalTransition, Event], Awaitable[None]]


MAX_REQUEST_SIZE = 1024 * 1024
"""The producer's limit on one record (aiokafka's default, set explicitly so that dead letters
can tell beforehand whether a copy fits)."""


def make_broker(settings: ServiceSettings) -> KafkaBroker:
    """A broker whose producer is idempotent (acks=all): a retried send is written once.

    It authenticates as the service's own principal (SCRAM-SHA-512, `kafka_credentials`): the
    broker's ACLs let it write only its own events' topics and read only those it consumes.

    It counts messages in this process's Prometheus registry and logs through the standard
    `faststream.access.kafka` logger, whose lines carry the fields of the record in hand.
    """
    observability.configure_tracing(settings.service, settings.otel_exporter)
    context = ContextRepo()
    observability.watch_broker(context)
    try:
        security = settings.kafka_credentials().faststream()
    except MissingCredential:
        # importing a service (its OpenAPI or AsyncAPI document) needs no secret, starting it
        # does: create_app's lifespan asks for the credentials first and stops, naming the setting
        security = None
    return KafkaBroker(
        settings.kafka_bootstrap,
        security=security,
        # topics are the admin's (shared.admin); a service's principal may not create them
        allow_auto_create_topics=False,
        client_id=settings.service,
        enable_idempotence=True,
        acks="all",
        max_request_size=MAX_REQUEST_SIZE,
        request_timeout_ms=15_000,
        graceful_timeout=15.0,
        middlewares=[observability.kafka_metrics(settings.service)],
        logger=logging.getLogger("faststream.access.kafka"),
        context=context,
    )


class EventBus:
    """Publishes events to their catalogue topic, keyed by subject id."""

    def __init__(
        self, broker: KafkaBroker, settings: ServiceSettings, emits: Iterable[type[Event]]
    ) -> None:
        self._publishers: dict[type[Event], DefaultPublisher] = {}
        classes: list[type[Event]] = [*emits, TransitionRefused]
        observability.declare_events(classes)
        for cls in classes:
            topic = topic_of(cls)
            self._publishers[cls] = broker.publisher(
                settings.topic(topic.name),
                schema=cls,
                title=f"{topic.name}:publish",
                description=topic.description,
            )

    async def publish(self, event: Event, trace: Mapping[str, str] | None = None) -> None:
        """Publish `event` under a producer span, child of `trace` (the context stored with
        its outbox entry) or else of the current span; `traceparent` carries it."""
        publisher = self._publishers[type(event)]
        with observability.publishing(event, publisher.topic, trace) as trace_headers:
            await publisher.publish(
                encode(event),
                key=str(event.subject_id).encode(),
                headers=headers_for(event) | trace_headers,
            )

    async def publish_all(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.publish(event)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2**attempt))

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        return cls(attempts=settings.retry_attempts, base_delay_s=settings.retry_base_delay_s)


def is_transient(exc: BaseException) -> bool:
    """Would the same operation succeed if tried again a little later?"""
    if isinstance(exc, OperationFailure):
        busy = store_adapter.is_busy(exc)
        return busy or bool(exc.has_error_label("RetryableWriteError"))
    if isinstance(exc, KafkaError):
        # aiokafka marks what a retry can fix; e.g. a record too large is not
        return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaConnectionError)
    return isinstance(exc, TRANSIENT_ERRORS)


ORIGINAL_HEADERS = "dlq_original_headers"
"""The dead-lettered record's headers, exactly: JSON [[name, base64 value], ...] in order."""


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return json.dumps([[name, base64.b64encode(value).decode()] for name, value in headers])


def unpack_headers(packed: str) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(value)) for name, value in json.loads(packed)]


CUT_DOWN = "dlq_cut_down"
"""Set on a dead letter that holds only a prefix of the record's value: it cannot be re-driven."""
VALUE_PREFIX_BYTES = 4096
KEY_PREFIX_BYTES = 1024
KEPT_HEADERS_BYTES = 16 * 1024
SIZE_MARGIN = 1024
"""Room for the headers the publisher adds itself (content-type, correlation_id)."""
TOO_LARGE: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)


class DeadLetterUnpublished(Exception):
    """Not even the cut-down dead letter of a record could be published."""

    def __init__(self, description: Mapping[str, str], cause: BaseException) -> None:
        super().__init__(f"dead letter not published: {type(cause).__name__}: {cause}")
        self.description = dict(description)


def dead_letter_size(key: bytes | None, value: bytes, headers: Mapping[str, str]) -> int:
    """Bytes the producer counts for one record (aiokafka's own estimate), plus a margin."""
    encoded = [(k, v.encode()) for k, v in headers.items()]
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, encoded)
    return size + SIZE_MARGIN


class DeadLetters:
    """Sends a record no consumer can process to the dead-letter topic, with why: untouched if
    its copy fits in one request, else cut down (`cut_down_form`)."""

    def __init__(self, broker: KafkaBroker, settings: ServiceSettings) -> None:
        self._service = settings.service
        self.namespace = settings.namespace
        """Stripped from a record's topic to find its catalogue name."""
        self.retry = RetryPolicy.from_settings(settings)
        """How a consumer using these dead letters retries transient failures first."""
        self.batch = settings.consume_batch
        """How many records such a consumer takes at once."""
        self.stuck_after = settings.consumer_stuck_after
        self.give_up_after = settings.dead_letter_give_up_after
        self.max_size = MAX_REQUEST_SIZE
        self._publisher = broker.publisher(
            settings.topic(DEAD_LETTER.name),
            title=f"{DEAD_LETTER.name}:publish",
            description=DEAD_LETTER.description,
        )

    def _source(
        self, record: ConsumerRecord[Any, Any], group_id: str, reason: str
    ) -> dict[str, str]:
        return {
            "dlq_reason": reason[:4000],
            "dlq_source_topic": record.topic,
            "dlq_source_partition": str(record.partition),
            "dlq_source_offset": str(record.offset),
            "dlq_consumer_group": group_id,
            "dlq_service": self._service,
            "dlq_failed_at": datetime.now(UTC).isoformat(),
        }

    def whole_form(
        self, record: ConsumerRecord[Any, Any], group_id: str, reason: str
    ) -> tuple[bytes | None, bytes, dict[str, str]]:
        original = list(record.headers or ())
        headers = {k: v.decode(errors="replace") for k, v in original}
        # the headers above are readable, but a name given twice shows once and bytes that are
        # not UTF-8 are replaced: this one keeps them exactly, for a redrive
        headers[ORIGINAL_HEADERS] = pack_headers(original)
        headers.update(self._source(record, group_id, reason))
        return record.key, record.value or b"", headers

    def cut_down_form(
        self, record: ConsumerRecord[Any, Any], group_id: str, reason: str
    ) -> tuple[bytes | None, bytes, dict[str, str]]:
        """What is known of a record too large to copy: why, where from, its key, its sizes
        and the first `VALUE_PREFIX_BYTES` of its value (its headers only if they are small)."""
        value = record.value or b""
        key = record.key
        headers = self._source(record, group_id, reason)
        headers[CUT_DOWN] = "true"
        headers["dlq_original_value_size"] = str(len(value))
        if key is not None and len(key) > KEY_PREFIX_BYTES:
            headers["dlq_original_key_size"] = str(len(key))
            key = key[:KEY_PREFIX_BYTES]
        packed = pack_headers(list(record.headers or ()))
        if len(packed) <= KEPT_HEADERS_BYTES:
            headers[ORIGINAL_HEADERS] = packed
        else:
            headers["dlq_original_headers_size"] = str(len(packed))
        return key, value[:VALUE_PREFIX_BYTES], headers

    async def send(self, record: ConsumerRecord[Any, Any], group_id: str, reason: str) -> None:
        """Publish the dead letter whole or, if too large, cut down; raise
        `DeadLetterUnpublished` if neither could be published (each retried when transient)."""
        key, value, headers = self.whole_form(record, group_id, reason)
        if dead_letter_size(key, value, headers) <= self.max_size:
            try:
                await self._publish(key, value, headers)
                log.warning(
                    "dead-lettered %s[%s]@%s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    reason,
                )
                observability.DEAD_LETTERS.labels(group_id, "whole").inc()
                return
            except TOO_LARGE as exc:
                log.warning("dead letter too large to publish whole, cutting it down: %r", exc)
            except Exception as exc:
                if is_transient(exc):
                    _, _, cut = self.cut_down_form(record, group_id, reason)
                    raise DeadLetterUnpublished(self._described(record, cut), exc) from exc
                log.warning("dead letter not published whole, cutting it down: %r", exc)
        key, value, headers = self.cut_down_form(record, group_id, reason)
        try:
            await self._publish(key, value, headers)
        except Exception as exc:
            raise DeadLetterUnpublished(self._described(record, headers), exc) from exc
        log.warning(
            "dead-lettered %s[%s]@%s cut down (value of %d bytes, first %d kept): %s",
            record.topic,
            record.partition,
            record.offset,
            len(record.value or b""),
            len(value),
            reason,
        )
        observability.DEAD_LETTERS.labels(group_id, "cut_down").inc()

    async def _publish(self, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        for attempt in range(self.retry.attempts):
            try:
                await self._publisher.publish(value, key=key, headers=headers)
                return
            except Exception as exc:
                if not is_transient(exc) or attempt + 1 == self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.delay(attempt))

    @staticmethod
    def _described(record: ConsumerRecord[Any, Any], headers: Mapping[str, str]) -> dict[str, str]:
        """The cut-down dead letter as log fields: what is left of a record skipped unpublished."""
        value = record.value or b""
        return {
            **{k: v for k, v in headers.items() if k != ORIGINAL_HEADERS},
            "dlq_original_value_size": str(len(value)),
            "key": (record.key or b"")[:KEY_PREFIX_BYTES].decode(errors="replace"),
            "value_prefix": value[:VALUE_PREFIX_BYTES].decode(errors="replace"),
        }


def subscribe(
    broker: KafkaBroker,
    settings: ServiceSettings,
    *,
    events: Sequence[type[Event]],
    handler: Handler,
    dead_letters: DeadLetters,
    on_refused: OnRefused | None = None,
    retry: RetryPolicy | None = None,
    description: str = "",
    bulk: BulkHandler | None = None,
) -> None:
    """Consume the topics of `events` (`shared.topics`, in the settings' namespace) in the
    service's consumer group, in batches of up to `dead_letters.batch`
    records, committing a batch's offsets once `handler` has applied every record of it.

    Records with the same key (one subject: a device, a pickup) are handled one after another
    in offset order; different subjects concurrently, which hides the store's round trips. If
    one record still fails after its retries, the batch is not committed: the consumer rewinds
    each partition to the batch's first record, and records already applied are recognised as
    duplicates when they come again.

    `bulk`, if given, first sees every well-formed event of the batch and may apply many at
    once; what it reports applied skips the per-event handler (it still gets its consumer span
    and log line). If it fails, the per-event handler applies the batch as usual. It runs before
    the per-event handler sees any record of the batch, so it may only apply events whose effect
    does not depend on other events of their subject in the batch (diagnostics: creations).
    """
    group_id = settings.group_id
    topics = [settings.topic(topic_of(cls).name) for cls in events]
    subscriber = broker.subscriber(
        *topics,
        group_id=group_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        batch=True,
        max_records=dead_letters.batch,
        title=f"{group_id}:consume",
        description=description,
    )
    policy = retry or dead_letters.retry
    health = observability.consumer_health(group_id, stuck_after=dead_letters.stuck_after)

    Decoded = tuple[ConsumerRecord[Any, Any], Event | PoisonMessage]

    async def handle_one(
        record: ConsumerRecord[Any, Any], event: Event | PoisonMessage, applied: set[UUID]
    ) -> None:
        if isinstance(event, PoisonMessage):
            await dead_letters.send(record, group_id, str(event))
            return
        with observability.consuming(event, record, group_id):
            if event.event_id in applied:
                log.info("applied %s %s (in bulk)", event.event_type, event.event_id)
                return
            await _handle_with_retries(
                event, record, handler, dead_letters, group_id, policy, on_refused, health
            )

    async def consume_one(
        record: ConsumerRecord[Any, Any], event: Event | PoisonMessage, applied: set[UUID]
    ) -> None:
        try:
            await handle_one(record, event, applied)
        except DeadLetterUnpublished as exc:
            if health.dead_letter_failed(record) < dead_letters.give_up_after:
                raise  # redelivered: the broker may take it next time
            health.dead_letter_given_up(record)
            # the partition moves on; this line is all that is left of the record
            log.critical(
                "dead letter not published after %d deliveries, record skipped: %s[%s]@%s: "
                "%s; the cut-down dead letter: %s",
                dead_letters.give_up_after,
                record.topic,
                record.partition,
                record.offset,
                exc,
                json.dumps(exc.description, sort_keys=True),
            )

    async def consume_in_order(records: list[Decoded], applied: set[UUID]) -> None:
        for record, event in records:
            await consume_one(record, event, applied)

    async def consume(message: KafkaMessage) -> None:
        raw = message.raw_message
        records: tuple[ConsumerRecord[Any, Any], ...] = raw if isinstance(raw, tuple) else (raw,)
        health.received(records)
        try:
            await consume_batch(records)
        except Exception as exc:
            health.delivery_failed(exc)
            log.error(
                "batch of %d records failed (delivery %d in a row, consumer %s), rewound: %r",
                len(records),
                health.failed_deliveries,
                health.state,
                exc,
            )
            raise
        health.finished(records)

    async def consume_batch(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
        decoded = [(record, _decode(record, dead_letters.namespace)) for record in records]
        applied: set[UUID] = set()
        if bulk is not None:
            events = [e for _, e in decoded if isinstance(e, Event)]
            applied = await _bulk_with_retries(bulk, events, policy)
        by_subject: dict[Any, list[Decoded]] = {}
        for record, event in decoded:
            by_subject.setdefault(record.key, []).append((record, event))
        outcomes = await asyncio.gather(
            *(consume_in_order(group, applied) for group in by_subject.values()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    subscriber(consume)


def _decode(record: ConsumerRecord[Any, Any], namespace: str) -> Event | PoisonMessage:
    try:
        return decode_on(record.topic.removeprefix(namespace), record.value or b"")
    except PoisonMessage as exc:
        return exc


async def _bulk_with_retries(
    bulk: BulkHandler, events: Sequence[Event], retry: RetryPolicy
) -> set[UUID]:
    """What `bulk` applied; nothing if it kept failing (the per-event path takes over)."""
    if not events:
        return set()
    for attempt in range(retry.attempts):
        try:
            return await bulk(events)
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == retry.attempts:
                log.warning(
                    "bulk apply of %d events failed, one by one instead: %r", len(events), exc
                )
                return set()
            await asyncio.sleep(retry.delay(attempt))
    return set()


async def _handle_with_retries(
    event: Event,
    record: ConsumerRecord[Any, Any],
    handler: Handler,
    dead_letters: DeadLetters,
    group_id: str,
    retry: RetryPolicy,
    on_refused: OnRefused | None,
    health: observability.ConsumerHealth | None = None,
) -> None:
    """Apply `handler` once; what it refuses or cannot process is recorded, also with retries."""

    async def attempt_once() -> None:
        try:
            await handler(event)
            log.info("applied %s %s", event.event_type, event.event_id)
        except IllegalTransition as refused:
            log.info("refused %s %s: %s", event.event_type, event.event_id, refused.reason)
            if on_refused is None:
                await dead_letters.send(record, group_id, f"refused: {refused.reason}")
            else:
                await on_refused(refused, event)
        except Unprocessable as exc:
            await dead_letters.send(record, group_id, f"unprocessable: {exc}")

    last: BaseException | None = None
    for attempt in range(retry.attempts):
        try:
            await attempt_once()
            return
        except DeadLetterUnpublished:
            raise
        except Exception as exc:
            if not is_transient(exc):
                reason = f"handler failed: {type(exc).__name__}: {exc}"
                log.error("%s\n%s", reason, traceback.format_exc())
                await dead_letters.send(record, group_id, reason)
                return
            last = exc
            if health is not None:
                health.attempt_failed(exc)
            if attempt + 1 == retry.attempts:
                break
            delay = retry.delay(attempt)
            log.warning(
                "transient failure on %s (attempt %d/%d), retrying in %.1fs: %r",
                event.event_id,
                attempt + 1,
                retry.attempts,
                delay,
                exc,
            )
            await asyncio.sleep(delay)
    # Still failing: let the ack policy rewind to this record; it is redelivered, not lost.
    raise RuntimeError(f"gave up after {retry.attempts} attempts on {event.event_id}") from last
