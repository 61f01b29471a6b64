"""Only the rightful service may write its events (issue 16): the broker itself refuses a
client without credentials, one with a wrong password, and a service principal writing another
service's topic, and nothing is appended; the owner still writes. The denied clients are
kafka-python's, a client this project did not write, so the refusals are the broker's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import (  # type: ignore[import-untyped]
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from shared.codec import encode
from shared.credentials import KafkaCredentials
from shared.events import DeviceUsageReported
from shared.examples import EXAMPLES
from shared.kafka_access import refusal
from tests.conftest import BOOTSTRAP, kafka_auth, settings_in
from tests.helpers import start_refused

pytestmark = pytest.mark.usefixtures("topics")

USAGE = "device.usage_reported"
FORGED = encode(EXAMPLES[DeviceUsageReported])  # well-formed, says producer "allocation"


def producer(**auth: Any) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        max_block_ms=8000,
        request_timeout_ms=8000,
        retries=0,
        **auth,
    )


def sasl(username: str, password: str) -> dict[str, str]:
    return KafkaCredentials(username, password).kafka_python()


async def end_offset(topic: str) -> int:
    """How many records `topic` holds (its partitions' end offsets), read as the admin."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_auth())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, **kafka_auth())
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def try_send(topic: str, **auth: Any) -> BaseException | None:
    """Send the forged event; the error the broker answered with (None if it was written)."""
    try:
        client = producer(**auth)
    except KafkaError as exc:  # refused while connecting
        return exc
    try:
        client.send(topic, FORGED, key=b"forged").get(timeout=15)
        return None
    except KafkaError as exc:
        return exc
    finally:
        client.close(timeout=5)


async def test_a_client_without_credentials_is_refused(namespace: str) -> None:
    topic = namespace + USAGE
    before = await end_offset(topic)
    assert try_send(topic) is not None, "the broker accepted an anonymous client"
    assert await end_offset(topic) == before, "nothing appended"


async def test_a_wrong_password_is_refused(namespace: str) -> None:
    topic = namespace + USAGE
    before = await end_offset(topic)
    error = try_send(topic, **sasl("allocation", "not-the-password"))
    assert error is not None, "the broker accepted a wrong password"
    assert await end_offset(topic) == before, "nothing appended"


@pytest.mark.parametrize("forger", ["intake", "diagnostics", "recycling", "ops"])
async def test_the_forged_usage_report_of_issue_16_is_refused(namespace: str, forger: str) -> None:
    """A well-formed device.usage_reported saying producer "allocation", sent by another
    principal with its own valid password: the broker refuses the write."""
    topic = namespace + USAGE
    before = await end_offset(topic)
    error = try_send(topic, **KafkaCredentials.of(forger).kafka_python())
    assert isinstance(error, TopicAuthorizationFailedError), error
    assert await end_offset(topic) == before, "nothing appended"


async def test_the_rightful_service_still_writes(namespace: str) -> None:
    topic = namespace + USAGE
    before = await end_offset(topic)
    assert try_send(topic, **KafkaCredentials.of("allocation").kafka_python()) is None
    assert await end_offset(topic) == before + 1


def poll(consumer: KafkaConsumer, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=1000)


@pytest.mark.parametrize(
    ("topic", "group", "refusal"),
    [
        (USAGE, "diagnostics", TopicAuthorizationFailedError),
        ("device.received", "allocation", GroupAuthorizationFailedError),
    ],
)
def test_a_service_reads_only_what_it_consumes_in_its_own_group(
    namespace: str, topic: str, group: str, refusal: type[KafkaError]
) -> None:
    """diagnostics consumes device.received in its own group only: reading usage reports, or
    reading its own topic in allocation's group, is refused."""
    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=namespace + group,
        request_timeout_ms=8000,
        **KafkaCredentials.of("diagnostics").kafka_python(),
    )
    try:
        if refusal is TopicAuthorizationFailedError:  # fetch it directly, no group needed
            consumer.assign([KafkaTopicPartition(namespace + topic, 0)])
        else:
            consumer.subscribe([namespace + topic])
        with pytest.raises(refusal):
            poll(consumer, 20)
    finally:
        consumer.close()


async def test_health_check_tells_a_refused_password(namespace: str) -> None:
    right = settings_in(namespace, "intake")
    assert await refusal(right) is None
    wrong = type(right)(
        namespace=namespace, kafka_bootstrap=BOOTSTRAP, kafka_password="not-the-password"
    )
    assert await refusal(wrong) == "authentication"


@pytest.mark.parametrize("case", ["wrong", "missing"])
def test_a_service_with_a_wrong_or_missing_password_stops_naming_the_setting(
    base_env: dict[str, str], case: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    # the store's secret files are kept: the store is not the question here
    result = start_refused(
        base_env, "allocation", "GREENIT_KAFKA_PASSWORD", case, tmp_path, keep="store-*"
    )
    assert result.returncode != 0
    if case == "wrong":
        assert "refused principal 'allocation' (authentication failed)" in result.stderr
    else:
        assert "no Kafka password for principal 'allocation'" in result.stderr
    assert "GREENIT_KAFKA_PASSWORD" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout, "the password is not logged"
    assert time.monotonic() - started < 60
