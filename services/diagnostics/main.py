from faststream.specification import AsyncAPI

from services.diagnostics.settings import Settings
from services.diagnostics.store import setup
from shared.events import DeviceDiagnosed, DeviceReady, DeviceReleasedForRecycling, DeviceWiped
from shared.kafka import EventBus, make_broker
from shared.service import Runtime, create_app

settings = Settings()
broker = make_broker(settings)
bus = EventBus(
    broker, settings, [DeviceDiagnosed, DeviceReady, DeviceReleasedForRecycling, DeviceWiped]
)
runtime = Runtime(settings, bus)
asyncapi = AsyncAPI(broker, title="diagnostics", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    description="Test reports, grading, the refurbish-or-recycle decision, certified data erasure.",
)
