"""The dead-letter CLI against the custody service as a real process.

Custody dead-letters what it cannot read (malformed JSON here) and keeps a device event that comes
before the device's `device.received` until it arrives, so an unknown device is no longer a dead
letter. The dead letter re-driven here is the kind the release before custody left behind: intake's
custody consumer refused an event for a device it had not received yet ("intake never received
it"). After the upgrade operations re-drive such letters to their topic; custody applies the
event exactly once, whether it had seen it already or not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.auth import Role
from shared.codec import encode, headers_for
from shared.events import DeviceDiagnosed, DeviceReceived
from shared.examples import EXAMPLES
from shared.kafka import DeadLetters, make_broker
from shared.topics import DEAD_LETTER, topic_of
from tests.conftest import BOOTSTRAP, kafka_auth, settings_in
from tests.helpers import TopicReader, eventually, publish, publish_raw, run_module
from tools.deadletters import REDRIVEN_FROM, DeadLetter, read_dead_letters, redrive, select

pytestmark = pytest.mark.integration

DONOR, STAFF = "acme-consulate", "staff-lena"
DEVICE = uuid4()
PICKUP = uuid4()
UNKNOWN_DEVICE = f"unprocessable: unknown device {DEVICE}: intake never received it"


CLUSTER = ["custody"]
PARTNERS = {DONOR: Role.DONOR, STAFF: Role.STAFF}


@pytest.fixture(scope="module")
def custody_url(cluster):
    return cluster.urls["custody"]


@pytest.fixture(scope="module")
def cli(base_env):
    return partial(run_module, base_env, "tools.deadletters")


def diagnosed() -> DeviceDiagnosed:
    return EXAMPLES[DeviceDiagnosed].model_copy(
        update={"event_id": uuid4(), "device_id": DEVICE, "correlation_id": PICKUP}
    )  # type: ignore[return-value]


def received() -> DeviceReceived:
    return EXAMPLES[DeviceReceived].model_copy(
        update={
            "event_id": uuid4(),
            "device_id": DEVICE,
            "pickup_id": PICKUP,
            "correlation_id": PICKUP,
            "partner_id": DONOR,
            "occurred_at": datetime(2020, 1, 1, tzinfo=UTC),
        }
    )  # type: ignore[return-value]


async def custody(custody_url: str, key: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=custody_url, timeout=30) as client:
        response = await client.get(f"/devices/{DEVICE}", headers={"X-API-Key": key})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def publish_with_old_intakes_dead_letter(namespace: str, event: DeviceDiagnosed) -> None:
    """Publish `event` to its topic, and its dead letter as the release before custody wrote it
    (intake's consumer group, the reason it gave), with the code that writes dead letters."""
    topic = namespace + topic_of(event).name
    headers = [(k, v.encode()) for k, v in headers_for(event).items()]
    key, value = str(event.subject_id).encode(), encode(event)
    settings = settings_in(namespace, "intake")
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, **kafka_auth(), enable_idempotence=True
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=key, headers=headers)
        record = ConsumerRecord(
            topic, sent.partition, sent.offset, 0, 0, key, value, None, len(key), len(value),
            headers,
        )  # fmt: skip
        dead_letters = DeadLetters(make_broker(settings), settings)
        dl_key, dl_value, dl_headers = dead_letters.whole_form(
            record, settings.group_id, UNKNOWN_DEVICE
        )
        await producer.send_and_wait(
            settings.topic(DEAD_LETTER.name),
            dl_value,
            key=dl_key,
            headers=[(k, v.encode()) for k, v in dl_headers.items()],
        )
    finally:
        await producer.stop()


async def test_a_dead_letter_is_listed_redriven_after_the_fix_and_applied_once(
    namespace, custody_url, keys, cli
):
    event = diagnosed()
    await publish_with_old_intakes_dead_letter(namespace, event)
    await publish_raw(namespace, "device.dismantled", b'{"event_type": "device.dism', key=b"x")

    letters: list[DeadLetter] = await eventually(lambda: _at_least(namespace, 2), within_s=30)
    by_source = {d.source_topic.removeprefix(namespace): d for d in letters}
    assert set(by_source) == {"device.diagnosed", "device.dismantled"}
    unknown = by_source["device.diagnosed"]
    assert unknown.reason == UNKNOWN_DEVICE
    assert unknown.header("dlq_consumer_group") == namespace + "intake"
    assert unknown.header("event_id") == str(event.event_id)
    malformed = by_source["device.dismantled"]
    assert malformed.reason.startswith("malformed JSON")
    assert malformed.header("dlq_consumer_group") == namespace + "custody"

    listing = cli("list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[-1] == f"2 dead letter(s) in {namespace}deadletter"
    line = next(x for x in lines if x.startswith(unknown.address))
    assert f"source={namespace}device.diagnosed[{unknown.header('dlq_source_partition')}]@" in line
    assert f"group={namespace}intake" in line
    assert "unknown device" in line
    assert f"payload='{event.model_dump_json()[:200]}'" in line
    assert any(
        "malformed JSON" in x and "device.dismantled" in x and f"group={namespace}custody" in x
        for x in lines
    )
    assert len(cli("list", "--limit", "1").stdout.splitlines()) == 2
    # custody keeps the diagnosis until the device's reception is known: not shown yet
    assert await custody(custody_url, keys[STAFF]) is None

    await publish(namespace, received())

    async def diagnosis_shown() -> dict[str, Any] | None:
        view = await custody(custody_url, keys[STAFF])
        return view if view and view["stage"] == "diagnosed" else None

    await eventually(diagnosis_shown, within_s=30)
    redriven = cli("redrive", "--offset", f"{unknown.partition}:{unknown.offset}")
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.splitlines()[-1] == "re-drove 1 dead letter(s)"
    # A second re-drive is harmless too; a marker after both shows they were consumed.
    assert await redrive(BOOTSTRAP, [unknown]) == 1
    marker = diagnosed()
    await publish(namespace, marker)

    async def marker_applied() -> dict[str, Any] | None:
        view = await custody(custody_url, keys[STAFF])
        ids = [h["event_id"] for h in view["history"]] if view else []
        return view if str(marker.event_id) in ids else None

    view = await eventually(marker_applied, within_s=30)
    history = [(h["event_id"], h["event_type"]) for h in view["history"]]
    assert [i for i, _ in history].count(str(event.event_id)) == 1
    assert sorted(t for _, t in history) == ["device.diagnosed"] * 2 + ["device.received"]
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
