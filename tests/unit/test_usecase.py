"""The one use-case loop (`shared.usecase.apply`) against a fake store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import pytest

from shared.events import Event, RequestClosed
from shared.examples import EXAMPLES
from shared.usecase import ATTEMPTS, Busy, Decide, Loaded, Unknown, apply


def closed(request_id: UUID) -> RequestClosed:
    example = EXAMPLES[RequestClosed]
    return example.model_copy(update={"event_id": uuid4(), "request_id": request_id})


@dataclass
class Counters:
    """A fake store of integer states guarded by a version; `meddle` concurrent writes happen
    between each of the next loads and its save."""

    states: dict[UUID, tuple[int, int]] = field(default_factory=dict)
    outbox: dict[UUID, list[Event]] = field(default_factory=dict)
    flushed: list[UUID] = field(default_factory=list)
    meddle: int = 0
    loads: int = 0

    async def load(self, key: UUID) -> Loaded[int] | None:
        self.loads += 1
        if key not in self.states:
            return None
        state, version = self.states[key]
        if self.meddle:
            self.meddle -= 1
            self.states[key] = (state + 100, version + 1)
        return Loaded(state, version)

    async def save(self, loaded: Loaded[int], state: int, events: Sequence[Event]) -> bool:
        [key] = self.states
        if self.states[key][1] != loaded.version:
            return False
        self.states[key] = (state, loaded.version + 1)
        self.outbox.setdefault(key, []).extend(events)
        return True

    async def flush(self, key: UUID) -> None:
        self.flushed.append(key)


def increment(key: UUID) -> Decide[int]:
    def decide(state: int) -> tuple[int, list[Event]]:
        return state + 1, [closed(key)]

    return decide


async def test_the_state_and_its_events_are_saved_together_then_flushed():
    key = uuid4()
    store = Counters(states={key: (1, 0)})

    assert await apply(store, key, increment(key)) == 2

    assert store.states[key] == (2, 1)
    assert [e.subject_id for e in store.outbox[key]] == [key]
    assert store.flushed == [key]


async def test_a_concurrent_change_is_decided_again_on_the_fresh_state():
    key = uuid4()
    store = Counters(states={key: (1, 0)}, meddle=2)

    assert await apply(store, key, increment(key)) == 102 + 100

    assert store.loads == 3
    assert len(store.outbox[key]) == 1  # only the winning decision's events


async def test_a_subject_that_keeps_changing_gives_up_busy_after_a_bounded_number_of_attempts():
    key = uuid4()
    store = Counters(states={key: (1, 0)}, meddle=1_000)

    with pytest.raises(Busy):
        await apply(store, key, increment(key))

    assert store.loads == ATTEMPTS
    assert store.outbox == {}
    assert store.flushed == []


async def test_a_missing_subject_is_unknown_or_what_the_caller_says():
    store = Counters()

    with pytest.raises(Unknown):
        await apply(store, uuid4(), increment(uuid4()))
    with pytest.raises(KeyError):
        await apply(store, uuid4(), increment(uuid4()), missing=KeyError)
