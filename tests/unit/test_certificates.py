import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any
from uuid import UUID, uuid4

import pytest
from jinja2 import Environment, PackageLoader, select_autoescape
from pypdf import PdfReader

from services.custody import domain
from services.custody.certificate_pdf import render
from services.custody.certificates import (
    Kind,
    NotIssued,
    Unverifiable,
    erasure_certificate,
    public_view,
    recycling_certificate,
)
from services.custody.store import custody_fields
from shared.events import (
    DeviceCategory,
    DeviceDismantled,
    DeviceEvent,
    DeviceReceived,
    DeviceRecycled,
    DeviceWiped,
    ErasureRecord,
    MaterialFractions,
    Recycler,
    SanitizationMethod,
    WorkbenchEvidence,
)
from tools.verify_certificate import evidence_of

T0 = datetime(2026, 5, 4, 9, 30, 15, 123456, tzinfo=UTC)
DEVICE = UUID("9d7c2a0e-4d2b-4f4e-9b8e-2c1f0a6b7d31")
PICKUP = uuid4()
URL = "https://verify.example.org"


def _envelope(minutes: int, producer: str) -> dict[str, Any]:
    return {
        "event_id": uuid4(),
        "occurred_at": T0 + timedelta(minutes=minutes),
        "correlation_id": PICKUP,
        "device_id": DEVICE,
        "producer": producer,
    }


def received() -> DeviceReceived:
    return DeviceReceived(
        **_envelope(0, "intake"),
        pickup_id=PICKUP,
        partner_id="acme-consulate",
        asset_tag="ACME-0042",
        asset_tag_generated=False,
        serial_number="5CG8123XYZ",
        category=DeviceCategory.LAPTOP,
        make="HP",
        model="EliteBook 840 G5",
        weight_kg=1.48,
        scanned_by="volunteer-ana",
        location="Warehouse Brussels",
    )


def erasure(serial: str, method: SanitizationMethod = SanitizationMethod.PURGE) -> ErasureRecord:
    return ErasureRecord(
        drive_serial=serial,
        method=method,
        technique="NVMe secure erase" if method is SanitizationMethod.PURGE else "shredding",
        tool="nwipe",
        tool_version="0.37",
        verified=True,
        verification="full read-back",
        operator="tech-lena",
        performed_at=T0 + timedelta(minutes=50),
        location="Wipe bench 2, Brussels",
    )


def wiped(*drives: str) -> DeviceWiped:
    return DeviceWiped(
        **_envelope(60, "diagnostics"),
        certificate_id=uuid4(),
        erasures=[erasure(d) for d in drives],
    )


def dismantled(
    *destroyed: str, drives: list[str] | None = None, erasure_certificate_id: UUID | None = None
) -> DeviceDismantled:
    return DeviceDismantled(
        **_envelope(120, "recycling"),
        fractions=MaterialFractions(plastics_kg=0.5, aluminium_kg=0.25, batteries_kg=0.3),
        hazardous_parts=["li-ion battery"],
        storage_destroyed=[
            erasure(d, SanitizationMethod.DESTROY) for d in destroyed or ("DRV-SHRED",)
        ],
        dismantled_by="tech-omar",
        location="Dismantling line 1",
        drive_serials=drives,
        erasure_certificate_id=erasure_certificate_id,
    )


def recycled() -> DeviceRecycled:
    return DeviceRecycled(
        **_envelope(180, "recycling"),
        lot_id=uuid4(),
        certificate_id=uuid4(),
        recycler=Recycler(name="Recupel Metals NV", certification="WEEELABEX"),
        fractions=MaterialFractions(plastics_kg=0.5, aluminium_kg=0.25, batteries_kg=0.3),
        bill_of_lading="BOL-R-20260504-0001",
    )


def device_doc(*events: DeviceEvent) -> dict[str, Any]:
    custody = domain.Custody()
    for event in events:
        custody = domain.record(custody, event)
    first = events[0]
    assert isinstance(first, DeviceReceived)
    return {
        "_id": str(DEVICE),
        "partner_id": first.partner_id,
        "category": first.category.value,
        "make": first.make,
        "model": first.model,
        "serial_number": first.serial_number,
        "asset_tag": first.asset_tag,
        **custody_fields(custody),
    }


def sha256_of_event(event: DeviceEvent) -> str:
    canonical = json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)


def test_an_erasure_certificate_names_the_device_and_every_drive():
    wipe = wiped("DRV-A", "DRV-B")
    certificate = erasure_certificate(device_doc(received(), wipe))
    assert certificate.certificate_id == wipe.certificate_id
    assert certificate.device.serial_number == "5CG8123XYZ"
    assert [e.drive_serial for e in certificate.erasures] == ["DRV-A", "DRV-B"]
    assert certificate.erasures == wipe.erasures
    assert certificate.issued_at == wipe.occurred_at.replace(microsecond=123000)


