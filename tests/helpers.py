"""Helpers for integration and end-to-end tests: keys, calls to the services, raw Kafka access,
polling (`eventually`, `until`) and the positive signals that replace waiting for "nothing more
arrives" (`caught_up`: a consumer group's lag is 0; `published`: no outbox holds an event)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from shared.auth import Role, new_key, store_key
from shared.codec import decode, encode, headers_for
from shared.credentials import secrets_dir
from shared.events import (
    DeviceCategory,
    DeviceReady,
    Drive,
    DriveKind,
    Event,
    Grade,
    HardwareSpecs,
)
from shared.topics import ALL_TOPICS, topic_of
from tests.builders import pickup_body, schedule_body
from tests.conftest import BOOTSTRAP, MONGO_URL, kafka_auth, settings_in
from tools.chaos import _OUTBOXES as OUTBOXES
from tools.cluster import free_port, project_root

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

    async def read_to_end(self, within_s: float = 30.0) -> list[Event]:
        """Read every partition up to its end as it is now; the events seen so far."""
        assert self._consumer is not None
        deadline = time.monotonic() + within_s
        while not self._consumer.assignment():
            assert time.monotonic() < deadline, "no partition of the topics was assigned"
            await self._poll()
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        while True:
            behind = [tp for tp in partitions if await self._consumer.position(tp) < ends[tp]]
            if not behind:
                return self.events
            assert time.monotonic() < deadline, f"did not reach the end of {behind}"
            await self._poll()

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


def until(check: Callable[[], T], within_s: float = 60.0, what: str = "condition") -> T:
    """`eventually` for synchronous code (the e2e tests drive the services with blocking
    clients): retry check() until it returns a truthy value."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within_s}s (last: {result!r})")
        time.sleep(0.3)


async def create_keys(namespace: str, partners: Mapping[str, Partner]) -> dict[str, str]:
    """A key for each partner: `{name: role}` (the partner id is the name) or
    `{name: (role, partner_id)}`."""
    keys = {}
    for name, partner in partners.items():
        role, partner_id = partner if isinstance(partner, tuple) else (partner, name)
        keys[name] = await create_key(namespace, role, partner_id)
    return keys


Partner = Role | tuple[Role, str]


def intake_or_custody(method: str, path: str) -> str:
    """Where a path of the donor's journey is served: pickups (and scans) and the station are
    intake's, the views they feed (devices, certificates, reports, ops, verify) custody's."""
    return "intake" if path.startswith(("/pickups", "/station")) else "custody"


class Api:
    """`await http(who, method, path, **httpx_kwargs)`: a call as partner `who` (a name in the
    module's PARTNERS; None: no key) to the service given as `service=`, else the default one
    (`to(service)`, or the only one running), else intake or custody by the path."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: Mapping[str, str],
        keys: Mapping[str, str],
        default: str | None = None,
    ) -> None:
        self.client, self.urls, self.keys = client, urls, keys
        self.default = default or (next(iter(urls)) if len(urls) == 1 else None)

    def to(self, service: str) -> Api:
        """The same calls, to `service` unless a call names another."""
        return Api(self.client, self.urls, self.keys, default=service)

    def url(self, method: str, path: str, service: str | None = None) -> str:
        return self.urls[service or self.default or intake_or_custody(method, path)] + path

    async def __call__(
        self, who: str | None, method: str, path: str, *, service: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = ({"X-API-Key": self.keys[who]} if who else {}) | kw.pop("headers", {})
        return await self.client.request(
            method, self.url(method, path, service), headers=headers, **kw
        )


@dataclass
class Caller:
    """Blocking calls to the services (the e2e scenarios): `call(service, who, method, path)`
    as partner `who`; `ok(...)` also asserts a 200 or 201 and returns the JSON."""

    keys: dict[str, str]
    urls: dict[str, str]

    def call(self, service: str, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": self.keys[who]}
        return httpx.request(method, self.urls[service] + path, headers=headers, timeout=30, **kw)

    def ok(self, service: str, who: str, method: str, path: str, **kw: Any) -> Any:
        response = self.call(service, who, method, path, **kw)
        assert response.status_code in (200, 201), (method, path, response.text)
        return response.json()


async def new_pickup(
    http: Api, donor: str, staff: str, *, schedule: bool = True, **body: Any
) -> dict[str, Any]:
    """A pickup asked for by `donor` (pickup_body with `body`), scheduled by `staff`; its JSON."""
    created = await http(donor, "POST", "/pickups", json=pickup_body(**body))
    assert created.status_code == 201, created.text
    pickup: dict[str, Any] = created.json()
    if schedule:
        path = f"/pickups/{pickup['pickup_id']}/schedule"
        scheduled = await http(staff, "POST", path, json=schedule_body())
        assert scheduled.status_code == 200, scheduled.text
        pickup = scheduled.json()
    return pickup


async def caught_up(namespace: str, service: str, *topics: str, within_s: float = 30.0) -> None:
    """Until `service`'s consumer group has committed the end of every partition of `topics`
    as they are now (its lag is 0): a consumer commits a record only once its handler applied
    it, so all it will ever do with what was published so far is done."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        **kafka_auth(),
        group_id=namespace + service,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(namespace + topic.name, p)
            for topic in ALL_TOPICS
            if topic.name in topics
            for p in range(topic.partitions)
        ]
        assert len({tp.topic for tp in partitions}) == len(topics), f"unknown topic in {topics}"
        ends = await consumer.end_offsets(partitions)

        async def done() -> bool:
            for tp in partitions:
                if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
            return True

        await eventually(done, within_s)
    finally:
        await consumer.stop()


