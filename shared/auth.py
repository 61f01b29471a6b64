"""API keys per partner, with roles, stored hashed in each service's own `api_keys` collection.

A key is shown once when created and never stored: only its SHA-256 is (keys are 256-bit random
tokens, so a fast hash is enough; there is nothing to brute-force). Requests carry it in the
`X-API-Key` header.

Every service knows every key (its hash, partner, role, name, revoked), so a valid key of a role
that may not use a service is told so (403), not taken for an unknown one (401). The CLI writes a
new key, and a revocation, into every service's database at once: a revocation holds everywhere
when the command returns, with no consumer lag in between, and key hashes never travel on a topic
that every consumer could read.
    python -m shared.auth create-key --role donor --partner acme-consulate --name "Acme IT"
    python -m shared.auth list
    python -m shared.auth revoke --partner acme-consulate
    python -m shared.auth sync    # copies keys made before every service knew every key

Wrong keys are rate-limited per client address (`FailedAuthentications`).
"""

import argparse
import asyncio
import hashlib
import logging
import math
import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import Field, TypeAdapter, ValidationError
from pymongo import AsyncMongoClient

from shared.events import NonEmpty
from shared.mongo import Database, Document, tool_client
from shared.settings import ServiceSettings

log = logging.getLogger("greenit.auth")


class Role(StrEnum):
    DONOR = "donor"
    RECIPIENT = "recipient"
    STAFF = "staff"
    OPERATIONS = "operations"
    WORKBENCH = "workbench"


SERVICES = ("intake", "diagnostics", "allocation", "recycling", "custody")

# The services a role may use at all; which routes of them, each route's `require` says.
SERVICES_OF_ROLE: dict[Role, tuple[str, ...]] = {
    Role.DONOR: ("intake", "custody"),
    Role.RECIPIENT: ("allocation",),
    Role.STAFF: SERVICES,
    Role.OPERATIONS: SERVICES,
    # The workbench on a donated machine posts its test report and erasures, nothing else.
    Role.WORKBENCH: ("diagnostics",),
}