def test_the_evidence_digest_is_recomputable_from_the_events_alone():
    receive, wipe = received(), wiped("DRV-A")
    certificate = erasure_certificate(device_doc(receive, wipe))
    lines = "".join(f"{e.event_id} {sha256_of_event(e)}\n" for e in (receive, wipe))
    assert certificate.evidence.digest == hashlib.sha256(lines.encode()).hexdigest()
    from_topics = evidence_of([wipe, receive], Kind.ERASURE)
    assert from_topics is not None
    assert from_topics[1] == certificate.evidence.digest


def test_another_event_gives_another_digest():
    receive = received()
    one = erasure_certificate(device_doc(receive, wiped("DRV-A")))
    other = erasure_certificate(device_doc(receive, wiped("DRV-B")))
    assert one.evidence.digest != other.evidence.digest


def test_a_device_not_yet_wiped_has_no_erasure_certificate():
    with pytest.raises(NotIssued):
        erasure_certificate(device_doc(received()))
    with pytest.raises(NotIssued):
        recycling_certificate(device_doc(received(), wiped("DRV-A"), dismantled()))


def test_a_history_recorded_without_digests_cannot_be_certified():
    doc = device_doc(received(), wiped("DRV-A"))
    for entry in doc["history"]:
        entry["digest"] = None
    with pytest.raises(Unverifiable, match=r"device\.received"):
        erasure_certificate(doc)


def test_the_erasure_pdf_carries_the_nist_fields_the_digest_and_the_verification_address():
    doc = device_doc(received(), wiped("DRV-A", "DRV-B"))
    certificate = erasure_certificate(doc)
    pdf = render(certificate, URL)
    text = text_of(pdf)
    for expected in (
        "Certificate of Data Sanitization",
        str(certificate.certificate_id),
        "HP",
        "EliteBook 840 G5",
        "5CG8123XYZ",
        "ACME-0042",
        "DRV-A",
        "DRV-B",
        "Purge",
        "NVMe secure erase",
        "nwipe 0.37",
        "full read-back",
        "tech-lena",
        "2026-05-04 10:20 UTC",
        "Wipe bench 2, Brussels",
        certificate.evidence.digest,
        f"{URL}/verify/{DEVICE}",
    ):
        assert expected in text, expected
    assert render(certificate, URL) == pdf


def test_the_recycling_pdf_lists_fractions_recycler_lot_and_bill_of_lading():
    recycle = recycled()
    certificate = recycling_certificate(device_doc(received(), wiped(), dismantled(), recycle))
    text = text_of(render(certificate, URL))
    for expected in (
        "Certificate of Recycling",
        str(recycle.certificate_id),
        "Plastics",
        "0.500 kg",
        "Aluminium",
        "0.250 kg",
        "1.050 kg",
        "li-ion battery",
        "Recupel Metals NV",
        "WEEELABEX",
        str(recycle.lot_id),
        "BOL-R-20260504-0001",
        "DRV-SHRED",
        "Destroy",
        certificate.evidence.digest,
    ):
        assert expected in text, expected
    assert [c.event_type for c in certificate.evidence.cited] == [
        "device.received",
        "device.dismantled",
        "device.recycled",
    ]


def test_the_recycling_certificate_cites_every_drive_and_the_erasure_certificate():
    wipe = wiped("DRV-A", "DRV-B")
    dismantle = dismantled(
        "DRV-A", "DRV-B", drives=["DRV-A", "DRV-B"], erasure_certificate_id=wipe.certificate_id
    )
    certificate = recycling_certificate(device_doc(received(), wipe, dismantle, recycled()))

    assert certificate.drive_serials == ["DRV-A", "DRV-B"]
    assert certificate.erasure_certificate_id == wipe.certificate_id
    assert [r.drive_serial for r in certificate.storage_destroyed] == ["DRV-A", "DRV-B"]
    text = text_of(render(certificate, URL))
    drives = text.split("Drives of the device")[1].split("Storage destroyed at dismantling")[0]
    assert drives.count("destroyed at dismantling") == 2
    assert "DRV-A" in drives
    assert "DRV-B" in drives


def test_a_released_device_certificate_says_its_drives_were_sanitized_before_release():
    wipe = wiped("DRV-A")
    dismantle = dismantled(drives=["DRV-A"], erasure_certificate_id=wipe.certificate_id)
    certificate = recycling_certificate(device_doc(received(), wipe, dismantle, recycled()))

    text = text_of(render(certificate, URL))
    assert f"sanitized before release, erasure certificate {wipe.certificate_id}" in text


