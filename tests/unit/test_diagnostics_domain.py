from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from services.diagnostics import domain
from services.diagnostics.domain import Device, DeviceState
from services.diagnostics.rules import (
    Cosmetic,
    GradingRules,
    TestResults,
    assess,
    cosmetic_grade,
    functional_grade,
    load_rules,
)
from shared.domain import IllegalTransition
from shared.events import (
    Decision,
    DeviceCategory,
    DeviceDiagnosed,
    DeviceReady,
    DeviceReceived,
    DeviceReleasedForRecycling,
    DeviceWiped,
    Drive,
    DriveKind,
    ErasureRecord,
    Grade,
    HardwareSpecs,
    MinSpecs,
    SanitizationMethod,
)
from shared.examples import EXAMPLES
from shared.ids import derive_id

NOW = datetime(2026, 11, 3, 10, tzinfo=UTC)
RULES = GradingRules()
ids = partial(derive_id, "diagnostics")

ALL_PASS = dict.fromkeys(
    ["boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"],
    "pass",
)
PRISTINE = Cosmetic(casing="none", screen_scratches="none")


def results_with(**outcomes: str) -> TestResults:
    return TestResults.model_validate(ALL_PASS | outcomes)


def laptop_specs(*serials: str, ram_gb: float = 8, battery: int | None = 85) -> HardwareSpecs:
    return HardwareSpecs(
        cpu_cores=4,
        ram_gb=ram_gb,
        drives=[Drive(serial=s, kind=DriveKind.SSD, capacity_gb=256) for s in serials],
        battery_health_pct=battery,
    )


def received(category: DeviceCategory = DeviceCategory.LAPTOP) -> Device:
    event = EXAMPLES[DeviceReceived].model_copy(
        update={"device_id": uuid4(), "event_id": uuid4(), "category": category}
    )
    assert isinstance(event, DeviceReceived)
    return domain.receive(event)


def diagnosed(
    device: Device,
    specs: HardwareSpecs,
    tests: TestResults | None = None,
    cosmetic: Cosmetic = PRISTINE,
) -> tuple[Device, list]:
    tests = tests or results_with()
    return domain.diagnose(
        device,
        report_id=uuid4(),
        specs=specs,
        tests=tests.model_dump(),
        cosmetic=cosmetic.model_dump(),
        assessment=assess(RULES, device.category, specs, tests, cosmetic),
        tested_by="staff-x",
        tested_at=NOW,
        location="bench 1",
        now=NOW,
        ids=ids,
    )


def erasure(
    serial: str, method: SanitizationMethod = SanitizationMethod.PURGE, verified: bool = True
) -> ErasureRecord:
    return ErasureRecord(
        drive_serial=serial,
        method=method,
        technique="crypto erase",
        tool="nwipe",
        tool_version="0.37",
        verified=verified,
        verification="full read-back",
        operator="staff-x",
        performed_at=NOW,
        location="bench 1",
    )


def erase(device: Device, record: ErasureRecord) -> tuple[Device, list]:
    return domain.record_erasure(device, record, now=NOW, ids=ids)


# ---- grading rules -------------------------------------------------------------------------


def test_a_failed_critical_component_makes_the_functional_grade_d():
    grade, reason = functional_grade(
        RULES, DeviceCategory.LAPTOP, laptop_specs("S"), results_with(boot="fail")
    )
    assert grade is Grade.D
    assert reason == "functional grade D: boot failed"


def test_no_failures_and_a_healthy_battery_make_grade_a():
    assert (
        functional_grade(RULES, DeviceCategory.LAPTOP, laptop_specs(), results_with())[0] is Grade.A
    )


def test_a_device_without_battery_can_be_grade_a():
    specs = laptop_specs(battery=None)
    result = functional_grade(RULES, DeviceCategory.DESKTOP, specs, results_with(battery="n/a"))
    assert result[0] is Grade.A


