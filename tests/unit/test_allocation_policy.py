from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

from services.allocation.policy import Candidate, OpenRequest, fits, match
from shared.events import DeviceCategory, Drive, DriveKind, HardwareSpecs, MinSpecs

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LAPTOP, DESKTOP = DeviceCategory.LAPTOP, DeviceCategory.DESKTOP


def specs(ram=8.0, storage=256, cores=4, battery=80) -> HardwareSpecs:
    drives = [Drive(serial=f"S{uuid4().hex[:6]}", kind=DriveKind.SSD, capacity_gb=storage)]
    return HardwareSpecs(
        cpu_cores=cores, ram_gb=ram, drives=drives if storage else [], battery_health_pct=battery
    )


def device(category=LAPTOP, since=0, **kw) -> Candidate:
    return Candidate(uuid4(), category, specs(**kw), T0 + timedelta(hours=since))


def request(
    missing=1, category=LAPTOP, priority=3, deadline=None, opened=0, **minimum
) -> OpenRequest:
    return OpenRequest(
        request_id=uuid4(),
        recipient_id=f"school-{uuid4().hex[:4]}",
        category=category,
        min_specs=MinSpecs(**minimum),
        priority=priority,
        deadline=deadline,
        opened_at=T0 + timedelta(hours=opened),
        missing=missing,
    )


def given(matches) -> dict[UUID, UUID]:
    return {m.device_id: m.request_id for m in matches}


def test_a_device_meeting_every_minimum_fits():
    assert fits(specs(ram=8, storage=256, cores=4, battery=80), MinSpecs(ram_gb=8, storage_gb=256))


def test_a_device_below_any_minimum_does_not_fit():
    assert not fits(specs(ram=4), MinSpecs(ram_gb=8))
    assert not fits(specs(battery=50), MinSpecs(battery_health_pct=60))
    assert not fits(specs(cores=2), MinSpecs(cpu_cores=4))
    assert not fits(specs(storage=128), MinSpecs(storage_gb=256))


def test_a_missing_device_value_fails_a_stated_minimum():
    no_battery = HardwareSpecs(cpu_cores=4, ram_gb=8)
    assert not fits(no_battery, MinSpecs(battery_health_pct=10))
    assert not fits(no_battery, MinSpecs(storage_gb=1))
    assert fits(no_battery, MinSpecs(ram_gb=8))


def test_only_devices_of_the_requested_category_are_allocated():
    desktop = device(DESKTOP)
    r = request(category=LAPTOP)
    assert match([r], [desktop]) == []


def test_a_device_below_the_minimum_specs_is_not_allocated():
    weak, strong = device(ram=4), device(ram=16)
    r = request(missing=2, ram_gb=8)
    assert given(match([r], [weak, strong])) == {strong.device_id: r.request_id}


def test_the_most_urgent_priority_is_served_first():
    urgent, relaxed = request(priority=1, opened=5), request(priority=4, opened=0)
    only = device()
    assert given(match([relaxed, urgent], [only])) == {only.device_id: urgent.request_id}


def test_at_equal_priority_the_earliest_deadline_is_served_first_and_none_last():
    soon = request(deadline=date(2026, 2, 1), opened=9)
    later = request(deadline=date(2026, 6, 1), opened=1)
    never = request(deadline=None, opened=0)
    a, b = device(), device()
    assert set(given(match([never, later, soon], [a, b])).values()) == {
        soon.request_id,
        later.request_id,
    }
    one = device()
    assert given(match([never, later, soon], [one])) == {one.device_id: soon.request_id}


def test_at_equal_priority_and_deadline_the_longest_waiting_request_is_served_first():
    old, new = request(opened=0), request(opened=3)
    only = device()
    assert given(match([new, old], [only])) == {only.device_id: old.request_id}


def test_the_smallest_sufficient_device_is_taken_keeping_better_ones_for_demanding_requests():
    big, small = device(ram=16, storage=512), device(ram=8, storage=256)
    modest = request(priority=1, ram_gb=4)
    demanding = request(priority=2, ram_gb=16)
    assert given(match([modest, demanding], [big, small])) == {
        small.device_id: modest.request_id,
        big.device_id: demanding.request_id,
    }


def test_ties_in_size_go_by_ram_then_storage_then_cores():
    more_storage = device(ram=8, storage=512, cores=2)
    more_cores = device(ram=8, storage=256, cores=8)
    fewer_cores = device(ram=8, storage=256, cores=2)
    r = request(missing=1)
    assert given(match([r], [more_storage, more_cores, fewer_cores])) == {
        fewer_cores.device_id: r.request_id
    }


def test_among_equal_devices_the_longest_in_stock_goes_first():
    newer, older = device(since=5), device(since=1)
    r = request()
    assert given(match([r], [newer, older])) == {older.device_id: r.request_id}


def test_a_request_takes_what_fits_when_there_is_not_enough():
    r = request(missing=5)
    devices = [device(), device()]
    assert len(match([r], devices)) == 2


def test_a_request_takes_no_more_than_it_still_lacks():
    r = request(missing=2)
    assert len(match([r], [device() for _ in range(5)])) == 2


def test_a_request_that_lacks_nothing_takes_nothing():
    assert match([request(missing=0)], [device()]) == []


def test_no_device_goes_to_two_requests():
    requests = [request(missing=3, opened=i) for i in range(4)]
    devices = [device() for _ in range(7)]
    matches = match(requests, devices)
    assert len(matches) == 7
    assert len({m.device_id for m in matches}) == 7
