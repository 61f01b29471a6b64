"""Certificates a donor shows its auditors, built from the events in a device's custody history.

An erasure certificate (NIST SP 800-88) cites the device's `device.received` and `device.wiped`
events; a recycling certificate cites `device.received`, `device.dismantled` and `device.recycled`.
Each carries the evidence digest of the events it cites (see `shared.evidence`), so anyone holding
the history can check that the certificate says what the events say.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events import (
    DeviceCategory,
    ErasureRecord,
    MaterialFractions,
    Recycler,
    SanitizationMethod,
)
from shared.evidence import evidence_digest
from shared.mongo import Document


class Kind(StrEnum):
    ERASURE = "erasure"
    RECYCLING = "recycling"


CITED: dict[Kind, tuple[str, ...]] = {
    Kind.ERASURE: ("device.received", "device.wiped"),
    Kind.RECYCLING: ("device.received", "device.dismantled", "device.recycled"),
}


class NotIssued(LookupError):
    """The device has no such certificate (yet)."""


class Unverifiable(ValueError):
    """An event the certificate must cite is missing or was recorded without its digest."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CitedEvent(Frozen):
    event_id: UUID
    event_type: str
    occurred_at: datetime
    digest: str


class DeviceIdentity(Frozen):
    """What names the device on every certificate: no donor, no person."""

    device_id: UUID
    category: DeviceCategory
    make: str
    model: str
    serial_number: str | None
    asset_tag: str


class Evidence(Frozen):
    cited: list[CitedEvent]
    digest: str


class ErasureCertificate(Frozen):
    """Proof that every drive of the device was sanitized (NIST SP 800-88 Clear or Purge)."""

    kind: Kind = Kind.ERASURE
    certificate_id: UUID
    device: DeviceIdentity
    erasures: list[ErasureRecord]
    issued_at: datetime
    issued_by: str
    evidence: Evidence


class RecyclingCertificate(Frozen):
    """Proof that the device's materials went to a certified recycler."""

    kind: Kind = Kind.RECYCLING
    certificate_id: UUID
    device: DeviceIdentity
    fractions: MaterialFractions
    hazardous_parts: list[str]
    drive_serials: list[str] | None
    """Every drive of the device: each destroyed at dismantling (`storage_destroyed`) or erased
    under the erasure certificate. None when the dismantling event predates v1.1."""
    erasure_certificate_id: UUID | None
    storage_destroyed: list[ErasureRecord]
    dismantled_by: str
    dismantled_at: str
    recycler: Recycler
    lot_id: UUID
    bill_of_lading: str | None
    issued_at: datetime
    issued_by: str
    evidence: Evidence


DonorCertificate = ErasureCertificate | RecyclingCertificate


def identity(doc: Document) -> DeviceIdentity:
    return DeviceIdentity(
        device_id=UUID(doc["_id"]),
        category=DeviceCategory(doc["category"]),
        make=doc["make"],
        model=doc["model"],
        serial_number=doc.get("serial_number"),
        asset_tag=doc["asset_tag"],
    )


def _entries(doc: Document, kind: Kind) -> dict[str, dict[str, Any]]:
    """The latest history entry of each event type the certificate cites."""
    wanted = CITED[kind]
    found: dict[str, dict[str, Any]] = {}
    for entry in doc.get("history") or ():
        if entry["event_type"] in wanted:
            found[entry["event_type"]] = entry
    return found


def evidence(doc: Document, kind: Kind) -> Evidence:
    entries = _entries(doc, kind)
    missing = [t for t in CITED[kind] if t not in entries or not entries[t].get("digest")]
    if missing:
        raise Unverifiable(f"the history lacks {', '.join(missing)} with a digest")
    cited = [
        CitedEvent(
            event_id=UUID(entries[t]["event_id"]),
            event_type=t,
            occurred_at=entries[t]["occurred_at"],
            digest=entries[t]["digest"],
        )
        for t in CITED[kind]
    ]
    return Evidence(cited=cited, digest=evidence_digest((c.event_id, c.digest) for c in cited))


def erasure_certificate(doc: Document) -> ErasureCertificate:
    wiped = _entries(doc, Kind.ERASURE).get("device.wiped")
    if wiped is None:
        raise NotIssued(f"device {doc['_id']} has no erasure certificate yet")
    details = wiped["details"]
    return ErasureCertificate(
        certificate_id=UUID(details["certificate_id"]),
        device=identity(doc),
        erasures=[ErasureRecord.model_validate(e) for e in details.get("erasures") or ()],
        issued_at=wiped["occurred_at"],
        issued_by=wiped["producer"],
        evidence=evidence(doc, Kind.ERASURE),
    )