def test_a_dismantling_from_before_v1_1_gives_a_certificate_without_the_drive_list():
    certificate = recycling_certificate(device_doc(received(), wiped(), dismantled(), recycled()))

    assert certificate.drive_serials is None
    assert certificate.erasure_certificate_id is None
    assert "Not stated at dismantling" in text_of(render(certificate, URL))


def test_the_public_view_checks_a_digest_and_shows_no_personal_data():
    doc = device_doc(received(), wiped("DRV-A"), dismantled(), recycled())
    digest = recycling_certificate(doc).evidence.digest
    view = public_view(doc, digest.upper())
    assert view.digest_matches is Kind.RECYCLING
    assert {c.kind for c in view.certificates} == {Kind.ERASURE, Kind.RECYCLING}
    shown = view.model_dump_json()
    for private in ("acme-consulate", "tech-lena", "tech-omar", "5CG8123XYZ", "DRV-A", "Brussels"):
        assert private not in shown, private
    assert public_view(doc, "0" * 64).digest_matches is None


def by_workbench(serial: str) -> ErasureRecord:
    return erasure(serial).model_copy(
        update={
            "tool": "greenit-workbench",
            "tool_version": "1.0.0",
            "workbench": WorkbenchEvidence(
                evidence_version="1.0",
                log_sha256="ab" * 32,
                started_at=T0 + timedelta(minutes=40),
                ended_at=T0 + timedelta(minutes=50),
                bytes_written=256060514304,
                passes=1,
                bytes_verified=256060514304,
                verification_sample_rate=1.0,
            ),
        }
    )


def wiped_by_workbench_and_by_hand() -> DeviceWiped:
    return DeviceWiped(
        **_envelope(60, "diagnostics"),
        certificate_id=uuid4(),
        erasures=[by_workbench("DRV-W"), erasure("DRV-T")],
    )


def test_the_erasure_pdf_tells_workbench_evidence_from_a_typed_record():
    certificate = erasure_certificate(device_doc(received(), wiped_by_workbench_and_by_hand()))

    text = text_of(render(certificate, URL))

    assert "recorded by the workbench on the machine (greenit-workbench 1.0.0)" in text
    assert "ab" * 32 in text
    assert "256,060,514,304 bytes, 1 pass(es)" in text
    assert "typed record: entered by a person, no machine evidence attached" in text
    assert certificate.erasures[0].workbench == by_workbench("DRV-W").workbench


def verify_page(doc: dict[str, Any]) -> str:
    """The public page as custody renders it: its template, autoescaped like every HTML page."""
    templates = Environment(
        loader=PackageLoader("services.custody", "templates"), autoescape=select_autoescape()
    )
    return templates.get_template("verify.html").render(device=public_view(doc), nonce="n")


def test_the_public_page_tells_workbench_evidence_from_a_typed_record_per_drive():
    doc = device_doc(received(), wiped_by_workbench_and_by_hand())

    workbench, typed = public_view(doc).certificates[0].erasures

    assert (workbench.source, workbench.tool, workbench.tool_version) == (
        "workbench",
        "greenit-workbench",
        "1.0.0",
    )
    assert (workbench.log_sha256, workbench.bytes_verified) == ("ab" * 32, 256060514304)
    assert (typed.source, typed.tool, typed.log_sha256) == ("typed record", "nwipe", None)
    cells = [
        " ".join(td.split())
        for td in re.findall(r"<td[^>]*>(.*?)</td>", verify_page(doc), re.DOTALL)
    ]
    first, second = cells.index("1 of 2"), cells.index("2 of 2")
    assert cells[first : first + 4] == ["1 of 2", "Purge", "greenit-workbench 1.0.0", "yes"]
    assert cells[first + 4] == (
        "recorded by the workbench on the machine (greenit-workbench 1.0.0); erasure log SHA-256 "
        f'<code class="log">{"ab" * 32}</code>; 256,060,514,304 bytes written, '
        "256,060,514,304 bytes read back (100% of the drive)"
    )
    assert cells[second : second + 5] == [
        "2 of 2",
        "Purge",
        "nwipe 0.37",
        "yes",
        "typed record: entered by a person, no machine evidence attached",
    ]


def test_the_public_page_names_no_drive_serial_operator_or_place():
    doc = device_doc(received(), wiped_by_workbench_and_by_hand(), dismantled(), recycled())

    page = verify_page(doc)

    assert page.count("recorded by the workbench on the machine") == 1
    assert page.count("typed record: entered by a person") == 1
    shown = page + public_view(doc).model_dump_json()
    for private in ("acme-consulate", "tech-lena", "DRV-W", "DRV-T", "5CG8123XYZ", "Wipe bench"):
        assert private not in shown, private
