"""Helpers for integration and end-to-end tests: keys, raw Kafka access, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from shared.auth import Role, new_key, store_key
from shared.codec import decode, encode, headers_for
from shared.events import (
    DeviceCategory,
    DeviceReady,
    Drive,
    DriveKind,
    Event,
    Grade,
    HardwareSpecs,
)
from shared.topics import topic_of
from tests.conftest import BOOTSTRAP, MONGO_URL, kafka_auth, settings_in

T = TypeVar("T")


async def create_key(namespace: str, role: Role, partner_id: str) -> str:
    """An API key for `partner_id`, stored (hashed) in the databases of the role's services."""
    settings = settings_in(namespace, "tests")
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
    try:
        key = new_key()
        await store_key(
            client, settings, key=key, role=role, partner_id=partner_id, name=partner_id
        )
        return key
    finally:
        await client.close()


async def publish(namespace: str, *events: Event) -> None:
    """Publish events to their catalogue topics, as the producing service would."""
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, **kafka_auth(), enable_idempotence=True
    )
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                namespace + topic_of(event).name,
                encode(event),
                key=str(event.subject_id).encode(),
                headers=[(k, v.encode()) for k, v in headers_for(event).items()],
            )
    finally:
        await producer.stop()


async def publish_raw(namespace: str, topic: str, value: bytes, key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **kafka_auth())
    await producer.start()
    try:
        await producer.send_and_wait(namespace + topic, value, key=key)
    finally:
        await producer.stop()


class TopicReader:
    """Reads topics of the namespace from the beginning and keeps every event seen."""

    def __init__(self, namespace: str, *topics: str) -> None:
        self.namespace = namespace
        self.topics = [namespace + t for t in topics]
        self.events: list[Event] = []
        self.raw: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=BOOTSTRAP,
            **kafka_auth(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def _poll(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                self.raw.append(record)
                if not record.topic.endswith("deadletter"):
                    self.events.append(decode(record.value))

    async def wait_for(self, predicate: Callable[[list[Event]], T], within_s: float = 30.0) -> T:
        """Poll until predicate(events seen so far) is truthy; return its value."""
        deadline = time.monotonic() + within_s
        while True:
            await self._poll()
            result = predicate(self.events)
            if result:
                return result
            if time.monotonic() > deadline:
                seen = [(e.event_type, str(e.subject_id)) for e in self.events][-20:]
                raise AssertionError(f"timed out; last events seen: {seen}")

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.event_type == event_type]


async def eventually(check: Callable[[], Awaitable[T]], within_s: float = 30.0) -> T:
    """Retry an async check until it returns a truthy value."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s (last: {result!r})")
        await asyncio.sleep(0.3)


def device_ready(ram: float = 8, pickup_id: UUID | None = None) -> DeviceReady:
    """A wiped, certified laptop with this much RAM, as diagnostics announces it."""
    return DeviceReady(
        event_id=uuid4(),
        occurred_at=datetime.now(UTC),
        correlation_id=pickup_id or uuid4(),
        producer="diagnostics",
        device_id=uuid4(),
        category=DeviceCategory.LAPTOP,
        specs=HardwareSpecs(
            cpu_cores=4,
            ram_gb=ram,
            drives=[Drive(serial=f"S-{uuid4().hex[:8]}", kind=DriveKind.SSD, capacity_gb=256)],
            battery_health_pct=80,
        ),
        cosmetic_grade=Grade.A,
        functional_grade=Grade.B,
        erasure_certificate_id=uuid4(),
    )
