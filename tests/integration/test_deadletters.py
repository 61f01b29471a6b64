"""The dead-letter CLI against the intake service as a real process.

Intake refuses a device event for a device it never received (`Unprocessable`: the record is
dead-lettered) and cannot scan a device in under a chosen id, so the cause fixed here is the one
operations would meet: intake's record of the device was missing (restored from a backup, say).
Once it is back, the dead letter is re-driven and takes effect exactly once.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.intake import domain
from services.intake import store as intake_store
from shared.auth import Role
from shared.events import DeviceCategory, DeviceDiagnosed
from shared.examples import EXAMPLES
from tests.conftest import BOOTSTRAP, MONGO_URL, settings_in
from tests.helpers import TopicReader, create_key, eventually, publish, publish_raw
from tools.cluster import project_root, running_cluster
from tools.deadletters import REDRIVEN_FROM, DeadLetter, read_dead_letters, redrive, select

pytestmark = pytest.mark.integration

DONOR, STAFF = "acme-consulate", "staff-lena"
NOW = datetime.now(UTC)
DEVICE = uuid4()


@pytest.fixture(scope="module")
def intake_url(topics, base_env, namespace):
    log_dir = project_root() / ".local" / "test-logs" / namespace
    with running_cluster(base_env, log_dir, ["intake"]) as cluster:
        yield cluster.urls["intake"]


@pytest.fixture(scope="module")
async def keys(namespace) -> dict[str, str]:
    return {
        DONOR: await create_key(namespace, Role.DONOR, DONOR),
        STAFF: await create_key(namespace, Role.STAFF, STAFF),
    }


@pytest.fixture(scope="module")
def cli(base_env):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.deadletters", *args],
            env=base_env,
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture(scope="module")
async def pickup_id(intake_url, keys) -> UUID:
    body = {
        "address": {
            "street": "Rue de la Loi 42",
            "postal_code": "1040",
            "city": "Brussels",
            "country": "BE",
        },
        "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
        "window": {
            "start": (NOW + timedelta(days=1)).isoformat(),
            "end": (NOW + timedelta(days=3)).isoformat(),
        },
        "expected": {"laptop": 1},
    }
    async with httpx.AsyncClient(base_url=intake_url, timeout=30) as client:
        response = await client.post("/pickups", json=body, headers={"X-API-Key": keys[DONOR]})
    assert response.status_code == 201, response.text
    return UUID(response.json()["pickup_id"])


def diagnosed(pickup_id: UUID) -> DeviceDiagnosed:
    return EXAMPLES[DeviceDiagnosed].model_copy(
        update={"event_id": uuid4(), "device_id": DEVICE, "correlation_id": pickup_id}
    )  # type: ignore[return-value]


async def custody(intake_url: str, key: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=intake_url, timeout=30) as client:
        response = await client.get(f"/devices/{DEVICE}", headers={"X-API-Key": key})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def restore_intake_record(namespace: str, pickup_id: UUID) -> None:
    """Put back intake's record of DEVICE, as scanning it in would have written it."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    try:
        db = client[settings_in(namespace, "intake").database]
        pickup = await intake_store.load_pickup(db, pickup_id)
        assert pickup is not None
        scan = domain.Scan(
            category=DeviceCategory.LAPTOP,
            make="HP",
            model="EliteBook 840 G5",
            weight_kg=1.5,
            location="Warehouse Brussels",
            asset_tag="ACME-DLQ-1",
            serial_number="SN-DLQ-1",
        )
        device, _ = domain.receive_device(
            pickup,
            scan,
            device_id=DEVICE,
            asset_tag="ACME-DLQ-1",
            asset_tag_generated=False,
            scanned_by=STAFF,
            now=datetime.now(UTC),
            event_id=uuid4(),
        )
        await db.devices.insert_one(intake_store.device_doc(device))
    finally:
        await client.close()


