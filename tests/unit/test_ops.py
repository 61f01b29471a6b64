"""The operations overview's arithmetic: rates from offset samples, consumer lag, stuck devices."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from rich.console import Console

from services.custody.ops import (
    DEFAULT_STUCK_AFTER_S,
    BadThresholds,
    since_in_stage,
    stuck_thresholds,
    summarize,
)
from services.custody.store import literal_pattern
from shared.stages import STAGES
from tools.ops import (
    DeadLetterCount,
    GroupLag,
    OffsetSample,
    Overview,
    group_lag,
    human_duration,
    records_held,
    render,
    topic_rates,
    total_rate,
)

NOW = datetime(2030, 3, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# ---- rates ------------------------------------------------------------------------------------


def test_rates_are_the_growth_of_end_offsets_per_second_summed_over_partitions():
    before = OffsetSample(10.0, {("ns_a", 0): 5, ("ns_a", 1): 7, ("ns_b", 0): 100})
    after = OffsetSample(12.5, {("ns_a", 0): 9, ("ns_a", 1): 13, ("ns_b", 0): 100})
    rates = {r.topic: r for r in topic_rates(before, after, "ns_")}
    assert rates["a"].messages == 22
    assert rates["a"].per_second == pytest.approx(10 / 2.5)
    assert rates["b"].messages == 100
    assert rates["b"].per_second == 0
    assert total_rate(rates.values()) == pytest.approx(4.0)


def test_without_an_earlier_sample_or_for_a_new_topic_there_is_no_rate_yet():
    only = OffsetSample(3.0, {("a", 0): 4})
    assert [r.per_second for r in topic_rates(None, only)] == [None]
    assert total_rate(topic_rates(None, only)) is None
    later = OffsetSample(4.0, {("a", 0): 6, ("b", 0): 9})
    rates = {r.topic: r.per_second for r in topic_rates(only, later)}
    assert rates == {"a": 2.0, "b": None}


def test_a_rate_never_goes_negative_when_a_topic_was_recreated():
    before = OffsetSample(0.0, {("a", 0): 50})
    after = OffsetSample(2.0, {("a", 0): 3})
    assert topic_rates(before, after)[0].per_second == 0


# ---- lag --------------------------------------------------------------------------------------


def test_lag_is_end_minus_committed_offset_per_topic():
    end = {("in", 0): 10, ("in", 1): 4, ("other", 0): 99}
    committed = {("in", 0): 7, ("in", 1): 4}
    assert group_lag(committed, {}, end, {"in"}) == {"in": 3}


def test_a_partition_never_committed_counts_from_its_beginning():
    end = {("in", 0): 10, ("in", 1): 8}
    beginning = {("in", 0): 0, ("in", 1): 2}
    assert group_lag({("in", 0): 10}, beginning, end, {"in"}) == {"in": 6}


def test_a_committed_offset_older_than_retention_counts_from_the_beginning():
    end, beginning = {("in", 0): 100}, {("in", 0): 90}
    assert group_lag({("in", 0): 5}, beginning, end, {"in"}) == {"in": 10}


def test_lag_ignores_topics_the_group_does_not_read_or_that_do_not_exist():
    end = {("in", 0): 10, ("out", 0): 50}
    assert group_lag({("in", 0): 10}, {}, end, {"in", "gone"}) == {"in": 0}


def test_dead_letters_held_are_end_minus_beginning_of_that_topic():
    end = {("dl", 0): 5, ("dl", 1): 2, ("x", 0): 40}
    assert records_held({("dl", 0): 1}, end, "dl") == 6
    assert records_held({}, end, "missing") == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.9, "42s"), (725, "12m 5s"), (7_500, "2h 5m"), (273_600, "3d 4h"), (-5, "0s")],
)
def test_durations_read_as_their_two_largest_units(seconds, text):
    assert human_duration(seconds) == text


# ---- stages: thresholds -----------------------------------------------------------------------


def test_without_a_threshold_the_defaults_apply_and_terminal_stages_are_never_stuck():
    thresholds = stuck_thresholds(None)
    assert thresholds == DEFAULT_STUCK_AFTER_S
    assert thresholds["received"] == 2 * 86_400
    assert thresholds["allocated"] == 7 * 86_400
    assert thresholds["recycled"] is None
    assert thresholds["lost"] is None


def test_a_number_of_seconds_applies_to_every_stage_that_can_be_stuck():
    thresholds = stuck_thresholds("90")
    assert thresholds["received"] == thresholds["shipped"] == 90
    assert thresholds["recycled"] is thresholds["lost"] is None
    assert thresholds["broken"] == 90, "a broken device waits to be returned: it can be stuck"


def test_a_json_object_overrides_only_the_stages_it_names():
    thresholds = stuck_thresholds('{"received": 60, "delivered": 3600}')
    assert thresholds["received"] == 60
    assert thresholds["delivered"] == 3600
    assert thresholds["diagnosed"] == DEFAULT_STUCK_AFTER_S["diagnosed"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("soon", "expected seconds"),
        ("-1", ">= 0"),
        ("1e999", "finite"),
        ("1" + "0" * 400, "finite"),
        ('{"melted": 5}', "unknown stage"),
        ('{"recycled": 5}', "terminal"),
        ('{"received": "5"}', "number of seconds"),
        ('{"received": true}', "number of seconds"),
        ("[" * 3000 + "]" * 3000, "expected seconds"),
        ("[1]", "number of seconds"),
    ],
)
def test_bad_thresholds_are_refused_with_the_reason(text, reason):
    with pytest.raises(BadThresholds, match=re.escape(reason)):
        stuck_thresholds(text)


# ---- stages: since when, oldest, stuck --------------------------------------------------------


def entry(event_type: str, at: datetime, **details: Any) -> dict[str, Any]:
    return {"event_type": event_type, "occurred_at": at, "details": details}


def row(tag: str, stage: str, *history: dict[str, Any], received_at=NOW) -> dict[str, Any]:
    return {
        "_id": str(uuid4()),
        "asset_tag": tag,
        "stage": stage,
        "received_at": received_at,
        "history": list(history),
    }


def test_a_device_is_in_its_stage_since_the_first_event_that_led_there():
    delivered = row(
        "T1",
        "delivered",
        entry("device.received", NOW - 9 * DAY),
        entry("device.delivered", NOW - 3 * DAY),
        entry("device.usage_reported", NOW - DAY),
    )
    assert since_in_stage(delivered) == NOW - 3 * DAY


def test_a_late_event_of_an_earlier_stage_does_not_change_since_when():
    shipped = row(
        "T2",
        "shipped",
        entry("device.shipped", NOW - 2 * DAY),
        entry("device.wiped", NOW - HOUR),
    )
    assert since_in_stage(shipped) == NOW - 2 * DAY


def test_a_reported_condition_is_a_stage_of_its_own():
    lost = row("T3", "lost", entry("device.reported", NOW - 5 * HOUR, condition="lost"))
    assert since_in_stage(lost) == NOW - 5 * HOUR


def test_without_history_the_time_of_receipt_counts_and_naive_times_are_utc():
    bare = row("T4", "received", received_at=datetime(2030, 3, 1, 8, 0))
    assert since_in_stage(bare) == datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


def fleet() -> list[dict[str, Any]]:
    return [
        row("R-new", "received", entry("device.received", NOW - HOUR)),
        row("R-old", "received", entry("device.received", NOW - 3 * DAY)),
        row("R-older", "received", entry("device.received", NOW - 5 * DAY)),
        row("D-1", "diagnosed", entry("device.diagnosed", NOW - DAY)),
        row("L-1", "lost", entry("device.reported", NOW - 400 * DAY, condition="lost")),
    ]


def test_devices_are_counted_per_stage_with_the_oldest_first():
    view = summarize(fleet(), now=NOW, thresholds=DEFAULT_STUCK_AFTER_S)
    stages = {s.stage: s for s in view.stages}
    assert [s.stage for s in view.stages] == list(STAGES)
    assert view.total == 5
    assert {s: stages[s].count for s in ("received", "diagnosed", "lost", "ready")} == {
        "received": 3,
        "diagnosed": 1,
        "lost": 1,
        "ready": 0,
    }
    oldest = stages["received"].oldest
    assert oldest is not None
    assert oldest.asset_tag == "R-older"
    assert oldest.age_s == 5 * 86_400
    assert stages["ready"].oldest is None


def test_devices_waiting_longer_than_their_stage_allows_are_stuck_oldest_first():
    view = summarize(fleet(), now=NOW, thresholds=DEFAULT_STUCK_AFTER_S)
    stages = {s.stage: s for s in view.stages}
    assert stages["received"].stuck == 2
    assert [d.asset_tag for d in stages["received"].stuck_devices] == ["R-older", "R-old"]
    assert stages["diagnosed"].stuck == 0
    assert stages["lost"].stuck == 0
    assert stages["lost"].stuck_after_s is None


def test_stuck_devices_listed_are_limited_but_all_are_counted():
    view = summarize(fleet(), now=NOW, thresholds=stuck_thresholds("60"), limit=1)
    received = next(s for s in view.stages if s.stage == "received")
    assert received.stuck == 3
    assert [d.asset_tag for d in received.stuck_devices] == ["R-older"]
    diagnosed = next(s for s in view.stages if s.stage == "diagnosed")
    assert diagnosed.stuck == 1


def test_a_device_exactly_at_its_threshold_is_not_yet_stuck():
    exactly = [row("X", "received", entry("device.received", NOW - DAY))]
    view = summarize(exactly, now=NOW, thresholds={"received": 86_400.0})
    assert view.stages[0].stuck == 0


@pytest.mark.parametrize("text", ["SN-1", "5CG8.12*X", "a+b(c)[d]{e}|f^g$h\\i?", "two words"])
def test_a_literal_pattern_matches_the_text_alone_ignoring_case(text):
    pattern = re.compile(literal_pattern(text), re.IGNORECASE)
    assert pattern.match(text)
    assert pattern.match(text.swapcase())
    assert not pattern.match(text + "x")
    assert not pattern.match("x" + text)


# ---- the console screen -----------------------------------------------------------------------


def test_the_console_shows_stages_lag_dead_letters_and_rates():
    stages = summarize(fleet(), now=NOW, thresholds=DEFAULT_STUCK_AFTER_S)
    rates = topic_rates(
        OffsetSample(0.0, {("device.received", 0): 10}),
        OffsetSample(2.0, {("device.received", 0): 16, ("deadletter", 0): 1}),
    )
    overview = Overview(
        namespace="",
        taken_at=NOW,
        window_s=2.0,
        topics=rates,
        messages_total=17,
        per_second_total=total_rate(rates),
        groups=[
            GroupLag(
                service="diagnostics",
                group="diagnostics",
                state="Stable",
                members=1,
                lag=12,
                by_topic={"device.received": 12},
            )
        ],
        dead_letters=DeadLetterCount(total=1, by_source={"device.received": 1}),
        stages=stages,
        stages_error=None,
        stuck_after=None,
    )
    console = Console(record=True, width=160)
    console.print(render(overview))
    screen = console.export_text()
    assert "R-older" in screen
    assert "device.received 12" in screen
    assert "Dead letters: 1" in screen
    assert "3.0" in screen  # (16 - 10) messages in 2 s
