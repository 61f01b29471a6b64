"""A device's way through diagnostics: received -> diagnosed -> ready | awaiting_recycling.

Invariant 1 (data security): a device becomes `ready` only when decided for refurbishment and
every drive of its report has a verified Clear or Purge erasure; it is released for recycling
only when every drive was verifiably erased or destroyed. Both end with an erasure certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from shared.domain import IllegalTransition
from shared.events import (
    Contract,
    Decision,
    DeviceCategory,
    DeviceDiagnosed,
    DeviceReady,
    DeviceReceived,
    DeviceReleasedForRecycling,
    DeviceWiped,
    DriveKind,
    ErasureRecord,
    Event,
    Grade,
    HardwareSpecs,
    NonEmpty,
    SanitizationMethod,
    WorkbenchEvidence,
)

Ids = Callable[[object, str], UUID]
"""Derives an id from its cause and a kind, e.g. ids(report_id, "device.diagnosed")."""

REUSE_METHODS = (SanitizationMethod.CLEAR, SanitizationMethod.PURGE)
RECYCLE_METHODS = (*REUSE_METHODS, SanitizationMethod.DESTROY)


class DeviceState(StrEnum):
    RECEIVED = "received"
    DIAGNOSED = "diagnosed"
    READY = "ready"
    AWAITING_RECYCLING = "awaiting_recycling"


class Assessment(Contract):
    """What the grading rules concluded from a report."""

    functional_grade: Grade
    cosmetic_grade: Grade
    decision: Decision
    reason: str
    rules_version: str


class DriveHealth(Contract):
    serial: NonEmpty
    model: NonEmpty | None = None
    kind: DriveKind
    transport: NonEmpty | None = None
    size_bytes: Annotated[int, Field(ge=0)]
    smart_passed: bool | None = None
    power_on_hours: Annotated[int, Field(ge=0)] | None = None
    reallocated_sectors: Annotated[int, Field(ge=0)] | None = None
    media_errors: Annotated[int, Field(ge=0)] | None = None


class BatteryHealth(Contract):
    design_capacity: Annotated[float, Field(ge=0)] | None = None
    full_capacity: Annotated[float, Field(ge=0)] | None = None
    capacity_unit: Literal["Wh", "Ah"] | None = None
    wear_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    cycle_count: Annotated[int, Field(ge=0)] | None = None


class MachineSnapshot(Contract):
    """What the machine said about itself when the workbench read it (optional in a report;
    added in v1.2): firmware identity, each drive's health, battery wear, network MACs, the
    fields no tool could read, and the SHA-256 of the full snapshot and test outputs kept on
    the workbench's stick."""

    schema_version: NonEmpty = Field(examples=["1.0"])
    snapshot_id: UUID
    workbench: NonEmpty = Field(examples=["greenit-workbench 1.0.0"])
    manufacturer: NonEmpty | None = None
    model: NonEmpty | None = None
    serial: NonEmpty | None = None
    chassis_type: NonEmpty | None = None
    drives: list[DriveHealth] = Field(default_factory=list, max_length=16)
    batteries: list[BatteryHealth] = Field(default_factory=list, max_length=4)
    network_macs: list[Annotated[str, Field(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")]] = Field(
        default_factory=list, max_length=16
    )
    unread: list[NonEmpty] = Field(default_factory=list, max_length=64)
    snapshot_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    tests_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Diagnosis(Contract):
    event_id: UUID
    report_id: UUID
    specs: HardwareSpecs
    tests: dict[str, str]
    cosmetic: dict[str, str | bool]
    functional_grade: Grade
    cosmetic_grade: Grade
    decision: Decision
    reason: str
    rules_version: str
    tested_by: str
    tested_at: datetime
    location: str
    snapshot: MachineSnapshot | None = None


class CertifiedDrive(Contract):
    serial: str
    kind: DriveKind
    capacity_gb: int
    method: SanitizationMethod
    technique: str
    tool: str
    tool_version: str
    verified: bool
    verification: str
    operator: str
    performed_at: datetime
    location: str
    erasure_id: UUID | None = None
    workbench: WorkbenchEvidence | None = None


class SanitizationRecord(Contract):
    """What diagnostics did to erase one device (NIST SP 800-88), served as its erasure
    certificate (`GET /certificates/{id}`): which device, each drive, how, who, when, where. The
    donor's certificate, built from the events, is custody's `ErasureCertificate`."""

    certificate_id: UUID
    device_id: UUID
    make: str
    model: str
    serial_number: str | None
    asset_tag: str
    category: DeviceCategory
    decision: Decision
    drives: list[CertifiedDrive]
    issued_at: datetime


class Device(Contract):
    device_id: UUID
    pickup_id: UUID
    partner_id: str
    received_event_id: UUID
    asset_tag: str
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    received_at: datetime
    location: str
    state: DeviceState = DeviceState.RECEIVED
    diagnosis: Diagnosis | None = None
    erasures: list[ErasureRecord] = []
    certificate: SanitizationRecord | None = None

    @property
    def certificate_id(self) -> UUID | None:
        return self.certificate.certificate_id if self.certificate else None

    def pending_drives(self) -> list[str]:
        """Serials of the report's drives without a verified, acceptable erasure yet."""
        if self.diagnosis is None:
            return []
        done = _done(self.diagnosis.decision, self.erasures)
        return [d.serial for d in self.diagnosis.specs.drives if d.serial not in done]


def receive(event: DeviceReceived) -> Device:
    """A device scanned in by intake waits for its test report."""
    return Device(
        device_id=event.device_id,
        pickup_id=event.pickup_id,
        partner_id=event.partner_id,
        received_event_id=event.event_id,
        asset_tag=event.asset_tag,
        serial_number=event.serial_number,
        category=event.category,
        make=event.make,
        model=event.model,
        weight_kg=event.weight_kg,
        received_at=event.occurred_at,
        location=event.location,
    )


def diagnose(
    device: Device,
    *,
    report_id: UUID,
    specs: HardwareSpecs,
    tests: Mapping[str, str],
    cosmetic: Mapping[str, str | bool],
    assessment: Assessment,
    tested_by: str,
    tested_at: datetime,
    location: str,
    now: datetime,
    ids: Ids,
    snapshot: MachineSnapshot | None = None,
) -> tuple[Device, list[Event]]:
    """Record the graded report and the decision. Only a received device can be diagnosed;
    the same report again (its `report_id`: an upload retried) changes nothing.

    A device without drives has nothing to erase: it is certified with an empty erasure
    list at once and goes straight to ready or to recycling.
    """
    if device.diagnosis is not None and device.diagnosis.report_id == report_id:
        return device, []
    if device.state is not DeviceState.RECEIVED:
        raise _refused(device, "diagnose", "the device was already diagnosed")
    diagnosed = DeviceDiagnosed(
        event_id=ids(report_id, "device.diagnosed"),
        occurred_at=now,
        correlation_id=device.pickup_id,
        causation_id=device.received_event_id,
        producer="diagnostics",
        device_id=device.device_id,
        report_id=report_id,
        specs=specs,
        cosmetic_grade=assessment.cosmetic_grade,
        functional_grade=assessment.functional_grade,
        decision=assessment.decision,
        reason=assessment.reason,
        rules_version=assessment.rules_version,
        tested_by=tested_by,
        location=location,
    )
    diagnosis = Diagnosis(
        event_id=diagnosed.event_id,
        report_id=report_id,
        specs=specs,
        tests=dict(tests),
        cosmetic=dict(cosmetic),
        functional_grade=assessment.functional_grade,
        cosmetic_grade=assessment.cosmetic_grade,
        decision=assessment.decision,
        reason=assessment.reason,
        rules_version=assessment.rules_version,
        tested_by=tested_by,
        tested_at=tested_at,
        location=location,
        snapshot=snapshot,
    )
    device = device.model_copy(update={"state": DeviceState.DIAGNOSED, "diagnosis": diagnosis})
    device, completed = _certify_if_done(device, now, ids)
    return device, [diagnosed, *completed]


def record_erasure(
    device: Device, erasure: ErasureRecord, *, now: datetime, ids: Ids
) -> tuple[Device, list[Event]]:
    """Record how one drive was sanitized; when the last drive is done, issue the certificate.

    Refused before diagnosis, after the certificate was issued, for a drive not in the report
    and for `destroy` on a device decided for refurbishment. An unverified erasure is recorded
    but leaves its drive pending. A record whose `erasure_id` was recorded already (an upload
    retried) changes nothing, even after the certificate.
    """
    if erasure.erasure_id is not None and any(
        e.erasure_id == erasure.erasure_id for e in device.erasures
    ):
        return device, []
    if device.diagnosis is None:
        raise _refused(device, "record erasure", "the device has not been diagnosed yet")
    if device.certificate is not None:
        raise _refused(device, "record erasure", "the erasure certificate was already issued")
    serials = [d.serial for d in device.diagnosis.specs.drives]
    if erasure.drive_serial not in serials:
        raise _refused(
            device,
            "record erasure",
            f"drive {erasure.drive_serial} is not in the device's test report",
        )
    if (
        erasure.method is SanitizationMethod.DESTROY
        and device.diagnosis.decision is Decision.REFURBISH
    ):
        raise _refused(device, "record erasure", "destroying storage makes it unfit for reuse")
    device = device.model_copy(update={"erasures": [*device.erasures, erasure]})
    device, completed = _certify_if_done(device, now, ids)
    return device, completed


def _certify_if_done(device: Device, now: datetime, ids: Ids) -> tuple[Device, list[Event]]:
    diagnosis = device.diagnosis
    if diagnosis is None or device.pending_drives():
        return device, []
    done = _done(diagnosis.decision, device.erasures)
    certificate = SanitizationRecord(
        certificate_id=ids(device.device_id, "erasure-certificate"),
        device_id=device.device_id,
        make=device.make,
        model=device.model,
        serial_number=device.serial_number,
        asset_tag=device.asset_tag,
        category=device.category,
        decision=diagnosis.decision,
        drives=[
            CertifiedDrive(
                serial=drive.serial,
                kind=drive.kind,
                capacity_gb=drive.capacity_gb,
                **done[drive.serial].model_dump(exclude={"drive_serial"}),
            )
            for drive in diagnosis.specs.drives
        ],
        issued_at=now,
    )
    wiped = DeviceWiped(
        event_id=ids(certificate.certificate_id, "device.wiped"),
        causation_id=diagnosis.event_id,
        certificate_id=certificate.certificate_id,
        erasures=[done[d.serial] for d in diagnosis.specs.drives],
        occurred_at=now,
        correlation_id=device.pickup_id,
        producer="diagnostics",
        device_id=device.device_id,
    )
    released: Event
    if diagnosis.decision is Decision.REFURBISH:
        state = DeviceState.READY
        released = DeviceReady(
            event_id=ids(certificate.certificate_id, "device.ready"),
            causation_id=wiped.event_id,
            category=device.category,
            specs=diagnosis.specs,
            cosmetic_grade=diagnosis.cosmetic_grade,
            functional_grade=diagnosis.functional_grade,
            erasure_certificate_id=certificate.certificate_id,
            occurred_at=now,
            correlation_id=device.pickup_id,
            producer="diagnostics",
            device_id=device.device_id,
        )
    else:
        state = DeviceState.AWAITING_RECYCLING
        released = DeviceReleasedForRecycling(
            event_id=ids(certificate.certificate_id, "device.released_for_recycling"),
            causation_id=wiped.event_id,
            category=device.category,
            reason=diagnosis.reason,
            erasure_certificate_id=certificate.certificate_id,
            drive_serials=[d.serial for d in diagnosis.specs.drives],
            occurred_at=now,
            correlation_id=device.pickup_id,
            producer="diagnostics",
            device_id=device.device_id,
        )
    device = device.model_copy(update={"state": state, "certificate": certificate})
    return device, [wiped, released]


def _done(decision: Decision, erasures: list[ErasureRecord]) -> dict[str, ErasureRecord]:
    """The latest verified, acceptable erasure of each drive."""
    allowed = REUSE_METHODS if decision is Decision.REFURBISH else RECYCLE_METHODS
    return {e.drive_serial: e for e in erasures if e.verified and e.method in allowed}


def _refused(device: Device, action: str, reason: str) -> IllegalTransition:
    return IllegalTransition(
        subject_kind="device",
        subject_id=device.device_id,
        action=action,
        state=device.state.value,
        reason=reason,
        correlation_id=device.pickup_id,
    )
