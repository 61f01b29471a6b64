"""The one use-case loop every service runs: load, decide with the pure domain, save the new state
and its events (the outbox) in one update guarded by the version that was loaded, flush.

A save that finds the subject changed since it was loaded decides again on the fresh state; after
`ATTEMPTS` such losses the use case gives up with `Busy`, which HTTP answers 503 with
`Retry-After` and consumers retry with backoff (`shared.kafka.is_transient`). A subject that is
not there raises an `Unknown` (404). Both are mapped once, in `shared.service`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from shared.events import Event

log = logging.getLogger(__name__)

ATTEMPTS = 5

S = TypeVar("S")
K = TypeVar("K", contravariant=True)


class Unknown(LookupError):
    """The subject (a device, a request, a lot...) does not exist here."""


class Busy(Exception):
    """The subject kept changing while a decision was made on it: given up, try again shortly."""


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """A state as loaded, with the version its save is guarded by (a counter, or the stored
    state the decision was made on: whatever the store compares)."""

    state: S
    version: Any


class Subjects(Protocol[K, S]):
    """What the loop needs of a store: one subject's state, its guarded save, its flush."""

    async def load(self, key: K) -> Loaded[S] | None: ...

    async def save(self, loaded: Loaded[S], state: S, events: Sequence[Event]) -> bool:
        """Store `state` and `events` in one update if the subject is still at `loaded.version`;
        False if it changed meanwhile."""
        ...

    async def flush(self, key: K) -> None: ...


Decide = Callable[[S], tuple[S, Sequence[Event]]]


def _unknown(key: object) -> Exception:
    return Unknown(f"unknown subject {key}")


async def apply(
    store: Subjects[K, S],
    key: K,
    decide: Decide[S],
    *,
    missing: Callable[[K], Exception] = _unknown,
    attempts: int = ATTEMPTS,
) -> S:
    """Load, decide, save guarded by version, flush; decide again on a concurrent change."""
    for attempt in range(attempts):
        loaded = await store.load(key)
        if loaded is None:
            raise missing(key)
        state, events = decide(loaded.state)
        if await store.save(loaded, state, events):
            await store.flush(key)
            return state
        log.info("%s changed concurrently (attempt %d of %d)", key, attempt + 1, attempts)
    raise Busy(f"{key} kept changing; try again shortly")
