from faststream.specification import AsyncAPI

from services.allocation import api, handlers
from services.allocation.settings import Settings
from services.allocation.store import Store
from shared.events import (
    DeviceAllocated,
    DeviceDelivered,
    DeviceReady,
    DeviceReported,
    DeviceReturned,
    DeviceShipped,
    DeviceUsageReported,
    Event,
    RequestClosed,
    RequestOpened,
)
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(
    broker,
    settings,
    [
        DeviceAllocated,
        DeviceDelivered,
        DeviceReported,
        DeviceReturned,
        DeviceShipped,
        DeviceUsageReported,
        RequestClosed,
        RequestOpened,
    ],
)
runtime = Runtime(settings, bus)
store = Store(runtime)


async def on_device_ready(event: Event) -> None:
    await handlers.on_device_ready(store, event)


subscribe(
    broker,
    settings,
    events=[DeviceReady],
    handler=on_device_ready,
    dead_letters=DeadLetters(broker, settings),
    on_refused=runtime.on_refused,
    description="Ready (wiped, certified) devices enter stock as available.",
)
asyncapi = AsyncAPI(broker, title="allocation", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=lambda _: store.setup(),
    outbox=lambda db: [db.stock, db.requests, db.shipments],
    routers=[api.router(runtime, store)],
    description="Stock, requests from schools and NGOs, matching, shipping, delivery, returns.",
)
