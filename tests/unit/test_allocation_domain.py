from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from services.allocation import domain
from services.allocation.domain import DeviceState, RequestStatus, ShipmentStatus
from shared.domain import IllegalTransition
from shared.events import (
    DeviceCategory,
    DeviceReady,
    Drive,
    DriveKind,
    Grade,
    HardwareSpecs,
    MinSpecs,
)

NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)
SCHOOL, OTHER = "school-rosa-parks", "school-malala"


def ready(category=DeviceCategory.LAPTOP, ram=8.0) -> DeviceReady:
    device_id = uuid4()
    return DeviceReady(
        event_id=uuid4(),
        occurred_at=NOW,
        correlation_id=uuid4(),
        producer="diagnostics",
        device_id=device_id,
        category=category,
        specs=HardwareSpecs(
            cpu_cores=4,
            ram_gb=ram,
            drives=[Drive(serial="S1", kind=DriveKind.SSD, capacity_gb=256)],
            battery_health_pct=80,
        ),
        cosmetic_grade=Grade.A,
        functional_grade=Grade.B,
        erasure_certificate_id=uuid4(),
    )


def request(quantity=2, category=DeviceCategory.LAPTOP, **minimum) -> domain.Request:
    r, _ = domain.open_request(
        request_id=uuid4(),
        recipient_id=SCHOOL,
        quantity=quantity,
        category=category,
        min_specs=MinSpecs(**minimum),
        purpose="Classroom",
        priority=2,
        deadline=None,
        event_id=uuid4(),
        now=NOW,
    )
    return r


def stock(**kw) -> domain.StockDevice:
    return domain.stock_from_ready(ready(**kw))


def allocated(r=None) -> domain.StockDevice:
    r = r or request()
    d = stock()
    device, _ = domain.allocate(d, d.device_id, r, allocation_id=uuid4(), event_id=uuid4(), now=NOW)
    return device


def shipped() -> domain.StockDevice:
    d = allocated()
    _, [device], _ = domain.ship(
        [(d.device_id, d)],
        recipient_id=SCHOOL,
        shipment_id=uuid4(),
        bill_of_lading="BOL-2026-X",
        carrier=None,
        event_ids=[uuid4()],
        now=NOW,
    )
    return device


def delivered() -> domain.StockDevice:
    return replace(shipped(), state=DeviceState.DELIVERED)


def test_a_ready_device_enters_stock_available_with_its_certificate():
    event = ready()
    d = domain.stock_from_ready(event)
    assert d.state is DeviceState.AVAILABLE
    assert d.erasure_certificate_id == event.erasure_certificate_id
    assert d.pickup_id == event.correlation_id


def test_an_available_device_is_allocated_to_an_open_request():
    r, d = request(), stock()
    device, event = domain.allocate(
        d, d.device_id, r, allocation_id=uuid4(), event_id=uuid4(), now=NOW
    )
    assert device.state is DeviceState.ALLOCATED
    assert device.recipient_id == SCHOOL
    assert event.request_id == r.request_id
    assert event.correlation_id == r.request_id


def test_a_device_never_reported_ready_cannot_be_allocated():
    unknown = uuid4()
    with pytest.raises(IllegalTransition) as refused:
        domain.allocate(None, unknown, request(), allocation_id=uuid4(), event_id=uuid4(), now=NOW)
    assert refused.value.subject_id == unknown
    assert refused.value.state == "unknown"


def test_an_allocated_device_cannot_be_allocated_again():
    d = allocated()
    with pytest.raises(IllegalTransition, match="only available"):
        domain.allocate(d, d.device_id, request(), allocation_id=uuid4(), event_id=uuid4(), now=NOW)


def test_a_device_of_another_category_cannot_be_allocated_to_a_request():
    d = stock(category=DeviceCategory.DESKTOP)
    with pytest.raises(IllegalTransition, match="desktop"):
        domain.allocate(d, d.device_id, request(), allocation_id=uuid4(), event_id=uuid4(), now=NOW)


def test_a_device_below_the_minimum_specs_cannot_be_allocated():
    d = stock(ram=4)
    with pytest.raises(IllegalTransition, match="ram_gb"):
        domain.allocate(
            d, d.device_id, request(ram_gb=8), allocation_id=uuid4(), event_id=uuid4(), now=NOW
        )


