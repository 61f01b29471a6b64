"""API keys: created by the CLI, shown once, stored hashed, revocable."""

import hashlib
from datetime import UTC, datetime

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.auth import hash_key, new_key
from tests.builders import pickup_body
from tests.conftest import MONGO_URL
from tests.helpers import run_module

pytestmark = pytest.mark.integration

PICKUP = pickup_body(expected={"laptop": 2})
CLUSTER = ["intake"]


def _cli(env, *args: str) -> str:
    result = run_module(env, "shared.auth", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def intake(cluster) -> str:
    return cluster.urls["intake"]


async def test_a_key_is_printed_once_stored_only_as_its_hash_and_works_until_revoked(
    intake, base_env, namespace
):
    key = _cli(base_env, "create-key", "--role", "donor", "--partner", "acme", "--name", "Acme")
    assert key.startswith("git_")
    assert len(key) > 40

    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        for service in ("intake", "diagnostics", "allocation", "recycling", "custody"):
            docs = await client[f"{namespace}greenit_{service}"].api_keys.find().to_list()
            assert [d["_id"] for d in docs] == [hashlib.sha256(key.encode()).hexdigest()]
            assert [(d["partner_id"], d["role"], d["revoked"]) for d in docs] == [
                ("acme", "donor", False)
            ], "every service knows every key, to answer 403 for a role it does not serve"
            assert key not in repr(docs)
    finally:
        await client.close()

    assert httpx.get(intake + "/pickups", headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(intake + "/pickups", headers={"X-API-Key": key + "x"}).status_code == 401

    listing = _cli(base_env, "list")
    assert "acme" in listing
    assert key not in listing

    assert _cli(base_env, "revoke", "--partner", "acme") == (
        "revoked 1 key(s) of acme in intake, diagnostics, allocation, recycling, custody"
    )
    response = httpx.get(intake + "/pickups", headers={"X-API-Key": key})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_staff_key_is_stored_in_every_service(base_env, namespace):
    _cli(base_env, "create-key", "--role", "staff", "--partner", "lena")
    listing = _cli(base_env, "list")
    assert "lena" in listing
    assert "staff" in listing


def test_a_partner_id_or_name_longer_than_the_events_allow_is_refused_at_creation(base_env):
    for args in (("--partner", "a" * 250), ("--partner", "acme-2", "--name", "N" * 250)):
        result = run_module(base_env, "shared.auth", "create-key", "--role", "donor", *args)
        assert result.returncode == 2
        assert "at most 200 characters" in result.stderr
        assert result.stdout == ""


def test_the_longest_partner_id_the_cli_accepts_can_ask_for_a_pickup(intake, base_env):
    key = _cli(base_env, "create-key", "--role", "donor", "--partner", "a" * 200)

    response = httpx.post(intake + "/pickups", headers={"X-API-Key": key}, json=PICKUP)

    assert response.status_code == 201, response.text


async def test_sync_gives_every_service_the_keys_one_of_them_had(intake, base_env, namespace):
    key = new_key()
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        old = {
            "_id": hash_key(key),
            "partner_id": "school-old",
            "role": "recipient",
            "name": "Old School",
            "created_at": datetime.now(UTC),
            "revoked": False,
        }
        await client[f"{namespace}greenit_allocation"].api_keys.insert_one(old)
        assert httpx.get(intake + "/pickups", headers={"X-API-Key": key}).status_code == 401

        assert "now known to intake, diagnostics, allocation, recycling, custody" in _cli(
            base_env, "sync"
        )

        response = httpx.get(intake + "/pickups", headers={"X-API-Key": key})
        assert response.status_code == 403
        assert response.json()["detail"] == "this role may not use intake: recipient"
    finally:
        await client.close()
