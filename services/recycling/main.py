from faststream.specification import AsyncAPI

from services.recycling import api, handlers
from services.recycling.settings import Settings
from shared.events import (
    DeviceDismantled,
    DeviceRecycled,
    DeviceReleasedForRecycling,
    DeviceReturned,
    LotDispatched,
)
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(broker, settings, [DeviceDismantled, DeviceRecycled, LotDispatched])
runtime = Runtime(settings, bus)
subscribe(
    broker,
    settings,
    events=[DeviceReleasedForRecycling, DeviceReturned],
    handler=handlers.consumer(lambda: runtime.db),
    dead_letters=DeadLetters(broker, settings),
    on_refused=runtime.on_refused,
    description="Devices released for recycling by diagnostics or returned by a school.",
)
asyncapi = AsyncAPI(broker, title="recycling", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=handlers.startup,
    outbox=lambda db: [db.devices, db.lots],
    routers=[api.router(runtime)],
    description="Dismantling, material weights, downstream lots and recycling certificates.",
)
