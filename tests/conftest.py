"""The fixtures every integration and e2e module shares (see docs/tests.md):

- `namespace`, `topics`, `base_env`: a module's own topics, consumer groups and databases;
- `cluster`: the services a module names in `SERVICES` (default: all five) as processes in its
  namespace, with the `service_env` fixture's variables (a module overrides it) added;
- `keys`: an API key for each partner in the module's `PARTNERS`;
- `http`: `await http(who, method, path, ...)`, a call to the cluster as one of them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from shared.admin import create_topics, drop_namespace
from shared.credentials import ADMIN, PRINCIPALS, KafkaCredentials
from shared.settings import ServiceSettings
from tools.cluster import SERVICES, Cluster, project_root, running_cluster

BOOTSTRAP = os.environ.get("GREENIT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_URL = os.environ.get("GREENIT_MONGO_URL", "mongodb://127.0.0.1:27017/")


def kafka_auth(principal: str = ADMIN) -> dict[str, Any]:
    """aiokafka's SASL arguments for `principal` (the tests' own clients are the admin)."""
    return KafkaCredentials.of(principal).aiokafka()


@pytest.fixture(scope="module")
def namespace() -> str:
    """Each test module gets topics, groups and databases of its own: nothing leaks between them."""
    return f"t{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="module")
async def topics(namespace: str) -> AsyncIterator[str]:
    """The catalogue's topics in the module's namespace; deleted afterwards, with its databases."""
    await create_topics(BOOTSTRAP, prefix=namespace)
    yield namespace
    await drop_namespace(BOOTSTRAP, MONGO_URL, namespace)


@pytest.fixture(scope="module")
def base_env(namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "GREENIT_NAMESPACE": namespace,
        "GREENIT_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "GREENIT_MONGO_URL": MONGO_URL,
    }


def settings_in(namespace: str, service: str) -> ServiceSettings:
    class _Settings(ServiceSettings):
        pass

    _Settings.service = service
    # a real service connects as itself; a test's own stand-in service as the admin
    username = service if service in PRINCIPALS else ADMIN
    return _Settings(
        namespace=namespace, kafka_bootstrap=BOOTSTRAP, mongo_url=MONGO_URL, kafka_username=username
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
    """The module's `SERVICES` (default: all five) as processes; logs in
    .local/test-logs/<namespace>/."""
    services = getattr(request.module, "SERVICES", SERVICES)
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

    async with httpx.AsyncClient(timeout=60) as client:
        yield Api(client, cluster.urls, keys)
