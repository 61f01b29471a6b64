"""Traces about a device share its id, outbox entries keep the trace that stored them, log lines
carry the event or request in hand, and stored events are counted (`shared.observability`).

No broker, no store: spans are collected in memory, log lines written to a string, and HTTP
requests made in process against a small FastAPI app."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.routing import Route

from shared import observability
from shared.events import DeviceReceived, Event, PickupRequested, TransitionRefused
from shared.examples import EXAMPLES
from shared.outbox import outbox_doc, outbox_set

log = logging.getLogger("tests.observability")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = observability.configure_tracing("unit-tests")
    collected = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    yield collected
    collected.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Log lines of this module and the HTTP access lines, as a service writes them (JSON)."""
    stream = io.StringIO()
    handler = observability.log_handler("unit", "json", stream)
    loggers = [log, logging.getLogger("greenit.http")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _received(device_id: UUID | None = None) -> DeviceReceived:
    event = EXAMPLES[DeviceReceived].model_copy(
        update={"event_id": uuid4(), "device_id": device_id or uuid4()}
    )
    assert isinstance(event, DeviceReceived)
    return event


def _named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def _traceparent(headers: dict[str, str]) -> tuple[int, int]:
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


def _ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def test_a_span_about_a_device_is_in_the_trace_of_the_device_id(spans):
    device_id = uuid4()
    with observability.span_about("inspect", device_id):
        pass
    span = _named(spans, "inspect")
    assert _ids(span)[0] == device_id.int
    assert span.parent is None
    assert not span.context.trace_flags.random_trace_id


def test_a_span_without_subject_gets_a_random_trace(spans):
    with observability.span_about("list devices", None):
        pass
    span = _named(spans, "list devices")
    assert span.context.trace_flags.random_trace_id


def test_under_a_parent_of_the_same_device_the_span_is_its_child(spans):
    device_id = uuid4()
    with observability.span_about("outer", device_id), observability.span_about("inner", device_id):
        pass
    outer, inner = _named(spans, "outer"), _named(spans, "inner")
    assert inner.parent is not None
    assert inner.parent.span_id == _ids(outer)[1]
    assert _ids(inner)[0] == _ids(outer)[0] == device_id.int


def test_a_device_scanned_in_a_request_about_its_pickup_starts_its_own_trace_linked_to_it(spans):
    pickup_id, device_id = uuid4(), uuid4()
    with (
        observability.span_about("POST /pickups/{pickup_id}/devices", pickup_id),
        observability.span_about("device.received stored", device_id),
    ):
        pass
    scan = _named(spans, "POST /pickups/{pickup_id}/devices")
    stored = _named(spans, "device.received stored")
    assert _ids(scan)[0] == pickup_id.int
    assert _ids(stored)[0] == device_id.int
    assert stored.parent is None
    assert [link.context.span_id for link in stored.links] == [_ids(scan)[1]]


def test_an_outbox_entry_keeps_the_trace_of_the_span_that_stored_it(spans):
    event = _received()
    with observability.span_about("handle", event.device_id):
        entry = outbox_set([event])[f"outbox.{event.event_id}"]
    assert set(entry) == {"payload", "at", "trace"}
    stored, handle = _named(spans, "device.received stored"), _named(spans, "handle")
    assert _traceparent(entry["trace"]) == _ids(stored)
    assert stored.parent is not None
    assert stored.parent.span_id == _ids(handle)[1]
    new_doc = outbox_doc([event])["outbox"][str(event.event_id)]
    assert _traceparent(new_doc["trace"])[0] == event.device_id.int


def test_a_record_is_published_as_a_child_of_its_stored_trace_or_else_in_its_device_trace(spans):
    event = _received()
    stored = observability.stored_trace(event)
    with observability.publishing(event, "device.received", stored) as headers:
        pass
    publish = _named(spans, "device.received publish")
    assert publish.kind is SpanKind.PRODUCER
    assert _traceparent(headers) == _ids(publish)
    assert publish.parent is not None
    assert publish.parent.span_id == _traceparent(stored)[1]

    spans.clear()
    with observability.publishing(event, "device.received", None) as old_entry_headers:
        pass
    assert _traceparent(old_entry_headers)[0] == event.device_id.int
    assert _named(spans, "device.received publish").parent is None


@dataclass
class Record:
    topic: str
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_a_consumer_continues_the_records_trace_and_its_log_lines_carry_the_event(spans, lines):
    event = _received()
    with observability.publishing(event, "device.received", None) as headers:
        pass
    record = Record("device.received", [(k, v.encode()) for k, v in headers.items()])
    with observability.consuming(event, record, "diagnostics"):  # type: ignore[arg-type]
        log.info("handling")
    log.info("after")

    consume = _named(spans, "device.received process")
    assert consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None
    assert consume.parent.span_id == _traceparent(headers)[1]
    during, after = _parsed(lines)
    assert during["device_id"] == str(event.device_id)
    assert during["correlation_id"] == str(event.correlation_id)
    assert during["event_id"] == str(event.event_id)
    assert during["event_type"] == "device.received"
    assert during["trace_id"] == event.device_id.hex
    assert during["span_id"] == f"{_ids(consume)[1]:016x}"
    assert not {"device_id", "event_id", "trace_id"} & after.keys()


def test_log_lines_are_json_with_timestamp_level_service_and_message(lines):
    log.warning("disk %s almost full", "sda")
    (line,) = _parsed(lines)
    assert line["level"] == "WARNING"
    assert line["service"] == "unit"
    assert line["message"] == "disk sda almost full"
    assert line["logger"] == "tests.observability"
    assert line["timestamp"].endswith("+00:00")


def test_text_lines_append_the_context_for_local_debugging():
    stream = io.StringIO()
    handler = observability.log_handler("unit", "text", stream)
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "applied", (), None)
    with observability.bound(device_id="d-1", correlation_id="c-1"):
        handler.handle(record)
    assert stream.getvalue().rstrip().endswith("applied [device_id=d-1 correlation_id=c-1]")


