from faststream.specification import AsyncAPI

from services.allocation.settings import Settings
from services.allocation.store import setup
from shared.events import (
    DeviceAllocated,
    DeviceDelivered,
    DeviceReported,
    DeviceReturned,
    DeviceShipped,
    RequestClosed,
    RequestOpened,
)
from shared.kafka import EventBus, make_broker
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
        RequestClosed,
        RequestOpened,
    ],
)
runtime = Runtime(settings, bus)
asyncapi = AsyncAPI(broker, title="allocation", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    description="Stock, requests from schools and NGOs, matching, shipping, delivery, returns.",
)
