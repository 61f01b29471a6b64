from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from services.intake import domain
from services.intake.domain import (
    Custody,
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
    Decision,
    DeviceAllocated,
    DeviceCategory,
    DeviceDelivered,
    DeviceDiagnosed,
    DeviceEvent,
    DeviceReady,
    DeviceRecycled,
    DeviceReported,
    DeviceUsageReported,
    DeviceWiped,
    Grade,
    HardwareSpecs,
    MaterialFractions,
    Recycler,
    TimeWindow,
)
from shared.evidence import event_digest

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


def test_a_received_device_starts_its_custody_as_received():
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
    assert device.custody.stage == "received"
    assert [h.event_id for h in device.custody.history] == [event_id]
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


# ---- custody view -----------------------------------------------------------------------------


def _envelope(minutes: int) -> dict:
    return {
        "event_id": uuid4(),
        "occurred_at": T0 + timedelta(minutes=minutes),
        "correlation_id": PICKUP_ID,
        "device_id": DEVICE_ID,
    }


def diagnosed(minutes: int = 1) -> DeviceDiagnosed:
    return DeviceDiagnosed(
        **_envelope(minutes),
        producer="diagnostics",
        report_id=uuid4(),
        specs=HardwareSpecs(),
        cosmetic_grade=Grade.A,
        functional_grade=Grade.B,
        decision=Decision.REFURBISH,
        reason="all tests passed",
        rules_version="1",
        tested_by="t",
        location="W",
    )


CERT = uuid4()


def wiped(minutes: int = 2) -> DeviceWiped:
    return DeviceWiped(
        **_envelope(minutes), producer="diagnostics", certificate_id=CERT, erasures=[]
    )


def ready(minutes: int = 3) -> DeviceReady:
    return DeviceReady(
        **_envelope(minutes),
        producer="diagnostics",
        category=DeviceCategory.LAPTOP,
        specs=HardwareSpecs(),
        cosmetic_grade=Grade.A,
        functional_grade=Grade.A,
        erasure_certificate_id=CERT,
    )


def delivered(minutes: int = 7) -> DeviceDelivered:
    return DeviceDelivered(
        **_envelope(minutes),
        producer="allocation",
        shipment_id=uuid4(),
        recipient_id="school",
        accepted_by="Ms D",
    )


def reported(condition: str, minutes: int = 8) -> DeviceReported:
    return DeviceReported(
        **_envelope(minutes), producer="allocation", recipient_id="school", condition=condition
    )


def recycled(minutes: int = 11) -> DeviceRecycled:
    return DeviceRecycled(
        **_envelope(minutes),
        producer="recycling",
        lot_id=uuid4(),
        certificate_id=uuid4(),
        recycler=Recycler(name="Recupel", certification="WEEELABEX"),
        fractions=MaterialFractions(plastics_kg=1),
    )


def replay(*events: DeviceEvent) -> Custody:
    custody = Custody()
    for event in events:
        custody = domain.record(custody, event)
    return custody


def test_each_event_moves_the_device_to_its_stage():
    assert replay(diagnosed()).stage == "diagnosed"
    assert replay(diagnosed(), wiped()).stage == "wiped"
    assert replay(diagnosed(), wiped(), ready()).stage == "ready"
    assert replay(delivered()).stage == "delivered"


def test_an_event_recorded_twice_is_recorded_once():
    event = diagnosed()
    once = replay(event)
    assert domain.record(once, event) == once
    assert len(once.history) == 1


def test_out_of_order_events_keep_the_highest_stage_and_a_history_in_time_order():
    late_wipe = wiped(minutes=2)
    custody = replay(delivered(minutes=7), late_wipe, diagnosed(minutes=1))
    assert custody.stage == "delivered"
    assert [h.event_type for h in custody.history] == [
        "device.diagnosed",
        "device.wiped",
        "device.delivered",
    ]
    assert custody.erasure_certificate_id == CERT
    assert custody.recipient_id == "school"


def test_lost_is_terminal():
    assert replay(delivered(), reported("lost"), recycled()).stage == "lost"
    assert replay(delivered(), recycled(), reported("lost")).stage == "lost"


def test_a_broken_report_ranks_above_delivered():
    assert replay(delivered(), reported("broken")).stage == "broken"


def test_the_donor_sees_decision_reason_grades_and_certificates():
    event = recycled()
    custody = replay(diagnosed(), wiped(), event)
    by_type = {h.event_type: h.details for h in custody.history}
    assert by_type["device.diagnosed"] == {
        "decision": "refurbish",
        "reason": "all tests passed",
        "cosmetic_grade": "A",
        "functional_grade": "B",
    }
    assert by_type["device.wiped"]["certificate_id"] == str(CERT)
    recycled_details = by_type["device.recycled"]
    assert recycled_details["lot_id"] == str(event.lot_id)
    assert recycled_details["certificate_id"] == str(event.certificate_id)
    assert recycled_details["recycler"] == "Recupel"
    assert recycled_details["fractions"] == event.fractions.model_dump(mode="json")
    assert custody.recycling_certificate_id == event.certificate_id
    assert custody.stage == "recycled"


def test_each_history_entry_keeps_the_digest_of_the_event_as_published():
    event = wiped()
    custody = replay(diagnosed(), event)
    entry = next(h for h in custody.history if h.event_id == event.event_id)
    assert entry.digest == event_digest(event)
    assert entry.details["erasures"] == [e.model_dump(mode="json") for e in event.erasures]


def test_a_usage_report_keeps_the_device_delivered():
    usage = DeviceUsageReported(
        event_id=uuid4(),
        occurred_at=T0 + timedelta(days=200),
        correlation_id=uuid4(),
        producer="allocation",
        device_id=DEVICE_ID,
        recipient_id="school",
        students=24,
        classrooms=1,
    )
    custody = replay(delivered(), usage)
    assert custody.stage == "delivered"
    assert custody.history[-1].details == {
        "recipient_id": "school",
        "students": 24,
        "classrooms": 1,
    }


def test_an_allocation_tells_the_donor_which_recipient_has_the_device():
    allocated = DeviceAllocated(
        **_envelope(5),
        producer="allocation",
        request_id=uuid4(),
        recipient_id="school-a",
        allocation_id=uuid4(),
        recipient_name="Rosa Parks School",
    )
    custody = replay(ready(), allocated)
    assert custody.stage == "allocated"
    assert custody.recipient_id == "school-a"
    assert custody.recipient_name == "Rosa Parks School"
    assert custody.history[-1].details == {
        "recipient_id": "school-a",
        "recipient_name": "Rosa Parks School",
    }


def test_events_written_at_the_same_instant_are_listed_in_lifecycle_order():
    from datetime import UTC, datetime
    from uuid import uuid4

    from services.intake.domain import Custody, record
    from shared.events import DeviceReleasedForRecycling, DeviceWiped
    from shared.examples import EXAMPLES

    at = datetime(2026, 5, 1, tzinfo=UTC)
    released = EXAMPLES[DeviceReleasedForRecycling].model_copy(
        update={"event_id": uuid4(), "occurred_at": at}
    )
    wiped = EXAMPLES[DeviceWiped].model_copy(update={"event_id": uuid4(), "occurred_at": at})
    custody = record(record(Custody(), released), wiped)
    assert [h.event_type for h in custody.history] == [
        "device.wiped",
        "device.released_for_recycling",
    ]