async def published(namespace: str, service: str, within_s: float = 30.0) -> None:
    """Until no document of `service` holds an outbox entry: everything its requests so far
    will ever publish is on the broker (read it to the end with TopicReader.read_to_end)."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
    db = client[f"{namespace}greenit_{service}"]

    async def empty() -> bool:
        for name in OUTBOXES[service]:
            if await db[name].count_documents({"outbox": {"$nin": [{}, None]}}):
                return False
        return True

    try:
        await eventually(empty, within_s)
    finally:
        await client.close()


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


def run_module(
    env: Mapping[str, str], module: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m module args...` as operations run it (a tool or CLI), from the project root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_refused(
    base_env: Mapping[str, str], service: str, setting: str, case: str, secrets: Path, keep: str
) -> subprocess.CompletedProcess[str]:
    """Start `service` as a process with a wrong password in `setting` (case "wrong"), or with a
    secrets directory `secrets` holding only the files matching `keep` (case "missing"): what
    it printed when it stopped (a stopped start takes seconds, so 120 s is a hang)."""
    env = {**base_env, "GREENIT_HTTP_PORT": "0", "GREENIT_LOG_FORMAT": "text"}
    env.pop(setting, None)
    if case == "wrong":
        env[setting] = "not-the-password"
    else:
        env["GREENIT_SECRETS_DIR"] = str(secrets)
        for kept in secrets_dir().glob(keep):
            shutil.copy(kept, secrets / kept.name)
    return run_module(env, f"services.{service}", timeout=120)


@contextmanager
def serving(
    command: list[str], env: Mapping[str, str], log_path: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` as a process (output to log_path) until ready_url answers 200; stopped after."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env={**env, "PYTHONUNBUFFERED": "1"},
            cwd=project_root(),
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{command} did not answer {ready_url}"
            time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def running_ops_page(env: Mapping[str, str], log_path: Path, *args: str) -> Iterator[str]:
    """`python -m tools.ops web` as a process, until it answers; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "tools.ops", "web", "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with serving(command, env, log_path, url + "/"):
        yield url


_GET_ROUTES = """
import importlib, json, sys
from starlette.routing import Route

def paths(routes):
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            assert not route.include_context.prefix, "a prefixed router: extend this walk"
            yield from paths(included.routes)
        elif isinstance(route, Route) and "GET" in (route.methods or ()):
            yield route.path

found = {}
for spec in sys.argv[1:]:
    module, _, attribute = spec.partition(":")
    app = getattr(importlib.import_module(module), attribute)
    found[spec] = sorted(set(paths(app.routes)))
print(json.dumps(found))
"""


def get_routes(*apps: str) -> dict[str, list[str]]:
    """Every GET path of each app (`module:attribute`), read in a separate process so that
    importing the services configures nothing in this one."""
    done = subprocess.run(
        [sys.executable, "-c", _GET_ROUTES, *apps], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def html_protection_missing(response: httpx.Response) -> list[str]:
    """What an HTML answer lacks of shared.http_security's headers (empty: all there)."""
    policy = response.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";") if d.strip()}
    missing = []
    script = directives.get("script-src", "")
    if "'nonce-" not in script or "unsafe-inline" in script or "*" in script:
        missing.append(f"script-src with a nonce only: {script!r}")
    if directives.get("default-src") != "default-src 'none'":
        missing.append("default-src 'none'")
    if directives.get("frame-ancestors") != "frame-ancestors 'none'":
        missing.append("frame-ancestors 'none'")
    if response.headers.get("x-frame-options") != "DENY":
        missing.append("X-Frame-Options: DENY")
    if response.headers.get("x-content-type-options") != "nosniff":
        missing.append("X-Content-Type-Options: nosniff")
    return missing
