"""Event contracts for the whole device lifecycle.

Every event shares one envelope (`Event`) and adds its subject id and payload. Events are
immutable facts named in the past tense. A schema evolves by adding optional fields; a
breaking change is a new `schema_version` read through an upcaster (see `shared.codec`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

ServiceName = Literal["intake", "diagnostics", "allocation", "recycling", "custody"]

NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]
Kilograms = Annotated[float, Field(ge=0, le=10_000)]
DriveSerials = Annotated[list[NonEmpty], Field(max_length=16)]


class Contract(BaseModel):
    """Base of every contract model: unknown fields are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DeviceCategory(StrEnum):
    LAPTOP = "laptop"
    DESKTOP = "desktop"
    MONITOR = "monitor"
    TABLET = "tablet"
    PHONE = "phone"
    OTHER = "other"


class Grade(StrEnum):
    """A: like new; B: light wear; C: visible wear but usable; D: not reusable."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"


class Decision(StrEnum):
    REFURBISH = "refurbish"
    RECYCLE = "recycle"


class SanitizationMethod(StrEnum):
    """NIST SP 800-88 Rev. 1 sanitization categories."""

    CLEAR = "clear"
    PURGE = "purge"
    DESTROY = "destroy"


class DriveKind(StrEnum):
    HDD = "hdd"
    SSD = "ssd"
    NVME = "nvme"
    EMMC = "emmc"
    OTHER = "other"


class Address(Contract):
    street: NonEmpty
    postal_code: Annotated[str, Field(min_length=1, max_length=20)]
    city: NonEmpty
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class Contact(Contract):
    name: NonEmpty
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    phone: Annotated[str, Field(max_length=40)] | None = None


class TimeWindow(Contract):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ends_after_start(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self


class Drive(Contract):
    serial: NonEmpty
    kind: DriveKind
    capacity_gb: Annotated[int, Field(gt=0, le=1_000_000)]


class HardwareSpecs(Contract):
    cpu_model: NonEmpty | None = None
    cpu_cores: Annotated[int, Field(ge=1, le=512)] | None = None
    ram_gb: Annotated[float, Field(gt=0, le=4096)] | None = None
    drives: list[Drive] = Field(default_factory=list, max_length=16)
    battery_health_pct: Annotated[int, Field(ge=0, le=100)] | None = None
    screen_inches: Annotated[float, Field(gt=0, le=100)] | None = None

    @property
    def storage_gb(self) -> int:
        return sum(d.capacity_gb for d in self.drives)


class MinSpecs(Contract):
    """What a recipient needs at least. Strict numbers: `true` is not 1, "4" is not 4."""

    cpu_cores: Annotated[int, Field(strict=True, ge=1, le=512)] | None = None
    ram_gb: Annotated[float, Field(strict=True, gt=0, le=4096)] | None = None
    storage_gb: Annotated[int, Field(strict=True, gt=0, le=1_000_000)] | None = None
    battery_health_pct: Annotated[int, Field(strict=True, ge=0, le=100)] | None = None


class WorkbenchEvidence(Contract):
    """What the workbench itself recorded while erasing a drive on the donated machine, as
    opposed to a record typed by a person: its erasure log's SHA-256 (the log is kept beside the
    machine's snapshot) and the measured facts. Added in v1.2."""

    evidence_version: NonEmpty = Field(examples=["1.0"])
    log_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    started_at: AwareDatetime
    ended_at: AwareDatetime
    bytes_written: Annotated[int, Field(ge=0)]
    passes: Annotated[int, Field(ge=0, le=100)]
    bytes_verified: Annotated[int, Field(ge=0)]
    verification_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        description="Share of the drive read back: 1 for a full read-back"
    )
    unreadable_sectors: Annotated[int, Field(ge=0)] = 0
    drive_model: NonEmpty | None = None
    drive_size_bytes: Annotated[int, Field(ge=0)] | None = None


