"""A FastStream consumer in its own process for the cross-process test: it stores every
device.received event it consumes in its own collection, through the shared plumbing."""

from __future__ import annotations

from faststream import FastStream

from shared import mongo
from shared.events import DeviceReceived, Event
from shared.kafka import DeadLetters, make_broker, subscribe
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service = "echo"
    kafka_username: str = "admin"  # a stand-in, not one of the services' principals
    store_username: str = "admin"


settings = Settings()
broker = make_broker(settings)
client = mongo.connect(settings)
db = mongo.database(client, settings)


async def store(event: Event) -> None:
    await db.received.update_one(
        {"_id": str(event.event_id)},
        {"$setOnInsert": {"event": event.model_dump(mode="json")}},
        upsert=True,
    )


subscribe(
    broker,
    settings,
    events=[DeviceReceived],
    handler=store,
    dead_letters=DeadLetters(broker, settings),
)
app = FastStream(broker)
