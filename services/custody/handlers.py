"""Custody's one use case: add a device event to the device's custody view, exactly once."""

from __future__ import annotations

from services.custody import domain
from services.custody.store import Store, custody_fields, custody_from_doc, identity_fields
from shared.events import DeviceEvent, DeviceReceived, Event
from shared.kafka import Unprocessable
from shared.usecase import Busy

ATTEMPTS = 5


async def record_device_event(store: Store, event: Event) -> None:
    """Add a device event to the device's custody view exactly once.

    A device's events travel on different topics, so one may come before its `device.received`:
    it is kept in the device's document, which the views show once the reception is known.
    """
    if not isinstance(event, DeviceEvent):
        raise Unprocessable(f"{event.event_type} is not a device event")
    event_id = str(event.event_id)
    for _ in range(ATTEMPTS):
        doc = await store.load_state(event.device_id)
        if doc is not None and event_id in (doc.get("applied") or ()):
            # Applied before: the summary may still lag if we stopped between the two writes.
            await store.save_summary(doc)
            return
        custody = domain.record(custody_from_doc(doc or {}), event)
        fields = custody_fields(custody)
        if isinstance(event, DeviceReceived):
            fields |= identity_fields(event)
        stored = await store.add_event(doc, event.device_id, event_id, fields)
        if stored is not None:
            await store.save_summary(stored)
            return
    raise Busy(f"device {event.device_id} kept changing")
