"""Intake's use cases: load, decide, store (state and outbox in one write), flush."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

from services.intake import domain
from services.intake.domain import Pickup, ReceivedDevice, Scan, to_millis
from services.intake.store import Store
from shared.events import (
    Address,
    Contact,
    DeviceCategory,
    PickupEvent,
    TimeWindow,
)
from shared.usecase import Busy, Unknown

ATTEMPTS = 5


class UnknownPickup(Unknown):
    """No such pickup, or one the caller may not see."""


def now() -> datetime:
    """The store keeps milliseconds: truncating here makes a fresh answer equal a later read."""
    return to_millis(datetime.now(UTC))


# ---- pickups ----------------------------------------------------------------------------------


async def request_pickup(
    store: Store,
    *,
    partner_id: str,
    address: Address,
    contact: Contact,
    window: TimeWindow,
    expected: dict[DeviceCategory, int],
    notes: str | None,
) -> Pickup:
    pickup, event = domain.request_pickup(
        pickup_id=uuid4(),
        partner_id=partner_id,
        address=address,
        contact=contact,
        window=window,
        expected=expected,
        notes=notes,
        now=now(),
        event_id=uuid4(),
    )
    await store.insert_pickup(pickup, [event])
    await store.flush_pickup(pickup.pickup_id)
    return pickup


async def visible_pickup(store: Store, pickup_id: UUID, visible_to: str | None) -> Pickup:
    """The pickup, if the caller may see it (`visible_to` None: staff see every pickup)."""
    pickup = await store.load_pickup(pickup_id)
    if pickup is None or (visible_to is not None and pickup.partner_id != visible_to):
        raise UnknownPickup(f"unknown pickup {pickup_id}")
    return pickup


Decide = Callable[[Pickup, int], tuple[Pickup, PickupEvent]]


async def change_pickup(
    store: Store, pickup_id: UUID, visible_to: str | None, decide: Decide
) -> Pickup:
    """Apply one decision to a pickup, guarded by the status it was decided on."""
    for _ in range(ATTEMPTS):
        pickup = await visible_pickup(store, pickup_id, visible_to)
        received = await store.count_devices(pickup_id)
        changed, event = decide(pickup, received)
        if await store.save_pickup(pickup, changed, [event]):
            await store.flush_pickup(pickup_id)
            return changed
    raise Busy(f"pickup {pickup_id} kept changing")


async def schedule_pickup(
    store: Store, pickup_id: UUID, *, scheduled_for: datetime, by: str
) -> Pickup:
    return await change_pickup(
        store,
        pickup_id,
        None,
        lambda p, _: domain.schedule_pickup(
            p, scheduled_for=scheduled_for, by=by, now=now(), event_id=uuid4()
        ),
    )


async def complete_pickup(store: Store, pickup_id: UUID, *, by: str) -> Pickup:
    return await change_pickup(
        store,
        pickup_id,
        None,
        lambda p, n: domain.complete_pickup(
            p, devices_received=n, by=by, now=now(), event_id=uuid4()
        ),
    )


async def cancel_pickup(
    store: Store, pickup_id: UUID, *, reason: str, visible_to: str | None
) -> Pickup:
    return await change_pickup(
        store,
        pickup_id,
        visible_to,
        lambda p, n: domain.cancel_pickup(
            p, devices_received=n, reason=reason, now=now(), event_id=uuid4()
        ),
    )


# ---- scanning devices in ----------------------------------------------------------------------


async def scan_device(
    store: Store, pickup_id: UUID, scan: Scan, *, scanned_by: str
) -> tuple[ReceivedDevice, bool]:
    """Register the scanned device once; returns (the device, newly created?).

    Unique indexes on the asset tag and on (make, serial) settle races between two scans of the
    same device: the loser re-reads and answers with the winner's device.
    """
    for _ in range(ATTEMPTS):
        pickup = await store.load_pickup(pickup_id)
        if pickup is None:
            raise UnknownPickup(f"unknown pickup {pickup_id}")
        by_tag = await store.find_by_asset_tag(scan.asset_tag) if scan.asset_tag else None
        by_serial = (
            await store.find_by_serial_key(domain.serial_key(scan.make, scan.serial_number))
            if scan.serial_number
            else None
        )
        decision = domain.decide_scan(pickup, scan, by_tag=by_tag, by_serial=by_serial)
        if isinstance(decision, domain.SameDevice):
            existing = await store.load_device(decision.device_id)
            if existing is not None:
                return existing, False
            continue
        tag = decision.asset_tag or domain.generated_asset_tag(await store.next_asset_number())
        device, event = domain.receive_device(
            pickup,
            scan,
            device_id=uuid4(),
            asset_tag=tag,
            asset_tag_generated=decision.asset_tag is None,
            scanned_by=scanned_by,
            now=now(),
            event_id=uuid4(),
        )
        await store.begin_receiving(pickup_id, device.device_id)
        if not await store.insert_device(device, [event]):
            await store.end_receiving(pickup_id, device.device_id, inserted=False)
            # Scanned meanwhile, or a device whose keys a crash never wrote: find it the slow
            # way (which writes its keys) and decide again.
            await store.find_conflicting(device.asset_tag, device.serial_key)
            continue
        await store.end_receiving(pickup_id, device.device_id, inserted=True)
        await store.save_device_keys(device)
        await store.flush_device(device.device_id)
        return device, True
    raise Busy(f"scanning into pickup {pickup_id} kept colliding")