def test_a_worn_battery_lowers_the_functional_grade_to_b_then_c():
    b = functional_grade(RULES, DeviceCategory.LAPTOP, laptop_specs(battery=60), results_with())
    c = functional_grade(RULES, DeviceCategory.LAPTOP, laptop_specs(battery=40), results_with())
    assert b[0] is Grade.B
    assert c == (Grade.C, "functional grade C: battery health 40% < 50%")


def test_only_minor_failures_make_the_functional_grade_c():
    tests = results_with(keyboard="fail", ports="fail")
    grade, reason = functional_grade(RULES, DeviceCategory.LAPTOP, laptop_specs(), tests)
    assert grade is Grade.C
    assert "keyboard failed" in reason
    assert "ports failed" in reason


def test_a_failed_screen_on_a_laptop_makes_the_functional_grade_d():
    tests = results_with(screen="fail")
    grade, reason = functional_grade(RULES, DeviceCategory.LAPTOP, laptop_specs(), tests)
    assert grade is Grade.D
    assert reason == "functional grade D: screen failed on a laptop"


def test_a_failed_screen_listed_as_minor_still_makes_a_phone_grade_d_but_a_desktop_c():
    rules = GradingRules(minor_components=["ports", "keyboard", "battery", "network", "screen"])
    tests = results_with(screen="fail")
    assert functional_grade(rules, DeviceCategory.PHONE, laptop_specs(), tests)[0] is Grade.D
    assert functional_grade(rules, DeviceCategory.DESKTOP, laptop_specs(), tests)[0] is Grade.C


@pytest.mark.parametrize(
    ("cosmetic", "grade"),
    [
        (Cosmetic(casing="none", screen_scratches="none"), Grade.A),
        (Cosmetic(casing="light", screen_scratches="none"), Grade.B),
        (Cosmetic(casing="light", screen_scratches="heavy"), Grade.C),
        (Cosmetic(casing="none", screen_scratches="none", cracked=True), Grade.D),
    ],
)
def test_cosmetic_grade_follows_wear_and_cracks(cosmetic, grade):
    assert cosmetic_grade(cosmetic)[0] is grade


def test_a_graded_device_meeting_its_minimums_is_refurbished():
    result = assess(RULES, DeviceCategory.LAPTOP, laptop_specs("S"), results_with(), PRISTINE)
    assert result.decision is Decision.REFURBISH
    assert result.rules_version == "2026-11-default"


def test_a_laptop_below_its_ram_minimum_is_recycled_with_the_rule_named():
    specs = laptop_specs("S", ram_gb=2)
    result = assess(RULES, DeviceCategory.LAPTOP, specs, results_with(), PRISTINE)
    assert result.decision is Decision.RECYCLE
    assert result.reason == "below laptop minimum: 2 GB RAM < 4 GB"


def test_a_cracked_device_is_recycled_and_every_deciding_rule_is_named():
    cracked = Cosmetic(casing="none", screen_scratches="none", cracked=True)
    result = assess(
        RULES, DeviceCategory.LAPTOP, laptop_specs(), results_with(boot="fail"), cracked
    )
    assert result.decision is Decision.RECYCLE
    assert "functional grade D: boot failed" in result.reason
    assert "cosmetic grade D: cracked" in result.reason
    assert "below laptop minimum: 0 GB storage < 64 GB" in result.reason


def test_a_monitor_has_no_minimum_specs():
    specs = HardwareSpecs()
    tests = TestResults.model_validate(dict.fromkeys(ALL_PASS, "n/a") | {"screen": "pass"})
    result = assess(RULES, DeviceCategory.MONITOR, specs, tests, PRISTINE)
    assert result.decision is Decision.REFURBISH


