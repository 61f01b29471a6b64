"""Checks what must always hold across the five services' stores, from outside.

    python -m tools.invariants [--namespace NS] [--mongo-url URL]

Services never read each other's databases; this operations tool reads all five and reports
every violation on a line of its own, then how many documents it checked. Exit code 1 when
anything is violated. Tests call `check(client, namespace)` directly.

Some facts travel by events and arrive a little later elsewhere (a recycled device reaches the
donor's custody view after recycling stored it); such lags are tolerated for `settle_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from shared.credentials import OPS
from shared.mongo import Document, tool_client
from shared.settings import ServiceSettings

SERVICES = ("intake", "diagnostics", "allocation", "recycling", "custody")
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "intake": ("pickups", "devices"),
    "diagnostics": ("devices", "certificates"),
    # request_devices after stock: a device allocated when stock was read is listed by then
    "allocation": ("stock", "request_devices", "requests", "shipments"),
    "recycling": ("devices", "lots"),
    "custody": ("devices",),
}
OUTBOX_COLLECTIONS: dict[str, tuple[str, ...]] = {
    "intake": ("pickups", "devices", "refusals"),
    "diagnostics": ("devices", "refusals"),
    "allocation": ("stock", "requests", "shipments", "refusals"),
    "recycling": ("devices", "lots", "refusals"),
    "custody": ("refusals",),
}

UNWIPED_IN_STOCK = "unwiped_in_stock"
RECYCLED_WITHOUT_ERASURE = "recycled_without_erasure"
UNACCOUNTED_DRIVE = "unaccounted_drive"
RECYCLING_CERTIFICATE = "recycling_certificate_mismatch"
TWO_PLACES = "device_in_two_places"
DANGLING_CERTIFICATE = "dangling_certificate"
CUSTODY_DISAGREES = "custody_disagrees"
STALE_OUTBOX = "stale_outbox"
DOUBLE_ALLOCATION = "double_allocation"

REUSE_METHODS = frozenset({"clear", "purge"})
RECYCLE_METHODS = frozenset({"clear", "purge", "destroy"})
ASSIGNED = frozenset({"allocated", "shipped", "delivered"})


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    def of_kind(self, kind: str) -> list[Violation]:
        return [v for v in self.violations if v.kind == kind]

    def add(self, kind: str, subject: object, detail: str) -> None:
        self.violations.append(Violation(kind, str(subject), detail))

    def summary(self) -> str:
        checked = ", ".join(f"{name}={n}" for name, n in self.counts.items())
        return f"checked {checked}; {len(self.violations)} violation(s)"


@dataclass
class Stores:
    """Every document the checks look at, by service and collection, keyed by _id."""

    docs: dict[str, dict[str, dict[str, Document]]]

    def of(self, service: str, collection: str) -> dict[str, Document]:
        return self.docs[service][collection]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _older(moment: Any, cutoff: datetime) -> bool:
    return isinstance(moment, datetime) and _aware(moment) < cutoff


def database_name(namespace: str, service: str, prefix: str = "greenit") -> str:
    return f"{namespace}{prefix}_{service}"


async def _load(
    client: AsyncMongoClient[Document], namespace: str, prefix: str, report: Report
) -> Stores:
    docs: dict[str, dict[str, dict[str, Document]]] = {}
    for service in SERVICES:
        db = client[database_name(namespace, service, prefix)]
        docs[service] = {}
        for collection in COLLECTIONS[service]:
            loaded = {str(d["_id"]): d async for d in db[collection].find({}, {"outbox": 0})}
            docs[service][collection] = loaded
            report.counts[f"{service}.{collection}"] = len(loaded)
    return Stores(docs)


async def check(
    client: AsyncMongoClient[Document],
    namespace: str,
    *,
    prefix: str = "greenit",
    now: datetime | None = None,
    outbox_max_age_s: float = 60.0,
    settle_s: float = 60.0,
) -> Report:
    """Every violation of the cross-service invariants in `namespace`'s stores."""
    now = now or datetime.now(UTC)
    report = Report()
    stores = await _load(client, namespace, prefix, report)
    _wiped_before_stock(stores, report)
    _erased_before_recycling(stores, report)
    _recycling_certificates(stores, report)
    _one_place_at_a_time(stores, report)
    _custody_agrees(stores, report, now - timedelta(seconds=settle_s))
    _one_request_per_device(stores, report)
    await _outboxes_drained(
        client, namespace, prefix, report, now - timedelta(seconds=outbox_max_age_s)
    )
    return report