class ErasureRecord(Contract):
    """How one drive was sanitized, as NIST SP 800-88 asks a certificate to state."""

    drive_serial: NonEmpty
    method: SanitizationMethod
    technique: NonEmpty = Field(examples=["single-pass overwrite", "crypto erase", "shredding"])
    tool: NonEmpty = Field(examples=["nwipe"])
    tool_version: NonEmpty = Field(examples=["0.37"])
    verified: bool
    verification: NonEmpty = Field(examples=["full read-back verification"])
    operator: NonEmpty
    performed_at: AwareDatetime
    location: NonEmpty
    erasure_id: UUID | None = Field(
        None,
        description="The submitter's id of this record: the same id again is the same record "
        "(an upload retried). Added in v1.2.",
    )
    workbench: WorkbenchEvidence | None = Field(
        None,
        description="Present when the workbench erased the drive and sent its own evidence; "
        "absent for a record typed by a person. Added in v1.2.",
    )


class MaterialFractions(Contract):
    plastics_kg: Kilograms = 0
    ferrous_kg: Kilograms = 0
    aluminium_kg: Kilograms = 0
    copper_kg: Kilograms = 0
    circuit_boards_kg: Kilograms = 0
    batteries_kg: Kilograms = 0
    glass_kg: Kilograms = 0
    other_kg: Kilograms = 0

    @property
    def total_kg(self) -> float:
        return float(sum(self.model_dump().values()))


class Event(Contract):
    """The envelope every event carries."""

    subject: ClassVar[str]

    event_type: str = Field(description="Names the event; one Kafka topic per event type.")
    event_id: UUID = Field(description="Unique id; derived from the causing event on replay.")
    schema_version: Literal[1] = Field(1, description="Version of this event's payload schema.")
    occurred_at: AwareDatetime = Field(description="When it happened, UTC.")
    correlation_id: UUID = Field(
        description="The pickup a device came in with, or the request a device went to.",
    )
    causation_id: UUID | None = Field(None, description="The event that caused this one.")
    producer: ServiceName

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def subject_id(self) -> UUID:
        value: UUID = getattr(self, self.subject)
        return value


class PickupEvent(Event):
    subject: ClassVar[str] = "pickup_id"
    pickup_id: UUID
    partner_id: NonEmpty = Field(description="The donor who asked for the pickup.")


class DeviceEvent(Event):
    subject: ClassVar[str] = "device_id"
    device_id: UUID


class RequestEvent(Event):
    subject: ClassVar[str] = "request_id"
    request_id: UUID
    recipient_id: NonEmpty


class LotEvent(Event):
    subject: ClassVar[str] = "lot_id"
    lot_id: UUID


# ---- intake -----------------------------------------------------------------------------------


class PickupRequested(PickupEvent):
    """A donor asked for devices to be collected."""

    event_type: Literal["pickup.requested"] = "pickup.requested"
    address: Address
    contact: Contact
    window: TimeWindow
    expected: dict[DeviceCategory, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        min_length=1, examples=[{"laptop": 30, "monitor": 10}]
    )
    notes: Annotated[str, Field(max_length=2000)] | None = None


class PickupScheduled(PickupEvent):
    """Staff fixed the date the truck goes."""

    event_type: Literal["pickup.scheduled"] = "pickup.scheduled"
    scheduled_for: AwareDatetime
    scheduled_by: NonEmpty


class PickupCompleted(PickupEvent):
    """The pickup is closed: no more devices are scanned in under it."""

    event_type: Literal["pickup.completed"] = "pickup.completed"
    completed_by: NonEmpty
    devices_received: Annotated[int, Field(ge=0)]


class PickupCancelled(PickupEvent):
    event_type: Literal["pickup.cancelled"] = "pickup.cancelled"
    reason: NonEmpty


