"""A device as intake registered it: what `device.received` tells every service, and what
intake's and custody's device views both show first (each adds its own fields)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from shared.events import DeviceCategory, DeviceReceived


class RegisteredDevice(BaseModel):
    device_id: UUID
    pickup_id: UUID
    partner_id: str
    asset_tag: str
    asset_tag_generated: bool
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    received_at: datetime

    @classmethod
    def received(cls, event: DeviceReceived) -> RegisteredDevice:
        """The device as its `device.received` event registered it."""
        return cls.model_validate({**event.model_dump(), "received_at": event.occurred_at})