# ---- data security ----------------------------------------------------------------------------


def _unerased_drives(certificate: Document, methods: Iterable[str]) -> list[str]:
    allowed = set(methods)
    return [
        str(d.get("serial"))
        for d in certificate.get("drives") or ()
        if not d.get("verified") or d.get("method") not in allowed
    ]


def _uncertified_drives(device: Document, certificate: Document) -> list[str]:
    reported = [
        d["serial"]
        for d in ((device.get("diagnosis") or {}).get("specs") or {}).get("drives") or ()
    ]
    certified = {d.get("serial") for d in certificate.get("drives") or ()}
    return [s for s in reported if s not in certified]


def _wiped_before_stock(stores: Stores, report: Report) -> None:
    diagnostics = stores.of("diagnostics", "devices")
    for device_id, stock in stores.of("allocation", "stock").items():
        device = diagnostics.get(device_id)
        state = stock.get("state")
        if device is None:
            report.add(UNWIPED_IN_STOCK, device_id, f"{state} in stock, unknown to diagnostics")
            continue
        if device.get("state") == "awaiting_recycling":
            continue  # reported as a device in two places
        certificate = device.get("certificate")
        if device.get("state") != "ready" or not certificate:
            report.add(
                UNWIPED_IN_STOCK,
                device_id,
                f"{state} in stock but {device.get('state')} in diagnostics, "
                f"{'with' if certificate else 'without'} an erasure certificate",
            )
            continue
        bad = _unerased_drives(certificate, REUSE_METHODS) + _uncertified_drives(
            device, certificate
        )
        if bad:
            report.add(
                UNWIPED_IN_STOCK,
                device_id,
                f"{state} in stock; drives without a verified clear/purge erasure: {bad}",
            )
        elif stock.get("erasure_certificate_id") != certificate.get("certificate_id"):
            report.add(
                UNWIPED_IN_STOCK,
                device_id,
                f"stock names erasure certificate {stock.get('erasure_certificate_id')}, "
                f"diagnostics issued {certificate.get('certificate_id')}",
            )


def _destroyed_drives(device: Document) -> set[str]:
    records = (device.get("dismantling") or {}).get("storage_destroyed") or ()
    return {
        str(r.get("drive_serial"))
        for r in records
        if r.get("method") == "destroy" and r.get("verified")
    }


def _erased_drives(certificate: Document, methods: Iterable[str]) -> set[str]:
    allowed = set(methods)
    return {
        str(d.get("serial"))
        for d in certificate.get("drives") or ()
        if d.get("verified") and d.get("method") in allowed
    }


def _serials(drives: Iterable[Document]) -> set[str]:
    return {str(d.get("serial")) for d in drives}


def _known_drives(stores: Stores, device_id: str) -> set[str]:
    """Every drive any service recorded for the device: its report, its erasure certificate,
    allocation's stock specs, recycling's own list."""
    diagnosed = stores.of("diagnostics", "devices").get(device_id) or {}
    report_specs = (diagnosed.get("diagnosis") or {}).get("specs") or {}
    stock_specs = (stores.of("allocation", "stock").get(device_id) or {}).get("specs") or {}
    recycling = stores.of("recycling", "devices").get(device_id) or {}
    return (
        _serials(report_specs.get("drives") or ())
        | _serials((diagnosed.get("certificate") or {}).get("drives") or ())
        | _serials(stock_specs.get("drives") or ())
        | {str(s) for s in recycling.get("drive_serials") or ()}
    )


