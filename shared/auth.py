"""API keys per partner, with roles, stored hashed in each service's own `api_keys` collection.

A key is shown once when created and never stored: only its SHA-256 is (keys are 256-bit random
tokens, so a fast hash is enough; there is nothing to brute-force). Requests carry it in the
`X-API-Key` header.

Create keys with the CLI (it writes the hash into the databases of the services that role uses):
    python -m shared.auth create-key --role donor --partner acme-consulate --name "Acme IT"
    python -m shared.auth list
    python -m shared.auth revoke --partner acme-consulate
"""

import argparse
import asyncio
import hashlib
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Security, status
from fastapi.security import APIKeyHeader
from pymongo import AsyncMongoClient

from shared.mongo import Database, Document
from shared.settings import ServiceSettings


class Role(StrEnum):
    DONOR = "donor"
    RECIPIENT = "recipient"
    STAFF = "staff"
    OPERATIONS = "operations"


SERVICES_OF_ROLE: dict[Role, tuple[str, ...]] = {
    Role.DONOR: ("intake",),
    Role.RECIPIENT: ("allocation",),
    Role.STAFF: ("intake", "diagnostics", "allocation", "recycling"),
    Role.OPERATIONS: ("intake", "diagnostics", "allocation", "recycling"),
}


@dataclass(frozen=True, slots=True)
class Principal:
    partner_id: str
    role: Role
    name: str

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.STAFF, Role.OPERATIONS)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "git_" + secrets.token_urlsafe(32)


_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your partner API key")


def authenticator(db: Callable[[], Database]) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency resolving the caller from `X-API-Key` in this service's store."""

    async def authenticate(key: Annotated[str | None, Security(_header)]) -> Principal:
        if not key:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header")
        doc = await db().api_keys.find_one({"_id": hash_key(key), "revoked": False})
        if doc is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key")
        return Principal(partner_id=doc["partner_id"], role=Role(doc["role"]), name=doc["name"])

    return authenticate


def require(
    authenticate: Callable[..., Awaitable[Principal]], *roles: Role
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only `roles` through (403 for the others)."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this needs one of the roles: {allowed}"
            )
        return principal

    return check


async def store_key(
    client: AsyncMongoClient[Document],
    settings: ServiceSettings,
    *,
    key: str,
    role: Role,
    partner_id: str,
    name: str,
) -> list[str]:
    """Write the key's hash into the database of each service the role uses."""
    services = SERVICES_OF_ROLE[role]
    doc = {
        "_id": hash_key(key),
        "partner_id": partner_id,
        "role": role.value,
        "name": name,
        "created_at": datetime.now(UTC),
        "revoked": False,
    }
    for service in services:
        database = client[f"{settings.namespace}{settings.mongo_db_prefix}_{service}"]
        await database.api_keys.replace_one({"_id": doc["_id"]}, doc, upsert=True)
    return list(services)


def _databases(client: AsyncMongoClient[Document], settings: ServiceSettings) -> list[Database]:
    services = SERVICES_OF_ROLE[Role.STAFF]
    return [client[f"{settings.namespace}{settings.mongo_db_prefix}_{s}"] for s in services]


async def revoke_partner(
    client: AsyncMongoClient[Document], settings: ServiceSettings, partner_id: str
) -> int:
    """Revoke every key of a partner in every service; returns how many key records changed."""
    changed = 0
    for database in _databases(client, settings):
        result = await database.api_keys.update_many(
            {"partner_id": partner_id, "revoked": False},
            {"$set": {"revoked": True, "revoked_at": datetime.now(UTC)}},
        )
        changed += result.modified_count
    return changed


async def list_keys(
    client: AsyncMongoClient[Document], settings: ServiceSettings
) -> list[Document]:
    """Partners with keys (never the keys: only their hashes are stored)."""
    seen: dict[str, Document] = {}
    for database in _databases(client, settings):
        async for doc in database.api_keys.find({}, {"_id": 0}):
            seen.setdefault(f"{doc['partner_id']}/{doc['role']}/{doc['created_at']}", doc)
    return sorted(seen.values(), key=lambda d: (d["partner_id"], d["created_at"]))


async def _run(args: argparse.Namespace) -> str:
    settings = ServiceSettings()
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    try:
        if args.command == "create-key":
            key = new_key()
            await store_key(
                client,
                settings,
                key=key,
                role=Role(args.role),
                partner_id=args.partner,
                name=args.name or args.partner,
            )
            return key
        if args.command == "revoke":
            return f"revoked {await revoke_partner(client, settings, args.partner)} key record(s)"
        rows = await list_keys(client, settings)
        return "\n".join(
            f"{d['partner_id']:30} {d['role']:11} {d['name']:30} "
            f"{d['created_at']:%Y-%m-%d %H:%M} {'revoked' if d['revoked'] else 'active'}"
            for d in rows
        )
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-key", help="create an API key and print it once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--partner", required=True, help="partner id, e.g. acme-consulate")
    create.add_argument("--name", help="display name")
    revoke = sub.add_parser("revoke", help="revoke every key of a partner")
    revoke.add_argument("--partner", required=True)
    sub.add_parser("list", help="partners, roles and key states (keys themselves are never stored)")
    args = parser.parse_args(argv)
    print(asyncio.run(_run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
