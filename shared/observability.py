"""Metrics, traces and structured logs, the same in every service process.

- **Metrics**: one Prometheus registry per process, served at `/metrics`: FastStream's Kafka
  metrics (`faststream_*`), the domain counters `greenit_device_events_total{event_type}` and
  `greenit_transitions_refused_total{action}`, `greenit_http_requests_total`, and how each
  consumer group fares (`greenit_consumer_*`, `greenit_dead_letters*`; see `ConsumerHealth`).
- **Traces**: OpenTelemetry spans whose trace id is the id of the device (or pickup, request,
  lot) they are about, so one device's journey is one trace across services. The context of the
  span that stored an event travels with its outbox entry and then as the W3C `traceparent`
  header of its Kafka record; a consumer continues from it.
- **Logs**: JSON lines carrying the device id, correlation id, event id and type and trace id of
  the event or HTTP request being handled.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging import Handler
from typing import IO, TYPE_CHECKING, Any, Literal
from uuid import UUID

from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry import propagate, trace
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, Span, SpanKind, format_span_id, format_trace_id
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.routing import BaseRoute, Match

from shared.events import DeviceEvent, Event, TransitionRefused

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord
    from faststream.context import ContextRepo
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "text"]
Exporter = Literal["none", "console", "otlp"]

# ---- metrics --------------------------------------------------------------------------------

REGISTRY = CollectorRegistry()
"""This process's metrics; `/metrics` serves exactly these."""
ProcessCollector(registry=REGISTRY)

