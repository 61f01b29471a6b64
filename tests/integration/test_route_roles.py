"""Who may call what: every route of every service's `/openapi.json`, called with each role's key,
no key and a wrong key, answers as the README's table "Who may call what" says; every key is
known to every service (403, not 401, for a role that may not use it), revocation reaches all
five at once, and wrong keys from one address are slowed down to 429 without slowing valid keys.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import httpx
import pytest

from shared.auth import SERVICES, Role, new_key
from tests.helpers import run_module
from tools.cluster import project_root

pytestmark = pytest.mark.integration

FAILURES_PER_MINUTE = 40  # above the wrong keys the walk sends to one service from one address
ROLES = ("donor", "recipient", "staff", "operations", "workbench")
CALLERS = (*ROLES, "none", "wrong")
ANYONE = "anyone, no key"


def readme_table() -> dict[tuple[str, str, str], set[str] | None]:
    """(service, method, path) -> the roles that may call it (None: anyone, without a key)."""
    text = (project_root() / "README.md").read_text()
    section = text.split("### Who may call what", 1)[1]
    table: dict[tuple[str, str, str], set[str] | None] = {}
    for line in section.splitlines():
        row = re.fullmatch(r"\| (\w+) \| `(GET|POST|PUT|PATCH|DELETE) (\S+)` \| (.+) \|", line)
        if row is None:
            if table and not line.startswith("|"):
                break
            continue
        service, method, path, who = row.groups()
        roles = None if who == ANYONE else {r.removesuffix(" (own)") for r in who.split(", ")}
        assert roles is None or roles <= set(ROLES), line
        table[(service, method, path)] = roles
    return table


PARTNERS = {role: (Role(role), f"{role}-walk") for role in ROLES}


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    return {"GREENIT_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE)}


@pytest.fixture(scope="module")
def urls(cluster) -> dict[str, str]:
    return cluster.urls


@pytest.fixture(scope="module")
def keys(urls, keys) -> dict[str, str]:
    """The module's partners' keys and a wrong one."""
    return keys | {"wrong": new_key()}


def _fill(path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        schema = parameter.get("schema", {})
        if "$ref" in schema or "enum" in schema:
            value = "erasure"  # the one enum in a path: a certificate's kind
        elif schema.get("format") == "uuid":
            value = str(uuid4())
        else:
            value = "x"
        path = path.replace("{" + parameter["name"] + "}", value)
    return path


def test_the_readme_lists_every_route_of_every_service_and_no_other(urls):
    table = readme_table()
    served = set()
    for service in SERVICES:
        spec = httpx.get(urls[service] + "/openapi.json").json()
        served |= {(service, m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served - table.keys() == set(), "routes missing from the README's table"
    assert table.keys() - served == set(), "README rows without a route"


def test_every_route_answers_every_caller_as_the_readme_says(urls, keys):
    table = readme_table()
    wrong: list[str] = []
    with httpx.Client(timeout=30) as client:
        for service in SERVICES:
            spec = client.get(urls[service] + "/openapi.json").json()
            for path, operations in spec["paths"].items():
                for method, operation in operations.items():
                    roles = table[(service, method.upper(), path)]
                    url = urls[service] + _fill(path, operation)
                    body = {} if "requestBody" in operation else None
                    for caller in CALLERS:
                        headers = {"X-API-Key": keys[caller]} if caller in keys else {}
                        status = client.request(method, url, headers=headers, json=body)
                        got = status.status_code
                        if roles is None:
                            ok = got not in (401, 403, 429)
                        elif caller in ("none", "wrong"):
                            ok = got == 401
                        elif caller in roles:
                            ok = got not in (401, 403, 429) and got < 500
                        else:
                            ok = got == 403
                        if not ok:
                            wrong.append(f"{service} {method.upper()} {path} as {caller}: {got}")
    assert wrong == []


@pytest.mark.parametrize(
    ("role", "service"),
    [
        ("donor", "diagnostics"),
        ("donor", "allocation"),
        ("donor", "recycling"),
        ("recipient", "intake"),
        ("recipient", "diagnostics"),
        ("recipient", "recycling"),
        ("recipient", "custody"),
        ("workbench", "intake"),
        ("workbench", "allocation"),
        ("workbench", "recycling"),
        ("workbench", "custody"),
    ],
)
def test_a_valid_key_on_a_service_its_role_may_not_use_is_403_saying_so(urls, keys, role, service):
    # /refusals: a route every service has (intake's GET /devices only redirects now, keyless)
    response = httpx.get(urls[service] + "/refusals", headers={"X-API-Key": keys[role]})

    assert response.status_code == 403
    assert response.json()["detail"] == f"this role may not use {service}: {role}"


def test_operations_cannot_write_a_test_report_in_diagnostics(urls, keys):
    """The issue's case: an operations key's report moved a device to `diagnosed`."""
    response = httpx.post(
        urls["diagnostics"] + f"/devices/{uuid4()}/reports",
        headers={"X-API-Key": keys["operations"]},
        json={},
    )

    assert response.status_code == 403


def test_a_revocation_reaches_every_service_when_the_cli_returns(urls, base_env):
    def cli(*args: str) -> str:
        run = run_module(base_env, "shared.auth", *args)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    key = cli("create-key", "--role", "staff", "--partner", "staff-leaving")
    for service in SERVICES:
        response = httpx.get(urls[service] + "/refusals", headers={"X-API-Key": key})
        assert response.status_code == 200, service

    assert cli("revoke", "--partner", "staff-leaving") == (
        "revoked 1 key(s) of staff-leaving in intake, diagnostics, allocation, recycling, custody"
    )

    for service in SERVICES:
        response = httpx.get(urls[service] + "/refusals", headers={"X-API-Key": key})
        assert response.status_code == 401, service
        assert response.json()["detail"] == "unknown or revoked API key"


def test_wrong_keys_from_one_address_get_429_while_valid_keys_are_not_slowed(urls, keys):
    url = urls["recycling"] + "/lots"
    flooder = {"X-Forwarded-For": "198.51.100.7"}  # uvicorn trusts it from 127.0.0.1
    neighbour = {"X-Forwarded-For": "198.51.100.8"}
    with httpx.Client(timeout=30) as client:
        staff_here = flooder | {"X-API-Key": keys["staff"]}
        assert client.get(url, headers=staff_here).status_code == 200

        answers = [
            client.get(url, headers=flooder | {"X-API-Key": new_key()}).status_code
            for _ in range(FAILURES_PER_MINUTE + 10)
        ]
        assert answers[:FAILURES_PER_MINUTE] == [401] * FAILURES_PER_MINUTE
        assert answers[FAILURES_PER_MINUTE:] == [429] * 10

        blocked = client.get(url, headers=flooder | {"X-API-Key": new_key()})
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert "too many failed authentications" in blocked.json()["detail"]

        # a key that already worked from the address keeps working, at once
        assert client.get(url, headers=staff_here).status_code == 200
        # no key is no guess: still the plain 401
        assert client.get(url, headers=flooder).status_code == 401
        # another address is not affected at all
        assert client.get(url, headers=neighbour | {"X-API-Key": keys["staff"]}).status_code == 200
        assert client.get(url, headers=neighbour | {"X-API-Key": new_key()}).status_code == 401
        # a key never used from the blocked address waits like a wrong one: telling them apart
        # would tell a guesser which guess was right
        fresh = client.get(url, headers=flooder | {"X-API-Key": keys["operations"]})
        assert fresh.status_code == 429
