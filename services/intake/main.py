from faststream.specification import AsyncAPI

from services.intake.settings import Settings
from services.intake.store import setup
from shared.events import (
    DeviceReceived,
    PickupCancelled,
    PickupCompleted,
    PickupRequested,
    PickupScheduled,
)
from shared.kafka import EventBus, make_broker
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(
    broker,
    settings,
    [PickupRequested, PickupScheduled, PickupCompleted, PickupCancelled, DeviceReceived],
)
runtime = Runtime(settings, bus)
asyncapi = AsyncAPI(broker, title="intake", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    description="Pickups requested by donors; devices scanned into the warehouse.",
)
