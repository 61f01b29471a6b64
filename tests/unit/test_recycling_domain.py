from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from services.recycling import domain
from services.recycling.domain import NOT_RELEASED, Device, Source, State
from shared.domain import IllegalTransition
from shared.events import (
    DeviceCategory,
    DeviceReleasedForRecycling,
    DeviceReturned,
    ErasureRecord,
    MaterialFractions,
    Recycler,
    SanitizationMethod,
)

T = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PICKUP = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
RECYCLER = Recycler(name="Recupel Metals NV", certification="WEEELABEX")
FRACTIONS = MaterialFractions(plastics_kg=0.5, ferrous_kg=0.3, batteries_kg=0.25)


def released(device_id: UUID | None = None, **kw) -> DeviceReleasedForRecycling:
    return DeviceReleasedForRecycling(
        event_id=uuid4(),
        occurred_at=T,
        correlation_id=PICKUP,
        producer="diagnostics",
        device_id=device_id or uuid4(),
        category=DeviceCategory.LAPTOP,
        reason="does not boot",
        erasure_certificate_id=uuid4(),
        **kw,
    )


TWO_DRIVES = ["DRV-1", "DRV-2"]


def returned(
    category: DeviceCategory = DeviceCategory.LAPTOP,
    drives: list[str] | None = None,
    erasure_certificate_id: UUID | None = None,
) -> DeviceReturned:
    """A return; without `drives` it has the shape of a v1 event (drives unknown)."""
    return DeviceReturned(
        event_id=uuid4(),
        occurred_at=T,
        correlation_id=uuid4(),
        producer="allocation",
        device_id=uuid4(),
        recipient_id="school-malala",
        reason="end_of_life",
        category=category,
        drive_serials=drives,
        erasure_certificate_id=erasure_certificate_id,
    )


def erasure(
    method: SanitizationMethod, verified: bool = True, serial: str = "DRV-1"
) -> ErasureRecord:
    return ErasureRecord(
        drive_serial=serial,
        method=method,
        technique="shredding",
        tool="HSM shredder",
        tool_version="1",
        verified=verified,
        verification="visual inspection",
        operator="staff-lena",
        performed_at=T,
        location="Warehouse Brussels",
    )


def admitted(event: DeviceReleasedForRecycling | DeviceReturned) -> Device:
    device = domain.admit(None, event)
    assert device is not None
    return device


def dismantled(
    device: Device,
    destroyed: list[ErasureRecord] | None = None,
    fractions: MaterialFractions = FRACTIONS,
) -> Device:
    result, _ = _dismantle(device, destroyed or [], fractions)
    return result


def _dismantle(device: Device | None, destroyed: list[ErasureRecord], fractions=FRACTIONS):
    return domain.dismantle(
        device,
        device.device_id if device else uuid4(),
        fractions=fractions,
        hazardous_parts=["li-ion battery"],
        destroyed=destroyed,
        dismantled_by="staff-lena",
        location="W",
        at=T,
        event_id=uuid4(),
    )


# ---- admission --------------------------------------------------------------------------------


def test_a_released_device_awaits_dismantling_with_its_erasure_certificate():
    event = released()
    device = admitted(event)
    assert device.state is State.AWAITING_DISMANTLING
    assert device.source is Source.DIAGNOSTICS
    assert device.erasure_certificate_id == event.erasure_certificate_id
    assert device.correlation_id == PICKUP
    assert device.category is DeviceCategory.LAPTOP


def test_a_returned_device_awaits_dismantling_with_its_drives_and_erasure_certificate():
    certificate_id = uuid4()
    device = admitted(returned(drives=TWO_DRIVES, erasure_certificate_id=certificate_id))
    assert device.source is Source.RETURN
    assert device.drive_serials == ("DRV-1", "DRV-2")
    assert device.erasure_certificate_id == certificate_id


def test_a_return_of_the_v1_shape_is_held_with_its_drives_unknown():
    device = admitted(returned())
    assert device.source is Source.RETURN
    assert device.drive_serials is None
    assert device.erasure_certificate_id is None


def test_the_same_event_admitted_twice_changes_nothing_the_second_time():
    event = released()
    device = admitted(event)
    assert domain.admit(device, event) is None


def test_a_device_already_held_cannot_be_admitted_again_by_another_event():
    event = released()
    device = admitted(event)
    with pytest.raises(IllegalTransition) as refused:
        domain.admit(device, released(event.device_id))
    assert refused.value.state == "awaiting_dismantling"


# ---- dismantling ------------------------------------------------------------------------------


def test_a_released_device_is_dismantled_without_destroying_its_already_erased_storage():
    device, event = _dismantle(admitted(released()), [])
    assert device.state is State.DISMANTLED
    assert device.dismantling is not None
    assert device.dismantling.fractions == FRACTIONS
    assert event.device_id == device.device_id
    assert event.dismantled_by == "staff-lena"
    assert event.correlation_id == PICKUP