def test_a_device_cannot_be_allocated_to_a_closed_request():
    r = replace(request(), status=RequestStatus.CANCELLED)
    d = stock()
    with pytest.raises(IllegalTransition, match="cancelled"):
        domain.allocate(d, d.device_id, r, allocation_id=uuid4(), event_id=uuid4(), now=NOW)


def test_allocated_devices_ship_together_to_their_recipient():
    a, b = allocated(), allocated()
    shipment, devices, events = domain.ship(
        [(a.device_id, a), (b.device_id, b)],
        recipient_id=SCHOOL,
        shipment_id=uuid4(),
        bill_of_lading="BOL-2026-AB",
        carrier="Bpost",
        event_ids=[uuid4(), uuid4()],
        now=NOW,
    )
    assert shipment.status is ShipmentStatus.IN_TRANSIT
    assert [d.state for d in devices] == [DeviceState.SHIPPED] * 2
    assert [e.device_id for e in events] == [a.device_id, b.device_id]
    assert events[0].correlation_id == a.request_id


def _ship(*pairs, recipient=SCHOOL):
    return domain.ship(
        list(pairs),
        recipient_id=recipient,
        shipment_id=uuid4(),
        bill_of_lading="BOL",
        carrier=None,
        event_ids=[uuid4() for _ in pairs],
        now=NOW,
    )


def test_a_device_cannot_be_shipped_twice():
    d = shipped()
    with pytest.raises(IllegalTransition, match="already shipped"):
        _ship((d.device_id, d))


def test_one_unfit_device_refuses_the_whole_shipment():
    good, available = allocated(), stock()
    with pytest.raises(IllegalTransition) as refused:
        _ship((good.device_id, good), (available.device_id, available))
    assert refused.value.subject_id == available.device_id


def test_a_device_allocated_to_another_recipient_cannot_be_shipped_to_this_one():
    d = allocated()
    with pytest.raises(IllegalTransition, match="another recipient"):
        _ship((d.device_id, d), recipient=OTHER)


def test_an_unknown_device_cannot_be_shipped():
    with pytest.raises(IllegalTransition, match="not in stock"):
        _ship((uuid4(), None))


def test_accepting_a_shipment_delivers_its_devices_once():
    d = allocated()
    shipment, devices, _ = _ship((d.device_id, d))
    done, delivered_devices, events = domain.accept(
        shipment, devices, accepted_by="Ms. Diallo", event_ids=[uuid4()], now=NOW
    )
    assert done.status is ShipmentStatus.DELIVERED
    assert delivered_devices[0].state is DeviceState.DELIVERED
    assert events[0].accepted_by == "Ms. Diallo"
    with pytest.raises(IllegalTransition, match="already delivered"):
        domain.accept(done, delivered_devices, accepted_by="X", event_ids=[uuid4()], now=NOW)


def test_a_device_cannot_be_delivered_without_being_shipped():
    d = allocated()
    shipment, _, _ = _ship((d.device_id, d))
    with pytest.raises(IllegalTransition, match="not shipped"):
        domain.accept(shipment, [d], accepted_by="X", event_ids=[uuid4()], now=NOW)


def test_a_delivered_device_can_be_reported_broken_then_returned():
    broken, report = domain.report(
        delivered(), condition="broken", note="screen", event_id=uuid4(), now=NOW
    )
    assert broken.state is DeviceState.BROKEN
    assert report.condition == "broken"
    returned, event = domain.return_device(
        broken, reason="broken", note=None, event_id=uuid4(), now=NOW
    )
    assert returned.state is DeviceState.RETURNED
    assert event.category is DeviceCategory.LAPTOP


def test_a_delivered_device_can_be_returned_at_end_of_life():
    returned, event = domain.return_device(
        delivered(), reason="end_of_life", note=None, event_id=uuid4(), now=NOW
    )
    assert returned.state is DeviceState.RETURNED
    assert event.recipient_id == SCHOOL


