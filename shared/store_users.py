"""The document store's users and roles: least privilege per service.

Each service's user may read and write its own database and nothing else (a service owns its
collections, and the store enforces it); the operations console's user (`ops`) may read every
service's database and write none; the admin may do anything (it creates users, API keys, test
namespaces). Users live in the `admin` database; their passwords are the `store-NAME` files of
the secrets directory (`shared.credentials`).

Databases are `<namespace><prefix>_<service>`: `ensure(client, namespace)` grants the roles a
namespace needs (a test module's, a chaos run's) and `revoke` takes them back when it is dropped.

Usage:
    python -m shared.store_users ensure [--namespace NS]   # as the admin
    python -m shared.store_users rotate USER                # new password, in both places
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from shared.credentials import (
    ADMIN,
    OPS,
    SERVICES,
    STORE_USERS,
    new_password,
    read_store_password,
    store_secret_file,
    write_secret,
)
from shared.settings import ServiceSettings

Document = dict[str, Any]
USER_EXISTS = 51003
USER_NOT_FOUND = 11


def database_of(service: str, namespace: str = "", prefix: str | None = None) -> str:
    prefix = ServiceSettings().mongo_db_prefix if prefix is None else prefix
    return f"{namespace}{prefix}_{service}"


def roles(user: str, namespace: str = "") -> list[Document]:
    """The roles `user` needs in `namespace`."""
    if user == ADMIN:
        return [{"role": "root", "db": "admin"}]
    if user == OPS:
        return [{"role": "read", "db": database_of(s, namespace)} for s in SERVICES]
    if user in SERVICES:
        return [{"role": "readWrite", "db": database_of(user, namespace)}]
    raise ValueError(f"no store user {user!r}; users: {', '.join(STORE_USERS)}")


async def ensure(
    client: AsyncMongoClient[Document], namespace: str = "", users: tuple[str, ...] = STORE_USERS
) -> None:
    """Create each user with its password (from the secrets directory) and roles, or grant an
    existing one the roles `namespace` needs."""
    admin = client.admin
    for user in users:
        wanted = roles(user, namespace)
        try:
            await admin.command("createUser", user, pwd=read_store_password(user), roles=wanted)
        except OperationFailure as exc:
            if exc.code != USER_EXISTS:
                raise
            await admin.command("grantRolesToUser", user, roles=wanted)


async def grant_namespace(mongo_url: str, namespace: str) -> None:
    """As the admin, where the store has users: `ensure(client, namespace)` (before a
    namespace's services start: a service whose user has no role on its database stops)."""
    from shared.mongo import tool_client
    from shared.settings import store_auth_on

    if not store_auth_on(None):
        return
    client = tool_client(mongo_url, ADMIN, serverSelectionTimeoutMS=10_000)
    try:
        await ensure(client, namespace)
    finally:
        await client.close()


async def revoke(client: AsyncMongoClient[Document], namespace: str) -> None:
    """Take back the roles a dropped namespace's databases had."""
    if not namespace:
        return
    for user in (*SERVICES, OPS):
        try:
            await client.admin.command("revokeRolesFromUser", user, roles=roles(user, namespace))
        except OperationFailure as exc:
            if exc.code != USER_NOT_FOUND:
                raise


async def rotate(client: AsyncMongoClient[Document], user: str) -> None:
    """A new password for `user`: set in the store, then written to its secret file (a service
    reads it when it starts: restart it)."""
    roles(user)  # an unknown user is refused before anything changes
    password = new_password()
    await client.admin.command("updateUser", user, pwd=password)
    write_secret(store_secret_file(user), password)


def main(argv: list[str] | None = None) -> int:
    from shared.mongo import tool_client

    parser = argparse.ArgumentParser(prog="python -m shared.store_users", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="create the users, grant a namespace's roles")
    ensure_cmd.add_argument("--namespace", default="")
    rotate_cmd = sub.add_parser("rotate", help="a new password for one user")
    rotate_cmd.add_argument("user", choices=STORE_USERS)
    args = parser.parse_args(argv)
    url = ServiceSettings().mongo_url

    async def run() -> None:
        client = tool_client(url, ADMIN, auth=True, serverSelectionTimeoutMS=5_000)
        try:
            if args.command == "ensure":
                await ensure(client, args.namespace)
            else:
                await rotate(client, args.user)
        finally:
            await client.close()

    asyncio.run(run())
    if args.command == "rotate":
        print(
            f"store password of {args.user!r} rotated (written to {store_secret_file(args.user)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
