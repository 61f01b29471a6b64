from faststream.specification import AsyncAPI

from services.recycling.settings import Settings
from services.recycling.store import setup
from shared.events import DeviceDismantled, DeviceRecycled, LotDispatched
from shared.kafka import EventBus, make_broker
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(broker, settings, [DeviceDismantled, DeviceRecycled, LotDispatched])
runtime = Runtime(settings, bus)
asyncapi = AsyncAPI(broker, title="recycling", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    description="Dismantling, material weights, downstream lots and recycling certificates.",
)
