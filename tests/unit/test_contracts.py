import json
from uuid import uuid4

import pytest
from pydantic import ValidationError

from shared.codec import PoisonMessage, decode, encode, headers_for
from shared.events import ALL_EVENTS, EVENT_TYPES, DeviceReceived, Event, MinSpecs
from shared.examples import EXAMPLES
from shared.topics import ALL_TOPICS, DEAD_LETTER, EVENT_TOPICS, topic_of


@pytest.mark.parametrize("event", list(EXAMPLES.values()), ids=lambda e: e.event_type)
def test_every_event_round_trips_through_json(event: Event):
    assert decode(encode(event)) == event


def test_every_event_in_the_catalogue_has_an_example_and_a_topic():
    assert set(EXAMPLES) == set(ALL_EVENTS)
    assert set(EVENT_TOPICS) == set(ALL_EVENTS)
    assert len({t.name for t in ALL_TOPICS}) == len(ALL_TOPICS)
    assert DEAD_LETTER in ALL_TOPICS


def test_examples_appear_in_the_json_schema():
    for cls in ALL_EVENTS:
        schema = cls.model_json_schema()
        assert schema["examples"], cls


def _example_payload(cls: type[Event]) -> dict:
    return json.loads(encode(EXAMPLES[cls]))


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_unknown_fields_are_rejected(cls: type[Event]):
    payload = _example_payload(cls) | {"surprise": 1}
    with pytest.raises(PoisonMessage, match="surprise: Extra inputs are not permitted"):
        decode(json.dumps(payload))


def test_nested_unknown_fields_are_rejected():
    payload = json.loads(
        encode(next(e for e in EXAMPLES.values() if e.event_type == "device.diagnosed"))
    )
    payload["specs"]["gpu"] = "RTX"
    with pytest.raises(PoisonMessage, match=r"specs\.gpu"):
        decode(json.dumps(payload))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_kg", "1.5"),
        ("asset_tag_generated", "false"),
        ("device_id", "not-a-uuid"),
        ("occurred_at", 1234),
        ("category", "toaster"),
        ("weight_kg", -1),
    ],
)
def test_mistyped_fields_are_rejected_with_the_field_named(field, value):
    payload = _example_payload(DeviceReceived) | {field: value}
    with pytest.raises(PoisonMessage, match=field):
        decode(json.dumps(payload))


def test_a_missing_subject_id_is_rejected():
    payload = _example_payload(DeviceReceived)
    del payload["device_id"]
    with pytest.raises(PoisonMessage, match="device_id: Field required"):
        decode(json.dumps(payload))


def test_unknown_event_types_are_rejected():
    payload = _example_payload(DeviceReceived) | {"event_type": "device.teleported"}
    with pytest.raises(PoisonMessage, match="event_type"):
        decode(json.dumps(payload))


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"", b'"text"'])
def test_malformed_json_is_rejected(raw):
    with pytest.raises(PoisonMessage):
        decode(raw)


def test_naive_timestamps_are_rejected_and_aware_ones_are_kept_in_utc():
    payload = _example_payload(DeviceReceived)
    with pytest.raises(PoisonMessage, match="occurred_at"):
        decode(json.dumps(payload | {"occurred_at": "2026-03-02T09:30:00"}))
    event = decode(json.dumps(payload | {"occurred_at": "2026-03-02T10:30:00+01:00"}))
    assert event.occurred_at.isoformat() == "2026-03-02T09:30:00+00:00"


def test_events_are_immutable():
    event = EXAMPLES[DeviceReceived]
    with pytest.raises(ValueError, match="frozen"):
        event.weight_kg = 2.0  # type: ignore[misc]


def test_a_device_event_is_keyed_by_its_device_id_and_headed_by_its_type():
    event = EXAMPLES[DeviceReceived].model_copy(update={"device_id": uuid4()})
    assert event.subject_id == event.device_id
    assert topic_of(event).key == "device_id"
    assert headers_for(event)["event_type"] == "device.received"


def test_each_event_type_has_the_topic_of_the_same_name():
    for name, cls in EVENT_TYPES.items():
        assert topic_of(cls).name == name


def test_device_topics_have_more_partitions_than_the_rest():
    for topic in ALL_TOPICS:
        assert topic.partitions == (6 if topic.name.startswith("device.") else 3)


@pytest.mark.parametrize(
    "wrong", [{"cpu_cores": True}, {"ram_gb": False}, {"storage_gb": "256"}, {"cpu_cores": 2.5}]
)
def test_min_specs_take_numbers_only_wherever_they_are_read(wrong):
    """Not only over HTTP: an event decoded from a topic or built in code refuses them too."""
    with pytest.raises(ValidationError):
        MinSpecs.model_validate(wrong)
    with pytest.raises(ValidationError):
        MinSpecs.model_validate_json(json.dumps(wrong))
    assert MinSpecs.model_validate({"cpu_cores": 2, "ram_gb": 4}).ram_gb == 4.0


@pytest.mark.parametrize(
    "event_type", ["device.returned", "device.released_for_recycling", "device.dismantled"]
)
def test_a_v1_event_without_the_fields_added_in_v1_1_is_still_read(event_type: str):
    example = EXAMPLES[EVENT_TYPES[event_type]]
    added = {"drive_serials"} | (
        set() if event_type == "device.released_for_recycling" else {"erasure_certificate_id"}
    )
    v1 = example.model_dump(mode="json", exclude=added)

    event = decode(json.dumps(v1))

    assert event == example.model_copy(update=dict.fromkeys(added))
