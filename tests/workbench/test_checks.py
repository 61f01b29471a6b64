"""The workbench's tests, run for real on this machine and on recorded machines' snapshots."""

from __future__ import annotations

from pathlib import Path

from workbench import checks, snapshot

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> snapshot.Snapshot:
    return snapshot.build(snapshot.load_raw(FIXTURES / name))


def test_the_cpu_check_loads_every_core_and_checks_its_results():
    check = checks.cpu_check(seconds=0.5, workers=2)

    assert check.outcome == "pass"
    assert check.raw.count("rounds") == 2
    assert check.seconds >= 0.5


def test_the_memory_check_is_bounded_and_keeps_its_output():
    check = checks.memory_check(megabytes=16)

    assert check.outcome == "pass"
    assert "16" in check.summary
    assert check.raw


def test_a_worn_battery_fails_and_a_good_one_passes():
    laptop = recorded("thinkpad-t480")  # 72 % of design

    assert checks.battery_check(laptop).outcome == "pass"
    assert checks.battery_check(laptop, min_health_pct=80).outcome == "fail"
    assert checks.battery_check(recorded("optiplex-7050")).outcome == "n/a"


def test_storage_fails_on_a_drive_with_failed_smart_health():
    desktop = recorded("optiplex-7050")
    failing = desktop.model_copy(
        update={"drives": [desktop.drives[0].model_copy(update={"smart_passed": False})]}
    )

    assert checks.storage_check(desktop, self_test=False).outcome == "pass"
    assert checks.storage_check(failing, self_test=False).outcome == "fail"
    assert checks.storage_check(recorded("firecracker-vm"), self_test=False).outcome == "n/a"


def test_a_full_run_gives_diagnostics_its_nine_results():
    run = checks.run_checks(
        recorded("thinkpad-t480"),
        memory_mb=8,
        cpu_seconds=0.2,
        smart_self_test=False,
        operator={"screen": "pass", "keyboard": "fail"},
    )

    assert list(run.results) == list(checks.COMPONENTS)
    assert run.results["screen"] == "pass"
    assert run.results["keyboard"] == "fail"
    assert run.results["ports"] == "n/a"
    assert run.results["battery"] == "pass"
    assert run.results["network"] == "pass"
    assert checks.TestRun.model_validate_json(run.model_dump_json()) == run