class DeviceReceived(DeviceEvent):
    """A device was scanned into the warehouse under a pickup."""

    event_type: Literal["device.received"] = "device.received"
    pickup_id: UUID
    partner_id: NonEmpty
    asset_tag: Annotated[str, Field(min_length=1, max_length=64, examples=["GIT-00001234"])]
    asset_tag_generated: bool = Field(description="True when we printed the tag ourselves.")
    serial_number: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="Absent when no serial could be read."
    )
    category: DeviceCategory
    make: NonEmpty
    model: NonEmpty
    weight_kg: Annotated[float, Field(gt=0, le=500)]
    scanned_by: NonEmpty
    location: NonEmpty


# ---- diagnostics ------------------------------------------------------------------------------


class DeviceDiagnosed(DeviceEvent):
    """A test report was graded and the device decided for refurbishment or recycling."""

    event_type: Literal["device.diagnosed"] = "device.diagnosed"
    report_id: UUID
    specs: HardwareSpecs
    cosmetic_grade: Grade
    functional_grade: Grade
    decision: Decision
    reason: NonEmpty
    rules_version: NonEmpty
    tested_by: NonEmpty
    location: NonEmpty


class DeviceWiped(DeviceEvent):
    """Every drive of the device was sanitized and verified; the erasure certificate exists."""

    event_type: Literal["device.wiped"] = "device.wiped"
    certificate_id: UUID
    erasures: list[ErasureRecord] = Field(description="One record per drive; empty if none.")


class DeviceReady(DeviceEvent):
    """Refurbishable and wiped: the device may be allocated."""

    event_type: Literal["device.ready"] = "device.ready"
    category: DeviceCategory
    specs: HardwareSpecs
    cosmetic_grade: Grade
    functional_grade: Grade
    erasure_certificate_id: UUID


class DeviceReleasedForRecycling(DeviceEvent):
    """Decided for recycling, with its storage erased or destroyed: recycling may take it."""

    event_type: Literal["device.released_for_recycling"] = "device.released_for_recycling"
    category: DeviceCategory
    reason: NonEmpty
    erasure_certificate_id: UUID
    drive_serials: DriveSerials | None = Field(
        None,
        description="Serial of every drive of the device, as diagnosed (empty: it has none); "
        "absent when not known. Added in v1.1.",
    )


# ---- allocation -------------------------------------------------------------------------------


class RequestOpened(RequestEvent):
    """A school or NGO asked for devices."""

    event_type: Literal["request.opened"] = "request.opened"
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    category: DeviceCategory
    min_specs: MinSpecs = MinSpecs()
    purpose: NonEmpty
    priority: Annotated[int, Field(ge=1, le=5, description="1 = most urgent")] = 3
    deadline: date | None = None
    recipient_name: NonEmpty | None = Field(
        None, description="The school or NGO as registered with its API key; added in v1.1."
    )


class RequestClosed(RequestEvent):
    event_type: Literal["request.closed"] = "request.closed"
    outcome: Literal["fulfilled", "cancelled"]
    allocated: Annotated[int, Field(ge=0)]


class DeviceAllocated(DeviceEvent):
    event_type: Literal["device.allocated"] = "device.allocated"
    request_id: UUID
    recipient_id: NonEmpty
    allocation_id: UUID
    recipient_name: NonEmpty | None = Field(
        None, description="The school or NGO as registered with its API key; added in v1.1."
    )


class DeviceShipped(DeviceEvent):
    event_type: Literal["device.shipped"] = "device.shipped"
    shipment_id: UUID
    recipient_id: NonEmpty
    bill_of_lading: NonEmpty


class DeviceDelivered(DeviceEvent):
    event_type: Literal["device.delivered"] = "device.delivered"
    shipment_id: UUID
    recipient_id: NonEmpty
    accepted_by: NonEmpty


class DeviceReported(DeviceEvent):
    """A recipient reported a delivered device broken or lost (lost is terminal)."""

    event_type: Literal["device.reported"] = "device.reported"
    recipient_id: NonEmpty
    condition: Literal["broken", "lost"]
    note: Annotated[str, Field(max_length=2000)] | None = None