async def test_a_dead_letter_is_listed_redriven_after_the_fix_and_applied_once(
    namespace, intake_url, keys, pickup_id, cli
):
    event = diagnosed(pickup_id)
    await publish(namespace, event)
    await publish_raw(namespace, "device.dismantled", b'{"event_type": "device.dism', key=b"x")

    letters: list[DeadLetter] = await eventually(lambda: _at_least(namespace, 2), within_s=30)
    by_source = {d.source_topic.removeprefix(namespace): d for d in letters}
    assert set(by_source) == {"device.diagnosed", "device.dismantled"}
    unknown = by_source["device.diagnosed"]
    assert unknown.reason == f"unprocessable: unknown device {DEVICE}: intake never received it"
    assert unknown.header("dlq_consumer_group") == namespace + "intake"
    assert unknown.header("event_id") == str(event.event_id)
    assert by_source["device.dismantled"].reason.startswith("malformed JSON")

    listing = cli("list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[-1] == f"2 dead letter(s) in {namespace}deadletter"
    line = next(x for x in lines if x.startswith(unknown.address))
    assert f"source={namespace}device.diagnosed[{unknown.header('dlq_source_partition')}]@" in line
    assert f"group={namespace}intake" in line
    assert "unknown device" in line
    assert f"payload='{event.model_dump_json()[:200]}'" in line
    assert any("malformed JSON" in x and "device.dismantled" in x for x in lines)
    assert len(cli("list", "--limit", "1").stdout.splitlines()) == 2
    assert await custody(intake_url, keys[STAFF]) is None

    await restore_intake_record(namespace, pickup_id)
    redriven = cli("redrive", "--offset", f"{unknown.partition}:{unknown.offset}")
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.splitlines()[-1] == "re-drove 1 dead letter(s)"

    async def diagnosis_applied() -> dict[str, Any] | None:
        view = await custody(intake_url, keys[STAFF])
        return view if view and view["stage"] == "diagnosed" else None

    view = await eventually(diagnosis_applied, within_s=30)
    history = {h["event_id"]: h["event_type"] for h in view["history"]}
    assert len(view["history"]) == 2
    assert history[str(event.event_id)] == "device.diagnosed"
    assert sorted(history.values()) == ["device.diagnosed", "device.received"]

    # A second re-drive is harmless: the custody view already holds that event id.
    assert await redrive(BOOTSTRAP, [unknown]) == 1
    marker = diagnosed(pickup_id)
    await publish(namespace, marker)

    async def marker_applied() -> dict[str, Any] | None:
        view = await custody(intake_url, keys[STAFF])
        ids = [h["event_id"] for h in view["history"]] if view else []
        return view if str(marker.event_id) in ids else None

    view = await eventually(marker_applied, within_s=30)
    ids = [h["event_id"] for h in view["history"]]
    assert ids.count(str(event.event_id)) == 1
    assert len(ids) == 3
    assert len(await read_dead_letters(BOOTSTRAP, namespace)) == 2, "nothing failed again"


async def test_a_redriven_record_keeps_its_headers_without_the_dead_letter_ones(namespace):
    async with TopicReader(namespace, "device.diagnosed") as reader:
        await reader.wait_for(lambda _: _redriven(reader.raw), within_s=30)
    for record in _redriven(reader.raw):
        headers = dict(record.headers)
        assert headers[REDRIVEN_FROM].decode().startswith(f"{namespace}deadletter-")
        assert headers["event_type"] == b"device.diagnosed"
        assert record.key == str(DEVICE).encode()
        assert [k for k in headers if k.startswith("dlq_")] == [REDRIVEN_FROM]


def test_redriving_needs_a_selection_and_refuses_an_unknown_offset(cli):
    assert cli("redrive").returncode == 2
    missing = cli("redrive", "--offset", "0:999999")
    assert missing.returncode == 2
    assert "no such dead letter" in missing.stderr


def test_select_matches_the_source_topic_with_or_without_the_namespace():
    def letter(source: str, offset: int) -> DeadLetter:
        headers = ((b"dlq_source_topic", source.encode()),)
        return DeadLetter(
            "ns_deadletter", 0, offset, None, b"", tuple((k.decode(), v) for k, v in headers)
        )

    letters = [letter("ns_device.ready", 0), letter("ns_device.wiped", 1)]

    assert select(letters, "ns_", source_topic="device.ready") == letters[:1]
    assert select(letters, "ns_", source_topic="ns_device.wiped") == letters[1:]
    assert select(letters, "ns_", offsets=[(0, 1)]) == letters[1:]
    assert select(letters, "ns_", source_topic="device.ready", offsets=[(0, 1)]) == []


def _redriven(records: list[Any]) -> list[Any]:
    return [r for r in records if any(k == REDRIVEN_FROM for k, _ in r.headers or ())]


async def _at_least(namespace: str, n: int) -> list[DeadLetter] | None:
    letters = await read_dead_letters(BOOTSTRAP, namespace)
    return letters if len(letters) >= n else None
