from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from services.intake import domain
from services.intake.domain import (
    KnownDevice,
    NewDevice,
    Pickup,
    PickupStatus,
    SameDevice,
    Scan,
)
from shared.domain import IllegalTransition
from shared.events import (
    Address,
    Contact,
    DeviceCategory,
    TimeWindow,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PICKUP_ID = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
DEVICE_ID = UUID("0b8f3e52-52b7-4a47-8a44-3bbf2c1d7e02")


def requested() -> Pickup:
    pickup, _ = domain.request_pickup(
        pickup_id=PICKUP_ID,
        partner_id="acme",
        address=Address(
            street="Rue de la Loi 42", postal_code="1040", city="Brussels", country="BE"
        ),
        contact=Contact(name="Jo", email="jo@acme.example"),
        window=TimeWindow(start=T0, end=T0 + timedelta(days=2)),
        expected={DeviceCategory.LAPTOP: 3},
        notes=None,
        now=T0,
        event_id=uuid4(),
    )
    return pickup


def scheduled() -> Pickup:
    pickup, _ = domain.schedule_pickup(
        requested(), scheduled_for=T0 + timedelta(days=1), by="staff", now=T0, event_id=uuid4()
    )
    return pickup


def completed() -> Pickup:
    pickup, _ = domain.complete_pickup(
        scheduled(), devices_received=2, by="staff", now=T0, event_id=uuid4()
    )
    return pickup


def cancelled() -> Pickup:
    pickup, _ = domain.cancel_pickup(
        requested(), devices_received=0, reason="moved", now=T0, event_id=uuid4()
    )
    return pickup


SCAN = Scan(
    category=DeviceCategory.LAPTOP,
    make="HP",
    model="EliteBook 840",
    weight_kg=1.5,
    location="Warehouse",
    asset_tag="ACME-1",
    serial_number="SN-1",
)


def known(pickup_id: UUID = PICKUP_ID) -> KnownDevice:
    return KnownDevice(
        device_id=DEVICE_ID, pickup_id=pickup_id, asset_tag="ACME-1", stage="received"
    )


# ---- pickups ----------------------------------------------------------------------------------


def test_a_requested_pickup_emits_pickup_requested_correlated_to_itself():
    pickup, event = domain.request_pickup(
        pickup_id=PICKUP_ID,
        partner_id="acme",
        address=requested().address,
        contact=requested().contact,
        window=requested().window,
        expected={DeviceCategory.LAPTOP: 3},
        notes="dock",
        now=T0,
        event_id=uuid4(),
    )
    assert pickup.status is PickupStatus.REQUESTED
    assert event.event_type == "pickup.requested"
    assert event.correlation_id == PICKUP_ID
    assert event.partner_id == "acme"


def test_a_requested_pickup_can_be_scheduled():
    when = T0 + timedelta(days=1)
    pickup, event = domain.schedule_pickup(
        requested(), scheduled_for=when, by="staff", now=T0, event_id=uuid4()
    )
    assert pickup.status is PickupStatus.SCHEDULED
    assert pickup.scheduled_for == when
    assert event.scheduled_by == "staff"


@pytest.mark.parametrize("make", [scheduled, completed, cancelled])
def test_only_a_requested_pickup_can_be_scheduled(make):
    with pytest.raises(IllegalTransition) as refused:
        domain.schedule_pickup(make(), scheduled_for=T0, by="s", now=T0, event_id=uuid4())
    assert refused.value.subject_kind == "pickup"
    assert refused.value.action == "schedule"


def test_a_scheduled_pickup_completes_with_its_device_count():
    pickup, event = domain.complete_pickup(
        scheduled(), devices_received=7, by="staff", now=T0, event_id=uuid4()
    )
    assert pickup.status is PickupStatus.COMPLETED
    assert event.devices_received == 7


@pytest.mark.parametrize("make", [requested, completed, cancelled])
def test_only_a_scheduled_pickup_can_be_completed(make):
    with pytest.raises(IllegalTransition):
        domain.complete_pickup(make(), devices_received=0, by="s", now=T0, event_id=uuid4())


@pytest.mark.parametrize("make", [requested, scheduled])
def test_an_open_pickup_without_devices_can_be_cancelled(make):
    pickup, event = domain.cancel_pickup(
        make(), devices_received=0, reason="moved", now=T0, event_id=uuid4()
    )
    assert pickup.status is PickupStatus.CANCELLED
    assert event.reason == "moved"


def test_a_pickup_cannot_be_cancelled_once_devices_were_received():
    with pytest.raises(IllegalTransition) as refused:
        domain.cancel_pickup(scheduled(), devices_received=1, reason="x", now=T0, event_id=uuid4())
    assert "already received" in refused.value.reason


@pytest.mark.parametrize("make", [completed, cancelled])
def test_a_closed_pickup_cannot_be_cancelled(make):
    with pytest.raises(IllegalTransition):
        domain.cancel_pickup(make(), devices_received=0, reason="x", now=T0, event_id=uuid4())


# ---- scanning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [completed, cancelled])
def test_a_closed_pickup_takes_no_scan(make):
    with pytest.raises(IllegalTransition) as refused:
        domain.decide_scan(make(), SCAN, by_tag=None, by_serial=None)
    assert refused.value.subject_id == PICKUP_ID
    with pytest.raises(IllegalTransition):
        domain.receive_device(
            make(),
            SCAN,
            device_id=uuid4(),
            asset_tag="T",
            asset_tag_generated=False,
            scanned_by="s",
            now=T0,
            event_id=uuid4(),
        )


def test_a_new_asset_tag_registers_a_new_device_with_that_tag():
    assert domain.decide_scan(scheduled(), SCAN, by_tag=None, by_serial=None) == NewDevice("ACME-1")


def test_the_same_asset_tag_under_the_same_pickup_is_the_same_device():
    decision = domain.decide_scan(scheduled(), SCAN, by_tag=known(), by_serial=known())
    assert decision == SameDevice(DEVICE_ID)


def test_the_same_asset_tag_under_another_pickup_is_refused():
    with pytest.raises(IllegalTransition) as refused:
        domain.decide_scan(scheduled(), SCAN, by_tag=known(uuid4()), by_serial=None)
    assert refused.value.subject_kind == "device"
    assert refused.value.correlation_id == PICKUP_ID


def test_a_new_tag_on_a_serial_already_registered_is_refused():
    with pytest.raises(IllegalTransition) as refused:
        domain.decide_scan(scheduled(), SCAN, by_tag=None, by_serial=known())
    assert "already registered" in refused.value.reason


def test_without_a_tag_the_same_make_and_serial_is_the_same_device():
    decision = domain.decide_scan(scheduled(), _untagged(), by_tag=None, by_serial=known())
    assert decision == SameDevice(DEVICE_ID)


def test_without_a_tag_a_new_serial_gets_a_generated_tag():
    assert domain.decide_scan(scheduled(), _untagged(), by_tag=None, by_serial=None) == NewDevice(
        None
    )


def test_without_tag_or_serial_a_generated_tag_is_needed():
    bare = Scan(category=DeviceCategory.PHONE, make="X", model="Y", weight_kg=0.2, location="W")
    assert domain.decide_scan(requested(), bare, by_tag=None, by_serial=None) == NewDevice(None)


def test_generated_asset_tags_are_git_and_eight_digits():
    assert domain.generated_asset_tag(42) == "GIT-00000042"
    with pytest.raises(ValueError, match="out of range"):
        domain.generated_asset_tag(100_000_000)


def test_serial_keys_ignore_the_case_of_the_make():
    assert domain.serial_key("HP ", "SN-1") == domain.serial_key("hp", "SN-1")


def test_a_received_device_is_announced_with_its_pickup_and_generated_tag():
    event_id = uuid4()
    device, event = domain.receive_device(
        scheduled(),
        _untagged(),
        device_id=DEVICE_ID,
        asset_tag="GIT-00000001",
        asset_tag_generated=True,
        scanned_by="staff",
        now=T0,
        event_id=event_id,
    )
    assert event.event_type == "device.received"
    assert event.correlation_id == PICKUP_ID
    assert event.asset_tag_generated is True
    assert device.serial_key == "hp|SN-1"


def _untagged() -> Scan:
    return Scan(
        category=DeviceCategory.LAPTOP,
        make="HP",
        model="EliteBook",
        weight_kg=1.5,
        location="W",
        serial_number="SN-1",
    )
