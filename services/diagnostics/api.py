from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.diagnostics import handlers
from services.diagnostics.domain import (
    Device,
    DeviceState,
    Diagnosis,
    MachineSnapshot,
    SanitizationRecord,
)
from services.diagnostics.rules import Cosmetic, GradingRules, TestResults
from services.diagnostics.store import Store
from shared.auth import Principal, Role
from shared.events import (
    Decision,
    DeviceCategory,
    ErasureRecord,
    Grade,
    HardwareSpecs,
    NonEmpty,
    SanitizationMethod,
    WorkbenchEvidence,
)
from shared.service import Runtime
from shared.usecase import Unknown

CLOCK_SKEW = timedelta(minutes=5)


def _in_utc_range(moment: datetime) -> datetime:
    """A time the store can hold: in UTC it must stay within years 1-9999 (else 422, not 500)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once in UTC") from None
    return moment


StorableTime = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]


def _not_in_future(value: datetime | None, name: str) -> None:
    if value is not None and value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError(f"{name} is in the future")


class ReportBody(BaseModel):
    # Stripped as the contracts strip them: "\r" must fail here (422), not in the event (500).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    specs: HardwareSpecs
    tests: TestResults
    cosmetic: Cosmetic
    location: NonEmpty
    tested_at: StorableTime | None = None
    report_id: UUID | None = Field(
        None,
        description="The submitter's id for this report: sent again (a retried upload), the "
        "report is not graded twice and the answer is the same. Added in v1.2.",
    )
    snapshot: MachineSnapshot | None = Field(
        None, description="The machine's own description, from the workbench. Added in v1.2."
    )

    @model_validator(mode="after")
    def _check(self) -> "ReportBody":
        serials = [d.serial for d in self.specs.drives]
        if len(set(serials)) != len(serials):
            raise ValueError("drive serials must be unique")
        _not_in_future(self.tested_at, "tested_at")
        return self


class ErasureBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    drive_serial: NonEmpty
    method: SanitizationMethod
    technique: NonEmpty = Field(examples=["single-pass overwrite", "crypto erase", "shredding"])
    tool: NonEmpty = Field(examples=["nwipe"])
    tool_version: NonEmpty = Field(examples=["0.37"])
    verified: bool
    verification: NonEmpty = Field(examples=["full read-back verification"])
    operator: NonEmpty | None = Field(None, description="Defaults to the caller's partner id.")
    performed_at: StorableTime
    location: NonEmpty
    erasure_id: UUID | None = Field(
        None,
        description="The submitter's id for this record: sent again (a retried upload), it is "
        "recorded once. Added in v1.2.",
    )
    workbench: WorkbenchEvidence | None = Field(
        None,
        description="The workbench's own evidence (log hash, bytes written and verified); "
        "absent for a typed record. Added in v1.2.",
    )

    @model_validator(mode="after")
    def _check(self) -> "ErasureBody":
        _not_in_future(self.performed_at, "performed_at")
        if self.workbench is not None and self.workbench.ended_at < self.workbench.started_at:
            raise ValueError("workbench.ended_at is before its started_at")
        return self


class DiagnosisView(BaseModel):
    device_id: UUID
    state: DeviceState
    cosmetic_grade: Grade
    functional_grade: Grade
    decision: Decision
    reason: str
    rules_version: str
    drives_pending: list[str]
    certificate_id: UUID | None


class ErasureView(BaseModel):
    device_id: UUID
    state: DeviceState
    drives_pending: list[str]
    certificate_id: UUID | None


class DeviceView(BaseModel):
    device_id: UUID
    state: DeviceState
    pickup_id: UUID
    partner_id: str
    asset_tag: str
    serial_number: str | None
    category: DeviceCategory
    make: str
    model: str
    weight_kg: float
    received_at: datetime
    location: str
    report: Diagnosis | None
    cosmetic_grade: Grade | None
    functional_grade: Grade | None
    decision: Decision | None
    reason: str | None
    rules_version: str | None
    erasures: list[ErasureRecord]
    drives_pending: list[str]
    certificate_id: UUID | None


def device_view(device: Device) -> DeviceView:
    report = device.diagnosis
    return DeviceView(
        device_id=device.device_id,
        state=device.state,
        pickup_id=device.pickup_id,
        partner_id=device.partner_id,
        asset_tag=device.asset_tag,
        serial_number=device.serial_number,
        category=device.category,
        make=device.make,
        model=device.model,
        weight_kg=device.weight_kg,
        received_at=device.received_at,
        location=device.location,
        report=report,
        cosmetic_grade=report.cosmetic_grade if report else None,
        functional_grade=report.functional_grade if report else None,
        decision=report.decision if report else None,
        reason=report.reason if report else None,
        rules_version=report.rules_version if report else None,
        erasures=device.erasures,
        drives_pending=device.pending_drives(),
        certificate_id=device.certificate_id,
    )


def router(runtime: Runtime, store: Store, rules: GradingRules) -> APIRouter:
    api = APIRouter(tags=["diagnostics"])
    submitter = Depends(runtime.require(Role.STAFF, Role.WORKBENCH))
    reader = Depends(runtime.require(Role.STAFF, Role.OPERATIONS))
    device_reader = Depends(runtime.require(Role.STAFF, Role.OPERATIONS, Role.WORKBENCH))

    @api.post(
        "/devices/{device_id}/reports",
        status_code=status.HTTP_201_CREATED,
        summary="Submit a device's test report: grade it and decide refurbish or recycle",
    )
    async def submit_report(
        device_id: UUID, body: ReportBody, principal: Annotated[Principal, submitter]
    ) -> DiagnosisView:
        device = await handlers.diagnose(
            store,
            rules,
            device_id,
            specs=body.specs,
            tests=body.tests,
            cosmetic=body.cosmetic,
            location=body.location,
            tested_at=body.tested_at,
            tested_by=principal.partner_id,
            submitted_id=body.report_id,
            snapshot=body.snapshot,
        )
        report = device.diagnosis
        assert report is not None
        return DiagnosisView(
            device_id=device.device_id,
            state=device.state,
            cosmetic_grade=report.cosmetic_grade,
            functional_grade=report.functional_grade,
            decision=report.decision,
            reason=report.reason,
            rules_version=report.rules_version,
            drives_pending=device.pending_drives(),
            certificate_id=device.certificate_id,
        )

    @api.post(
        "/devices/{device_id}/erasures",
        status_code=status.HTTP_201_CREATED,
        summary="Record how one drive was sanitized; the last one issues the certificate",
    )
    async def record_erasure(
        device_id: UUID, body: ErasureBody, principal: Annotated[Principal, submitter]
    ) -> ErasureView:
        erasure = ErasureRecord(
            **body.model_dump(exclude={"operator"}),
            operator=body.operator or principal.partner_id,
        )
        device = await handlers.record_erasure(store, device_id, erasure)
        return ErasureView(
            device_id=device.device_id,
            state=device.state,
            drives_pending=device.pending_drives(),
            certificate_id=device.certificate_id,
        )

    @api.get("/devices/{device_id}", summary="One device: received data, report, erasures")
    async def get_device(
        device_id: UUID, principal: Annotated[Principal, device_reader]
    ) -> DeviceView:
        loaded = await store.load(device_id)
        if loaded is None:
            raise handlers.UnknownDevice("device not received")
        return device_view(loaded.state)

    @api.get(
        "/devices",
        summary="Devices in diagnostics, optionally in one state, or by asset tag or serial",
    )
    async def list_devices(
        principal: Annotated[Principal, device_reader],
        state: DeviceState | None = None,
        asset_tag: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        serial_number: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[DeviceView]:
        devices = await store.list_devices(
            state, limit, asset_tag=asset_tag, serial_number=serial_number
        )
        return [device_view(d) for d in devices]

    @api.get("/certificates/{certificate_id}", summary="An erasure certificate")
    async def get_certificate(
        certificate_id: UUID, principal: Annotated[Principal, reader]
    ) -> SanitizationRecord:
        certificate = await store.load_certificate(certificate_id)
        if certificate is None:
            raise Unknown("no such erasure certificate")
        return certificate

    @api.get("/rules", summary="The grading rules in force")
    async def get_rules(principal: Annotated[Principal, reader]) -> GradingRules:
        return rules

    return api
