from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.admin import create_topics, drop_namespace
from shared.credentials import ADMIN, PRINCIPALS, KafkaCredentials
from shared.settings import ServiceSettings

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
