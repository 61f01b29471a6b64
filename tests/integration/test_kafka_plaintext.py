"""bench.sasl's arm without SASL: a broker of its own without authentication (LocalKafka with
sasl=False), which a service's settings reach with GREENIT_KAFKA_SECURITY_PROTOCOL=PLAINTEXT and
no password at all; the deployment's broker still refuses such a client."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.admin import create_topics, drop_namespace
from shared.credentials import PLAINTEXT, secrets_dir
from shared.kafka_access import refusal
from shared.settings import ServiceSettings
from tests.conftest import BOOTSTRAP, MONGO_URL, Namespaces
from tools.cluster import free_port
from tools.localinfra import LocalKafka


class IntakeSettings(ServiceSettings):
    service = "intake"


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory, namespaces: Namespaces) -> Iterator[Path]:
    """PLAINTEXT for every client of this process, and a secrets directory holding no Kafka
    password (the store's are copied: the store is not the question here)."""
    secrets = tmp_path_factory.mktemp("no-secrets")
    for store_secret in secrets_dir().glob("store-*"):
        shutil.copy(store_secret, secrets / store_secret.name)
    namespaces.wait_idle()  # the namespaces' thread reads the environment this changes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENIT_SECRETS_DIR", str(secrets))
        mp.setenv("GREENIT_KAFKA_SECURITY_PROTOCOL", PLAINTEXT)
        mp.delenv("GREENIT_KAFKA_PASSWORD", raising=False)
        yield secrets


@pytest.fixture(scope="module")
async def plain_kafka(
    plain_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    base = tmp_path_factory.mktemp("plain-kafka")
    kafka = LocalKafka(
        name="kafka (plaintext)",
        port=free_port(),
        log=base / "server.log",
        controller_port=free_port(),
        data=base,
        sasl=False,
    )
    kafka.start()
    try:
        await kafka.wait_ready()
        yield kafka.bootstrap
    finally:
        kafka.stop()


async def test_a_service_reaches_the_plaintext_broker_without_a_password(plain_env, plain_kafka):
    namespace = f"t{uuid.uuid4().hex[:8]}_"
    await create_topics(plain_kafka, prefix=namespace)  # topics only: no principals, no ACLs
    settings = IntakeSettings(kafka_bootstrap=plain_kafka, namespace=namespace)
    assert await refusal(settings) is None
    auth = settings.kafka_credentials().aiokafka()
    topic = settings.topic("device.received")
    producer = AIOKafkaProducer(bootstrap_servers=plain_kafka, acks="all", **auth)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=plain_kafka, auto_offset_reset="earliest", **auth
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b"hello"
    await drop_namespace(plain_kafka, MONGO_URL, namespace)
    assert not list(plain_env.glob("kafka-*"))  # no password was read or made


async def test_the_deployments_broker_refuses_a_plaintext_client(plain_env):
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, security_protocol=PLAINTEXT, request_timeout_ms=5000
    )

    async def send_forged() -> None:
        await producer.start()
        await producer.send_and_wait("device.usage_reported", b"forged", key=b"k")

    try:
        with pytest.raises(KafkaError):
            await send_forged()
    finally:
        await producer.stop()