def _erased_before_recycling(stores: Stores, report: Report) -> None:
    """A dismantled or recycled device has every known drive erased or destroyed, verified.

    A returned device was used after its erasure, so only a destruction at dismantling counts.
    A device with no such record at all is `recycled_without_erasure`; one with some drives
    accounted for and not all is `unaccounted_drive`.
    """
    diagnostics = stores.of("diagnostics", "devices")
    for device_id, device in stores.of("recycling", "devices").items():
        state = device.get("state")
        if state not in ("dismantled", "recycled"):
            continue
        certificate = (diagnostics.get(device_id) or {}).get("certificate")
        destroyed = _destroyed_drives(device)
        returned = device.get("source") == "return"
        if state == "recycled" and returned:
            nothing_to_destroy = certificate is not None and not certificate.get("drives")
            if not (destroyed or nothing_to_destroy):
                report.add(
                    RECYCLED_WITHOUT_ERASURE,
                    device_id,
                    "returned device recycled without a verified destroyed-storage record",
                )
                continue
        elif state == "recycled" and not certificate:
            report.add(
                RECYCLED_WITHOUT_ERASURE,
                device_id,
                "recycled, but diagnostics holds no erasure certificate for it",
            )
            continue
        erased = set() if returned else _erased_drives(certificate or {}, RECYCLE_METHODS)
        if missing := sorted(_known_drives(stores, device_id) - destroyed - erased):
            report.add(
                UNACCOUNTED_DRIVE,
                device_id,
                f"{state} after {'a return' if returned else 'release by diagnostics'}; drives "
                f"without a verified {'destruction' if returned else 'erasure or destruction'}: "
                f"{missing}",
            )
            continue
        named = device.get("erasure_certificate_id")
        issued = (certificate or {}).get("certificate_id")
        if state == "recycled" and named != issued and (named or not returned):
            report.add(
                RECYCLED_WITHOUT_ERASURE,
                device_id,
                f"recycling names erasure certificate {named}, diagnostics issued {issued}",
            )


def _recycling_certificates(stores: Stores, report: Report) -> None:
    lots = stores.of("recycling", "lots")
    devices = stores.of("recycling", "devices")
    for device_id, device in devices.items():
        certificate_id = device.get("certificate_id")
        if not certificate_id:
            continue
        subject = f"recycling certificate {certificate_id}"
        if device.get("state") != "recycled":
            report.add(
                RECYCLING_CERTIFICATE, subject, f"device {device_id} is {device.get('state')}"
            )
        lot_id = (device.get("certificate") or {}).get("lot_id") or device.get("lot_id")
        lot = lots.get(str(lot_id))
        if lot is None:
            report.add(RECYCLING_CERTIFICATE, subject, f"lot {lot_id} does not exist")
        elif device_id not in lot.get("device_ids", ()):
            report.add(RECYCLING_CERTIFICATE, subject, f"lot {lot_id} does not list {device_id}")
    for lot_id, lot in lots.items():
        if lot.get("status") != "dispatched":
            continue
        for device_id in lot.get("device_ids", ()):
            device = devices.get(device_id) or {}
            if device.get("state") != "recycled" or device.get("lot_id") != lot_id:
                report.add(
                    RECYCLING_CERTIFICATE,
                    f"lot {lot_id}",
                    f"dispatched lot lists {device_id}, which is {device.get('state')} "
                    f"in lot {device.get('lot_id')}",
                )


# ---- one device, one place --------------------------------------------------------------------


