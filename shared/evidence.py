"""Digests tying a document (a certificate) to the events it was built from.

Anyone holding the events (from the Kafka topics or any service's copy) can recompute them:

- an event's digest is the SHA-256 of its canonical JSON: the contract's JSON form with keys
  sorted, no whitespace, UTF-8;
- a document's evidence digest is the SHA-256 of the lines `<event_id> <event digest>\\n`, one per
  event the document cites, in the order it lists them.
"""

import hashlib
import json
from collections.abc import Iterable
from uuid import UUID

from shared.events import Event


def canonical_json(event: Event) -> bytes:
    return json.dumps(
        event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def event_digest(event: Event) -> str:
    return hashlib.sha256(canonical_json(event)).hexdigest()


def evidence_digest(cited: Iterable[tuple[UUID | str, str]]) -> str:
    lines = "".join(f"{event_id} {digest}\n" for event_id, digest in cited)
    return hashlib.sha256(lines.encode()).hexdigest()
