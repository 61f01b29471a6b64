"""The matching policy: which available device goes to which open request.

1. Requests are served one after another, in this order:
   priority (1, the most urgent, first), then deadline (earliest first; requests without a
   deadline after those with one), then waiting time (the one opened earliest first).
2. For a request, a device is eligible only if it is of the request's category and meets every
   stated minimum (cpu_cores, ram_gb, storage_gb, battery_health_pct); a value the device does
   not report fails a stated minimum.
3. Among the eligible devices the request takes the smallest sufficient ones first: fewest GB of
   RAM, then of storage, then fewest cores (unknown values count as 0), then the one longest in
   stock. Better devices are thereby kept for more demanding requests.
4. A request takes at most what it still lacks (quantity minus devices already allocated to
   it); if not enough devices fit it takes what fits and stays open (partial fulfilment).
5. Each device goes to at most one request.

Pure: no store, no clock; ties are broken by id so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from services.allocation.domain import unmet_specs
from shared.events import DeviceCategory, HardwareSpecs, MinSpecs


@dataclass(frozen=True, slots=True)
class OpenRequest:
    request_id: UUID
    recipient_id: str
    category: DeviceCategory
    min_specs: MinSpecs
    priority: int
    deadline: date | None
    opened_at: datetime
    missing: int


@dataclass(frozen=True, slots=True)
class Candidate:
    device_id: UUID
    category: DeviceCategory
    specs: HardwareSpecs
    in_stock_since: datetime


@dataclass(frozen=True, slots=True)
class Match:
    device_id: UUID
    request_id: UUID
    recipient_id: str


def fits(specs: HardwareSpecs, minimum: MinSpecs) -> bool:
    """Does a device meet every stated minimum? A missing device value fails it."""
    return not unmet_specs(specs, minimum)


def serving_order(request: OpenRequest) -> tuple[int, bool, date, datetime, str]:
    return (
        request.priority,
        request.deadline is None,
        request.deadline or date.max,
        request.opened_at,
        str(request.request_id),
    )


def smallest_first(device: Candidate) -> tuple[float, int, int, datetime, str]:
    return (
        device.specs.ram_gb or 0,
        device.specs.storage_gb,
        device.specs.cpu_cores or 0,
        device.in_stock_since,
        str(device.device_id),
    )


def match(requests: Iterable[OpenRequest], devices: Iterable[Candidate]) -> list[Match]:
    """Assign available devices to open requests by the policy above."""
    pool = sorted(devices, key=smallest_first)
    taken: set[UUID] = set()
    matches: list[Match] = []
    for request in sorted(requests, key=serving_order):
        if request.missing <= 0:
            continue
        chosen = [
            d
            for d in pool
            if d.device_id not in taken
            and d.category == request.category
            and fits(d.specs, request.min_specs)
        ][: request.missing]
        for device in chosen:
            taken.add(device.device_id)
            matches.append(Match(device.device_id, request.request_id, request.recipient_id))
    return matches
