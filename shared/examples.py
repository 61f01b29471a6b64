"""One realistic example per event type: shown in the AsyncAPI docs, round-tripped by tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

from shared import events as ev

_T = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
_PICKUP = UUID("6f1c1f0e-9a57-4d8e-9a38-0d1c0b6f5a01")
_DEVICE = UUID("0b8f3e52-52b7-4a47-8a44-3bbf2c1d7e02")
_REQUEST = UUID("a3d1c4b8-2f0e-4b6c-9d7e-5e4f3a2b1c03")
_LOT = UUID("c9e8d7f6-1a2b-4c3d-8e9f-0a1b2c3d4e04")
_EVENT = UUID("11111111-2222-4333-8444-555555555555")
_CERT = UUID("77777777-8888-4999-8aaa-bbbbbbbbbbbb")
_DONOR = "acme-consulate"
_SCHOOL = "school-rosa-parks"

_envelope = {"occurred_at": _T, "causation_id": _EVENT}
_drive = ev.Drive(serial="S4EVNF0M123456", kind=ev.DriveKind.SSD, capacity_gb=256)
_specs = ev.HardwareSpecs(
    cpu_model="Intel Core i5-8350U",
    cpu_cores=4,
    ram_gb=8,
    drives=[_drive],
    battery_health_pct=82,
    screen_inches=14,
)
_erasure = ev.ErasureRecord(
    drive_serial=_drive.serial,
    method=ev.SanitizationMethod.PURGE,
    technique="NVMe/ATA secure erase",
    tool="nwipe",
    tool_version="0.37",
    verified=True,
    verification="full read-back verification",
    operator="Amira K.",
    performed_at=_T,
    location="Warehouse Brussels, bench 3",
)
_fractions = ev.MaterialFractions(
    plastics_kg=0.45,
    ferrous_kg=0.2,
    aluminium_kg=0.3,
    copper_kg=0.05,
    circuit_boards_kg=0.25,
    batteries_kg=0.3,
    glass_kg=0.15,
    other_kg=0.1,
)
_recycler = ev.Recycler(name="Recupel Metals NV", certification="WEEELABEX")

EXAMPLES: dict[type[ev.Event], ev.Event] = {
    e.__class__: e
    for e in [
        ev.PickupRequested(
            event_id=UUID(int=1),
            correlation_id=_PICKUP,
            producer="intake",
            pickup_id=_PICKUP,
            partner_id=_DONOR,
            address=ev.Address(
                street="Rue de la Loi 42", postal_code="1040", city="Brussels", country="BE"
            ),
            contact=ev.Contact(name="Jo Peeters", email="it@acme.example", phone="+32 2 555 01 01"),
            window=ev.TimeWindow(start=_T, end=datetime(2026, 3, 6, 17, tzinfo=UTC)),
            expected={ev.DeviceCategory.LAPTOP: 30, ev.DeviceCategory.MONITOR: 10},
            notes="Loading dock at the back",
            **_envelope,
        ),
        ev.PickupScheduled(
            event_id=UUID(int=2),
            correlation_id=_PICKUP,
            producer="intake",
            pickup_id=_PICKUP,
            partner_id=_DONOR,
            scheduled_for=_T,
            scheduled_by="staff-lena",
            **_envelope,
        ),
        ev.PickupCompleted(
            event_id=UUID(int=3),
            correlation_id=_PICKUP,
            producer="intake",
            pickup_id=_PICKUP,
            partner_id=_DONOR,
            completed_by="staff-lena",
            devices_received=40,
            **_envelope,
        ),
        ev.PickupCancelled(
            event_id=UUID(int=4),
            correlation_id=_PICKUP,
            producer="intake",
            pickup_id=_PICKUP,
            partner_id=_DONOR,
            reason="Donor postponed the fleet refresh",
            **_envelope,
        ),
        ev.DeviceReceived(
            event_id=UUID(int=5),
            correlation_id=_PICKUP,
            producer="intake",
            device_id=_DEVICE,
            pickup_id=_PICKUP,
            partner_id=_DONOR,
            asset_tag="GIT-00001234",
            asset_tag_generated=False,
            serial_number="5CG8123XYZ",
            category=ev.DeviceCategory.LAPTOP,
            make="HP",
            model="EliteBook 840 G5",
            weight_kg=1.48,
            scanned_by="volunteer-sam",
            location="Warehouse Brussels",
            **_envelope,
        ),
        ev.DeviceDiagnosed(
            event_id=UUID(int=6),
            correlation_id=_PICKUP,
            producer="diagnostics",
            device_id=_DEVICE,
            report_id=UUID(int=60),
            specs=_specs,
            cosmetic_grade=ev.Grade.B,
            functional_grade=ev.Grade.A,
            decision=ev.Decision.REFURBISH,
            reason="meets laptop minimums (4 cores, 8 GB RAM, battery 82%)",
            rules_version="2026-03",
            tested_by="tech-ines",
            location="Warehouse Brussels",
            **_envelope,
        ),
        ev.DeviceWiped(
            event_id=UUID(int=7),
            correlation_id=_PICKUP,
            producer="diagnostics",
            device_id=_DEVICE,
            certificate_id=_CERT,
            erasures=[_erasure],
            **_envelope,
        ),
        ev.DeviceReady(
            event_id=UUID(int=8),
            correlation_id=_PICKUP,
            producer="diagnostics",
            device_id=_DEVICE,
            category=ev.DeviceCategory.LAPTOP,
            specs=_specs,
            cosmetic_grade=ev.Grade.B,
            functional_grade=ev.Grade.A,
            erasure_certificate_id=_CERT,
            **_envelope,
        ),
        ev.DeviceReleasedForRecycling(
            event_id=UUID(int=9),
            correlation_id=_PICKUP,
            producer="diagnostics",
            device_id=_DEVICE,
            category=ev.DeviceCategory.LAPTOP,
            reason="mainboard failure",
            erasure_certificate_id=_CERT,
            drive_serials=[_drive.serial],
            **_envelope,
        ),
        ev.RequestOpened(
            event_id=UUID(int=10),
            correlation_id=_REQUEST,
            producer="allocation",
            request_id=_REQUEST,
            recipient_id=_SCHOOL,
            quantity=12,
            category=ev.DeviceCategory.LAPTOP,
            min_specs=ev.MinSpecs(ram_gb=8, storage_gb=128),
            purpose="Coding club for newly arrived pupils",
            priority=2,
            deadline=date(2026, 9, 1),
            **_envelope,
        ),
        ev.RequestClosed(
            event_id=UUID(int=11),
            correlation_id=_REQUEST,
            producer="allocation",
            request_id=_REQUEST,
            recipient_id=_SCHOOL,
            outcome="fulfilled",
            allocated=12,
            **_envelope,
        ),
        ev.DeviceAllocated(
            event_id=UUID(int=12),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            request_id=_REQUEST,
            recipient_id=_SCHOOL,
            allocation_id=UUID(int=120),
            **_envelope,
        ),
        ev.DeviceShipped(
            event_id=UUID(int=13),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            shipment_id=UUID(int=130),
            recipient_id=_SCHOOL,
            bill_of_lading="BOL-2026-0042",
            **_envelope,
        ),
        ev.DeviceDelivered(
            event_id=UUID(int=14),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            shipment_id=UUID(int=130),
            recipient_id=_SCHOOL,
            accepted_by="Ms. Diallo",
            **_envelope,
        ),
        ev.DeviceReported(
            event_id=UUID(int=15),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            recipient_id=_SCHOOL,
            condition="broken",
            note="Screen cracked",
            **_envelope,
        ),
        ev.DeviceUsageReported(
            event_id=UUID(int=21),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            recipient_id=_SCHOOL,
            students=24,
            classrooms=1,
            note="Used in the welcome class for newly arrived pupils",
            **_envelope,
        ),
        ev.DeviceReturned(
            event_id=UUID(int=16),
            correlation_id=_REQUEST,
            producer="allocation",
            device_id=_DEVICE,
            recipient_id=_SCHOOL,
            reason="end_of_life",
            category=ev.DeviceCategory.LAPTOP,
            drive_serials=[_drive.serial],
            erasure_certificate_id=_CERT,
            **_envelope,
        ),
        ev.DeviceDismantled(
            event_id=UUID(int=17),
            correlation_id=_PICKUP,
            producer="recycling",
            device_id=_DEVICE,
            fractions=_fractions,
            hazardous_parts=["li-ion battery"],
            dismantled_by="tech-omar",
            location="Warehouse Brussels",
            drive_serials=[_drive.serial],
            erasure_certificate_id=_CERT,
            **_envelope,
        ),
        ev.LotDispatched(
            event_id=UUID(int=18),
            correlation_id=_LOT,
            producer="recycling",
            lot_id=_LOT,
            recycler=_recycler,
            bill_of_lading="BOL-R-2026-0007",
            device_ids=[_DEVICE],
            fractions=_fractions,
            **_envelope,
        ),
        ev.DeviceRecycled(
            event_id=UUID(int=19),
            correlation_id=_PICKUP,
            producer="recycling",
            device_id=_DEVICE,
            lot_id=_LOT,
            certificate_id=UUID(int=190),
            recycler=_recycler,
            fractions=_fractions,
            **_envelope,
        ),
        ev.TransitionRefused(
            event_id=UUID(int=20),
            correlation_id=_PICKUP,
            producer="allocation",
            subject_ref=_DEVICE,
            subject_kind="device",
            action="allocate",
            state="diagnosed",
            reason="device is not wiped",
            **_envelope,
        ),
    ]
}


def _attach_examples() -> None:
    for cls, example in EXAMPLES.items():
        cls.model_config["json_schema_extra"] = {"examples": [example.model_dump(mode="json")]}
        cls.model_rebuild(force=True)


_attach_examples()
