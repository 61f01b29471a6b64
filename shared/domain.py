"""What every domain module shares: the named error for an illegal transition."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

SubjectKind = Literal["device", "pickup", "request", "lot", "shipment"]


class IllegalTransition(Exception):
    """A transition the rules forbid; refused and recorded, never applied."""

    def __init__(
        self,
        *,
        subject_kind: SubjectKind,
        subject_id: UUID,
        action: str,
        state: str,
        reason: str,
        correlation_id: UUID | None = None,
    ) -> None:
        super().__init__(reason)
        self.subject_kind: SubjectKind = subject_kind
        self.subject_id = subject_id
        self.action = action
        self.state = state
        self.reason = reason
        self.correlation_id = correlation_id or subject_id
