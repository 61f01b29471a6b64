"""Load, decide, store (state + outbox in one update), flush: `shared.usecase.apply`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

from services.diagnostics import domain
from services.diagnostics.domain import Device
from services.diagnostics.rules import Cosmetic, GradingRules, TestResults, assess
from services.diagnostics.store import Store
from shared.events import DeviceReceived, ErasureRecord, Event, HardwareSpecs
from shared.ids import derive_id
from shared.usecase import Unknown, apply

log = logging.getLogger(__name__)

ids: domain.Ids = partial(derive_id, "diagnostics")


class UnknownDevice(Unknown):
    pass


def _not_received(device_id: UUID) -> UnknownDevice:
    return UnknownDevice("device not received")


async def on_device_received(store: Store, event: Event) -> None:
    """Create the device in state `received`; a redelivered event changes nothing."""
    if not isinstance(event, DeviceReceived):
        return
    if not await store.insert_received(domain.receive(event)):
        log.info("device %s already received; %s ignored", event.device_id, event.event_id)


async def on_devices_received(store: Store, events: Sequence[Event]) -> set[UUID]:
    """A batch's device.received events in one insert (a replay rebuilds at bulk speed)."""
    received = [e for e in events if isinstance(e, DeviceReceived)]
    await store.insert_all_received([domain.receive(e) for e in received])
    return {e.event_id for e in received}


async def diagnose(
    store: Store,
    rules: GradingRules,
    device_id: UUID,
    *,
    specs: HardwareSpecs,
    tests: TestResults,
    cosmetic: Cosmetic,
    location: str,
    tested_at: datetime | None,
    tested_by: str,
    submitted_id: UUID | None = None,
    snapshot: domain.MachineSnapshot | None = None,
) -> Device:
    # The submitter's id names the report within its device; another device's equal id is
    # another report (event ids derive from the report id).
    report_id = ids(device_id, f"report {submitted_id}") if submitted_id else uuid4()

    def decide(device: Device) -> tuple[Device, list[Event]]:
        now = datetime.now(UTC)
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
            snapshot=snapshot,
        )

    return await apply(store, device_id, decide, missing=_not_received)


async def record_erasure(store: Store, device_id: UUID, erasure: ErasureRecord) -> Device:
    def decide(device: Device) -> tuple[Device, list[Event]]:
        return domain.record_erasure(device, erasure, now=datetime.now(UTC), ids=ids)

    return await apply(store, device_id, decide, missing=_not_received)
