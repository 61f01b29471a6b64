"""Every service's OpenAPI fuzzed with schemathesis against the five running services.

Real data is seeded first through the APIs (tools/fuzz.py `seed`) so generated path ids hit
existing pickups, devices, certificates, requests, shipments and lots; then about a thousand
generated requests, valid and invalid, go to every operation with the caller's role (staff, the
donor or the recipient, sometimes another role or no key). Deterministic: hypothesis is
derandomized. Then every operation with a JSON body gets the hostile bodies of
`tools.fuzz.hostile_cases` (NaN, Infinity, -Infinity, 1e309, a lone surrogate, a repeated key,
`true` in each number field, a body over the limit). `uv run python -m tools.fuzz --cases 10000`
does the same at a larger scale.
"""

from __future__ import annotations

import httpx
import pytest
from pymongo import MongoClient

from shared.auth import Role
from tests.conftest import MONGO_URL
from tools.cluster import SERVICES
from tools.fuzz import (
    Stats,
    changed_documents,
    digest,
    fuzz_all,
    hostile_cases,
    seed,
    snapshot,
    table,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # 1,000 cases on a loaded machine

CASES = 1000


PARTNERS = {
    "staff": (Role.STAFF, "staff-fuzz"),
    "donor": (Role.DONOR, "donor-fuzz"),
    "recipient": (Role.RECIPIENT, "school-fuzz"),
}


@pytest.fixture(scope="module")
def fuzzed(cluster, namespace, keys) -> dict[str, Stats]:
    known = seed(cluster.urls, keys)
    results = fuzz_all(cluster.urls, namespace, keys, known, CASES)
    print("\n" + table(results))
    return {s.service: s for s in results}


def _failures(fuzzed: dict[str, Stats], kind: str) -> list[str]:
    return [
        f"{service}: {message}"
        for service, stats in fuzzed.items()
        for key, message in stats.failures.items()
        if kind in key
    ]


def test_at_least_a_thousand_generated_cases_reach_every_operation_of_the_five_services(fuzzed):
    assert set(fuzzed) == set(SERVICES)
    assert sum(s.cases for s in fuzzed.values()) >= CASES
    for stats in fuzzed.values():
        assert stats.operations > 0
        assert stats.cases >= stats.operations, stats
        assert stats.client_errors < stats.cases, f"{stats.service}: every case was refused"


def test_no_generated_request_makes_a_service_answer_with_a_server_error(fuzzed):
    assert {s: stats.server_errors for s, stats in fuzzed.items()} == dict.fromkeys(SERVICES, 0)
    assert _failures(fuzzed, "Server error") == []


def test_no_request_answered_4xx_changes_any_stored_data(fuzzed):
    counts = {s: stats.refused_but_changed for s, stats in fuzzed.items()}
    assert counts == dict.fromkeys(SERVICES, 0), "\n".join(_failures(fuzzed, "changed "))


def test_bodies_no_json_encoder_writes_reach_every_service_and_get_a_4xx_naming_the_field(
    fuzzed, cluster
):
    with_bodies = set()
    for stats in fuzzed.values():
        spec = httpx.get(cluster.urls[stats.service] + "/openapi.json", timeout=30).json()
        if hostile_cases(stats.service, spec):  # custody takes no body: it only reads
            with_bodies.add(stats.service)
            assert stats.hostile > 0, f"{stats.service}: no hostile body sent"
    assert with_bodies == set(SERVICES) - {"custody"}
    assert _failures(fuzzed, "hostile ") == []


def test_every_answer_conforms_to_the_openapi_schema_and_invalid_data_is_refused(fuzzed):
    assert [m for s in fuzzed.values() for m in s.failures.values()] == []


def test_the_stored_data_check_sees_a_changed_field_but_not_volatile_fields_or_refusals(namespace):
    client: MongoClient = MongoClient(MONGO_URL, tz_aware=True)
    db = client[namespace + "greenit_fuzzcheck"]
    try:
        db.devices.insert_one({"_id": "d1", "state": "received", "version": 1, "outbox": {}})
        before = snapshot(db)
        db.devices.update_one({"_id": "d1"}, {"$set": {"version": 2, "outbox": {"e": 1}}})
        db.devices.update_one({"_id": "d1"}, {"$push": {"applied": "e"}})
        db.refusals.insert_one({"_id": "r1", "reason": "refused"})
        assert digest(snapshot(db)) == digest(before)
        db.devices.update_one({"_id": "d1"}, {"$set": {"state": "ready"}})
        db.pickups.insert_one({"_id": "p1"})
        after = snapshot(db)
        assert digest(after) != digest(before)
        assert changed_documents(before, after) == ["devices/d1", "pickups/p1"]
    finally:
        client.drop_database(db.name)
        client.close()
