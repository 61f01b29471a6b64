"""Bad request bodies against the five services as real processes: a clear 4xx, never a 500.

Every operation with a JSON body of every service gets the bodies no JSON encoder writes
(`tools.fuzz.hostile_cases`, also sent by the fuzzing): NaN, Infinity, -Infinity, 1e309, a lone
surrogate, a repeated key, `true` in each number field its OpenAPI declares, and a body one byte
over its limit. The services run with small, configured limits, so the limits are shown to be
read from the environment and intake's manifest import to have its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest

from shared.auth import Role
from tools.cluster import SERVICES
from tools.fuzz import caller_of, hostile_cases

pytestmark = pytest.mark.integration

LIMITS = {"GREENIT_MAX_BODY_BYTES": "65536", "GREENIT_MAX_MANIFEST_BODY_BYTES": "262144"}


PARTNERS = {
    "staff": (Role.STAFF, "staff-bodies"),
    "donor": (Role.DONOR, "donor-bodies"),
    "recipient": (Role.RECIPIENT, "school-bodies"),
}


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    return LIMITS


READ_ONLY = ("custody",)
"""Services without an operation that takes a body."""


def test_a_read_only_service_has_no_operation_taking_a_body(cluster):
    for service in READ_ONLY:
        spec = httpx.get(cluster.urls[service] + "/openapi.json", timeout=30).json()
        bodies = [
            f"{method.upper()} {path}"
            for path, operations in spec["paths"].items()
            for method, operation in operations.items()
            if "requestBody" in operation
        ]
        assert bodies == [], service
        assert hostile_cases(service, spec, LIMITS) == []


@pytest.mark.parametrize("service", [s for s in SERVICES if s not in READ_ONLY])
def test_every_hostile_body_is_refused_naming_its_field_or_its_limit(service, cluster, keys):
    url = cluster.urls[service]
    with httpx.Client(timeout=30) as client:
        cases = hostile_cases(service, client.get(url + "/openapi.json").json(), LIMITS)
        problems = []
        for case in cases:
            key = keys[caller_of(service, "POST", case.path)]
            response = client.post(
                url + case.path_for({}),
                content=case.body,
                headers={"X-API-Key": key, "Content-Type": "application/json"},
            )
            if problem := case.problem_with(response.status_code, response.content):
                problems.append(f"POST {case.path} {case.what}: {problem}")
        assert client.get(url + "/health").status_code == 200
    kinds = {c.what.split(" for ")[0] for c in cases}
    assert kinds >= {"NaN", "Infinity", "-Infinity", "1e309", "lone surrogate", "repeated key"}
    assert {"true", "oversized body"} <= kinds, "every service has a number field and a body"
    assert problems == []


def test_a_chunked_body_over_the_limit_is_cut_off_with_413_naming_the_limit(cluster, keys):
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"location": "'
        for _ in range(1000):  # 1 MB in all, far beyond the 64 KiB configured
            sent += 1000
            yield b"x" * 1000

    url = cluster.urls["diagnostics"] + f"/devices/{uuid4()}/erasures"
    headers = {"X-API-Key": keys["staff"], "Content-Type": "application/json"}
    try:
        response = httpx.post(url, content=chunks(), headers=headers, timeout=30)
    except httpx.WriteError:  # the service answered and closed while more was being sent
        pytest.fail("the service closed the connection before httpx read its answer")
    assert response.status_code == 413
    assert response.json()["detail"].endswith("limit of 65536 bytes (GREENIT_MAX_BODY_BYTES)")


def test_the_manifest_import_takes_a_body_over_the_default_limit_but_not_over_its_own(
    cluster, keys
):
    url = cluster.urls["intake"] + f"/pickups/{uuid4()}/manifest"
    headers = {"X-API-Key": keys["donor"], "Content-Type": "application/json"}
    row = {"asset_tag": "A" * 60, "category": "laptop", "make": "HP", "model": "M" * 80}
    rows = [{"row": i + 2, **row, "weight_kg": 1.5} for i in range(700)]
    body = json.dumps({"rows": rows}).encode()
    assert 65536 < len(body) < 262144
    within = httpx.post(url, content=body, headers=headers, timeout=30)
    assert within.status_code == 404, within.text  # read and validated: the pickup is unknown
    device = cluster.urls["intake"] + f"/pickups/{uuid4()}/devices"
    over_default = httpx.post(device, content=body, headers=headers, timeout=30)
    assert over_default.status_code == 413
    more = json.dumps({"rows": rows * 3}).encode()
    over_own = httpx.post(url, content=more, headers=headers, timeout=30)
    assert over_own.status_code == 413
    assert "262144 bytes (GREENIT_MAX_MANIFEST_BODY_BYTES)" in over_own.json()["detail"]


def test_a_number_sent_as_true_was_stored_as_1_and_is_now_refused_on_scan_and_request(
    cluster, keys
):
    scan = {"category": "laptop", "make": "HP", "model": "X", "weight_kg": True, "location": "W"}
    answer = httpx.post(
        cluster.urls["intake"] + f"/pickups/{uuid4()}/devices",
        json=scan,
        headers={"X-API-Key": keys["staff"]},
        timeout=30,
    )
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "weight_kg"]]
    wanted = {"quantity": True, "category": "laptop", "purpose": "Classroom"}
    answer = httpx.post(
        cluster.urls["allocation"] + "/requests",
        json=wanted,
        headers={"X-API-Key": keys["recipient"]},
        timeout=30,
    )
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "quantity"]]
