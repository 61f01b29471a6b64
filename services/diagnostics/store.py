"""The diagnostics store: `devices` (state, report, erasures, certificate, outbox) and
`certificates` (a copy of each issued certificate, keyed by its id)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.diagnostics.domain import Device, DeviceState, SanitizationRecord
from shared.events import Event
from shared.mongo import DUPLICATE_KEY, Database, Document, to_document, update_if
from shared.outbox import ServiceStore, outbox_set
from shared.usecase import Loaded


async def setup(db: Database) -> None:
    await db.devices.create_index([("state", ASCENDING)])
    await db.devices.create_index([("certificate.certificate_id", ASCENDING)])
    await db.devices.create_index([("asset_tag", ASCENDING)])
    await db.devices.create_index([("serial_number", ASCENDING)])


def _device_fields(device: Device) -> Document:
    fields: Document = to_document(device.model_dump())
    return fields


def device_from(doc: Document) -> Device:
    return Device.model_validate({k: v for k, v in doc.items() if k in Device.model_fields})


def _received_doc(device: Device) -> Document:
    return {"_id": str(device.device_id), "version": 0, **_device_fields(device)}


class Store(ServiceStore):
    """Every collection call of diagnostics."""

    async def load(self, device_id: UUID) -> Loaded[Device] | None:
        doc = await self._db.devices.find_one({"_id": str(device_id)}, {"outbox": 0})
        if doc is None:
            return None
        return Loaded(device_from(doc), int(doc.get("version", 0)))

    async def save(self, loaded: Loaded[Device], device: Device, events: Sequence[Event]) -> bool:
        """Store the new state and its events in one update, if nobody changed it since it was
        loaded; then copy a newly issued certificate."""
        version: int = loaded.version
        stored = await update_if(
            self._db.devices,
            str(device.device_id),
            {"version": version},
            {"$set": {**_device_fields(device), "version": version + 1, **outbox_set(events)}},
        )
        if stored and device.certificate is not None and loaded.state.certificate is None:
            await self.save_certificate(device.certificate)
        return stored

    async def flush(self, device_id: UUID) -> None:
        await self._connected.relay.flush(self._db.devices, str(device_id))

    async def insert_received(self, device: Device) -> bool:
        """Insert a newly received device; False if it was already there (a redelivery)."""
        try:
            await self._db.devices.insert_one(_received_doc(device))
        except DuplicateKeyError:
            return False
        return True

    async def insert_all_received(self, devices: Sequence[Device]) -> int:
        """Insert newly received devices in one round trip; those already there (redeliveries)
        are left as they are. Returns how many were new."""
        if not devices:
            return 0
        try:
            result = await self._db.devices.insert_many(
                [_received_doc(d) for d in devices], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def save_certificate(self, certificate: SanitizationRecord) -> None:
        doc = to_document(certificate.model_dump())
        await self._db.certificates.replace_one(
            {"_id": str(certificate.certificate_id)},
            {"_id": str(certificate.certificate_id), **doc},
            upsert=True,
        )

    async def load_certificate(self, certificate_id: UUID) -> SanitizationRecord | None:
        doc = await self._db.certificates.find_one({"_id": str(certificate_id)})
        if doc is None:
            # Issued with the device's state but not yet copied (a crash in between): copy it now.
            device_doc = await self._db.devices.find_one(
                {"certificate.certificate_id": str(certificate_id)}, {"outbox": 0}
            )
            if device_doc is None:
                return None
            certificate = device_from(device_doc).certificate
            if certificate is None:
                return None
            await self.save_certificate(certificate)
            return certificate
        doc.pop("_id")
        return SanitizationRecord.model_validate(doc)

    async def list_devices(
        self,
        state: DeviceState | None,
        limit: int,
        *,
        asset_tag: str | None = None,
        serial_number: str | None = None,
    ) -> list[Device]:
        query: Document = {} if state is None else {"state": state.value}
        if asset_tag is not None:
            query["asset_tag"] = asset_tag
        if serial_number is not None:
            query["serial_number"] = serial_number
        cursor = (
            self._db.devices.find(query, {"outbox": 0}).sort("received_at", ASCENDING).limit(limit)
        )
        return [device_from(doc) async for doc in cursor]