def recycling_certificate(doc: Document) -> RecyclingCertificate:
    entries = _entries(doc, Kind.RECYCLING)
    recycled, dismantled = entries.get("device.recycled"), entries.get("device.dismantled")
    if recycled is None or dismantled is None:
        raise NotIssued(f"device {doc['_id']} has no recycling certificate yet")
    r, d = recycled["details"], dismantled["details"]
    return RecyclingCertificate(
        certificate_id=UUID(r["certificate_id"]),
        device=identity(doc),
        fractions=MaterialFractions.model_validate(r["fractions"]),
        hazardous_parts=list(d.get("hazardous_parts") or ()),
        drive_serials=d.get("drive_serials"),
        erasure_certificate_id=d.get("erasure_certificate_id"),
        storage_destroyed=[
            ErasureRecord.model_validate(e) for e in d.get("storage_destroyed") or ()
        ],
        dismantled_by=d["dismantled_by"],
        dismantled_at=d["location"],
        recycler=Recycler(name=r["recycler"], certification=r["recycler_certification"]),
        lot_id=UUID(r["lot_id"]),
        bill_of_lading=r.get("bill_of_lading"),
        issued_at=recycled["occurred_at"],
        issued_by=recycled["producer"],
        evidence=evidence(doc, Kind.RECYCLING),
    )


def certificate(doc: Document, kind: Kind) -> DonorCertificate:
    if kind is Kind.ERASURE:
        return erasure_certificate(doc)
    return recycling_certificate(doc)


# ---- public verification --------------------------------------------------------------------


class PublicErasure(Frozen):
    """One drive of an erasure certificate as the public page shows it: how it was sanitized and
    whose word that is (the workbench's own log, or a typed record). No drive serial, no
    operator, no place."""

    method: SanitizationMethod
    tool: str
    tool_version: str
    verified: bool
    source: Literal["workbench", "typed record"]
    log_sha256: str | None = None
    bytes_written: int | None = None
    bytes_verified: int | None = None
    verification_sample_rate: float | None = None


def public_erasure(record: ErasureRecord) -> PublicErasure:
    shown = PublicErasure(
        method=record.method,
        tool=record.tool,
        tool_version=record.tool_version,
        verified=record.verified,
        source="typed record",
    )
    w = record.workbench
    if w is None:
        return shown
    return shown.model_copy(
        update={
            "source": "workbench",
            "log_sha256": w.log_sha256,
            "bytes_written": w.bytes_written,
            "bytes_verified": w.bytes_verified,
            "verification_sample_rate": w.verification_sample_rate,
        }
    )


class PublicCertificate(Frozen):
    """What the public page shows of one certificate: no donor, no recipient, no person."""

    kind: Kind
    certificate_id: UUID
    issued_at: datetime
    evidence: Evidence
    erasures: list[PublicErasure] = Field(
        default_factory=list, description="An erasure certificate's drives, in its order"
    )


class PublicDevice(Frozen):
    device_id: UUID
    category: DeviceCategory
    make: str
    model: str
    stage: str
    certificates: list[PublicCertificate]
    digest_checked: str | None = None
    digest_matches: Kind | None = None


def public_view(doc: Document, digest: str | None = None) -> PublicDevice:
    """The device's public verification page; with `digest`, which certificate it belongs to."""
    issued: list[PublicCertificate] = []
    for kind in Kind:
        try:
            c = certificate(doc, kind)
        except (NotIssued, Unverifiable):
            continue
        issued.append(
            PublicCertificate(
                kind=kind,
                certificate_id=c.certificate_id,
                issued_at=c.issued_at,
                evidence=c.evidence,
                erasures=[public_erasure(e) for e in c.erasures]
                if isinstance(c, ErasureCertificate)
                else [],
            )
        )
    wanted = digest.strip().lower() if digest else None
    return PublicDevice(
        device_id=UUID(doc["_id"]),
        category=DeviceCategory(doc["category"]),
        make=doc["make"],
        model=doc["model"],
        stage=doc.get("stage") or "received",
        certificates=issued,
        digest_checked=wanted,
        digest_matches=next((c.kind for c in issued if c.evidence.digest == wanted), None),
    )