def test_a_device_never_received_cannot_be_dismantled():
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(None, [])
    assert refused.value.state == NOT_RELEASED
    assert refused.value.reason == "device was neither released for recycling nor returned"


def test_a_dismantled_device_cannot_be_dismantled_again():
    device = dismantled(admitted(released()))
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(device, [])
    assert refused.value.state == "dismantled"


def test_a_returned_laptop_with_one_of_its_two_drives_destroyed_is_refused_naming_the_other():
    device = admitted(returned(drives=TWO_DRIVES))
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(device, [erasure(SanitizationMethod.DESTROY, serial="DRV-1")])
    assert refused.value.reason == (
        "storage of a returned device must be destroyed: no verified destroy record for "
        "drive(s) DRV-2"
    )
    assert refused.value.state == "awaiting_dismantling"


def test_a_returned_laptop_with_none_of_its_drives_destroyed_is_refused_naming_both():
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(admitted(returned(drives=TWO_DRIVES)), [])
    assert refused.value.reason.endswith("drive(s) DRV-1, DRV-2")


@pytest.mark.parametrize(
    "second",
    [
        erasure(SanitizationMethod.PURGE, serial="DRV-2"),
        erasure(SanitizationMethod.DESTROY, verified=False, serial="DRV-2"),
        erasure(SanitizationMethod.DESTROY, serial="DRV-3"),
    ],
)
def test_each_drive_of_a_returned_laptop_needs_its_own_verified_destroy_record(second):
    first = erasure(SanitizationMethod.DESTROY, serial="DRV-1")
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(admitted(returned(drives=TWO_DRIVES)), [first, second])
    assert refused.value.reason.endswith("drive(s) DRV-2")


def test_a_returned_laptop_with_every_drive_destroyed_is_dismantled_citing_them():
    certificate_id = uuid4()
    device = admitted(returned(drives=TWO_DRIVES, erasure_certificate_id=certificate_id))
    records = [erasure(SanitizationMethod.DESTROY, serial=s) for s in reversed(TWO_DRIVES)]
    dismantled_device, event = _dismantle(device, records)
    assert dismantled_device.state is State.DISMANTLED
    assert event.storage_destroyed == records
    assert event.drive_serials == TWO_DRIVES
    assert event.erasure_certificate_id == certificate_id


def test_a_returned_device_without_drives_has_nothing_to_destroy():
    device, event = _dismantle(admitted(returned(drives=[])), [])
    assert device.state is State.DISMANTLED
    assert event.drive_serials == []


def test_a_v1_return_of_a_laptop_is_refused_until_its_recorded_drives_are_destroyed():
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(admitted(returned()), [])
    assert "its drives are unknown to recycling" in refused.value.reason


@pytest.mark.parametrize(
    "records",
    [
        [erasure(SanitizationMethod.PURGE)],
        [erasure(SanitizationMethod.DESTROY, verified=False)],
        [
            erasure(SanitizationMethod.DESTROY),
            erasure(SanitizationMethod.DESTROY, verified=False, serial="DRV-2"),
        ],
    ],
)
def test_a_v1_return_needs_a_verified_destroy_of_every_drive_recorded(records):
    with pytest.raises(IllegalTransition) as refused:
        _dismantle(admitted(returned()), records)
    assert refused.value.reason.endswith(records[-1].drive_serial)


def test_a_v1_return_with_its_recorded_drives_destroyed_is_dismantled_citing_them():
    records = [erasure(SanitizationMethod.DESTROY, serial=s) for s in TWO_DRIVES]
    device, event = _dismantle(admitted(returned()), records)
    assert device.state is State.DISMANTLED
    assert event.storage_destroyed == records
    assert event.drive_serials == TWO_DRIVES


def test_a_v1_return_of_a_monitor_has_no_storage_to_destroy():
    device, _ = _dismantle(admitted(returned(DeviceCategory.MONITOR)), [])
    assert device.state is State.DISMANTLED


def test_fractions_weighing_nothing_are_refused():
    with pytest.raises(ValueError, match="more than 0 kg"):
        _dismantle(admitted(released()), [], MaterialFractions())


# ---- lots -------------------------------------------------------------------------------------


def test_fractions_are_summed_field_by_field():
    total = domain.sum_fractions(
        [FRACTIONS, MaterialFractions(plastics_kg=0.1, glass_kg=0.2), MaterialFractions()]
    )
    assert total.plastics_kg == pytest.approx(0.6)
    assert total.ferrous_kg == pytest.approx(0.3)
    assert total.glass_kg == pytest.approx(0.2)
    assert total.total_kg == pytest.approx(1.35)


def test_a_lot_of_dismantled_devices_carries_their_summed_fractions_and_a_bill_of_lading():
    devices = [dismantled(admitted(released())) for _ in range(3)]
    lot_id = uuid4()
    lot = domain.compose_lot(lot_id, RECYCLER, [(d.device_id, d) for d in devices], T)
    assert lot.device_ids == tuple(d.device_id for d in devices)
    assert lot.total_kg == pytest.approx(3 * 1.05)
    assert lot.bill_of_lading == f"BOL-R-2026-{lot_id.hex[:8].upper()}"


