import asyncio
import json
import subprocess
import sys
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from shared.codec import encode, headers_for
from shared.events import DeviceReceived
from shared.examples import EXAMPLES
from tests.conftest import BOOTSTRAP, MONGO_URL, kafka_auth
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_an_event_published_here_is_consumed_by_a_faststream_subscriber_in_another_process(
    topics, base_env, namespace
):
    consumer = subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "tests.integration.echo_app:app"],
        env=base_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL, uuidRepresentation="standard")
    received = client[f"{namespace}greenit_echo"].received
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, **kafka_auth(), enable_idempotence=True
    )
    await producer.start()
    try:
        events = [
            EXAMPLES[DeviceReceived].model_copy(update={"event_id": uuid4(), "device_id": uuid4()})
            for _ in range(3)
        ]
        topic = f"{namespace}device.received"
        for event in events:
            headers = [(k, v.encode()) for k, v in headers_for(event).items()]
            await producer.send_and_wait(
                topic, encode(event), key=str(event.device_id).encode(), headers=headers
            )
        await producer.send_and_wait(topic, b'{"event_type": "device.received", "oops"', key=b"x")
        await producer.send_and_wait(
            topic, encode(events[0]), key=str(events[0].device_id).encode()
        )

        async def all_stored():
            return await received.count_documents({}) == 3

        await eventually(all_stored, within_s=60)
        stored = {d["_id"]: d["event"] async for d in received.find()}
        assert stored == {str(e.event_id): json.loads(encode(e)) for e in events}

        dead = AIOKafkaConsumer(
            f"{namespace}deadletter",
            bootstrap_servers=BOOTSTRAP,
            **kafka_auth(),
            auto_offset_reset="earliest",
            group_id=f"{namespace}test-dlq-reader",
        )
        await dead.start()
        try:
            record = await asyncio.wait_for(dead.getone(), timeout=60)
        finally:
            await dead.stop()
        headers = {k: v.decode() for k, v in record.headers}
        assert record.value == b'{"event_type": "device.received", "oops"'
        assert headers["dlq_reason"].startswith("malformed JSON")
        assert headers["dlq_source_topic"] == topic
        assert headers["dlq_consumer_group"] == f"{namespace}echo"
    finally:
        await producer.stop()
        consumer.terminate()
        consumer.wait(timeout=30)
        await client.drop_database(f"{namespace}greenit_echo")
        await client.close()
