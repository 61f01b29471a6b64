"""Custody's own collections: `devices` (each device's identity, learnt from `device.received`,
and its custody view: stage, history, certificates) and `device_summaries` (compact copies that
reports and the operations views read many at once)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from pydantic import TypeAdapter
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.custody.domain import Custody
from shared.devices import RegisteredDevice
from shared.events import DeviceReceived
from shared.mongo import Database, Document, to_document, update_if
from shared.outbox import ServiceStore

_CUSTODY = TypeAdapter(Custody)


# ---- devices ----------------------------------------------------------------------------------


def identity_fields(event: DeviceReceived) -> Document:
    """What `device.received` says the device is and whose it is."""
    fields: Document = to_document(
        RegisteredDevice.received(event).model_dump(exclude={"device_id"})
    )
    return fields


def is_received(doc: Document) -> bool:
    """A device custody has learnt from `device.received` (until then, events of it wait in its
    document: they travel on other topics and may come first)."""
    return "partner_id" in doc


def custody_fields(custody: Custody) -> Document:
    fields: Document = to_document(_CUSTODY.dump_python(custody))
    return fields


def custody_from_doc(doc: Document) -> Custody:
    return _CUSTODY.validate_python({k: v for k, v in doc.items() if v is not None})


# ---- device summaries -------------------------------------------------------------------------

SUMMARY_DETAILS = (
    "recipient_id",
    "recipient_name",
    "students",
    "classrooms",
    "condition",
    "recycler",
    "recycler_certification",
    "fractions",
)
"""The details of history entries that reports and the operations views read."""


def summary_of(doc: Document) -> Document:
    """A device's compact copy: identity, stage, and its history without the heavy details.

    Reports and operations views read many devices at once; a flat copy (the history as one
    JSON string) costs the store one value per device instead of every nested one.
    """
    summary = {
        key: doc.get(key)
        for key in (
            "_id",
            "partner_id",
            "pickup_id",
            "asset_tag",
            "serial_number",
            "category",
            "make",
            "model",
            "weight_kg",
            "received_at",
            "stage",
        )
    }
    summary["version"] = doc.get("version", 0)
    summary["history_json"] = json.dumps(
        [
            {
                "event_type": h["event_type"],
                "occurred_at": _utc(h["occurred_at"]).isoformat(),
                "details": {
                    k: v for k, v in (h.get("details") or {}).items() if k in SUMMARY_DETAILS
                },
            }
            for h in doc.get("history") or ()
        ],
        separators=(",", ":"),
    )
    return summary


def expand_summary(summary: Document) -> Document:
    """A summary in the custody document's shape: `history` a list, times as datetimes."""
    expanded = {k: v for k, v in summary.items() if k != "history_json"}
    expanded["history"] = [
        {**h, "occurred_at": datetime.fromisoformat(h["occurred_at"])}
        for h in json.loads(summary.get("history_json") or "[]")
    ]
    return expanded


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- operations -------------------------------------------------------------------------------


def literal_pattern(text: str) -> str:
    """A regular expression matching exactly `text` (escaping only what is special in both
    Go's and PCRE's syntax, which differ on escaped ordinary characters)."""
    special = set("\\.^$|?*+()[]{}")
    return "^" + "".join("\\" + c if c in special else c for c in text) + "$"


# ---- the store --------------------------------------------------------------------------------


class Connected(Protocol):
    """Custody publishes nothing of its own: its store needs the database only."""

    db: Database