DEVICE_EVENTS = Counter(
    "greenit_device_events",
    "Device events this service stored, counted once when first published from the outbox.",
    ["event_type"],
    registry=REGISTRY,
)
TRANSITIONS_REFUSED = Counter(
    "greenit_transitions_refused",
    "Illegal transitions this service refused, by action.",
    ["action"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "greenit_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)


CONSUMER_STUCK = Gauge(
    "greenit_consumer_stuck",
    "1 while the consumer group's current batch has failed GREENIT_CONSUMER_STUCK_AFTER "
    "deliveries in a row, else 0.",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_OLDEST_UNPROCESSED = Gauge(
    "greenit_consumer_oldest_unprocessed_age_seconds",
    "Seconds since this process first received the oldest record it has not finished yet "
    "(0 when idle).",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_FAILED_DELIVERIES = Gauge(
    "greenit_consumer_failed_deliveries",
    "Deliveries of the current batch that failed in a row (0 after a batch was committed).",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_RETRIES = Counter(
    "greenit_consumer_retries",
    "Transient failures of a record's handler, each retried after a backoff.",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_REDELIVERIES = Counter(
    "greenit_consumer_redeliveries",
    "Batches that failed (retries exhausted, or a dead letter not published) and were rewound "
    "for redelivery.",
    ["group"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "greenit_dead_letters",
    "Records sent to the dead-letter topic: form 'whole' (value and headers untouched) or "
    "'cut_down' (too large to copy whole: reason, source, key, size and a prefix of the value).",
    ["group", "form"],
    registry=REGISTRY,
)
DEAD_LETTERS_UNPUBLISHED = Counter(
    "greenit_dead_letters_unpublished",
    "Records skipped because not even their cut-down dead letter could be published after "
    "GREENIT_DEAD_LETTER_GIVE_UP_AFTER deliveries: the CRITICAL log line "
    "'dead letter not published' is then their only record.",
    ["group"],
    registry=REGISTRY,
)


def kafka_metrics(service: str) -> KafkaPrometheusMiddleware:
    """FastStream's broker middleware: received/published message counts, sizes, durations."""
    return KafkaPrometheusMiddleware(registry=REGISTRY, app_name=service)


def declare_events(classes: Iterable[type[Event]]) -> None:
    """Show the device events a service emits at 0 before the first one, not as missing."""
    for cls in classes:
        if issubclass(cls, DeviceEvent):
            DEVICE_EVENTS.labels(cls.model_fields["event_type"].default)


def count_stored(event: Event) -> None:
    """Count an event whose state change was stored; the outbox relay calls it once per event."""
    if isinstance(event, DeviceEvent):
        DEVICE_EVENTS.labels(event.event_type).inc()
    elif isinstance(event, TransitionRefused):
        TRANSITIONS_REFUSED.labels(event.action).inc()


def metrics_page() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# ---- consumers ------------------------------------------------------------------------------

ConsumerState = Literal["ok", "retrying", "stuck"]
REVOKED_AFTER_S = 120.0
"""A failed batch not redelivered for this long went to another consumer (a redelivery comes
within the retries' backoff, at most `GREENIT_RETRY_ATTEMPTS` x 5 s)."""


@dataclass
class ConsumerHealth:
    """How one consumer group of this process fares, for `/health` and `/metrics`.

    A batch is *delivered* to the handler; if it fails (a record still failing after its
    retries, or its dead letter not published) it is rewound and delivered again. The consumer
    is `retrying` from its first failed attempt until a batch is committed, and `stuck` once
    one batch failed `stuck_after` deliveries in a row. A failure is forgotten when no batch is
    in flight and none came for `REVOKED_AFTER_S`: its partitions went to another consumer (a
    handler that hangs keeps its batch in flight, and its age growing).
    """

    group: str
    stuck_after: int
    failed_attempts: int = 0
    failed_deliveries: int = 0
    failing_since: datetime | None = None
    last_error: str | None = None
    dead_letters_unpublished: int = 0
    _pending: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    _dead_letter_failures: dict[tuple[str, int, int], int] = field(default_factory=dict)
    _in_flight: bool = False
    _last_failure: float = 0.0

    def __post_init__(self) -> None:
        CONSUMER_STUCK.labels(self.group).set_function(lambda: self.state == "stuck")
        CONSUMER_FAILED_DELIVERIES.labels(self.group).set_function(self._failed_deliveries)
        CONSUMER_OLDEST_UNPROCESSED.labels(self.group).set_function(self.oldest_unprocessed_age_s)
        CONSUMER_RETRIES.labels(self.group)
        CONSUMER_REDELIVERIES.labels(self.group)
        DEAD_LETTERS_UNPUBLISHED.labels(self.group)
        for form in ("whole", "cut_down"):
            DEAD_LETTERS.labels(self.group, form)

    @property
    def state(self) -> ConsumerState:
        self._forget_if_revoked()
        if self.failed_deliveries >= self.stuck_after:
            return "stuck"
        return "retrying" if self.failed_attempts or self.failed_deliveries else "ok"

    def received(self, records: Iterable[ConsumerRecord[Any, Any]]) -> None:
        """A batch is about to be handled: note when each partition's first record came."""
        first: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        self._in_flight = True
        now = time.monotonic()
        for tp, offset in first.items():
            seen = self._pending.get(tp)
            if seen is None or seen[0] != offset:
                self._pending[tp] = (offset, now)

    def finished(self, records: Iterable[ConsumerRecord[Any, Any]]) -> None:
        """A batch was handled (its offsets are committed next)."""
        for r in records:
            self._pending.pop((r.topic, r.partition), None)
            self._dead_letter_failures.pop((r.topic, r.partition, r.offset), None)
        self._in_flight = False
        self._clear_failures()

    def attempt_failed(self, exc: BaseException) -> None:
        """One attempt at a record failed transiently; it is retried."""
        self._failed(exc)
        CONSUMER_RETRIES.labels(self.group).inc()

    def delivery_failed(self, exc: BaseException) -> None:
        """The batch failed; it is rewound and delivered again."""
        self._failed(exc.__cause__ or exc)
        self._in_flight = False
        self.failed_deliveries += 1
        CONSUMER_REDELIVERIES.labels(self.group).inc()

    def dead_letter_failed(self, record: ConsumerRecord[Any, Any]) -> int:
        """How many deliveries of `record` could not publish its dead letter, this one included."""
        where = (record.topic, record.partition, record.offset)
        self._dead_letter_failures[where] = self._dead_letter_failures.get(where, 0) + 1
        return self._dead_letter_failures[where]

    def dead_letter_given_up(self, record: ConsumerRecord[Any, Any]) -> None:
        self._dead_letter_failures.pop((record.topic, record.partition, record.offset), None)
        self.dead_letters_unpublished += 1
        DEAD_LETTERS_UNPUBLISHED.labels(self.group).inc()

    def oldest_unprocessed_age_s(self) -> float:
        self._forget_if_revoked()
        if not self._pending:
            return 0.0
        return time.monotonic() - min(seen for _, seen in self._pending.values())

    def view(self) -> dict[str, Any]:
        """What `/health` shows: no record contents, only the error's type (no partner data)."""
        return {
            "state": self.state,
            "failed_attempts": self.failed_attempts,
            "failed_deliveries": self.failed_deliveries,
            "stuck_after": self.stuck_after,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            "last_error": self.last_error,
            "oldest_unprocessed_age_s": round(self.oldest_unprocessed_age_s(), 3),
            "dead_letters_unpublished": self.dead_letters_unpublished,
        }

    def _failed(self, exc: BaseException) -> None:
        self.failed_attempts += 1
        self.failing_since = self.failing_since or datetime.now(UTC)
        self.last_error = type(exc).__name__
        self._last_failure = time.monotonic()

    def _clear_failures(self) -> None:
        self.failed_attempts = self.failed_deliveries = 0
        self.failing_since = self.last_error = None

    def _failed_deliveries(self) -> float:
        self._forget_if_revoked()
        return float(self.failed_deliveries)

    def _forget_if_revoked(self) -> None:
        quiet = time.monotonic() - self._last_failure > REVOKED_AFTER_S
        if self.failed_deliveries and not self._in_flight and quiet:
            self._pending.clear()
            self._dead_letter_failures.clear()
            self._clear_failures()


CONSUMERS: dict[str, ConsumerHealth] = {}
"""This process's consumer groups, by group id."""


def consumer_health(group: str, stuck_after: int) -> ConsumerHealth:
    CONSUMERS[group] = ConsumerHealth(group, stuck_after)
    return CONSUMERS[group]


def consumers_view() -> dict[str, dict[str, Any]]:
    return {group: health.view() for group, health in sorted(CONSUMERS.items())}


# ---- traces ---------------------------------------------------------------------------------

_forced_trace_id: ContextVar[int | None] = ContextVar("greenit_forced_trace_id", default=None)


class SubjectIdGenerator(RandomIdGenerator):
    """Gives a new trace the id of its subject while `span_about` starts one; random otherwise."""

    def generate_trace_id(self) -> int:
        forced = _forced_trace_id.get()
        return forced if forced is not None else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        # W3C's "random" flag: a subject id may be a UUID5, derived rather than random
        return _forced_trace_id.get() is None


def trace_id_of(subject: UUID) -> int:
    """A UUID is 128 bits, as a trace id is: the device's journey is the trace of its id."""
    return subject.int


_provider: TracerProvider | None = None


def configure_tracing(service: str, exporter: Exporter = "none") -> TracerProvider:
    """Install this process's tracer provider (once). Without an exporter, spans still give
    the `traceparent` headers and log trace ids; nothing is sent anywhere."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), id_generator=SubjectIdGenerator()
    )
    if exporter == "console":
        # one JSON line per span, next to the JSON log lines
        provider.add_span_processor(SimpleSpanProcessor(_console_exporter()))
    elif exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def _console_exporter() -> SpanExporter:
    def one_line(span: ReadableSpan) -> str:
        return str(span.to_json(indent=None)) + "\n"

    return ConsoleSpanExporter(out=sys.stdout, formatter=one_line)


def _otlp_exporter() -> SpanExporter:
    # reads OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318) and the other OTEL_* vars
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _tracer() -> trace.Tracer:
    return trace.get_tracer("greenit")


@contextlib.contextmanager
def span_about(
    name: str,
    subject: UUID | None,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """A span in the trace of `subject` (a device, pickup, request or lot id).

    Under a parent of the same trace, the span is its child; under a parent of another trace
    (an HTTP request about a pickup that scanned a device in) it starts the subject's trace and
    links to that parent. Without a subject it is an ordinary child of `parent`.
    """
    context = parent if parent is not None else get_current()
    cause = trace.get_current_span(context).get_span_context()
    attrs = dict(attributes or {})
    if subject is None or not subject.int or (cause.is_valid and cause.trace_id == subject.int):
        with _tracer().start_as_current_span(
            name, context=context, kind=kind, attributes=attrs
        ) as span:
            yield span
        return
    token = _forced_trace_id.set(trace_id_of(subject))
    try:
        links = [Link(cause)] if cause.is_valid else []
        span = _tracer().start_span(name, Context(), kind=kind, attributes=attrs, links=links)
    finally:
        _forced_trace_id.reset(token)
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span


def carrier() -> dict[str, str]:
    """The current span as W3C trace-context headers (`traceparent`)."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def context_from(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


def stored_trace(event: Event) -> dict[str, str]:
    """The trace context an outbox entry keeps: a span, in the event's subject trace, for the
    moment the event was stored, child of (or linked to) whatever caused it."""
    with span_about(
        f"{event.event_type} stored",
        event.subject_id,
        attributes={"greenit.event_id": str(event.event_id)},
    ):
        return carrier()


@contextlib.contextmanager
def publishing(
    event: Event, topic: str, stored: Mapping[str, str] | None
) -> Iterator[dict[str, str]]:
    """The producer span of one record; yields the headers that carry it."""
    parent = context_from(stored) if stored else None
    with span_about(
        f"{topic} publish",
        event.subject_id,
        parent=parent,
        kind=SpanKind.PRODUCER,
        attributes=_messaging(event, topic),
    ):
        yield carrier()


@contextlib.contextmanager
def consuming(event: Event, record: ConsumerRecord[Any, Any], group_id: str) -> Iterator[Span]:
    """The consumer span of one record, continuing from its `traceparent`, and the log fields
    of its event for every line written meanwhile."""
    headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
    attributes = _messaging(event, record.topic) | {"messaging.consumer.group.name": group_id}
    with (
        bound(**event_fields(event)),
        span_about(
            f"{record.topic} process",
            event.subject_id,
            parent=context_from(headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span,
    ):
        yield span


def _messaging(event: Event, topic: str) -> dict[str, str | int]:
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.message.id": str(event.event_id),
        "greenit.event_type": event.event_type,
        "greenit.subject_id": str(event.subject_id),
    }


# ---- logs -----------------------------------------------------------------------------------

_log_fields: ContextVar[dict[str, str] | None] = ContextVar("greenit_log_fields", default=None)
_broker_contexts: weakref.WeakSet[ContextRepo] = weakref.WeakSet()


def event_fields(event: Event) -> dict[str, str]:
    """What every log line about `event` carries."""
    fields = {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "correlation_id": str(event.correlation_id),
        "subject_id": str(event.subject_id),
    }
    if isinstance(event, DeviceEvent):
        fields["device_id"] = str(event.device_id)
    elif isinstance(event, TransitionRefused) and event.subject_kind == "device":
        fields["device_id"] = str(event.subject_ref)
    return fields


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[dict[str, str]]:
    """Add `fields` to every log line written in this block (and tasks it starts)."""
    merged = {**(_log_fields.get() or {}), **fields}
    token = _log_fields.set(merged)
    try:
        yield merged
    finally:
        _log_fields.reset(token)


_HEADER_FIELDS = ("event_id", "event_type", "correlation_id")


def watch_broker(context: ContextRepo) -> None:
    """Let FastStream's own lines ("Received", "Processed") carry the fields of the record in
    hand: they are written before and after the handler binds them."""
    _broker_contexts.add(context)


def _record_fields() -> dict[str, str]:
    for repo in _broker_contexts:
        message = repo.get_local("message")
        if message is None:
            continue
        raw = getattr(message, "raw_message", None)
        headers: Mapping[str, str] = getattr(message, "headers", None) or {}
        if isinstance(raw, tuple):  # a batch: its lines are about one record only if it has one
            if len(raw) != 1:
                return {"batch_records": str(len(raw))}
            raw = raw[0]
            headers = {k: v.decode(errors="replace") for k, v in (raw.headers or ())}
        fields = {k: headers[k] for k in _HEADER_FIELDS if k in headers}
        key = getattr(raw, "key", None)
        if isinstance(key, bytes):
            fields["subject_id"] = key.decode(errors="replace")
            if fields.get("event_type", "").startswith("device."):
                fields["device_id"] = fields["subject_id"]
        sender = trace.get_current_span(context_from(headers)).get_span_context()
        if sender.is_valid:
            fields["trace_id"] = format_trace_id(sender.trace_id)
        return fields
    return {}


class ContextFields(logging.Filter):
    """Puts the bound fields and the current trace and span ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {**_record_fields(), **(_log_fields.get() or {})}
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = format_trace_id(span.trace_id)
            fields["span_id"] = format_span_id(span.span_id)
        for name, value in fields.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


_CONTEXT_KEYS = (
    "device_id",
    "correlation_id",
    "event_id",
    "event_type",
    "subject_id",
    "pickup_id",
    "request_id",
    "shipment_id",
    "lot_id",
    "trace_id",
)


class TextFormatter(logging.Formatter):
    """Human-readable lines for local debugging, the context appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if hasattr(record, k))
        return f"{line} [{context}]" if context else line


_THIRD_PARTY_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "faststream",
    "faststream.access",
    "faststream.access.kafka",
)


def configure_logging(service: str, level: str = "INFO", fmt: LogFormat = "json") -> None:
    """One handler on the root logger; uvicorn's and FastStream's loggers propagate to it."""
    handler = log_handler(service, fmt)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "greenit"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)  # GREENIT_LOG_LEVEL decides, on the root logger
        logger.propagate = True
    # HttpObservability writes the access lines, with the request's route and context
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    logging.captureWarnings(True)


def log_handler(service: str, fmt: LogFormat = "json", stream: IO[str] | None = None) -> Handler:
    """Writes each record as one JSON line (or text) with the context fields."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name("greenit")
    handler.addFilter(ContextFields())
    handler.setFormatter(_formatter(service, fmt))
    return handler


def _formatter(service: str, fmt: LogFormat) -> logging.Formatter:
    if fmt == "text":
        return TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s %(message)s")
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        timestamp=True,
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


# ---- HTTP -----------------------------------------------------------------------------------

SUBJECT_PARAMS = ("device_id", "pickup_id", "request_id", "shipment_id", "lot_id")
"""Path parameters naming what a request is about, the first found giving its trace."""
UNOBSERVED_PATHS = frozenset({"/health", "/metrics"})


class HttpObservability:
    """ASGI middleware: a server span per request in the trace of the device (or pickup, ...)
    its path names, log fields from the path, an access line and a request counter."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNOBSERVED_PATHS:
            await self.app(scope, receive, send)
            return
        route, params = _route_of(self.routes, scope)
        ids = _subject_ids(params)
        subject = next((UUID(ids[p]) for p in SUBJECT_PARAMS if p in ids), None)
        method: str = scope["method"]
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        attributes: dict[str, str | int] = {"http.request.method": method, "http.route": route}
        with (
            bound(**ids, **_correlation(ids)),
            span_about(
                f"{method} {route}",
                subject,
                parent=context_from(headers),
                kind=SpanKind.SERVER,
                attributes=attributes,
            ) as span,
        ):
            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                span.set_attribute("http.response.status_code", status)
                _answered(method, route, status, time.perf_counter() - started)


def _answered(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    _access_log.info(
        "%s %s %d in %.1f ms",
        method,
        route,
        status,
        seconds * 1000,
        extra={"http_method": method, "http_route": route, "http_status": status},
    )


_access_log = logging.getLogger("greenit.http")


def _route_of(routes: Sequence[BaseRoute], scope: Scope) -> tuple[str, dict[str, Any]]:
    """The route template and path parameters of a request, found before it is routed."""
    partial: tuple[str, dict[str, Any]] | None = None
    for route in routes:
        match, child = route.matches(scope)
        found = str(getattr(route, "path", "(unnamed)")), dict(child.get("path_params", {}))
        if match is Match.FULL:
            return found
        if match is Match.PARTIAL and partial is None:
            partial = found  # the path exists, not for this method (405)
    return partial or ("(unmatched)", {})


def _correlation(ids: Mapping[str, str]) -> dict[str, str]:
    """A request about a pickup or a school's request: its events are correlated by that id."""
    for name in ("pickup_id", "request_id"):
        if name in ids:
            return {"correlation_id": ids[name]}
    return {}


def _subject_ids(params: Mapping[str, Any]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in SUBJECT_PARAMS:
        if name in params:
            with contextlib.suppress(ValueError):
                ids[name] = str(UUID(str(params[name])))
    return ids