def test_a_returned_device_names_every_drive_and_its_erasure_certificate_for_recycling():
    two_drives = HardwareSpecs(
        drives=[
            Drive(serial="S1", kind=DriveKind.SSD, capacity_gb=256),
            Drive(serial="S2", kind=DriveKind.HDD, capacity_gb=1000),
        ]
    )
    device = replace(delivered(), specs=two_drives)
    _, event = domain.return_device(
        device, reason="end_of_life", note=None, event_id=uuid4(), now=NOW
    )
    assert event.drive_serials == ["S1", "S2"]
    assert event.erasure_certificate_id == device.erasure_certificate_id


def test_a_lost_device_cannot_be_returned():
    lost, _ = domain.report(delivered(), condition="lost", note=None, event_id=uuid4(), now=NOW)
    assert lost.state is DeviceState.LOST
    with pytest.raises(IllegalTransition, match="lost"):
        domain.return_device(lost, reason="end_of_life", note=None, event_id=uuid4(), now=NOW)


def test_a_device_never_delivered_cannot_be_returned():
    with pytest.raises(IllegalTransition, match="shipped"):
        domain.return_device(shipped(), reason="broken", note=None, event_id=uuid4(), now=NOW)


def test_a_device_not_delivered_cannot_be_reported():
    with pytest.raises(IllegalTransition, match="allocated"):
        domain.report(allocated(), condition="broken", note=None, event_id=uuid4(), now=NOW)


def test_a_broken_device_cannot_be_reported_again():
    broken, _ = domain.report(delivered(), condition="broken", note=None, event_id=uuid4(), now=NOW)
    with pytest.raises(IllegalTransition):
        domain.report(broken, condition="lost", note=None, event_id=uuid4(), now=NOW)


def test_a_request_reaching_its_quantity_is_fulfilled_and_closes():
    r = request(quantity=2)
    assert domain.fulfil(r, allocated=1, event_id=uuid4(), now=NOW) == (r, None)
    done, event = domain.fulfil(r, allocated=2, event_id=uuid4(), now=NOW)
    assert done.status is RequestStatus.FULFILLED
    assert event is not None
    assert (event.outcome, event.allocated) == ("fulfilled", 2)


def test_an_open_request_can_be_cancelled_once():
    cancelled, event = domain.cancel(request(), allocated=1, event_id=uuid4(), now=NOW)
    assert cancelled.status is RequestStatus.CANCELLED
    assert (event.outcome, event.allocated) == ("cancelled", 1)
    with pytest.raises(IllegalTransition, match="already cancelled"):
        domain.cancel(cancelled, allocated=1, event_id=uuid4(), now=NOW)


def test_a_fulfilled_request_cannot_be_cancelled():
    done, _ = domain.fulfil(request(quantity=1), allocated=1, event_id=uuid4(), now=NOW)
    with pytest.raises(IllegalTransition, match="fulfilled"):
        domain.cancel(done, allocated=1, event_id=uuid4(), now=NOW)


def test_an_allocation_names_the_recipient_as_registered():
    r, opened = domain.open_request(
        request_id=uuid4(),
        recipient_id=SCHOOL,
        quantity=1,
        category=DeviceCategory.LAPTOP,
        min_specs=MinSpecs(),
        purpose="Classroom",
        priority=2,
        deadline=None,
        event_id=uuid4(),
        now=NOW,
        recipient_name="Rosa Parks School",
    )
    d = stock()
    _, event = domain.allocate(d, d.device_id, r, allocation_id=uuid4(), event_id=uuid4(), now=NOW)
    assert opened.recipient_name == event.recipient_name == "Rosa Parks School"


def test_a_delivered_device_in_use_stays_delivered_and_says_whom_it_serves():
    device = delivered()
    after, event = domain.report_usage(
        device, students=24, classrooms=1, note=None, event_id=uuid4(), now=NOW
    )
    assert after.state is DeviceState.DELIVERED
    assert (event.recipient_id, event.students, event.classrooms) == (SCHOOL, 24, 1)


def test_only_a_delivered_device_can_be_reported_in_use():
    broken, _ = domain.report(delivered(), condition="broken", note=None, event_id=uuid4(), now=NOW)
    for device in (allocated(), shipped(), broken):
        with pytest.raises(IllegalTransition):
            domain.report_usage(
                device, students=3, classrooms=None, note=None, event_id=uuid4(), now=NOW
            )
