from collections.abc import Sequence
from uuid import UUID

from faststream.specification import AsyncAPI

from services.diagnostics import api, handlers
from services.diagnostics.rules import load_rules
from services.diagnostics.settings import Settings
from services.diagnostics.store import Store, setup
from shared.events import (
    DeviceDiagnosed,
    DeviceReady,
    DeviceReceived,
    DeviceReleasedForRecycling,
    DeviceWiped,
    Event,
)
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app

settings = Settings()
rules = load_rules(settings.rules_file)
broker = make_broker(settings)
bus = EventBus(
    broker, settings, [DeviceDiagnosed, DeviceReady, DeviceReleasedForRecycling, DeviceWiped]
)
runtime = Runtime(settings, bus)
store = Store(runtime)


async def on_device_received(event: Event) -> None:
    await handlers.on_device_received(store, event)


async def on_devices_received(events: Sequence[Event]) -> set[UUID]:
    return await handlers.on_devices_received(store, events)


subscribe(
    broker,
    settings,
    events=[DeviceReceived],
    handler=on_device_received,
    bulk=on_devices_received,
    dead_letters=DeadLetters(broker, settings),
    on_refused=runtime.on_refused,
    description="Every received device waits for its test report.",
)
asyncapi = AsyncAPI(broker, title="diagnostics", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    outbox=lambda db: [db.devices],
    routers=[api.router(runtime, store, rules)],
    description="Test reports, grading, the refurbish-or-recycle decision, certified data erasure.",
)
