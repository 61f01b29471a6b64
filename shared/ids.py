"""Deterministic ids: the same cause always yields the same id, so a replay is recognised."""

from __future__ import annotations

from uuid import UUID, uuid5

_NAMESPACE = UUID("5b0a7f0e-6c1d-4c33-9f0b-2a9e1d8c7b10")


def derive_id(*parts: object) -> UUID:
    """E.g. derive_id("diagnostics", causing_event_id, "device.ready")."""
    return uuid5(_NAMESPACE, "/".join(str(p) for p in parts))
