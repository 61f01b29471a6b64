"""The Kafka ACLs (shared/acl.py) match what each service's broker really publishes and
consumes, and grant nothing more: a service that starts publishing an event it does not own,
or consumes a topic the table does not list, fails here before the broker refuses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.acl import CONSUMES, PUBLISHES, Grant, grants
from shared.credentials import OPS, SERVICES
from shared.topics import ALL_TOPICS, DEAD_LETTER

NS = "t0acl0000_"

# Each service module builds its broker at import; run it in a child process so its settings
# (namespace, a dummy password: nothing connects) are its own.
PROBE = """
import json, sys
import services.{service}.main as m
b = m.broker
print(json.dumps({{
    "publishes": sorted({{p.topic for p in b._publishers}}),
    "consumes": sorted({{t.name for s in b._subscribers for t in s.topics}}),
    "groups": sorted({{s.group_id for s in b._subscribers}}),
}}))
"""


def _probe(service: str) -> dict[str, list[str]]:
    import json
    import os

    env = {**os.environ, "GREENIT_NAMESPACE": NS, "GREENIT_KAFKA_PASSWORD": "unused"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(service=service)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _allowed(principal: str, operation: str, resource: str = "topic") -> set[str]:
    return {
        g.name
        for g in grants(NS)
        if g.principal == principal and g.operation == operation and g.resource == resource
    }


@pytest.mark.parametrize("service", SERVICES)
def test_grants_match_what_the_service_does(service: str) -> None:
    seen = _probe(service)
    assert set(seen["publishes"]) == _allowed(service, "WRITE"), "WRITE = exactly what it publishes"
    assert set(seen["consumes"]) == _allowed(service, "READ"), "READ = exactly what it consumes"
    own_group = {NS + service} if CONSUMES[service] else set()  # intake consumes nothing
    assert set(seen["groups"]) == _allowed(service, "READ", "group") == own_group


def test_every_event_has_exactly_one_owner() -> None:
    owners: dict[str, list[str]] = {}
    for service in SERVICES:
        for topic in _allowed(service, "WRITE"):
            owners.setdefault(topic, []).append(service)
    shared_topics = {NS + "transition.refused", NS + DEAD_LETTER.name}
    for topic, who in owners.items():
        if topic == NS + DEAD_LETTER.name:  # every consumer
            assert sorted(who) == sorted(s for s in SERVICES if CONSUMES[s])
        elif topic in shared_topics:
            assert sorted(who) == sorted(SERVICES)
        else:
            assert len(who) == 1, f"{topic} written by {who}"
    assert set(owners) == {NS + t.name for t in ALL_TOPICS}, "every topic has a writer"
    assert sum(len(v) for v in PUBLISHES.values()) == len(ALL_TOPICS) - 2


def test_usage_reports_are_allocations_alone() -> None:
    """The forged event of issue 16: only allocation may write device.usage_reported."""
    topic = NS + "device.usage_reported"
    writers = {g.principal for g in grants(NS) if g.name == topic and g.operation == "WRITE"}
    assert writers == {"allocation"}
    assert Grant("allocation", "topic", topic, "WRITE") in grants(NS)


def test_console_only_describes_and_reads_dead_letters() -> None:
    ops = [g for g in grants(NS) if g.principal == OPS]
    assert {g.operation for g in ops if g.operation != "DESCRIBE"} == {"READ"}
    assert {g.name for g in ops if g.operation == "READ"} == {NS + DEAD_LETTER.name}
    assert {g.name for g in ops if g.resource == "group"} == {NS + s for s in SERVICES}


def test_grants_name_the_namespace_exactly() -> None:
    assert all(g.name.startswith(NS) for g in grants(NS))
    assert not {g.name for g in grants("")} & {g.name for g in grants(NS)}


def test_missing_password_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from shared.credentials import MissingCredential
    from shared.settings import ServiceSettings

    monkeypatch.setenv("GREENIT_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("GREENIT_KAFKA_PASSWORD", raising=False)

    class _Settings(ServiceSettings):
        service = "intake"

    with pytest.raises(MissingCredential, match="GREENIT_KAFKA_PASSWORD"):
        _Settings().kafka_credentials()
