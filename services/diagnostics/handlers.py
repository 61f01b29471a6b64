"""Load, decide, store (state + outbox in one update), flush."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

from services.diagnostics import domain, store
from services.diagnostics.domain import Device
from services.diagnostics.rules import Cosmetic, GradingRules, TestResults, assess
from shared.events import DeviceReceived, ErasureRecord, Event, HardwareSpecs
from shared.ids import derive_id
from shared.service import Runtime

log = logging.getLogger(__name__)

ids: domain.Ids = partial(derive_id, "diagnostics")
ATTEMPTS = 5


class UnknownDevice(LookupError):
    pass


async def on_device_received(runtime: Runtime, event: Event) -> None:
    """Create the device in state `received`; a redelivered event changes nothing."""
    if not isinstance(event, DeviceReceived):
        return
    if not await store.insert_received(runtime.db, domain.receive(event)):
        log.info("device %s already received; %s ignored", event.device_id, event.event_id)


async def on_devices_received(runtime: Runtime, events: Sequence[Event]) -> set[UUID]:
    """A batch's device.received events in one insert (a replay rebuilds at bulk speed)."""
    received = [e for e in events if isinstance(e, DeviceReceived)]
    await store.insert_all_received(runtime.db, [domain.receive(e) for e in received])
    return {e.event_id for e in received}


async def diagnose(
    runtime: Runtime,
    rules: GradingRules,
    device_id: UUID,
    *,
    specs: HardwareSpecs,
    tests: TestResults,
    cosmetic: Cosmetic,
    location: str,
    tested_at: datetime | None,
    tested_by: str,
) -> Device:
    report_id = uuid4()

    def decide(device: Device, now: datetime) -> tuple[Device, list[Event]]:
        return domain.diagnose(
            device,
            report_id=report_id,
            specs=specs,
            tests=tests.model_dump(),
            cosmetic=cosmetic.model_dump(),
            assessment=assess(rules, device.category, specs, tests, cosmetic),
            tested_by=tested_by,
            tested_at=tested_at or now,
            location=location,
            now=now,
            ids=ids,
        )

    return await _apply(runtime, device_id, decide)


async def record_erasure(runtime: Runtime, device_id: UUID, erasure: ErasureRecord) -> Device:
    def decide(device: Device, now: datetime) -> tuple[Device, list[Event]]:
        return domain.record_erasure(device, erasure, now=now, ids=ids)

    return await _apply(runtime, device_id, decide)


async def _apply(
    runtime: Runtime,
    device_id: UUID,
    decide: Callable[[Device, datetime], tuple[Device, list[Event]]],
) -> Device:
    """Load, decide, store; on a concurrent change decide again on the fresh state."""
    for attempt in range(ATTEMPTS):
        loaded = await store.load_device(runtime.db, device_id)
        if loaded is None:
            raise UnknownDevice(str(device_id))
        before, version = loaded
        after, events = decide(before, datetime.now(UTC))
        try:
            await store.save_device(runtime.db, after, version, events)
        except store.ConcurrentUpdate:
            log.info("device %s changed concurrently (attempt %d)", device_id, attempt + 1)
            continue
        if after.certificate is not None and before.certificate is None:
            await store.save_certificate(runtime.db, after.certificate)
        await runtime.relay.flush(runtime.db.devices, str(device_id))
        return after
    raise store.ConcurrentUpdate(str(device_id))