def test_rules_load_from_a_json_file_and_reject_unknown_fields(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": "strict-1", "min_specs": {"laptop": {"ram_gb": 16}}}))
    rules = load_rules(path)
    assert rules.version == "strict-1"
    assert rules.min_specs[DeviceCategory.LAPTOP] == MinSpecs(ram_gb=16)
    path.write_text(json.dumps({"versoin": "typo"}))
    with pytest.raises(ValidationError):
        load_rules(path)
    assert load_rules(None) == GradingRules()


def test_test_results_refuse_unknown_outcomes_and_missing_components():
    with pytest.raises(ValidationError):
        TestResults.model_validate(ALL_PASS | {"boot": "maybe"})
    with pytest.raises(ValidationError):
        TestResults.model_validate({"boot": "pass"})


# ---- transitions ---------------------------------------------------------------------------


def test_a_received_device_waits_for_its_report():
    device = received()
    assert device.state is DeviceState.RECEIVED
    assert device.pending_drives() == []
    assert device.certificate is None


def test_diagnosis_emits_device_diagnosed_correlated_with_the_pickup():
    device = received()
    after, events = diagnosed(device, laptop_specs("S1"))
    assert after.state is DeviceState.DIAGNOSED
    assert after.pending_drives() == ["S1"]
    [event] = events
    assert isinstance(event, DeviceDiagnosed)
    assert event.correlation_id == device.pickup_id
    assert event.causation_id == device.received_event_id
    assert event.decision is Decision.REFURBISH


def test_a_diagnosed_device_cannot_be_diagnosed_again():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    with pytest.raises(IllegalTransition) as refused:
        diagnosed(device, laptop_specs("S1"))
    assert refused.value.state == "diagnosed"
    assert refused.value.correlation_id == device.pickup_id


def test_an_undiagnosed_device_cannot_have_erasures_recorded():
    with pytest.raises(IllegalTransition, match="not been diagnosed"):
        erase(received(), erasure("S1"))


def test_an_erasure_of_a_drive_not_in_the_report_is_refused():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    with pytest.raises(IllegalTransition, match="not in the device's test report"):
        erase(device, erasure("OTHER"))


def test_destroying_the_storage_of_a_refurbishable_device_is_refused():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    with pytest.raises(IllegalTransition, match="destroying storage makes it unfit for reuse"):
        erase(device, erasure("S1", SanitizationMethod.DESTROY))


def test_an_unverified_erasure_is_recorded_but_leaves_the_drive_pending():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    after, events = erase(device, erasure("S1", verified=False))
    assert events == []
    assert after.state is DeviceState.DIAGNOSED
    assert after.pending_drives() == ["S1"]
    assert len(after.erasures) == 1


def test_a_refurbishable_device_becomes_ready_only_when_every_drive_is_verified_erased():
    device, _ = diagnosed(received(), laptop_specs("S1", "S2"))
    device, events = erase(device, erasure("S1"))
    assert events == []
    assert device.state is DeviceState.DIAGNOSED
    device, events = erase(device, erasure("S2", SanitizationMethod.CLEAR))
    assert device.state is DeviceState.READY
    wiped, ready = events
    assert isinstance(wiped, DeviceWiped)
    assert isinstance(ready, DeviceReady)
    certificate_id = derive_id("diagnostics", device.device_id, "erasure-certificate")
    assert device.certificate_id == certificate_id
    assert wiped.certificate_id == ready.erasure_certificate_id == certificate_id
    assert [e.drive_serial for e in wiped.erasures] == ["S1", "S2"]
    assert ready.causation_id == wiped.event_id


def test_the_certificate_names_the_device_and_how_each_drive_was_sanitized():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    device, _ = erase(device, erasure("S1"))
    certificate = device.certificate
    assert certificate is not None
    assert (certificate.make, certificate.model) == (device.make, device.model)
    assert certificate.serial_number == device.serial_number
    assert certificate.asset_tag == device.asset_tag
    [drive] = certificate.drives
    assert (drive.serial, drive.kind, drive.capacity_gb) == ("S1", DriveKind.SSD, 256)
    assert (drive.method, drive.tool, drive.tool_version) == (
        SanitizationMethod.PURGE,
        "nwipe",
        "0.37",
    )
    assert drive.verified
    assert (drive.operator, drive.location, drive.performed_at) == ("staff-x", "bench 1", NOW)


def test_no_erasure_is_accepted_after_the_certificate_was_issued():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    device, _ = erase(device, erasure("S1"))
    with pytest.raises(IllegalTransition, match="already issued"):
        erase(device, erasure("S1"))


def test_a_device_decided_for_recycling_is_released_once_drives_are_destroyed_or_erased():
    device, events = diagnosed(received(), laptop_specs("S1", "S2"), results_with(boot="fail"))
    assert events[0].decision is Decision.RECYCLE
    device, events = erase(device, erasure("S1", SanitizationMethod.DESTROY))
    assert events == []
    device, events = erase(device, erasure("S2", SanitizationMethod.CLEAR))
    assert device.state is DeviceState.AWAITING_RECYCLING
    wiped, released = events
    assert isinstance(wiped, DeviceWiped)
    assert isinstance(released, DeviceReleasedForRecycling)
    assert released.reason == "functional grade D: boot failed"
    assert released.erasure_certificate_id == device.certificate_id
    assert released.drive_serials == ["S1", "S2"]


def test_a_device_without_drives_is_certified_with_no_erasures_at_diagnosis():
    monitor = received(DeviceCategory.MONITOR)
    tests = TestResults.model_validate(dict.fromkeys(ALL_PASS, "n/a"))
    device, events = diagnosed(monitor, HardwareSpecs(), tests)
    assert device.state is DeviceState.READY
    _, wiped, ready = events
    assert isinstance(wiped, DeviceWiped)
    assert wiped.erasures == []
    assert isinstance(ready, DeviceReady)
    assert device.certificate is not None
    assert device.certificate.drives == []


def test_completion_event_ids_are_derived_so_a_replay_yields_the_same_ids():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    _, first = erase(device, erasure("S1"))
    _, second = erase(device, erasure("S1"))
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert all(isinstance(e.event_id, UUID) for e in first)


def test_the_rules_file_is_named_by_an_environment_variable(tmp_path, monkeypatch):
    from services.diagnostics.settings import Settings

    path = tmp_path / "rules.json"
    monkeypatch.setenv("GREENIT_DIAGNOSTICS_RULES_FILE", str(path))
    assert Settings().rules_file == path
    monkeypatch.setenv("GREENIT_DIAGNOSTICS_RULES_FILE", "")
    assert Settings().rules_file is None


# ---- workbench uploads (v1.2): retried reports and erasures change nothing ------------------


def test_the_same_report_again_changes_nothing_even_after_diagnosis():
    device = received()
    specs = laptop_specs("S1")
    tests = results_with()
    report_id = uuid4()

    def submit(d: Device) -> tuple[Device, list]:
        return domain.diagnose(
            d,
            report_id=report_id,
            specs=specs,
            tests=tests.model_dump(),
            cosmetic=PRISTINE.model_dump(),
            assessment=assess(RULES, d.category, specs, tests, PRISTINE),
            tested_by="workbench-1",
            tested_at=NOW,
            location="bench 1",
            now=NOW,
            ids=ids,
        )

    once, events = submit(device)
    twice, again = submit(once)

    assert len(events) == 1
    assert (twice, again) == (once, [])
    with pytest.raises(IllegalTransition, match="already diagnosed"):
        diagnosed(once, specs)  # another report is still refused


def test_an_erasure_sent_twice_is_recorded_once_even_after_the_certificate():
    device, _ = diagnosed(received(), laptop_specs("S1"))
    record = erasure("S1").model_copy(update={"erasure_id": uuid4()})

    certified, events = erase(device, record)
    again, more = erase(certified, record)

    assert certified.state is DeviceState.READY
    assert len(events) == 2
    assert (again, more) == (certified, [])
    assert again.erasures == [record]
