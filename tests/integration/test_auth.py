"""API keys: created by the CLI, shown once, stored hashed, revocable."""

import hashlib
import subprocess
import sys

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests.conftest import MONGO_URL
from tools.cluster import project_root, running_cluster

pytestmark = pytest.mark.integration


def _cli(env, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "shared.auth", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def intake(topics, base_env, namespace):
    log_dir = project_root() / ".local" / "test-logs" / namespace
    with running_cluster(base_env, log_dir, ["intake"]) as cluster:
        yield cluster.urls["intake"]


async def test_a_key_is_printed_once_stored_only_as_its_hash_and_works_until_revoked(
    intake, base_env, namespace
):
    key = _cli(base_env, "create-key", "--role", "donor", "--partner", "acme", "--name", "Acme")
    assert key.startswith("git_")
    assert len(key) > 40

    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        docs = await client[f"{namespace}greenit_intake"].api_keys.find().to_list()
        assert [d["_id"] for d in docs] == [hashlib.sha256(key.encode()).hexdigest()]
        assert key not in repr(docs)
        for service in ("diagnostics", "allocation", "recycling"):
            assert await client[f"{namespace}greenit_{service}"].api_keys.count_documents({}) == 0
    finally:
        await client.close()

    assert httpx.get(intake + "/pickups", headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(intake + "/pickups", headers={"X-API-Key": key + "x"}).status_code == 401

    listing = _cli(base_env, "list")
    assert "acme" in listing
    assert key not in listing

    assert _cli(base_env, "revoke", "--partner", "acme") == "revoked 1 key record(s)"
    response = httpx.get(intake + "/pickups", headers={"X-API-Key": key})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_staff_key_is_stored_in_every_service(base_env, namespace):
    _cli(base_env, "create-key", "--role", "staff", "--partner", "lena")
    listing = _cli(base_env, "list")
    assert "lena" in listing
    assert "staff" in listing
