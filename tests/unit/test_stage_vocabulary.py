"""One story of a device's stages: `shared.stages` defines them once; allocation's domain decides
which states a device can still leave; the vocabulary's terminal stages, the ops defaults,
allocation's OpenAPI and the README say the same."""

import json
import re
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from services.allocation import domain
from services.allocation.domain import DeviceState
from services.custody.ops import (
    DEFAULT_STUCK_AFTER_S,
    BadThresholds,
    defaults_text,
    stuck_thresholds,
)
from shared.domain import IllegalTransition
from shared.events import ALL_EVENTS, DeviceCategory, DeviceEvent, Grade, HardwareSpecs
from shared.stages import RANK, STAGE_OF_EVENT, STAGES, TERMINAL_STAGES, stage_of_entry
from tools.cluster import project_root

NOW = datetime(2030, 3, 1, tzinfo=UTC)
AT_RECIPIENT = (DeviceState.DELIVERED, DeviceState.BROKEN, DeviceState.LOST)
"""The states allocation has the last word on; a returned device is recycling's to move on."""


def at_recipient(state: DeviceState) -> domain.StockDevice:
    return domain.StockDevice(
        device_id=uuid4(),
        state=state,
        category=DeviceCategory.LAPTOP,
        specs=HardwareSpecs(cpu_cores=4, ram_gb=8),
        cosmetic_grade=Grade.A,
        functional_grade=Grade.A,
        erasure_certificate_id=uuid4(),
        pickup_id=uuid4(),
        ready_at=NOW,
        request_id=uuid4(),
        recipient_id="school-1",
    )


def reachable(state: DeviceState) -> set[DeviceState]:
    """The states allocation lets a device in `state` move to, by report or return."""
    device = at_recipient(state)
    attempts = [
        *(
            lambda c=condition: domain.report(
                device, condition=c, note=None, event_id=uuid4(), now=NOW
            )
            for condition in ("broken", "lost")
        ),
        *(
            lambda r=reason: domain.return_device(
                device, reason=r, note=None, event_id=uuid4(), now=NOW
            )
            for reason in ("end_of_life", "broken")
        ),
    ]
    states = set()
    for attempt in attempts:
        try:
            after, _ = attempt()
        except IllegalTransition:
            continue
        states.add(after.state)
    return states - {state}


def returnable() -> set[str]:
    return {s.value for s in AT_RECIPIENT if DeviceState.RETURNED in reachable(s)}


def test_a_broken_device_can_be_returned_and_a_lost_one_goes_nowhere():
    assert reachable(DeviceState.BROKEN) == {DeviceState.RETURNED}
    assert reachable(DeviceState.LOST) == set()


@pytest.mark.parametrize("state", AT_RECIPIENT, ids=str)
def test_intake_calls_a_stage_terminal_exactly_when_allocation_lets_no_device_leave_it(state):
    assert (state.value in TERMINAL_STAGES) == (not reachable(state))


@pytest.mark.parametrize("stage", STAGES)
def test_only_terminal_stages_are_never_stuck_and_refuse_a_threshold(stage):
    per_stage = json.dumps({stage: 60})
    if stage in TERMINAL_STAGES:
        assert DEFAULT_STUCK_AFTER_S[stage] is None
        assert stuck_thresholds("60")[stage] is None
        with pytest.raises(BadThresholds, match="terminal"):
            stuck_thresholds(per_stage)
    else:
        assert stuck_thresholds("60")[stage] == 60
        assert stuck_thresholds(per_stage)[stage] == 60


def _allocation_summary(path: str) -> set[str]:
    """The device states a summary of allocation's OpenAPI names."""
    from services.allocation.main import app

    summary = app.openapi()["paths"][path]["post"]["summary"].lower()
    return {s.value for s in DeviceState if re.search(rf"\b{s.value}\b", summary)}


def test_allocations_openapi_names_the_states_its_domain_allows():
    assert _allocation_summary("/devices/{device_id}/return") == returnable()
    reported_from = {s.value for s in AT_RECIPIENT if reachable(s) - {DeviceState.RETURNED}}
    conditions = {s for s in reachable(DeviceState.DELIVERED) if s is not DeviceState.RETURNED}
    assert _allocation_summary("/devices/{device_id}/report") == reported_from | conditions


def _readme() -> str:
    return (project_root() / "README.md").read_text()


def test_the_readme_states_the_stuck_defaults_and_terminal_stages_the_code_has():
    text = " ".join(_readme().split())
    assert f"Defaults: {defaults_text()}." in text
    terminal = set(re.findall(r"(\w+) \(terminal\)", text))
    assert terminal
    assert terminal <= TERMINAL_STAGES
    assert f"Only {' and '.join(sorted(TERMINAL_STAGES, key=STAGES.index))} are terminal" in text
    api_row = next(line for line in _readme().splitlines() if "`POST /devices/{id}/return`" in line)
    returned = re.search(r"return an? ([\w ,]+?) device", api_row)
    assert returned
    assert set(re.split(r", | or ", returned[1])) == returnable()


def test_the_readmes_ops_screen_shows_never_only_for_stages_without_a_default():
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in _readme().splitlines()
        if line.startswith("│ ")
    ]
    shown = {row[0]: row[5] for row in rows if row[0] in STAGES and row[0] != "received"}
    assert len(shown) >= len(STAGES) - 2  # received has a threshold given; one name is cut
    assert {s: never == "never" for s, never in shown.items()} == {
        s: DEFAULT_STUCK_AFTER_S[s] is None for s in shown
    }


def test_a_device_at_its_recipient_is_known_to_both_services_by_the_same_names():
    assert {s.value for s in AT_RECIPIENT} <= set(STAGES)


def test_every_device_event_moves_a_device_to_a_known_stage():
    device_events = {cls for cls in ALL_EVENTS if issubclass(cls, DeviceEvent)}
    assert set(STAGE_OF_EVENT) == device_events
    assert {s for s in STAGE_OF_EVENT.values() if s is not None} <= set(STAGES)


def test_stages_are_ranked_in_lifecycle_order_and_the_ops_defaults_name_each_once():
    assert [RANK[s] for s in STAGES] == sorted(RANK[s] for s in STAGES)
    assert list(DEFAULT_STUCK_AFTER_S) == list(STAGES)


def test_a_report_moves_a_device_to_its_condition():
    assert stage_of_entry("device.reported", {"condition": "lost"}) == "lost"
    assert stage_of_entry("device.usage_reported", {}) == "delivered"
    assert stage_of_entry("device.unheard_of", {}) is None
