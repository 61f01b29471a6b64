from faststream.specification import AsyncAPI

from services.recycling import api, handlers
from services.recycling.settings import Settings
from services.recycling.store import Store, setup
from shared.events import (
    DeviceDismantled,
    DeviceRecycled,
    DeviceReleasedForRecycling,
    DeviceReturned,
    LotDispatched,
)
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.mongo import Database
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(broker, settings, [DeviceDismantled, DeviceRecycled, LotDispatched])
runtime = Runtime(settings, bus)
store = Store(runtime)


async def startup(db: Database) -> None:
    await setup(db)
    await handlers.resume_lots(store)


subscribe(
    broker,
    settings,
    events=[DeviceReleasedForRecycling, DeviceReturned],
    handler=handlers.consumer(store),
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
    setup=startup,
    outbox=lambda db: [db.devices, db.lots],
    routers=[api.router(runtime, store)],
    description="Dismantling, material weights, downstream lots and recycling certificates.",
)
