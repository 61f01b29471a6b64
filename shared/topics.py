"""The topic catalogue: one topic per event type, keyed by the event's subject id."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import ALL_EVENTS, Event, event_type_of

DEVICE_PARTITIONS = 6
OTHER_PARTITIONS = 3


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    key: str
    partitions: int
    event: type[Event] | None

    @property
    def description(self) -> str:
        if self.event is None:
            return "Messages no consumer could process, with the original payload and the reason."
        return (self.event.__doc__ or self.event.__name__).strip().splitlines()[0]


def _topic_for(cls: type[Event]) -> Topic:
    name = event_type_of(cls)
    partitions = DEVICE_PARTITIONS if name.startswith("device.") else OTHER_PARTITIONS
    return Topic(name=name, key=cls.subject, partitions=partitions, event=cls)


EVENT_TOPICS: dict[type[Event], Topic] = {cls: _topic_for(cls) for cls in ALL_EVENTS}
DEAD_LETTER = Topic(name="deadletter", key="source topic", partitions=OTHER_PARTITIONS, event=None)
ALL_TOPICS: tuple[Topic, ...] = (*EVENT_TOPICS.values(), DEAD_LETTER)


def topic_of(event: Event | type[Event]) -> Topic:
    return EVENT_TOPICS[event if isinstance(event, type) else type(event)]


def device_events() -> list[type[Event]]:
    """The event types whose subject is a device (their topics are keyed by device id)."""
    return [cls for cls, t in EVENT_TOPICS.items() if t.key == "device_id"]


def device_topics() -> list[str]:
    return [topic_of(cls).name for cls in device_events()]
