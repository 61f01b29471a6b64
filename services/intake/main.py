from faststream.specification import AsyncAPI

from services.intake import api, label_api, manifest_api, moved
from services.intake.manifest_store import ManifestStore
from services.intake.settings import Settings
from services.intake.store import Store
from shared.bodies import BodyLimit
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
store = Store(runtime)
manifests = ManifestStore(runtime, store)


asyncapi = AsyncAPI(broker, title="intake", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=lambda _: store.setup(),
    outbox=lambda db: [db.pickups, db.devices],
    routers=[
        api.router(runtime, store, settings.custody_url),
        manifest_api.router(runtime, store, manifests, settings),
        label_api.router(runtime, store, settings.custody_url),
        moved.router(settings.custody_url),
    ],
    description="Pickups requested by donors; devices scanned into the warehouse. What "
    "became of each device is the custody service's (intake's old read paths answer 308 there).",
    body_limits=[
        BodyLimit(
            "/pickups/{pickup_id}/manifest",
            settings.max_manifest_body_bytes,
            "GREENIT_MAX_MANIFEST_BODY_BYTES",
        )
    ],
)
