"""Nothing stalls silently (design rule 10), on the real broker and store.

A service process built like the four (`tests/integration/stall_app.py`: `create_app` and
`subscribe`) consumes device.received and device.recycled. A record too large to copy into a
dead letter whole is dead-lettered cut down and the next event of its partition is applied; an
event on another type's topic is dead-lettered with both named; and a consumer whose batch keeps
failing shows as stuck in `/health` and `/metrics` until the cause goes away.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from shared.codec import encode, headers_for
from shared.events import DeviceReceived, DeviceRecycled, DeviceUsageReported, Event
from shared.examples import EXAMPLES
from shared.kafka import VALUE_PREFIX_BYTES
from tests.conftest import BOOTSTRAP, MONGO_URL, kafka_auth
from tests.helpers import eventually, publish, publish_raw, run_module, serving
from tools.cluster import free_port, project_root
from tools.deadletters import DeadLetter, read_dead_letters

pytestmark = pytest.mark.integration

LARGE = 1_048_000
"""Accepted by the broker (1 MiB and a little), but a copy with dead-letter headers is not."""


@pytest.fixture(scope="module")
def env(base_env: dict[str, str]) -> dict[str, str]:
    return base_env | {
        "GREENIT_RETRY_ATTEMPTS": "2",
        "GREENIT_RETRY_BASE_DELAY_S": "0.05",
        "GREENIT_CONSUMER_STUCK_AFTER": "2",
        "GREENIT_DEAD_LETTER_GIVE_UP_AFTER": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def app_url(topics: str, env: dict[str, str], namespace: str) -> Iterator[str]:
    log = project_root() / ".local" / "test-logs" / namespace / "stall.log"
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.integration.stall_app:app", *serve_at(port)]
    url = f"http://127.0.0.1:{port}"
    with serving(command, env, log, url + "/health"):
        yield url


def serve_at(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture(scope="module")
def cli(env: dict[str, str]):
    return partial(run_module, env, "tools.deadletters")


@pytest.fixture
async def db(namespace: str):
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
    yield client[f"{namespace}greenit_stall"]
    await client.close()


def received(device: UUID) -> DeviceReceived:
    return EXAMPLES[DeviceReceived].model_copy(update={"event_id": uuid4(), "device_id": device})  # type: ignore[return-value]


async def dead_letter_of(namespace: str, device: UUID) -> DeadLetter | None:
    letters = await read_dead_letters(BOOTSTRAP, namespace)
    return next((d for d in letters if d.key == str(device).encode()), None)


async def test_a_record_too_large_to_dead_letter_whole_is_cut_down_and_its_partition_moves_on(
    namespace, app_url, db, cli
):
    device = uuid4()
    large = b'{"event_type": "device.received", "padding": "' + b"x" * LARGE + b'"}'
    await publish_raw(namespace, "device.received", large, key=str(device).encode())
    after = received(device)
    await publish(namespace, after)

    async def applied() -> bool:
        return await db.applied.find_one({"_id": str(after.event_id)}) is not None

    await eventually(applied, within_s=15)
    letter = await eventually(lambda: dead_letter_of(namespace, device), within_s=10)
    assert letter.cut_down
    assert letter.source_topic == f"{namespace}device.received"
    assert letter.reason.startswith("invalid event: "), letter.reason
    assert letter.original_size == len(large)
    assert letter.value == large[:VALUE_PREFIX_BYTES]
    assert letter.header("dlq_consumer_group") == f"{namespace}stall"

    listing = cli("list")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if x.startswith(letter.address))
    assert f"reason={letter.reason!r}" in line
    assert f"size={len(large)}" in line
    assert f"cut_down=kept {VALUE_PREFIX_BYTES} of {len(large)} bytes" in line
    assert 'payload=\'{"event_type": "device.received", "padding": "xxx' in line

    refused = cli("redrive", "--offset", f"{letter.partition}:{letter.offset}")
    assert refused.returncode == 2
    assert f"refused: {letter.address} was cut down" in refused.stderr
    assert "cannot be re-driven" in refused.stderr
    assert refused.stdout.splitlines()[-1] == "re-drove 0 dead letter(s)"


async def test_an_event_on_another_types_topic_is_dead_lettered_with_both_named(
    namespace, app_url, db
):
    device = uuid4()
    usage = EXAMPLES[DeviceUsageReported].model_copy(
        update={"event_id": uuid4(), "device_id": device}
    )
    await _publish_on(namespace, "device.recycled", usage)
    recycled = EXAMPLES[DeviceRecycled].model_copy(
        update={"event_id": uuid4(), "device_id": device}
    )
    await publish(namespace, recycled)

    async def recycled_applied() -> bool:
        return await db.applied.find_one({"_id": str(recycled.event_id)}) is not None

    await eventually(recycled_applied, within_s=15)
    # same key, same partition, in order: the usage report was handled before
    assert await db.applied.find_one({"_id": str(usage.event_id)}) is None
    letter = await eventually(lambda: dead_letter_of(namespace, device), within_s=10)
    assert letter.reason == (
        "wrong topic: a device.usage_reported event arrived on device.recycled; "
        "device.usage_reported events belong on device.usage_reported"
    )
    assert letter.source_topic == f"{namespace}device.recycled"
    assert not letter.cut_down
    assert letter.value == encode(usage)


async def test_a_consumer_that_keeps_failing_shows_stuck_in_health_and_metrics_until_it_recovers(
    namespace, app_url, db
):
    group = f"{namespace}stall"
    device = uuid4()
    await db.failing.insert_one({"_id": str(device)})
    event = received(device)
    await publish(namespace, event)

    async with httpx.AsyncClient(base_url=app_url, timeout=10) as http:

        async def stuck() -> httpx.Response | None:
            response = await http.get("/health")
            return response if response.json()["consumers"][group]["state"] == "stuck" else None

        response = await eventually(stuck, within_s=20)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert (body["kafka"], body["store"]) == (True, True)
        consumer = body["consumers"][group]
        assert consumer["failed_deliveries"] >= 2
        assert consumer["last_error"] == "AutoReconnect"
        assert consumer["oldest_unprocessed_age_s"] > 0
        assert consumer["failing_since"]

        metrics = _metrics((await http.get("/metrics")).text)
        assert metrics[("greenit_consumer_stuck", group)] == 1
        assert metrics[("greenit_consumer_oldest_unprocessed_age_seconds", group)] > 0
        assert metrics[("greenit_consumer_retries_total", group)] >= 2
        assert metrics[("greenit_consumer_redeliveries_total", group)] >= 2

        await db.failing.delete_one({"_id": str(device)})

        async def recovered() -> httpx.Response | None:
            response = await http.get("/health")
            return response if response.status_code == 200 else None

        body = (await eventually(recovered, within_s=20)).json()
        assert body["status"] == "ok"
        assert body["consumers"][group]["state"] == "ok"
        assert body["consumers"][group]["oldest_unprocessed_age_s"] == 0
        assert await db.applied.find_one({"_id": str(event.event_id)}) is not None
        metrics = _metrics((await http.get("/metrics")).text)
        assert metrics[("greenit_consumer_stuck", group)] == 0
        assert metrics[("greenit_dead_letters_total", group, "cut_down")] == 1
        assert metrics[("greenit_dead_letters_total", group, "whole")] == 1


async def _publish_on(namespace: str, topic: str, event: Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **kafka_auth())
    await producer.start()
    try:
        await producer.send_and_wait(
            namespace + topic,
            encode(event),
            key=str(event.subject_id).encode(),
            headers=[(k, v.encode()) for k, v in headers_for(event).items()],
        )
    finally:
        await producer.stop()


def _metrics(text: str) -> dict[tuple[str, ...], float]:
    values: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sample.labels[k] for k in ("group", "form") if k in sample.labels)
            values[(sample.name, *labels)] = sample.value
    return values
