"""Metrics, traces and logs of intake, diagnostics and custody as real processes: one device
scanned in, reported on and wiped; its records, spans, metrics and log lines checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from shared import observability
from shared.auth import Role
from shared.codec import encode
from shared.events import DeviceReceived
from shared.examples import EXAMPLES
from shared.kafka import EventBus, make_broker
from shared.outbox import Relay, outbox_doc
from tests.builders import scan_body
from tests.conftest import MONGO_URL, settings_in
from tests.helpers import TopicReader, eventually, new_pickup
from tools.cluster import Cluster

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DEVICE_TOPICS = ("device.received", "device.diagnosed", "device.wiped", "device.ready")
ALL_PASS = dict.fromkeys(
    ["boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"],
    "pass",
)
REPORT = {
    "specs": {
        "cpu_model": "Intel Core i5-8350U",
        "cpu_cores": 4,
        "ram_gb": 8,
        "drives": [{"serial": "OBS-DRIVE-1", "kind": "ssd", "capacity_gb": 256}],
        "battery_health_pct": 85,
    },
    "tests": ALL_PASS,
    "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
    "location": "Warehouse Brussels",
}
ERASURE = {
    "drive_serial": "OBS-DRIVE-1",
    "method": "purge",
    "technique": "NVMe secure erase",
    "tool": "nwipe",
    "tool_version": "0.37",
    "verified": True,
    "verification": "full read-back",
    "performed_at": NOW.isoformat(),
    "location": "Warehouse Brussels",
}


CLUSTER = ["intake", "diagnostics", "custody"]
PARTNERS = {"donor": (Role.DONOR, "obs-donor"), "staff": (Role.STAFF, "obs-staff")}


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    return {"GREENIT_OTEL_EXPORTER": "console", "GREENIT_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
async def journey(http, namespace) -> dict[str, Any]:
    """One device: scanned into a scheduled pickup, reported on (refurbish), wiped: ready."""
    pickup = await new_pickup(http, "donor", "staff", expected={"laptop": 1})
    pickup_id = pickup["pickup_id"]
    path = f"/pickups/{pickup_id}/devices"
    scanned = await http("staff", "POST", path, json=scan_body(serial_number="OBS-0001"))
    assert scanned.status_code == 201, scanned.text
    device_id = scanned.json()["device_id"]

    async def diagnostics_has_it() -> bool:
        found = await http("staff", "GET", f"/devices/{device_id}", service="diagnostics")
        return bool(found.status_code == 200)

    await eventually(diagnostics_has_it, within_s=60)
    reported = await http(
        "staff", "POST", f"/devices/{device_id}/reports", json=REPORT, service="diagnostics"
    )
    assert reported.status_code == 201, reported.text
    erased = await http(
        "staff", "POST", f"/devices/{device_id}/erasures", json=ERASURE, service="diagnostics"
    )
    assert erased.status_code in (200, 201), erased.text

    async with TopicReader(namespace, *DEVICE_TOPICS) as reader:
        await reader.wait_for(
            lambda events: (
                {e.event_type for e in events if str(e.subject_id) == device_id}
                >= set(DEVICE_TOPICS)
            ),
            within_s=60,
        )
        records = [r for r in reader.raw if r.key == device_id.encode()]
    return {"pickup_id": pickup_id, "device_id": UUID(device_id), "records": records}


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def _traceparent(record: Any) -> tuple[str, str]:
    """(trace id, span id) of a record's W3C traceparent: version-trace-span-flags."""
    version, trace_id, span_id, _flags = _headers(record)["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id


def _lines(cluster: Cluster, service: str) -> list[dict[str, Any]]:
    path: Path = cluster.log_dir / f"{service}.log"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{service} wrote a line that is not JSON: {line[:300]}")
    return parsed


Spans = dict[str, dict[str, Any]]


def _spans(cluster: Cluster, service: str) -> Spans:
    """Spans the console exporter wrote, by span id (hex, no 0x)."""
    spans = [s for s in _lines(cluster, service) if "context" in s and "kind" in s]
    return {s["context"]["span_id"].removeprefix("0x"): s for s in spans}


def _logs(cluster: Cluster, service: str) -> list[dict[str, Any]]:
    return [line for line in _lines(cluster, service) if "level" in line]


def _trace(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def _parent(span: dict[str, Any]) -> str | None:
    parent = span.get("parent_id")
    return parent.removeprefix("0x") if parent else None


def _record(journey: dict[str, Any], topic_suffix: str) -> Any:
    return next(r for r in journey["records"] if r.topic.endswith(topic_suffix))


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def _metrics(cluster: Cluster, service: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(cluster.urls[service] + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_every_record_of_the_device_has_the_device_id_as_trace_id(journey, namespace):
    device_hex = journey["device_id"].hex
    assert {r.topic.removeprefix(namespace) for r in journey["records"]} == set(DEVICE_TOPICS)
    for record in journey["records"]:
        trace_id, span_id = _traceparent(record)
        assert trace_id == device_hex, (record.topic, trace_id)
        assert int(span_id, 16) != 0


async def test_consumers_continue_the_trace_and_events_have_their_cause_as_parent(journey, cluster):
    device_hex = journey["device_id"].hex
    _, received_publish = _traceparent(_record(journey, "device.received"))
    _, diagnosed_publish = _traceparent(_record(journey, "device.diagnosed"))

    async def exported() -> tuple[Spans, Spans, Spans] | None:
        intake, diagnostics = _spans(cluster, "intake"), _spans(cluster, "diagnostics")
        custody = _spans(cluster, "custody")
        ready = received_publish in intake and diagnosed_publish in diagnostics
        # custody consumes device.diagnosed at its own pace
        consumed = any(_parent(s) == diagnosed_publish for s in custody.values())
        return (intake, diagnostics, custody) if ready and consumed else None

    found = await eventually(exported)
    assert found is not None
    intake, diagnostics, custody = found

    # intake: the scan request is about the pickup; the stored event starts the device's trace
    # linked to it, and the publish span is that span's child
    publish = intake[received_publish]
    stored = intake[_parent(publish) or ""]
    assert _trace(publish) == _trace(stored) == device_hex
    assert stored["name"] == "device.received stored"
    assert _parent(stored) is None
    scan = next(s for s in intake.values() if s["name"] == "POST /pickups/{pickup_id}/devices")
    assert _trace(scan) == UUID(journey["pickup_id"]).hex
    linked = [link["context"]["span_id"].removeprefix("0x") for link in stored["links"]]
    assert scan["context"]["span_id"].removeprefix("0x") in linked

    # diagnostics consumed device.received as a child of intake's publish span
    consumed = [s for s in diagnostics.values() if _parent(s) == received_publish]
    assert [s["kind"] for s in consumed] == ["SpanKind.CONSUMER"]
    assert _trace(consumed[0]) == device_hex

    # diagnostics' device.diagnosed: publish <- stored <- the HTTP test report, one trace
    chain = [diagnostics[diagnosed_publish]]
    while (parent := _parent(chain[-1])) is not None:
        chain.append(diagnostics[parent])
    assert [s["name"] for s in chain] == [
        chain[0]["name"],
        "device.diagnosed stored",
        "POST /devices/{device_id}/reports",
    ]
    assert chain[0]["kind"] == "SpanKind.PRODUCER"
    assert chain[-1]["kind"] == "SpanKind.SERVER"
    assert {_trace(s) for s in chain} == {device_hex}

    # custody consumed device.received and device.diagnosed as children of their publish spans;
    # intake, a pure producer, consumed nothing
    for cause in (received_publish, diagnosed_publish):
        assert any(
            _parent(s) == cause and s["kind"] == "SpanKind.CONSUMER" for s in custody.values()
        )
    assert [s for s in intake.values() if s["kind"] == "SpanKind.CONSUMER"] == []


async def test_metrics_count_the_kafka_messages_and_each_stored_event_once(
    journey, cluster, http, namespace
):
    intake, diagnostics = await _metrics(cluster, "intake"), await _metrics(cluster, "diagnostics")
    received = {"event_type": "device.received"}
    assert _metric(intake, "greenit_device_events_total", **received) == 1
    assert _metric(diagnostics, "greenit_device_events_total", **received) == 0
    for event_type in ("device.diagnosed", "device.wiped", "device.ready"):
        assert _metric(diagnostics, "greenit_device_events_total", event_type=event_type) == 1
    assert (
        _metric(
            diagnostics, "greenit_device_events_total", event_type="device.released_for_recycling"
        )
        == 0
    )
    assert (
        _metric(
            intake, "faststream_published_messages_total", destination=f"{namespace}device.received"
        )
        >= 1
    )

    async def custody_consumed_all_four() -> bool:  # intake's one + diagnostics' three
        consumed = await _metrics(cluster, "custody")
        return _metric(consumed, "faststream_received_messages_total") >= 4

    assert await eventually(custody_consumed_all_four)
    assert (
        _metric(
            diagnostics, "faststream_received_messages_total", handler=f"{namespace}device.received"
        )
        >= 1
    )
    assert (
        _metric(
            diagnostics,
            "greenit_http_requests_total",
            route="/devices/{device_id}/reports",
            status="201",
        )
        == 1
    )

    refused_before = _metric(diagnostics, "greenit_transitions_refused_total", action="diagnose")
    device_id = journey["device_id"]
    again = await http(
        "staff", "POST", f"/devices/{device_id}/reports", json=REPORT, service="diagnostics"
    )
    assert again.status_code == 409, again.text
    assert again.json()["action"] == "diagnose"
    after = await _metrics(cluster, "diagnostics")
    assert (
        _metric(after, "greenit_transitions_refused_total", action="diagnose") == refused_before + 1
    )
    assert _metric(after, "greenit_device_events_total", event_type="device.diagnosed") == 1

    async with TopicReader(namespace, "transition.refused") as reader:
        refusals = await reader.wait_for(
            lambda events: [r for r in reader.raw if r.key == str(device_id).encode()]
        )
    assert _traceparent(refusals[0])[0] == device_id.hex


async def test_every_log_line_is_json_and_lines_about_the_device_carry_its_ids(journey, cluster):
    device_id, device_hex = str(journey["device_id"]), journey["device_id"].hex
    events = {_headers(r)["event_id"]: _headers(r) for r in journey["records"]}

    async def handled_everywhere() -> bool:
        # FastStream writes its "Processed" line after the handler's own lines: wait for both
        return all(
            {"shared.kafka", "faststream.access.kafka"}
            <= {
                line["logger"] for line in _logs(cluster, service) if line.get("event_id") in events
            }
            for service in ("custody", "diagnostics")
        )

    await eventually(handled_everywhere)
    for service in ("custody", "diagnostics"):
        logs = _logs(cluster, service)
        for line in logs:
            assert {"timestamp", "level", "service", "message", "logger"} <= line.keys(), line
            assert line["service"] == service
        about_device = [line for line in logs if line.get("event_id") in events]
        loggers = {line["logger"] for line in about_device}
        assert {"shared.kafka", "faststream.access.kafka"} <= loggers, (service, loggers)
        for line in about_device:
            event = events[line["event_id"]]
            assert line["device_id"] == device_id, line
            assert line["correlation_id"] == event["correlation_id"] == journey["pickup_id"], line
            assert line["event_type"] == event["event_type"], line
            assert line["trace_id"] == device_hex, line

    report_lines = [
        line
        for line in _logs(cluster, "diagnostics")
        if line.get("http_route") == "/devices/{device_id}/reports"
    ]
    assert report_lines
    assert all(
        line["device_id"] == device_id and line["trace_id"] == device_hex for line in report_lines
    )


@pytest.fixture
async def relay_and_collection(topics, namespace) -> Any:
    settings = settings_in(namespace, "obsrelay")
    broker = make_broker(settings)
    bus = EventBus(broker, settings, [DeviceReceived])
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    collection = client[settings.database].things
    await broker.start()
    yield Relay(bus, [collection]), collection
    await broker.stop()
    await client.drop_database(settings.database)
    await client.close()


def _received() -> DeviceReceived:
    event = EXAMPLES[DeviceReceived].model_copy(
        update={"event_id": uuid4(), "device_id": uuid4(), "occurred_at": datetime.now(UTC)}
    )
    assert isinstance(event, DeviceReceived)
    return event


def _received_count() -> float:
    labels = {"event_type": "device.received"}
    return observability.REGISTRY.get_sample_value("greenit_device_events_total", labels) or 0.0


async def _records_of(namespace: str, event: DeviceReceived, at_least: int) -> list[Any]:
    async with TopicReader(namespace, "device.received") as reader:
        await reader.wait_for(
            lambda events: len([e for e in events if e.event_id == event.event_id]) >= at_least
        )
        return [r for r in reader.raw if _headers(r)["event_id"] == str(event.event_id)]


async def test_an_entry_published_twice_is_counted_once(relay_and_collection, namespace):
    relay, collection = relay_and_collection
    event = _received()
    await collection.insert_one({"_id": "twice"} | outbox_doc([event]))
    snapshot = await collection.find_one({"_id": "twice"})
    before = _received_count()
    # a flush and a sweep that both read the entry before either removed it
    await relay._publish(collection, snapshot)
    await relay._publish(collection, snapshot)

    records = await _records_of(namespace, event, at_least=2)
    assert len(records) == 2
    assert _received_count() == before + 1
    assert (await collection.find_one({"_id": "twice"}))["outbox"] == {}


async def test_an_entry_stored_before_trace_context_existed_is_published_in_the_device_trace(
    relay_and_collection, namespace
):
    relay, collection = relay_and_collection
    event = _received()
    old_entry = {"payload": encode(event).decode(), "at": event.occurred_at}
    await collection.insert_one({"_id": "old", "outbox": {str(event.event_id): old_entry}})
    before = _received_count()

    assert await relay.sweep(min_age_s=0) == 1
    (record,) = await _records_of(namespace, event, at_least=1)
    assert _traceparent(record)[0] == event.device_id.hex
    assert _received_count() == before + 1