def test_a_refusal_about_a_device_is_logged_with_the_device_id():
    refused = EXAMPLES[TransitionRefused]
    assert isinstance(refused, TransitionRefused)
    fields = observability.event_fields(refused)
    assert fields["device_id"] == str(refused.subject_ref)
    pickup = observability.event_fields(EXAMPLES[PickupRequested])
    assert "device_id" not in pickup
    assert pickup["subject_id"] == str(EXAMPLES[PickupRequested].subject_id)


def _sample(name: str, **labels: str) -> float:
    return observability.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_stored_device_event_and_a_refusal_are_counted_by_type_and_action():
    event: Event = _received()
    refused = EXAMPLES[TransitionRefused]
    assert isinstance(refused, TransitionRefused)
    received_before = _sample("greenit_device_events_total", event_type="device.received")
    refused_before = _sample("greenit_transitions_refused_total", action=refused.action)
    observability.count_stored(event)
    observability.count_stored(refused)
    observability.count_stored(EXAMPLES[PickupRequested])
    assert _sample("greenit_device_events_total", event_type="device.received") == (
        received_before + 1
    )
    assert _sample("greenit_transitions_refused_total", action=refused.action) == (
        refused_before + 1
    )
    assert _sample("greenit_device_events_total", event_type="pickup.requested") == 0
    page, content_type = observability.metrics_page()
    assert content_type.startswith("text/plain")
    assert b"greenit_device_events_total" in page


def _app() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False})

    @app.get("/devices/{device_id}")
    async def one(device_id: UUID) -> dict[str, str]:
        log.info("looking up %s", device_id)
        return {"device_id": str(device_id)}

    @app.post("/pickups/{pickup_id}/devices")
    async def scan(pickup_id: UUID) -> dict[str, str]:
        log.info("scanning into %s", pickup_id)
        return {}

    routes = [r for r in app.router.routes if isinstance(r, Route)]
    app.add_middleware(observability.HttpObservability, routes=routes)
    return app


async def _request(method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kw)


async def test_a_request_about_a_device_is_in_its_trace_and_its_lines_carry_its_id(spans, lines):
    device_id = uuid4()
    route = "/devices/{device_id}"
    before = _sample("greenit_http_requests_total", method="GET", route=route, status="200")
    response = await _request("GET", f"/devices/{device_id}")
    assert response.status_code == 200
    server = _named(spans, f"GET {route}")
    assert server.kind is SpanKind.SERVER
    assert _ids(server)[0] == device_id.int
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    endpoint_line, access_line = _parsed(lines)
    assert endpoint_line["device_id"] == access_line["device_id"] == str(device_id)
    assert endpoint_line["trace_id"] == device_id.hex
    assert access_line["http_route"] == route
    assert access_line["http_status"] == 200
    after = _sample("greenit_http_requests_total", method="GET", route=route, status="200")
    assert after == before + 1


async def test_a_request_about_a_pickup_is_correlated_by_the_pickup(spans, lines):
    pickup_id = uuid4()
    response = await _request("POST", f"/pickups/{pickup_id}/devices")
    assert response.status_code == 200
    assert _ids(_named(spans, "POST /pickups/{pickup_id}/devices"))[0] == pickup_id.int
    endpoint_line = _parsed(lines)[0]
    assert endpoint_line["pickup_id"] == endpoint_line["correlation_id"] == str(pickup_id)


async def test_an_incoming_traceparent_of_the_same_device_is_the_requests_parent(spans):
    device_id = uuid4()
    with observability.span_about("client", device_id):
        headers = observability.carrier()
    await _request("GET", f"/devices/{device_id}", headers=headers)
    server = _named(spans, "GET /devices/{device_id}")
    assert server.parent is not None
    assert server.parent.span_id == _traceparent(headers)[1]


async def test_unknown_paths_wrong_methods_and_bad_ids_are_counted_without_a_subject(spans, lines):
    assert (await _request("GET", "/nowhere")).status_code == 404
    assert (await _request("DELETE", f"/devices/{uuid4()}")).status_code == 405
    assert (await _request("GET", "/devices/not-a-uuid")).status_code == 422
    unknown, wrong_method, bad_id = (line for line in _parsed(lines) if "http_route" in line)
    assert unknown["http_route"] == "(unmatched)"
    assert wrong_method["http_route"] == bad_id["http_route"] == "/devices/{device_id}"
    assert "device_id" in wrong_method
    assert "device_id" not in bad_id
    assert "device_id" not in unknown
    bad_id_span = _named(spans, "GET /devices/{device_id}")
    assert bad_id_span.context.trace_flags.random_trace_id
