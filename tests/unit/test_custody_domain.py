"""Custody's domain: the donor's view of one device, built from its events in any order."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from services.custody import domain
from services.custody.domain import Custody
from shared.events import (
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
)
from shared.evidence import event_digest

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PICKUP_ID = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
DEVICE_ID = UUID("0b8f3e52-52b7-4a47-8a44-3bbf2c1d7e02")

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PICKUP_ID = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
DEVICE_ID = UUID("0b8f3e52-52b7-4a47-8a44-3bbf2c1d7e02")


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

    from services.custody.domain import Custody, record
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