def test_a_device_awaiting_dismantling_cannot_leave_in_a_lot():
    waiting = admitted(released())
    ready = dismantled(admitted(released()))
    with pytest.raises(IllegalTransition) as refused:
        domain.compose_lot(
            uuid4(), RECYCLER, [(ready.device_id, ready), (waiting.device_id, waiting)], T
        )
    assert refused.value.subject_id == waiting.device_id
    assert refused.value.state == "awaiting_dismantling"


def test_a_device_never_received_cannot_leave_in_a_lot():
    unknown = uuid4()
    with pytest.raises(IllegalTransition) as refused:
        domain.compose_lot(uuid4(), RECYCLER, [(unknown, None)], T)
    assert refused.value.state == NOT_RELEASED


def test_a_device_already_in_a_lot_cannot_leave_in_a_second_one():
    device = dismantled(admitted(released()))
    lot = domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, device)], T)
    recycled, _ = domain.recycle(
        device, lot, certificate_id=uuid4(), event_id=uuid4(), causation_id=uuid4()
    )
    with pytest.raises(IllegalTransition) as refused:
        domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, recycled)], T)
    assert refused.value.reason == "device is already in a lot"
    claimed = replace(device, lot_id=uuid4())
    with pytest.raises(IllegalTransition):
        domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, claimed)], T)


def test_a_lot_lists_each_device_once_and_at_least_one():
    device = dismantled(admitted(released()))
    with pytest.raises(ValueError, match="only once"):
        domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, device)] * 2, T)
    with pytest.raises(ValueError, match="at least one"):
        domain.compose_lot(uuid4(), RECYCLER, [], T)


def test_a_lot_heavier_than_the_contract_allows_is_refused():
    heavy = MaterialFractions(ferrous_kg=6_000)
    devices = [dismantled(admitted(released()), fractions=heavy) for _ in range(2)]
    with pytest.raises(IllegalTransition):
        domain.compose_lot(uuid4(), RECYCLER, [(d.device_id, d) for d in devices], T)


def test_a_recycled_device_is_terminal_and_certified_with_its_own_fractions():
    event = released()
    device = dismantled(admitted(event))
    lot = domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, device)], T)
    certificate_id, cause = uuid4(), uuid4()
    recycled, out = domain.recycle(
        device, lot, certificate_id=certificate_id, event_id=uuid4(), causation_id=cause
    )
    assert recycled.state is State.RECYCLED
    assert recycled.lot_id == lot.lot_id
    certificate = recycled.certificate
    assert certificate is not None
    assert certificate.certificate_id == certificate_id
    assert certificate.erasure_certificate_id == event.erasure_certificate_id
    assert certificate.bill_of_lading == lot.bill_of_lading
    assert certificate.fractions == FRACTIONS
    assert out.certificate_id == certificate_id
    assert out.lot_id == lot.lot_id
    assert out.causation_id == cause
    with pytest.raises(IllegalTransition):
        domain.recycle(
            recycled, lot, certificate_id=certificate_id, event_id=uuid4(), causation_id=cause
        )


def test_a_returned_device_is_certified_with_every_drive_and_its_erasure_certificate():
    certificate_id = uuid4()
    records = [erasure(SanitizationMethod.DESTROY, serial=s) for s in TWO_DRIVES]
    device = dismantled(
        admitted(returned(drives=TWO_DRIVES, erasure_certificate_id=certificate_id)), records
    )
    lot = domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, device)], T)
    recycled, _ = domain.recycle(
        device, lot, certificate_id=uuid4(), event_id=uuid4(), causation_id=uuid4()
    )
    assert recycled.certificate is not None
    assert recycled.certificate.drive_serials == ("DRV-1", "DRV-2")
    assert recycled.certificate.storage_destroyed == tuple(records)
    assert recycled.certificate.erasure_certificate_id == certificate_id


def test_a_released_device_is_certified_with_the_drives_diagnostics_named():
    device = dismantled(admitted(released(drive_serials=TWO_DRIVES)))
    lot = domain.compose_lot(uuid4(), RECYCLER, [(device.device_id, device)], T)
    recycled, _ = domain.recycle(
        device, lot, certificate_id=uuid4(), event_id=uuid4(), causation_id=uuid4()
    )
    assert recycled.certificate is not None
    assert recycled.certificate.drive_serials == ("DRV-1", "DRV-2")


def test_a_lot_dispatched_event_names_the_bill_of_lading_and_every_device():
    devices = [dismantled(admitted(released())) for _ in range(2)]
    lot = domain.compose_lot(uuid4(), RECYCLER, [(d.device_id, d) for d in devices], T)
    event = domain.dispatched(lot, uuid4())
    assert event.device_ids == [d.device_id for d in devices]
    assert event.bill_of_lading == lot.bill_of_lading
    assert event.fractions == lot.fractions
