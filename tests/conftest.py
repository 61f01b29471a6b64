"""The fixtures every integration and e2e module shares (see docs/tests.md):

- `namespace`, `topics`, `base_env`: a module's own topics, consumer groups and databases;
- `cluster`: the services a module names in `CLUSTER` (default: all five) as processes in its
  namespace, with the `service_env` fixture's variables (a module overrides it) added;
- `keys`: an API key for each partner in the module's `PARTNERS`;
- `http`: `await http(who, method, path, ...)`, a call to the cluster as one of them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from shared import store_users
from shared.admin import create_topics, drop_namespace
from shared.credentials import ADMIN, PRINCIPALS, KafkaCredentials
from shared.mongo import with_credentials
from shared.settings import ServiceSettings
from tools.cluster import SERVICES, Cluster, project_root, running_cluster

BOOTSTRAP = os.environ.get("GREENIT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_ADDRESS = os.environ.get("GREENIT_MONGO_URL", "mongodb://127.0.0.1:27017/")
"""The store, as the services are given it (each authenticates as itself)."""
MONGO_URL = with_credentials(MONGO_ADDRESS)
"""The tests' own clients: the admin, where the store has users (never printed)."""


def kafka_auth(principal: str = ADMIN) -> dict[str, Any]:
    """aiokafka's SASL arguments for `principal` (the tests' own clients are the admin)."""
    return KafkaCredentials.of(principal).aiokafka()


class Namespaces:
    """The modules' namespaces, made and dropped on a thread of their own so that no module
    waits for either: while a module runs, one namespace's topics (and ACLs) are created for
    the next module that needs topics (any will do: each has the whole catalogue), and the
    namespace of the module before is dropped (topics, ACLs, databases). Creating a namespace's
    105 partitions and dropping them takes about 1 s on a quiet machine, several on a loaded one
    (docs/tests.md)."""

    def __init__(self, needing: set[str]) -> None:
        self.waiting = needing  # the modules that need topics and have not taken a namespace
        self.ready: list[tuple[str, Future[Any]]] = []
        self.dropped: list[Future[Any]] = []
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="namespaces")
        if needing:
            self.ready.append(self._create())

    def _create(self) -> tuple[str, Future[Any]]:
        name = f"t{uuid.uuid4().hex[:8]}_"
        return name, self.thread.submit(asyncio.run, _prepare(name, topics=True))

    def take(self, module: str) -> tuple[str, Future[Any] | None]:
        """The module's namespace and the creation of its topics (None: it needs none)."""
        if module not in self.waiting:
            name = f"t{uuid.uuid4().hex[:8]}_"
            self.thread.submit(asyncio.run, _prepare(name, topics=False)).result()
            return name, None
        self.waiting.discard(module)
        name, created = self.ready.pop() if self.ready else self._create()
        if self.waiting:  # (with xdist, modules run by other workers stay listed: one spare)
            self.ready.append(self._create())
        return name, created

    def drop(self, name: str) -> None:
        self.dropped.append(
            self.thread.submit(asyncio.run, drop_namespace(BOOTSTRAP, MONGO_URL, name))
        )

    def wait_idle(self) -> None:
        """Until nothing is being made or dropped: for a module that changes this process's
        environment (the thread reads it), before it does."""
        for _, created in self.ready:
            created.exception()
        for dropped in self.dropped:
            dropped.exception()

    def close(self) -> None:
        """Drop what was made for modules that did not come, then wait for every drop."""
        for name, created in self.ready:
            created.result()
            self.drop(name)
        for dropped in self.dropped:
            dropped.result()
        self.thread.shutdown()


async def _prepare(name: str, *, topics: bool) -> None:
    """A namespace's topics and ACLs (if wanted), and its databases granted to the services'
    store users (where the store has users)."""
    if topics:
        await create_topics(BOOTSTRAP, prefix=name)
    await store_users.grant_namespace(MONGO_ADDRESS, name)


NAMESPACES = pytest.StashKey[Namespaces]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start making the first namespace as soon as the run knows that a module needs one."""
    needing = {
        item.module.__name__
        for item in session.items
        if isinstance(item, pytest.Function) and "topics" in item.fixturenames
    }
    if needing and not session.config.option.collectonly:
        session.stash[NAMESPACES] = Namespaces(needing)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if NAMESPACES in session.stash:
        session.stash[NAMESPACES].close()


@pytest.fixture(scope="session")
def namespaces(request: pytest.FixtureRequest) -> Namespaces:
    if NAMESPACES not in request.session.stash:  # a module asked for topics it did not name
        request.session.stash[NAMESPACES] = Namespaces(set())
    return request.session.stash[NAMESPACES]


@pytest.fixture(scope="module")
def _namespace(
    request: pytest.FixtureRequest, namespaces: Namespaces
) -> Iterator[tuple[str, Future[Any] | None]]:
    name, created = namespaces.take(request.module.__name__)
    yield name, created
    namespaces.drop(name)


@pytest.fixture(scope="module")
def namespace(_namespace: tuple[str, Future[Any] | None]) -> str:
    """Each test module gets topics, groups and databases of its own: nothing leaks between
    them. A module's namespace is dropped (in the background) after the module. It is ready
    when prepared: its store users granted (and its topics made), even for a test that asks
    for the namespace alone."""
    name, created = _namespace
    if created is not None:
        created.result()
    return name


@pytest.fixture(scope="module")
async def topics(_namespace: tuple[str, Future[Any] | None]) -> str:
    """The catalogue's topics in the module's namespace (made while the module before ran)."""
    name, created = _namespace
    assert created is not None, "a module that needs topics was not seen at collection"
    await asyncio.wrap_future(created)
    return name


@pytest.fixture(scope="module")
def base_env(namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "GREENIT_NAMESPACE": namespace,
        "GREENIT_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "GREENIT_MONGO_URL": MONGO_ADDRESS,
    }


def settings_in(namespace: str, service: str) -> ServiceSettings:
    class _Settings(ServiceSettings):
        pass

    _Settings.service = service
    # a real service connects as itself; a test's own stand-in service as the admin
    username = service if service in PRINCIPALS else ADMIN
    return _Settings(
        namespace=namespace,
        kafka_bootstrap=BOOTSTRAP,
        mongo_url=MONGO_ADDRESS,
        kafka_username=username,
        store_username=username,
    )


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    """Variables a module adds to its services' environment (override it in the module)."""
    return {}


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    topics: str,
    base_env: dict[str, str],
    service_env: dict[str, str],
    namespace: str,
) -> Iterator[Cluster]:
    """The module's `CLUSTER` (default: all five services) as processes; logs in
    .local/test-logs/<namespace>/."""
    services = getattr(request.module, "CLUSTER", SERVICES)
    log_dir = project_root() / ".local" / "test-logs" / namespace
    with running_cluster(base_env | service_env, log_dir, services) as started:
        yield started


@pytest.fixture(scope="module")
async def keys(request: pytest.FixtureRequest, namespace: str) -> dict[str, str]:
    """A key for each partner of the module's `PARTNERS`: `{name: role}` (the partner id is
    the name) or `{name: (role, partner_id)}`."""
    from tests.helpers import create_keys

    return await create_keys(namespace, request.module.PARTNERS)


@pytest.fixture(scope="module")
async def http(cluster: Cluster, keys: dict[str, str]) -> AsyncIterator[Any]:
    """`await http(who, method, path, service=..., **httpx_kwargs)` (tests.helpers.Api)."""
    from tests.helpers import Api

    async with httpx.AsyncClient(timeout=120) as client:
        yield Api(client, cluster.urls, keys)
