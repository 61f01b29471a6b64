from faststream.specification import AsyncAPI

from services.intake import api, certificate_api, handlers, manifest_api, ops_api, report_api
from services.intake.settings import Settings
from services.intake.store import setup
from shared.bodies import BodyLimit
from shared.events import (
    DeviceReceived,
    Event,
    PickupCancelled,
    PickupCompleted,
    PickupRequested,
    PickupScheduled,
)
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app
from shared.topics import device_events

settings = Settings()
broker = make_broker(settings)
bus = EventBus(
    broker,
    settings,
    [PickupRequested, PickupScheduled, PickupCompleted, PickupCancelled, DeviceReceived],
)
runtime = Runtime(settings, bus)


async def on_device_event(event: Event) -> None:
    await handlers.record_device_event(runtime, event)


subscribe(
    broker,
    settings,
    events=device_events(),
    handler=on_device_event,
    dead_letters=DeadLetters(broker, settings),
    on_refused=runtime.on_refused,
    description="Every device event, to keep the donor-facing custody view.",
)
asyncapi = AsyncAPI(broker, title="intake", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=setup,
    outbox=lambda db: [db.pickups, db.devices],
    routers=[
        api.router(runtime),
        certificate_api.router(runtime, settings),
        report_api.router(runtime, settings),
        ops_api.router(runtime),
        manifest_api.router(runtime, settings),
    ],
    description="Pickups requested by donors; devices scanned into the warehouse; "
    "the donor's view of what became of each device.",
    body_limits=[
        BodyLimit(
            "/pickups/{pickup_id}/manifest",
            settings.max_manifest_body_bytes,
            "GREENIT_MAX_MANIFEST_BODY_BYTES",
        )
    ],
)