def _one_place_at_a_time(stores: Stores, report: Report) -> None:
    stock = stores.of("allocation", "stock")
    for device_id, device in stores.of("recycling", "devices").items():
        held = stock.get(device_id)
        if held is not None and held.get("state") != "returned":
            report.add(
                TWO_PLACES,
                device_id,
                f"{held.get('state')} in allocation and {device.get('state')} in recycling "
                "without a return",
            )
    for device_id, device in stores.of("diagnostics", "devices").items():
        if device.get("state") == "awaiting_recycling" and device_id in stock:
            report.add(
                TWO_PLACES,
                device_id,
                f"awaiting_recycling in diagnostics and {stock[device_id].get('state')} "
                "in allocation's stock",
            )


def _custody_agrees(stores: Stores, report: Report, settled_before: datetime) -> None:
    erasure_ids = {
        str(c["certificate_id"])
        for d in stores.of("diagnostics", "devices").values()
        if (c := d.get("certificate"))
    } | set(stores.of("diagnostics", "certificates"))
    recycling = stores.of("recycling", "devices")
    recycling_ids = {
        str(d["certificate_id"]) for d in recycling.values() if d.get("certificate_id")
    }
    stock = stores.of("allocation", "stock")
    custody = stores.of("custody", "devices")
    for device_id, view in custody.items():
        erasure = view.get("erasure_certificate_id")
        if erasure and str(erasure) not in erasure_ids:
            report.add(
                DANGLING_CERTIFICATE,
                device_id,
                f"custody names erasure certificate {erasure}, unknown to diagnostics",
            )
        recycled = view.get("recycling_certificate_id")
        if recycled and str(recycled) not in recycling_ids:
            report.add(
                DANGLING_CERTIFICATE,
                device_id,
                f"custody names recycling certificate {recycled}, unknown to recycling",
            )
        stage = view.get("stage")
        owner_state = (recycling.get(device_id) or {}).get("state")
        if stage == "recycled" and owner_state != "recycled":
            report.add(
                CUSTODY_DISAGREES, device_id, f"custody says recycled, recycling says {owner_state}"
            )
        lost_state = (stock.get(device_id) or {}).get("state")
        if stage == "lost" and lost_state != "lost":
            report.add(
                CUSTODY_DISAGREES, device_id, f"custody says lost, allocation says {lost_state}"
            )
    for device_id, device in recycling.items():
        issued = (device.get("certificate") or {}).get("issued_at")
        stage = (custody.get(device_id) or {}).get("stage")
        late = _older(issued, settled_before)
        if device.get("state") == "recycled" and stage != "recycled" and late:
            report.add(CUSTODY_DISAGREES, device_id, f"recycled in recycling, custody says {stage}")
    for device_id, device in stock.items():
        stage = (custody.get(device_id) or {}).get("stage")
        late = _older(device.get("updated_at"), settled_before)
        if device.get("state") == "lost" and stage != "lost" and late:
            report.add(CUSTODY_DISAGREES, device_id, f"lost in allocation, custody says {stage}")


