from faststream.specification import AsyncAPI

from services.custody import api, certificate_api, handlers, ops_api, report_api
from services.custody.settings import Settings
from services.custody.store import Store
from shared.events import Event
from shared.kafka import DeadLetters, EventBus, make_broker, subscribe
from shared.service import Runtime, create_app
from shared.topics import device_events

settings = Settings()
broker = make_broker(settings)
bus = EventBus(broker, settings, [])
runtime = Runtime(settings, bus)
store = Store(runtime)


async def on_device_event(event: Event) -> None:
    await handlers.record_device_event(store, event)


subscribe(
    broker,
    settings,
    events=device_events(),
    handler=on_device_event,
    dead_letters=DeadLetters(broker, settings),
    on_refused=runtime.on_refused,
    description="Every device event, to keep the donor-facing custody view.",
)
asyncapi = AsyncAPI(broker, title="custody", version="0.1.0")
app = create_app(
    settings=settings,
    broker=broker,
    asyncapi=asyncapi,
    runtime=runtime,
    setup=lambda _: store.setup(),
    routers=[
        api.router(runtime, store),
        certificate_api.router(runtime, store, settings),
        report_api.router(runtime, store, settings),
        ops_api.router(runtime, store),
    ],
    description="The donor's view of what became of each device: custody history, "
    "certificates and their public verification, impact reports, and operations' stage views.",
)
