"""The document store authenticates (issue 16): each service's user may read and write its own
database only, the operations console's may only read, and a client without credentials or with
a wrong password gets nothing and changes nothing. Shown with plain PyMongo clients (not the
services' code), against the store the suite runs on; skipped where that store has no users
(GREENIT_STORE=ferretdb or mongod: README, "The document store")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from shared import mongo
from shared.credentials import SERVICES, read_store_password
from shared.settings import store_auth_on
from shared.store_users import database_of
from tests.conftest import MONGO_ADDRESS, MONGO_URL
from tests.helpers import start_refused
from tools.cluster import free_port
from tools.localinfra import USERS_MARKER, LocalStore, store_kind

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not store_auth_on(None), reason="the store under test has no users"),
]

ROOT = Path(__file__).resolve().parents[2]


def client_as(user: str | None, password: str | None = None) -> MongoClient[dict[str, object]]:
    if user is None:
        return MongoClient(MONGO_ADDRESS, serverSelectionTimeoutMS=5_000)
    return MongoClient(
        MONGO_ADDRESS,
        username=user,
        password=password if password is not None else read_store_password(user),
        authSource="admin",
        serverSelectionTimeoutMS=5_000,
    )


@pytest.fixture(scope="module")
def admin():
    client: MongoClient[dict[str, object]] = MongoClient(MONGO_URL, serverSelectionTimeoutMS=5_000)
    yield client
    client.close()


@pytest.fixture
def seeded(namespace: str, admin) -> dict[str, str]:
    """One document in each service's database of the namespace, written by the admin."""
    names = {s: database_of(s, namespace) for s in SERVICES}
    for name in names.values():
        admin[name].probe.replace_one({"_id": "seed"}, {"_id": "seed", "n": 1}, upsert=True)
    return names


def counts(admin, names: dict[str, str]) -> dict[str, int]:
    return {s: admin[db].probe.count_documents({}) for s, db in names.items()}


def test_a_client_without_credentials_can_neither_read_nor_write(seeded, admin) -> None:
    before = counts(admin, seeded)
    anonymous = client_as(None)
    try:
        for db in seeded.values():
            with pytest.raises(OperationFailure):
                anonymous[db].probe.find_one({})
            with pytest.raises(OperationFailure):
                anonymous[db].probe.insert_one({"forged": True})
        with pytest.raises(OperationFailure):  # nor read the API keys' hashes
            anonymous[seeded["intake"]].api_keys.find_one({})
    finally:
        anonymous.close()
    assert counts(admin, seeded) == before


def test_a_wrong_password_is_refused(seeded, admin) -> None:
    client = client_as("intake", "not-the-password")
    try:
        with pytest.raises(OperationFailure) as refused:
            client[seeded["intake"]].probe.insert_one({"forged": True})
        assert refused.value.code == 18  # AuthenticationFailed
    finally:
        client.close()
    assert admin[seeded["intake"]].probe.count_documents({"forged": True}) == 0


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_reads_and_writes_its_own_database_only(service, seeded, admin) -> None:
    before = counts(admin, seeded)
    client = client_as(service)
    try:
        own = client[seeded[service]].probe
        assert own.find_one({"_id": "seed"}) == {"_id": "seed", "n": 1}
        own.update_one({"_id": "seed"}, {"$inc": {"n": 1}})
        for other, db in seeded.items():
            if other == service:
                continue
            with pytest.raises(OperationFailure) as refused:
                client[db].probe.find_one({})
            assert refused.value.code == 13  # Unauthorized
            with pytest.raises(OperationFailure):
                client[db].probe.insert_one({"forged": True})
            with pytest.raises(OperationFailure):
                client[db].api_keys.insert_one({"_id": "forged staff key", "role": "staff"})
    finally:
        client.close()
    after = counts(admin, seeded)
    assert after == before
    assert admin[seeded[service]].probe.find_one({"_id": "seed"}) == {"_id": "seed", "n": 2}


def test_the_operations_user_reads_every_service_and_writes_none(seeded, admin) -> None:
    before = counts(admin, seeded)
    client = client_as("ops")
    try:
        for db in seeded.values():
            assert client[db].probe.find_one({"_id": "seed"}) is not None
            with pytest.raises(OperationFailure):
                client[db].probe.insert_one({"forged": True})
    finally:
        client.close()
    assert counts(admin, seeded) == before


@pytest.mark.parametrize("case", ["wrong", "missing"])
def test_a_service_with_a_wrong_or_missing_store_password_stops_naming_the_setting(
    base_env: dict[str, str], case: str, tmp_path: Path, topics: str
) -> None:
    started = time.monotonic()
    # Kafka's secret files are kept: Kafka is not the question here
    result = start_refused(
        base_env, "recycling", "GREENIT_STORE_PASSWORD", case, tmp_path, keep="kafka-*"
    )
    assert result.returncode != 0
    if case == "wrong":
        assert "the store refused user 'recycling' (authentication failed)" in result.stderr
    else:
        assert "no store password for user 'recycling'" in result.stderr
    assert "GREENIT_STORE_PASSWORD" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout, "the password is not logged"
    assert time.monotonic() - started < 60


async def test_the_health_check_tells_which_refusal_it_was(namespace: str) -> None:
    database = database_of("intake", namespace)
    cases = {
        "right password": ({"username": "intake", "password": read_store_password("intake")}, None),
        "wrong password": ({"username": "intake", "password": "nope"}, "authentication"),
        "no credentials": ({}, "authorization"),
        "another's database": (
            {"username": "custody", "password": read_store_password("custody")},
            "authorization",
        ),
    }
    for case, (credentials, expected) in cases.items():
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            MONGO_ADDRESS, authSource="admin", serverSelectionTimeoutMS=5_000, **credentials
        )
        try:
            assert await mongo.refusal(client[database]) == expected, case
        finally:
            await client.close()


@pytest.mark.skipif(store_kind() != "secantus", reason="SecantusDB's users are made by ./dev")
def test_a_fresh_store_gets_its_users_before_it_first_starts_with_auth(tmp_path: Path) -> None:
    """`tools.localinfra` creates SecantusDB's users on a start without `--auth` (it has no
    localhost exception), then starts it with `--auth`; after the marker is removed (the secrets
    directory was lost) a start sets the users' passwords again."""
    store = LocalStore(
        name="store", port=free_port(), log=tmp_path / "store.log", data=tmp_path / "data"
    )
    for attempt in ("fresh", "users already there"):
        store.start(timeout=60)
        try:
            assert "--auth" in store.argv()
            anonymous: MongoClient[dict[str, object]] = MongoClient(
                store.url, serverSelectionTimeoutMS=5_000
            )
            intake = MongoClient(
                store.url,
                username="intake",
                password=read_store_password("intake"),
                authSource="admin",
                serverSelectionTimeoutMS=5_000,
            )
            try:
                with pytest.raises(OperationFailure):
                    anonymous.greenit_intake.probe.insert_one({"forged": True})
                intake.greenit_intake.probe.insert_one({"attempt": attempt})
                with pytest.raises(OperationFailure):
                    intake.greenit_custody.probe.insert_one({"forged": True})
            finally:
                anonymous.close()
                intake.close()
        finally:
            store.stop()
        (store.data / USERS_MARKER).unlink()
