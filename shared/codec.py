"""Turning events into Kafka records and back, strictly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from shared.events import ALL_EVENTS, Event
from shared.topics import topic_of

AnyEvent = Annotated[Union[*ALL_EVENTS], Field(discriminator="event_type")]  # type: ignore[valid-type]
_adapter: TypeAdapter[Event] = TypeAdapter(AnyEvent)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(event_type, old schema_version) -> function returning the payload one version newer."""


class PoisonMessage(ValueError):
    """A record that no retry can make valid: it belongs in the dead-letter topic."""


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


def headers_for(event: Event) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "event_type": event.event_type,
        "event_id": str(event.event_id),
        "correlation_id": str(event.correlation_id),
        "producer": event.producer,
    }


def decode(raw: bytes | str) -> Event:
    """Parse one record's value; JSON types are taken as they are (no "3" for 3)."""
    try:
        return _adapter.validate_json(raw, strict=True)
    except ValidationError as first_error:
        upcast = _upcast(raw)
        if upcast is None:
            raise PoisonMessage(_describe(first_error)) from first_error
        try:
            return _adapter.validate_json(upcast, strict=True)
        except ValidationError as exc:
            raise PoisonMessage(_describe(exc)) from exc


def decode_on(topic: str, raw: bytes | str) -> Event:
    """Parse a record that arrived on `topic` (its catalogue name, without the namespace):
    a valid event of another type is refused too, since each type has exactly one topic."""
    event = decode(raw)
    expected = topic_of(event).name
    if topic != expected:
        raise PoisonMessage(
            f"wrong topic: a {event.event_type} event arrived on {topic}; "
            f"{event.event_type} events belong on {expected}"
        )
    return event


def _upcast(raw: bytes | str) -> str | None:
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise PoisonMessage(f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PoisonMessage("an event must be a JSON object")
    changed = False
    while (key := (payload.get("event_type"), payload.get("schema_version"))) in UPCASTERS:
        payload = UPCASTERS[key](payload)
        changed = True
    return json.dumps(payload) if changed else None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{where}: {item['msg']}")
    return "invalid event: " + "; ".join(parts)
