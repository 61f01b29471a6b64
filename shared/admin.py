"""Kafka administration as the admin principal: the catalogue's topics with their partition
counts, the services' SCRAM credentials and the ACLs of a namespace (all idempotent).

Usage: python -m shared.admin create-topics [--bootstrap HOST:PORT] [--wait S]
       python -m shared.admin rotate-password PRINCIPAL [--bootstrap HOST:PORT]

`create-topics` also (re)writes every service's and the console's SCRAM credential from the
secrets directory and grants the namespace's ACLs (shared/acl.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from kafka.admin import (  # type: ignore[import-untyped]
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError as KafkaPythonError  # type: ignore[import-untyped]
from pymongo import AsyncMongoClient

from shared import store_users
from shared.acl import Grant, grants
from shared.credentials import (
    ADMIN,
    BROKER,
    OPS,
    PLAINTEXT,
    SERVICES,
    KafkaCredentials,
    new_password,
    read_password,
    secret_file,
    security_protocol,
    write_compose_env,
    write_secret,
)
from shared.mongo import tool_client
from shared.settings import ServiceSettings, store_auth_on
from shared.topics import ALL_TOPICS

# kafka-python logs its whole configuration, password included, at DEBUG
logging.getLogger("kafka").setLevel(logging.INFO)

USERS = (*SERVICES, OPS)
"""The principals whose SCRAM credentials the admin keeps (itself and the broker's are created
when the storage is formatted)."""


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    creds = KafkaCredentials.of(ADMIN)
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="greenit-admin", **creds.aiokafka()
    )


def _sync_admin(bootstrap: str) -> KafkaAdminClient:
    creds = KafkaCredentials.of(ADMIN)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="greenit-admin", **creds.kafka_python()
    )


def _acl(grant: Grant) -> ACL:
    resource = ResourceType.TOPIC if grant.resource == "topic" else ResourceType.GROUP
    return ACL(
        principal=f"User:{grant.principal}",
        host="*",
        operation=ACLOperation[grant.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(resource, grant.name, ACLResourcePatternType.LITERAL),
    )


def _apply_acls(bootstrap: str, namespace: str, within_s: float = 30.0) -> None:
    """Create the namespace's ACLs and wait until the broker applies them: the controller
    commits them first, and a client that came at once could still be refused."""
    wanted = grants(namespace)
    admin = _sync_admin(bootstrap)
    try:
        result = admin.create_acls([_acl(g) for g in wanted])
        if result["failed"]:
            raise RuntimeError(f"creating ACLs failed: {result['failed'][:3]}")
        everything = ACLFilter(
            principal=None,
            host="*",
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(
                ResourceType.ANY, None, ACLResourcePatternType.ANY
            ),
        )
        deadline = time.monotonic() + within_s
        while True:
            acls, _ = admin.describe_acls(everything)
            seen = {(a.principal, a.resource_pattern.resource_name, a.operation.name) for a in acls}
            missing = [
                g for g in wanted if (f"User:{g.principal}", g.name, g.operation) not in seen
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not apply {len(missing)} ACLs: {missing[:3]}")
            time.sleep(0.1)
    finally:
        admin.close()


def _delete_acls(bootstrap: str, names: Iterable[str]) -> None:
    """Delete every ACL on the topics and groups named (those of a dropped namespace)."""
    filters = [
        ACLFilter(
            principal=None,
            host="*",
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(resource, name, ACLResourcePatternType.LITERAL),
        )
        for name in sorted(set(names))
        for resource in (ResourceType.TOPIC, ResourceType.GROUP)
    ]
    admin = _sync_admin(bootstrap)
    try:
        admin.delete_acls(filters)
    finally:
        admin.close()


def _upsert_users(bootstrap: str, passwords: dict[str, str]) -> None:
    admin = _sync_admin(bootstrap)
    try:
        result = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password)
                for user, password in passwords.items()
            ]
        )
    finally:
        admin.close()
    failed = {user: error for user, error in result.items() if error}
    if failed:
        raise RuntimeError(f"could not set SCRAM credentials: {failed}")


async def ensure_users(bootstrap: str) -> None:
    """The broker knows every service's and the console's password from the secrets directory."""
    passwords = {user: read_password(user) for user in USERS}
    await asyncio.to_thread(_upsert_users, bootstrap, passwords)


async def create_topics(bootstrap: str, prefix: str = "") -> list[str]:
    """The catalogue's topics in namespace `prefix`, its ACLs, and the services' and console's
    SCRAM credentials (a broker of one's own, as the chaos run starts, has only the admin's);
    returns the topics created. A broker without authentication (PLAINTEXT, bench.sasl's) has
    neither principals nor ACLs: only the topics."""
    secured = security_protocol() != PLAINTEXT
    if secured:
        await ensure_users(bootstrap)
    admin = _admin(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=prefix + t.name, num_partitions=t.partitions, replication_factor=1)
            for t in ALL_TOPICS
            if prefix + t.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()
    if secured:
        await asyncio.to_thread(_apply_acls, bootstrap, prefix)
    return [t.name for t in missing]


async def drop_namespace(
    bootstrap: str, mongo_url: str, namespace: str, extra_topics: Iterable[str] = ()
) -> None:
    """Delete the namespace's topics and ACLs and drop its databases: a broker keeps every
    partition's files open, so test and benchmark runs that leave theirs behind exhaust its
    file limit."""
    client: AsyncMongoClient[dict[str, Any]] = tool_client(
        mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        for name in await client.list_database_names():
            if name.startswith(namespace):
                await client.drop_database(name)
        if store_auth_on(None):  # and the store users' roles on them
            await store_users.revoke(client, namespace)
    finally:
        await client.close()
    admin = _admin(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [namespace + t.name for t in ALL_TOPICS] + list(extra_topics)
        doomed = [t for t in names if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    # the deployment's own ACLs are never dropped with a test namespace; PLAINTEXT has none
    if namespace and security_protocol() != PLAINTEXT:
        await asyncio.to_thread(_delete_acls, bootstrap, {g.name for g in grants(namespace)})


async def rotate_password(bootstrap: str, principal: str) -> None:
    """A new password for `principal`: first the broker's credential, then the secret file (a
    process started in between fails to authenticate and says so; running ones stay
    connected until they reconnect)."""
    if principal == BROKER:
        raise ValueError("the broker's own password is in its configuration: see the README")
    if principal not in (*USERS, ADMIN):
        raise ValueError(f"unknown principal {principal!r}: one of {', '.join((*USERS, ADMIN))}")
    password = new_password()
    await asyncio.to_thread(_upsert_users, bootstrap, {principal: password})
    write_secret(secret_file(principal), password)
    write_compose_env()


async def _setup(bootstrap: str, prefix: str, wait_s: float) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await create_topics(bootstrap, prefix)
        except (KafkaError, KafkaPythonError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.admin")
    parser.add_argument("command", choices=["create-topics", "rotate-password"])
    parser.add_argument("principal", nargs="?", help="rotate-password: whose")
    parser.add_argument("--bootstrap", default=ServiceSettings().kafka_bootstrap)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the broker")
    args = parser.parse_args(argv)
    if args.command == "rotate-password":
        if not args.principal:
            parser.error("rotate-password needs a principal")
        try:
            asyncio.run(rotate_password(args.bootstrap, args.principal))
        except ValueError as exc:
            parser.error(str(exc))
        print(f"rotated the Kafka password of {args.principal} ({secret_file(args.principal)})")
        return 0
    created = asyncio.run(_setup(args.bootstrap, ServiceSettings().namespace, args.wait))
    print(f"topics: {len(ALL_TOPICS)} in catalogue, {len(created)} created; ACLs granted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
