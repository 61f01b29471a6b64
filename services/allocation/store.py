"""Allocation's own collections: `stock` (one document per ready device, _id = device id),
`requests` (_id = request id) and `shipments` (_id = shipment id). Ids are stored as strings,
times as aware UTC datetimes, a request's deadline as an ISO date string."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.allocation.domain import (
    DeviceState,
    Request,
    RequestStatus,
    Shipment,
    ShipmentStatus,
    StockDevice,
)
from shared.events import DeviceCategory, Event, MinSpecs
from shared.mongo import (
    Document,
    find_by_ids,
    lease,
    list_pending,
    settle_pending,
    to_document,
    update_if,
)
from shared.outbox import ServiceStore, outbox_doc, outbox_set
from shared.usecase import Loaded

_DEVICE = TypeAdapter(StockDevice)
_SHIPMENT = TypeAdapter(Shipment)
_DELIVERED = ShipmentStatus.DELIVERED.value
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _uuid(value: Any) -> UUID | None:
    return UUID(value) if value else None


def _str(value: UUID | None) -> str | None:
    return str(value) if value else None


def device_fields(device: StockDevice) -> Document:
    """Every field of a stock document but its _id (what a transition `$set`s)."""
    fields: Document = to_document(_DEVICE.dump_python(device))
    return fields


def device_from(doc: Document) -> StockDevice:
    return _DEVICE.validate_python({**doc, "device_id": doc["_id"]})


def request_doc(request: Request) -> Document:
    return {
        "_id": str(request.request_id),
        "recipient_id": request.recipient_id,
        "status": request.status.value,
        "quantity": request.quantity,
        "category": request.category.value,
        "min_specs": request.min_specs.model_dump(mode="json"),
        "purpose": request.purpose,
        "priority": request.priority,
        "deadline": request.deadline.isoformat() if request.deadline else None,
        "opened_at": request.opened_at,
        "recipient_name": request.recipient_name,
    }


def request_from(doc: Document, devices: Document | None = None) -> Request:
    """The request from its document and its `request_devices` document (if it has one)."""
    devices = devices or {}
    return Request(
        request_id=UUID(doc["_id"]),
        recipient_id=doc["recipient_id"],
        status=RequestStatus(doc["status"]),
        quantity=doc["quantity"],
        category=DeviceCategory(doc["category"]),
        min_specs=MinSpecs.model_validate(doc["min_specs"]),
        purpose=doc["purpose"],
        priority=doc["priority"],
        deadline=date.fromisoformat(doc["deadline"]) if doc.get("deadline") else None,
        opened_at=doc["opened_at"],
        recipient_name=doc.get("recipient_name"),
        device_ids=tuple(UUID(d) for d in devices.get("device_ids") or ()),
        pending_ids=tuple(UUID(d) for d in devices.get("pending_ids") or ()),
    )


def shipment_doc(shipment: Shipment) -> Document:
    doc: Document = to_document(_SHIPMENT.dump_python(shipment))
    return {"_id": doc.pop("shipment_id"), **doc}


def shipment_from(doc: Document) -> Shipment:
    return _SHIPMENT.validate_python({**doc, "shipment_id": doc["_id"]})


class Store(ServiceStore):
    """Every collection call of allocation. As a `shared.usecase.Subjects` it loads and saves
    stock devices, a save guarded by the state the decision was made on."""

    async def setup(self) -> None:
        await self._db.stock.create_index([("state", ASCENDING), ("category", ASCENDING)])
        await self._db.stock.create_index([("recipient_id", ASCENDING)])
        await self._db.stock.create_index([("request_id", ASCENDING)])
        await self._db.requests.create_index([("recipient_id", ASCENDING)])
        await self._db.requests.create_index([("status", ASCENDING)])
        await self._db.shipments.create_index([("recipient_id", ASCENDING)])
        await self.recover()

    async def recover(self) -> None:
        """Finish what a crash interrupted, in one read of the stock and one of the shipments.

        - A shipment's commit point is the insert of its document (with its events in the outbox):
          devices claimed for a shipment that was never written go back to allocated. Accepting a
          shipment commits on the shipment document: its devices still shown shipped become
          delivered.
        - Every allocated device is listed by its request, and claims left pending are settled.
        - Every available device has its entry in `available`.

        Runs before the service consumes or answers, so no claim is in flight meanwhile.
        """
        shipments = {
            d["_id"]: d async for d in self._db.shipments.find({}, {"status": 1, "delivered_at": 1})
        }
        listed = {d["_id"] async for d in self._db.available.find({}, {"_id": 1})}
        held: dict[str, list[tuple[Any, str]]] = defaultdict(list)
        async for doc in self._db.stock.find({}):
            if doc["state"] == DeviceState.SHIPPED.value:
                shipment = shipments.get(doc.get("shipment_id"))
                if shipment is None:
                    await self._unclaim(doc["_id"], doc["shipment_id"])
                elif shipment["status"] == _DELIVERED:
                    await self._deliver(doc["_id"], shipment)
            if doc["state"] == DeviceState.AVAILABLE.value and doc["_id"] not in listed:
                await self.add_available(device_from(doc))
            elif doc["state"] != DeviceState.AVAILABLE.value and doc["_id"] in listed:
                await self._db.available.delete_one({"_id": doc["_id"]})
            if doc.get("request_id"):
                held[doc["request_id"]].append((doc.get("allocated_at") or _EPOCH, doc["_id"]))
        lists = {d["_id"]: d async for d in self._db.request_devices.find({})}
        for request_id in set(held) | set(lists):
            devices = [device_id for _, device_id in sorted(held.get(request_id, []))]
            listed_ids = lists.get(request_id, {}).get("device_ids") or []
            missing = [d for d in devices if d not in listed_ids]
            if missing or lists.get(request_id, {}).get("pending_ids"):
                await self._db.request_devices.update_one(
                    {"_id": request_id},
                    {"$addToSet": {"device_ids": {"$each": missing}}, "$set": {"pending_ids": []}},
                    upsert=True,
                )

    async def _unclaim(self, device_id: str, shipment_id: str) -> None:
        await update_if(
            self._db.stock,
            device_id,
            {"state": DeviceState.SHIPPED.value, "shipment_id": shipment_id},
            {"$set": {"state": DeviceState.ALLOCATED.value, "shipment_id": None}},
        )

    async def _deliver(self, device_id: str, shipment: Document) -> None:
        await update_if(
            self._db.stock,
            device_id,
            {"state": DeviceState.SHIPPED.value, "shipment_id": shipment["_id"]},
            {
                "$set": {
                    "state": DeviceState.DELIVERED.value,
                    "updated_at": shipment["delivered_at"],
                }
            },
        )

    async def release_orphan_claims(self, device_ids: list[str]) -> None:
        """Devices claimed for a shipment whose insert never happened go back to allocated.

        Only safe while no shipment is being written (the caller holds the claims turn)."""
        docs = await find_by_ids(self._db.stock, device_ids, {"state": 1, "shipment_id": 1})
        shipped = {
            doc["_id"]: doc["shipment_id"]
            for doc in docs.values()
            if doc["state"] == DeviceState.SHIPPED.value
        }
        written = await find_by_ids(self._db.shipments, list(set(shipped.values())), {"_id": 1})
        for device_id, shipment_id in shipped.items():
            if shipment_id not in written:
                await self._unclaim(device_id, shipment_id)

    async def mirror_delivery(self, shipment: Document) -> None:
        """A delivered shipment's devices still shown shipped become delivered (idempotent)."""
        for device_id in shipment["device_ids"]:
            await self._deliver(device_id, shipment)

    # ---- stock -----------------------------------------------------------------------------------

    async def load_devices(self, device_ids: Sequence[UUID]) -> dict[UUID, StockDevice]:
        """These devices (those not in stock absent), each looked up by its id. A device still shown
        shipped whose shipment was accepted is delivered first (the acceptance committed on the
        shipment and the store failed before the devices followed)."""
        ids = [str(d) for d in device_ids]
        docs = await find_by_ids(self._db.stock, ids)
        shipment_ids = {
            doc["shipment_id"]
            for doc in docs.values()
            if doc["state"] == DeviceState.SHIPPED.value and doc.get("shipment_id")
        }
        shipments = await find_by_ids(self._db.shipments, list(shipment_ids))
        delivered = [s for s in shipments.values() if s["status"] == _DELIVERED]
        for shipment in delivered:
            await self.mirror_delivery(shipment)
        if delivered:
            docs = await find_by_ids(self._db.stock, ids)
        return {UUID(doc_id): device_from(doc) for doc_id, doc in docs.items()}

    async def load_device(self, device_id: UUID) -> StockDevice | None:
        return (await self.load_devices([device_id])).get(device_id)

    async def find_devices(self, query: Document) -> list[StockDevice]:
        """Devices matching a query (lists, not hot paths)."""
        cursor = self._db.stock.find(query).sort([("ready_at", ASCENDING), ("_id", ASCENDING)])
        return [device_from(doc) async for doc in cursor]

    # ---- available: the devices matching may claim -----------------------------------------------
    # One entry per available device (the stock document as it entered stock), so that matching
    # reads the available devices, not the whole stock. The entry is written before the device
    # enters stock and removed after its claim, so every available device has one; an entry whose
    # device is no longer available (a crash after the claim) is removed when a claim of it fails.

    async def add_available(self, device: StockDevice) -> None:
        doc = {"_id": str(device.device_id), **device_fields(device)}
        with suppress(DuplicateKeyError):  # written meanwhile by a redelivery: the same entry
            await self._db.available.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def drop_available(self, device_id: UUID) -> None:
        await self._db.available.delete_one({"_id": str(device_id)})

    async def available_devices(self) -> list[StockDevice]:
        """The available devices, oldest in stock first; an entry may be stale (its claim fails)."""
        devices = [device_from(doc) async for doc in self._db.available.find({})]
        return sorted(devices, key=lambda d: (d.ready_at, str(d.device_id)))

    # ---- claims: a request lists the devices allocated to it -------------------------------------
    # `request_devices` (_id = request id) lists them; it is written only in the claims turn, so
    # never by two writers at once (the request's own document is also written by the outbox
    # relay, hence a document of its own). A claim (matching, or staff
    # by hand) first adds the device to `pending_ids`, then makes the conditional update of the
    # device (available -> allocated to the request), then removes its `available` entry and moves
    # it to `device_ids` or, if the claim failed, drops it. So `device_ids` lists only devices
    # allocated to the request, and every device allocated to it is in `device_ids` or
    # `pending_ids`: counting never reads the stock, and a crash mid-claim can only leave a request
    # counting too many (it waits) until `settle_claims`, never too few (it would get too many).

    def claims_turn(self) -> AbstractAsyncContextManager[None]:
        """Claims are made one at a time across every allocation instance: a lease."""
        return lease(self._db.leases, "claims", ttl_s=15.0, wait_s=30.0)

    async def begin_claim(self, request_id: UUID, device_id: UUID) -> None:
        await list_pending(self._db.request_devices, str(request_id), str(device_id))

    async def end_claim(self, request_id: UUID, device_id: UUID, *, made: bool) -> None:
        await settle_pending(
            self._db.request_devices, str(request_id), str(device_id), belongs=made
        )

    async def _made(self, request: Request) -> list[UUID]:
        """Those of the request's pending claims that were made (the device is allocated to it)."""
        docs = await find_by_ids(
            self._db.stock, [str(d) for d in request.pending_ids], {"request_id": 1}
        )
        wanted = str(request.request_id)
        return [d for d in request.pending_ids if docs.get(str(d), {}).get("request_id") == wanted]

    async def settle_claims(self, request: Request) -> Request:
        """Settle the claims a crash or a failure left pending. Only while no claim for this request
        is in flight (the caller holds the claims turn)."""
        if not request.pending_ids:
            return request
        made = await self._made(request)
        for device_id in made:
            await self.drop_available(device_id)
        listed = [d for d in made if d not in request.device_ids]
        await self._db.request_devices.update_one(
            {"_id": str(request.request_id)},
            {
                "$addToSet": {"device_ids": {"$each": [str(d) for d in listed]}},
                "$pullAll": {"pending_ids": [str(d) for d in request.pending_ids]},
            },
        )
        return replace(request, device_ids=request.device_ids + tuple(listed), pending_ids=())

    async def allocated_ids(self, request: Request) -> list[UUID]:
        """The devices allocated to the request, in allocation order (reads only pending claims)."""
        if not request.pending_ids:
            return list(request.device_ids)
        made = [d for d in await self._made(request) if d not in request.device_ids]
        return [*request.device_ids, *made]

    # ---- requests --------------------------------------------------------------------------------

    async def load_request(self, request_id: UUID) -> Request | None:
        doc = await self._db.requests.find_one({"_id": str(request_id)})
        if doc is None:
            return None
        return request_from(doc, await self._db.request_devices.find_one({"_id": doc["_id"]}))

    async def find_requests(self, query: Document) -> list[Request]:
        cursor = self._db.requests.find(query).sort([("opened_at", ASCENDING), ("_id", ASCENDING)])
        docs = [doc async for doc in cursor]
        lists = await find_by_ids(self._db.request_devices, [doc["_id"] for doc in docs])
        return [request_from(doc, lists.get(doc["_id"])) for doc in docs]

    # ---- shipments -------------------------------------------------------------------------------

    async def load_shipment(self, shipment_id: UUID) -> Shipment | None:
        doc = await self._db.shipments.find_one({"_id": str(shipment_id)})
        return shipment_from(doc) if doc else None

    async def find_shipments(self, query: Document) -> list[Shipment]:
        cursor = self._db.shipments.find(query).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [shipment_from(doc) async for doc in cursor]

    # ---- use cases: each write of allocation's handlers -----------------------------------------

    async def load(self, device_id: UUID) -> Loaded[StockDevice] | None:
        device = await self.load_device(device_id)
        return None if device is None else Loaded(device, device.state.value)

    async def save(
        self, loaded: Loaded[StockDevice], device: StockDevice, events: Sequence[Event]
    ) -> bool:
        return await update_if(
            self._db.stock,
            str(device.device_id),
            {"state": loaded.version},
            {"$set": device_fields(device) | outbox_set(events)},
        )

    async def flush(self, device_id: UUID) -> None:
        await self._connected.relay.flush(self._db.stock, str(device_id))

    async def in_stock(self, device_id: UUID) -> bool:
        return await self._db.stock.find_one({"_id": str(device_id)}, {"_id": 1}) is not None

    async def insert_stock(self, device: StockDevice, applied: UUID) -> bool:
        """A ready device enters stock; False if it was there already (a redelivery)."""
        doc = {"_id": str(device.device_id), **device_fields(device), "applied": [str(applied)]}
        try:
            await self._db.stock.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def still_available(self, device_id: UUID) -> bool:
        current = await self._db.stock.find_one({"_id": str(device_id)}, {"state": 1})
        return current is None or current["state"] == DeviceState.AVAILABLE.value

    async def claim_for_shipment(self, device: StockDevice) -> bool:
        """An allocated device of the recipient is marked shipped (its event comes with the
        shipment's insert)."""
        return await update_if(
            self._db.stock,
            str(device.device_id),
            {"state": DeviceState.ALLOCATED.value, "recipient_id": device.recipient_id},
            {"$set": device_fields(device)},
        )

    async def release_shipment_claims(
        self, claimed: Sequence[StockDevice], shipment_id: UUID
    ) -> None:
        for device in claimed:
            await update_if(
                self._db.stock,
                str(device.device_id),
                {"shipment_id": str(shipment_id)},
                {"$set": {"state": DeviceState.ALLOCATED.value, "shipment_id": None}},
            )

    async def insert_shipment(self, shipment: Shipment, events: Sequence[Event]) -> None:
        await self._db.shipments.insert_one(shipment_doc(shipment) | outbox_doc(list(events)))

    async def save_shipment(
        self, before: Shipment, after: Shipment, events: Sequence[Event]
    ) -> bool:
        doc = shipment_doc(after)
        return await update_if(
            self._db.shipments,
            doc.pop("_id"),
            {"status": before.status.value},
            {"$set": doc | outbox_set(events)},
        )

    async def mark_delivered(self, device: StockDevice, shipment_id: UUID) -> None:
        await update_if(
            self._db.stock,
            str(device.device_id),
            {"state": DeviceState.SHIPPED.value, "shipment_id": str(shipment_id)},
            {"$set": {"state": device.state.value, "updated_at": device.updated_at}},
        )

    async def flush_shipment(self, shipment_id: UUID) -> None:
        await self._connected.relay.flush(self._db.shipments, str(shipment_id))

    async def insert_request(self, request: Request, events: Sequence[Event]) -> None:
        await self._db.requests.insert_one(request_doc(request) | outbox_doc(list(events)))

    async def close_request(self, closed: Request, event: Event) -> bool:
        """An open request becomes fulfilled or cancelled; False if it was not open."""
        return await update_if(
            self._db.requests,
            str(closed.request_id),
            {"status": RequestStatus.OPEN.value},
            {
                "$set": {
                    "status": closed.status.value,
                    "closed_at": event.occurred_at,
                    **outbox_set([event]),
                }
            },
        )

    async def flush_request(self, request_id: UUID) -> None:
        await self._connected.relay.flush(self._db.requests, str(request_id))