# A partner's id and name go into events (`partner_id`, `recipient_name`, `scanned_by`, ...) as
# `NonEmpty`; the id also goes into URLs (`?partner_id=`), hence its characters.
PartnerId = Annotated[NonEmpty, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PartnerName = Annotated[NonEmpty, Field(pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")]
_partner_id: TypeAdapter[str] = TypeAdapter(PartnerId)
_partner_name: TypeAdapter[str] = TypeAdapter(PartnerName)


def valid_partner(partner_id: str, name: str) -> None:
    """Raise ValueError (saying which and why) for an id or name the events would refuse."""
    for what, adapter, value in (("id", _partner_id, partner_id), ("name", _partner_name, name)):
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            if exc.errors()[0]["type"] == "string_pattern_mismatch":
                reason = (
                    "use letters, digits, '.', '_' and '-', starting with a letter or digit"
                    if what == "id"
                    else "no control characters, and not only spaces"
                )
            raise ValueError(f"partner {what} {value[:40]!r}: {reason}") from None


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


class FailedAuthentications:
    """Wrong keys per client address in a sliding window; past the limit the address waits.

    Only a key that is presented and unknown or revoked counts (a missing key guesses nothing).
    A blocked address is answered 429 without its key being looked up, so it cannot go on
    guessing, except for keys that already authenticated from that address within `trust_s`:
    the other clients behind the same address (an office, a school's NAT) keep working.
    """

    def __init__(
        self,
        per_window: int,
        *,
        window_s: float = 60.0,
        trust_s: float = 3600.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self.trust_s = trust_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._trusted: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try an unknown key again; None if it may now."""
        if self.per_window <= 0:
            return None
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = self.clock()
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        if len(failures) < self.per_window:
            return None
        return max(1, math.ceil(failures[0] + self.window_s - now))

    def trusts(self, address: str, key_hash: str) -> bool:
        keys = self._trusted.get(address)
        seen = keys.get(key_hash) if keys is not None else None
        return seen is not None and seen > self.clock() - self.trust_s

    def failed(self, address: str) -> None:
        if self.per_window <= 0:
            return
        failures = self._failures.setdefault(address, deque())
        self._failures.move_to_end(address)
        failures.append(self.clock())
        while len(failures) > self.per_window:
            failures.popleft()
        if len(failures) == self.per_window:
            log.warning(
                "%d failed authentications from %s within %.0f s: its unknown keys wait",
                self.per_window,
                address,
                self.window_s,
            )
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str, key_hash: str) -> None:
        if self.per_window <= 0:
            return
        keys = self._trusted.setdefault(address, OrderedDict())
        self._trusted.move_to_end(address)
        keys[key_hash] = self.clock()
        keys.move_to_end(key_hash)
        while len(keys) > 64:
            keys.popitem(last=False)
        while len(self._trusted) > self.max_addresses:
            self._trusted.popitem(last=False)


def authenticator(
    db: Callable[[], Database], service: str, failures: FailedAuthentications
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency resolving the caller from `X-API-Key` in this service's store.

    401 without a key or for an unknown or revoked one, 429 (with Retry-After) for an address
    past its failed authentications, 403 for a valid key whose role may not use `service`.
    """

    async def authenticate(
        request: Request, key: Annotated[str | None, Security(_header)]
    ) -> Principal:
        if not key:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header")
        address = request.client.host if request.client else "unknown"
        key_hash = hash_key(key)
        wait = failures.retry_after(address)
        if wait is not None and not failures.trusts(address, key_hash):
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many failed authentications from this address; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        doc = await db().api_keys.find_one({"_id": key_hash})
        if doc is None or doc.get("revoked", False):
            failures.failed(address)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key")
        failures.succeeded(address, key_hash)
        role = Role(doc["role"])
        if service not in SERVICES_OF_ROLE[role]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this role may not use {service}: {role.value}"
            )
        return Principal(partner_id=doc["partner_id"], role=role, name=doc["name"])

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
    """Write the key's hash into every service's database (each answers 403 for a wrong role)."""
    valid_partner(partner_id, name)
    doc = {
        "_id": hash_key(key),
        "partner_id": partner_id,
        "role": role.value,
        "name": name,
        "created_at": datetime.now(UTC),
        "revoked": False,
    }
    for database in _databases(client, settings):
        await database.api_keys.replace_one({"_id": doc["_id"]}, doc, upsert=True)
    return list(SERVICES)


def _databases(client: AsyncMongoClient[Document], settings: ServiceSettings) -> list[Database]:
    return [client[f"{settings.namespace}{settings.mongo_db_prefix}_{s}"] for s in SERVICES]


async def revoke_partner(
    client: AsyncMongoClient[Document], settings: ServiceSettings, partner_id: str
) -> int:
    """Revoke every key of a partner in every service; returns how many keys were active.

    A run that failed part way (a store unreachable) is simply run again.
    """
    revoked: set[str] = set()
    at = datetime.now(UTC)
    for database in _databases(client, settings):
        active = {"partner_id": partner_id, "revoked": False}
        revoked |= {d["_id"] async for d in database.api_keys.find(active, {"_id": 1})}
        await database.api_keys.update_many(active, {"$set": {"revoked": True, "revoked_at": at}})
    return len(revoked)


async def sync_keys(client: AsyncMongoClient[Document], settings: ServiceSettings) -> int:
    """Give every service every key any service has (a revocation anywhere wins everywhere)."""
    keys: dict[str, Document] = {}
    for database in _databases(client, settings):
        async for doc in database.api_keys.find():
            known = keys.setdefault(doc["_id"], doc)
            if doc.get("revoked") and not known.get("revoked"):
                keys[doc["_id"]] = doc
    for database in _databases(client, settings):
        for doc in keys.values():
            await database.api_keys.replace_one({"_id": doc["_id"]}, doc, upsert=True)
    return len(keys)


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
    client: AsyncMongoClient[Document] = tool_client(settings.mongo_url)
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
            revoked = await revoke_partner(client, settings, args.partner)
            return f"revoked {revoked} key(s) of {args.partner} in {', '.join(SERVICES)}"
        if args.command == "sync":
            return f"{await sync_keys(client, settings)} key(s) now known to {', '.join(SERVICES)}"
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
    sub.add_parser("sync", help="copy every key record into every service's database")
    args = parser.parse_args(argv)
    if args.command == "create-key":
        try:
            valid_partner(args.partner, args.name or args.partner)
        except ValueError as exc:
            create.error(str(exc))
    print(asyncio.run(_run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