class Store(ServiceStore):
    """Every collection call of custody."""

    async def setup(self) -> None:
        await self._db.devices.create_index([("partner_id", ASCENDING)])
        await self._db.device_summaries.create_index([("partner_id", ASCENDING)])
        if await self._db.device_summaries.find_one({}, {"_id": 1}) is None:
            await self.sync_summaries()  # first start with summaries: copy the existing devices

    # ---- devices ------------------------------------------------------------------------------

    async def load_state(self, device_id: UUID) -> Document | None:
        """The device's document as the consumer updates it (received or not yet)."""
        return await self._db.devices.find_one({"_id": str(device_id)})

    async def load_device(self, device_id: UUID) -> Document | None:
        """The device's custody view, once custody has learnt of its reception."""
        doc = await self._db.devices.find_one({"_id": str(device_id)}, {"applied": 0})
        return doc if doc is not None and is_received(doc) else None

    async def add_event(
        self, doc: Document | None, device_id: UUID, event_id: str, fields: Document
    ) -> Document | None:
        """Store the device's document with one more event applied, guarded by the version it
        was read at (a first event inserts it); the stored document, or None if it changed
        meanwhile."""
        if doc is None:
            new = {"_id": str(device_id), **fields, "applied": [event_id], "version": 1}
            try:
                await self._db.devices.insert_one(new)
            except DuplicateKeyError:  # its first two events came at once: read it again
                return None
            return new
        version = doc.get("version", 0)
        stored = await update_if(
            self._db.devices,
            doc["_id"],
            {"version": version, "applied": {"$ne": event_id}},
            {"$set": fields, "$inc": {"version": 1}, "$push": {"applied": event_id}},
        )
        return {**doc, **fields, "version": version + 1} if stored else None

    async def find_devices(
        self,
        *,
        partner_id: str | None = None,
        pickup_id: UUID | None = None,
        stage: str | None = None,
    ) -> list[Document]:
        query: dict[str, Any] = {"partner_id": {"$exists": True}}
        if partner_id is not None:
            query["partner_id"] = partner_id
        if pickup_id is not None:
            query["pickup_id"] = str(pickup_id)
        if stage is not None:
            query["stage"] = stage
        cursor = self._db.devices.find(query, {"applied": 0}).sort("received_at", ASCENDING)
        return [d async for d in cursor]

    # ---- device summaries ---------------------------------------------------------------------

    async def find_summaries(self, query: dict[str, Any]) -> list[Document]:
        return [expand_summary(s) async for s in self._db.device_summaries.find(query)]

    async def donor_devices(self, partner_id: str) -> list[Document]:
        """One query on the indexed `partner_id`, only the fields the report reads."""
        return await self.find_summaries({"partner_id": partner_id})

    async def save_summary(self, doc: Document) -> None:
        """Write the device's summary unless a newer version of it is already there."""
        if not is_received(doc):
            return
        summary = summary_of(doc)
        await update_if(
            self._db.device_summaries,
            summary["_id"],
            {"version": {"$lt": summary["version"]}},
            {"$set": {k: v for k, v in summary.items() if k != "_id"}},
            upsert=True,
        )

    async def sync_summaries(self) -> int:
        """Write the summaries that are missing or behind (after a crash between the two
        writes)."""
        known = {
            d["_id"]: d.get("version", 0)
            async for d in self._db.device_summaries.find({}, {"_id": 1, "version": 1})
        }
        behind = 0
        async for doc in self._db.devices.find({"partner_id": {"$exists": True}}, {"applied": 0}):
            if known.get(doc["_id"], -1) < doc.get("version", 0):
                await self.save_summary(doc)
                behind += 1
        return behind

    # ---- operations ---------------------------------------------------------------------------

    async def stage_rows(self) -> list[Document]:
        """One query over every device, only the fields the stage table needs."""
        return await self.find_summaries({})

    async def find_by_tag_or_serial(self, query: str) -> list[Document]:
        """Exact asset tag, or serial number ignoring case (scanners and labels disagree on
        case)."""
        serial = {"$regex": literal_pattern(query), "$options": "i"}
        matches = self._db.device_summaries.find(
            {"$or": [{"asset_tag": query}, {"serial_number": serial}]}, {"_id": 1}
        )
        ids = [m["_id"] async for m in matches]
        found = [await self._db.devices.find_one({"_id": i}, {"applied": 0}) for i in ids]
        return sorted((d for d in found if d is not None), key=lambda d: d["received_at"])