def _one_request_per_device(stores: Stores, report: Report) -> None:
    stock = stores.of("allocation", "stock")
    requests = stores.of("allocation", "requests")
    allocated: dict[str, int] = defaultdict(int)
    for device_id, device in stock.items():
        request_id = device.get("request_id")
        if device.get("state") in ASSIGNED and not request_id:
            report.add(DOUBLE_ALLOCATION, device_id, f"{device.get('state')} without a request")
        if not request_id:
            continue
        allocated[request_id] += 1
        request = requests.get(request_id)
        if request is None:
            report.add(DOUBLE_ALLOCATION, device_id, f"allocated to unknown request {request_id}")
        elif request.get("recipient_id") != device.get("recipient_id"):
            report.add(
                DOUBLE_ALLOCATION,
                device_id,
                f"held for {device.get('recipient_id')} but request {request_id} is "
                f"{request.get('recipient_id')}'s",
            )
    listed_by: dict[str, list[str]] = defaultdict(list)
    for request_id, request in requests.items():
        if allocated[request_id] > int(request.get("quantity") or 0):
            report.add(
                DOUBLE_ALLOCATION,
                f"request {request_id}",
                f"{allocated[request_id]} devices allocated for {request.get('quantity')} asked",
            )
    lists = stores.of("allocation", "request_devices")
    for request_id, listed in lists.items():
        for device_id in listed.get("device_ids") or ():
            listed_by[str(device_id)].append(request_id)
    for device_id, device in stock.items():
        request_id = device.get("request_id")
        known = lists.get(str(request_id)) or {}
        holders = [*known.get("device_ids", ()), *known.get("pending_ids", ())]
        if request_id and device_id not in holders:
            report.add(
                DOUBLE_ALLOCATION,
                device_id,
                f"allocated to request {request_id}, which does not list it (it would count "
                "one device too few and could be given one too many)",
            )
    for device_id, request_ids in listed_by.items():
        stock_request = (stock.get(device_id) or {}).get("request_id")
        if len(request_ids) > 1 or stock_request != request_ids[0]:
            report.add(
                DOUBLE_ALLOCATION,
                device_id,
                f"listed by requests {sorted(request_ids)}, stock says {stock_request}",
            )
    shipped_in: dict[str, list[str]] = defaultdict(list)
    for shipment_id, shipment in stores.of("allocation", "shipments").items():
        for device_id in shipment.get("device_ids") or ():
            shipped_in[device_id].append(shipment_id)
            holder = (stock.get(device_id) or {}).get("recipient_id")
            if holder != shipment.get("recipient_id"):
                report.add(
                    DOUBLE_ALLOCATION,
                    device_id,
                    f"shipped to {shipment.get('recipient_id')} in {shipment_id} "
                    f"but held for {holder}",
                )
    for device_id, shipment_ids in shipped_in.items():
        if len(shipment_ids) > 1:
            report.add(DOUBLE_ALLOCATION, device_id, f"in shipments {sorted(shipment_ids)}")


# ---- delivery ---------------------------------------------------------------------------------


async def _outboxes_drained(
    client: AsyncMongoClient[Document],
    namespace: str,
    prefix: str,
    report: Report,
    cutoff: datetime,
) -> None:
    pending = 0
    for service, collections in OUTBOX_COLLECTIONS.items():
        db = client[database_name(namespace, service, prefix)]
        for collection in collections:
            query: Document = {"outbox": {"$nin": [{}, None]}}
            async for doc in db[collection].find(query, {"outbox": 1}):
                for event_id, entry in (doc.get("outbox") or {}).items():
                    pending += 1
                    at = entry.get("at") if isinstance(entry, dict) else None
                    if at is None or _older(at, cutoff):
                        report.add(
                            STALE_OUTBOX,
                            f"{service}.{collection}/{doc['_id']}",
                            f"event {event_id} stored at {at} but never published",
                        )
    report.counts["outbox entries"] = pending


# ---- CLI --------------------------------------------------------------------------------------


async def _run(namespace: str, mongo_url: str, prefix: str) -> Report:
    # the operations console's read-only user: it reads every service's database
    client: AsyncMongoClient[Document] = tool_client(mongo_url, OPS, serverSelectionTimeoutMS=5_000)
    try:
        return await check(client, namespace, prefix=prefix)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    defaults = ServiceSettings()
    parser = argparse.ArgumentParser(
        prog="python -m tools.invariants",
        description="Report violations of the cross-service invariants, one per line; "
        "exit code 1 if there is any.",
    )
    parser.add_argument("--namespace", default=defaults.namespace, help="GREENIT_NAMESPACE")
    parser.add_argument("--mongo-url", default=defaults.mongo_url, help="GREENIT_MONGO_URL")
    args = parser.parse_args(argv)
    report = asyncio.run(_run(args.namespace, args.mongo_url, defaults.mongo_db_prefix))
    for violation in report.violations:
        print(violation)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
