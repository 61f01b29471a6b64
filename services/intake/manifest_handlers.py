"""A pickup's manifest, its use cases: import the donor's asset list (rows checked one by one;
idempotent) and scan a code off it, through the manual scan's own use case, so `device.received`
is the same as for a manual scan."""

from uuid import UUID

from services.intake import handlers, manifest
from services.intake.domain import Pickup, ReceivedDevice
from services.intake.manifest import ImportResult, ManifestUpload
from services.intake.manifest_store import ManifestStore
from services.intake.store import Store


async def import_rows(
    store: Store,
    rows_store: ManifestStore,
    pickup: Pickup,
    upload: ManifestUpload,
    *,
    by: str,
    shown_to: str | None,
    max_rows: int,
) -> ImportResult:
    """Store the valid rows; `shown_to` is the partner reading the refusals (None: staff)."""
    manifest.ensure_open(
        pickup,
        "import asset list",
        f"the asset list of a {pickup.status.value} pickup can no longer change",
    )
    rows, invalid = manifest.validate_upload(upload.rows)
    if not rows:
        return manifest.result_of([], invalid)
    async with store.manifest_turn(pickup.pickup_id):
        known = await rows_store.known_for(pickup.pickup_id, rows)
        decisions = manifest.plan_import(
            pickup, rows, known, now=handlers.now(), by=by, shown_to=shown_to
        )
        writes = [d for d in decisions if isinstance(d, manifest.Write)]
        await rows_store.store_writes(pickup.pickup_id, writes, known, max_rows)
    return manifest.result_of(decisions, invalid)


class UnknownCode(LookupError):
    """The scanned code names no row of the pickup's manifest."""


class AmbiguousCode(LookupError):
    """The scanned serial is on several rows (of different makes)."""


async def scan_code(
    store: Store, rows_store: ManifestStore, pickup_id: UUID, code: str, location: str, *, by: str
) -> tuple[ReceivedDevice, bool, int]:
    """Register the device on the manifest row the code names; (device, new?, row number)."""
    pickup = await handlers.visible_pickup(store, pickup_id, None)
    manifest.ensure_open(
        pickup, "scan device", f"no device can be scanned into a {pickup.status.value} pickup"
    )
    found = await rows_store.rows_for_code(pickup_id, code)
    if not found:
        raise UnknownCode(f"code {code} is not on the manifest of pickup {pickup_id}")
    if len(found) > 1:
        rows = ", ".join(str(doc["row"]) for doc in sorted(found, key=lambda d: d["row"]))
        raise AmbiguousCode(f"serial {code} is on rows {rows} of the manifest: scan the asset tag")
    row = found[0]
    scan = manifest.row_from_doc(row).scan(location)
    device, created = await handlers.scan_device(store, pickup_id, scan, scanned_by=by)
    await rows_store.mark_scanned(pickup_id, row["_id"], device.device_id)
    return device, created, row["row"]