class DeviceUsageReported(DeviceEvent):
    """A recipient's periodic report on a delivered device in use: who it serves."""

    event_type: Literal["device.usage_reported"] = "device.usage_reported"
    recipient_id: NonEmpty
    students: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        None, description="Students who use the device."
    )
    classrooms: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        None, description="Classrooms or groups it serves."
    )
    note: Annotated[str, Field(max_length=2000)] | None = None


class DeviceReturned(DeviceEvent):
    """The device came back from its recipient and goes to recycling."""

    event_type: Literal["device.returned"] = "device.returned"
    recipient_id: NonEmpty
    reason: Literal["end_of_life", "broken"]
    category: DeviceCategory
    drive_serials: DriveSerials | None = Field(
        None,
        description="Serial of every drive of the device, as diagnosed (empty: it has none); "
        "absent when not known. Recycling destroys each before dismantling. Added in v1.1.",
    )
    erasure_certificate_id: UUID | None = Field(
        None, description="The erasure certificate the device left custody with; added in v1.1."
    )


# ---- recycling --------------------------------------------------------------------------------


class DeviceDismantled(DeviceEvent):
    event_type: Literal["device.dismantled"] = "device.dismantled"
    fractions: MaterialFractions
    hazardous_parts: list[NonEmpty] = Field(default_factory=list, examples=[["li-ion battery"]])
    storage_destroyed: list[ErasureRecord] = Field(
        default_factory=list,
        description="Drives physically destroyed at dismantling (each drive of a returned device).",
    )
    dismantled_by: NonEmpty
    location: NonEmpty
    drive_serials: DriveSerials | None = Field(
        None,
        description="Serial of every drive of the device, each destroyed here or erased under "
        "the erasure certificate; absent when recycling was not told them. Added in v1.1.",
    )
    erasure_certificate_id: UUID | None = Field(
        None, description="The device's earlier erasure certificate; added in v1.1."
    )


class Recycler(Contract):
    name: NonEmpty
    certification: NonEmpty = Field(examples=["R2v3", "WEEELABEX", "e-Stewards"])


class LotDispatched(LotEvent):
    """Dismantled fractions left for a certified recycler under a bill of lading."""

    event_type: Literal["lot.dispatched"] = "lot.dispatched"
    recycler: Recycler
    bill_of_lading: NonEmpty
    device_ids: list[UUID] = Field(min_length=1)
    fractions: MaterialFractions


class DeviceRecycled(DeviceEvent):
    """Terminal: the device's materials went to a certified recycler."""

    event_type: Literal["device.recycled"] = "device.recycled"
    lot_id: UUID
    certificate_id: UUID
    recycler: Recycler
    fractions: MaterialFractions
    bill_of_lading: NonEmpty | None = Field(
        None, description="The lot's bill of lading; added in v1.1."
    )


# ---- operations -------------------------------------------------------------------------------


class TransitionRefused(Event):
    """A service refused an illegal transition; operations see it and why."""

    subject: ClassVar[str] = "subject_ref"
    event_type: Literal["transition.refused"] = "transition.refused"
    subject_ref: UUID = Field(description="Id of the device, pickup, request, lot or shipment.")
    subject_kind: Literal["device", "pickup", "request", "lot", "shipment"]
    action: NonEmpty
    state: NonEmpty
    reason: NonEmpty


ALL_EVENTS: tuple[type[Event], ...] = (
    PickupRequested,
    PickupScheduled,
    PickupCompleted,
    PickupCancelled,
    DeviceReceived,
    DeviceDiagnosed,
    DeviceWiped,
    DeviceReady,
    DeviceReleasedForRecycling,
    RequestOpened,
    RequestClosed,
    DeviceAllocated,
    DeviceShipped,
    DeviceDelivered,
    DeviceReported,
    DeviceUsageReported,
    DeviceReturned,
    DeviceDismantled,
    LotDispatched,
    DeviceRecycled,
    TransitionRefused,
)


def event_type_of(cls: type[Event]) -> str:
    default: str = cls.model_fields["event_type"].default
    return default


EVENT_TYPES: dict[str, type[Event]] = {event_type_of(cls): cls for cls in ALL_EVENTS}
