from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import store_users
from shared.admin import create_topics, drop_namespace
from shared.credentials import ADMIN, PRINCIPALS, KafkaCredentials
from shared.mongo import tool_client, with_credentials
from shared.settings import ServiceSettings, store_auth_on

BOOTSTRAP = os.environ.get("GREENIT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_ADDRESS = os.environ.get("GREENIT_MONGO_URL", "mongodb://127.0.0.1:27017/")
"""The store, as the services are given it (each authenticates as itself)."""
MONGO_URL = with_credentials(MONGO_ADDRESS)
"""The tests' own clients: the admin, where the store has users (never printed)."""


def kafka_auth(principal: str = ADMIN) -> dict[str, Any]:
    """aiokafka's SASL arguments for `principal` (the tests' own clients are the admin)."""
    return KafkaCredentials.of(principal).aiokafka()


@pytest.fixture(scope="module")
async def namespace() -> AsyncIterator[str]:
    """Each test module gets topics, groups and databases of its own: nothing leaks between them
    (where the store has users, each service's user is granted its namespaced database)."""
    name = f"t{uuid.uuid4().hex[:8]}_"
    if not store_auth_on(None):
        yield name
        return
    client = tool_client(MONGO_ADDRESS, serverSelectionTimeoutMS=10_000)
    try:
        await store_users.ensure(client, name)
        yield name
        await store_users.revoke(client, name)
    finally:
        await client.close()


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
