"""A service process built like the four (`create_app`, `subscribe`), for the stall tests: it
stores each device.received or device.recycled event it consumes, and fails transiently (as a
store gone away would) for a device listed in its `failing` collection."""

from __future__ import annotations

from faststream.specification import AsyncAPI
from pymongo.errors import AutoReconnect

from shared import mongo
from shared.events import DeviceReceived, DeviceRecycled, Event
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service = "stall"
    kafka_username: str = "admin"  # a stand-in, not one of the services' principals
    store_username: str = "admin"


settings = Settings()
broker = make_broker(settings)
runtime = Runtime(settings, EventBus(broker, settings, []))


async def store(event: Event) -> None:
    if await runtime.db.failing.find_one({"_id": str(event.subject_id)}):
        raise AutoReconnect("the test keeps the store away for this device")
    await runtime.db.applied.update_one(
        {"_id": str(event.event_id)},
        {"$setOnInsert": {"event_type": event.event_type, "subject": str(event.subject_id)}},
        upsert=True,
    )


async def setup(_: mongo.Database) -> None:
    return None


subscribe(
    broker,
    settings,
    events=[DeviceReceived, DeviceRecycled],
    handler=store,
    dead_letters=DeadLetters(broker, settings),
)
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=AsyncAPI(broker, title="stall", version="0.1.0"),
    runtime=runtime,
    setup=setup,
)
