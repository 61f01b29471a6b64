"""Fuzz every service's OpenAPI with schemathesis, against services it starts itself.

    uv run python -m tools.fuzz --cases 10000

Starts the five services in a namespace of its own (Kafka and the store must be up, as
`./dev up` or `./dev infra-up` leave them), creates keys, seeds a little real data through the
APIs (so generated path ids can hit existing resources), then sends generated requests, positive
and negative, to every operation with the role that may use it (and now and then another role
or no key). Each answer is checked: never a 5xx, 2xx and 422 bodies conform to the schema, and a
request answered 4xx changed nothing stored in the service's database (every collection but
`refusals`, ignoring the volatile fields `outbox`, `applied`, `version`, `updated_at`).
Prints one row per service: operations, cases, 4xx, 5xx, refused-but-changed and seconds.

Then come the bodies a JSON encoder never writes, sent as raw bytes to every operation with a
JSON body (`hostile_cases`): `NaN`, `Infinity`, `-Infinity`, `1e309`, a string holding a lone
surrogate, `true` in every number field (nested ones too), a repeated key, and a body one byte
over the service's limit. Each must be answered 422 naming the field (413 for the size), with a
body JSON can read, and change nothing stored.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err

from shared import store_users
from shared.admin import create_topics
from shared.auth import Role, new_key, store_key
from shared.mongo import tool_client, with_credentials
from shared.settings import ServiceSettings
from tools.cluster import SERVICES, Cluster, project_root, running_cluster

BOOTSTRAP = os.environ.get("GREENIT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_URL = os.environ.get("GREENIT_MONGO_URL", "mongodb://127.0.0.1:27017/")

VOLATILE_FIELDS = frozenset({"outbox", "applied", "version", "updated_at"})
UNWATCHED_COLLECTIONS = frozenset({"refusals"})

# Who calls an operation by default: staff, except where only a partner role may.
PARTNER_ONLY: dict[str, set[tuple[str, str]]] = {
    "intake": {("POST", "/pickups")},
    "allocation": {
        ("POST", "/requests"),
        ("POST", "/shipments/{shipment_id}/accept"),
        ("POST", "/devices/{device_id}/report"),
    },
}
PARTNER_OF_SERVICE = {"intake": "donor", "allocation": "recipient", "custody": "donor"}


def caller_of(service: str, method: str, path: str) -> str:
    """Whose key an operation is called with by default."""
    partner = PARTNER_OF_SERVICE.get(service)
    only = PARTNER_ONLY.get(service, set())
    return partner if partner and (method, path) in only else "staff"


# One case in this many is sent by another caller than the operation's own (other role, no key).
OTHER_CALLER_EVERY = 8

DOC = dict[str, Any]
Snapshot = dict[str, dict[str, str]]


# ---- what is stored ---------------------------------------------------------------------------


def database_name(namespace: str, service: str) -> str:
    return f"{namespace}{ServiceSettings().mongo_db_prefix}_{service}"


def _canonical(doc: DOC) -> str:
    kept = {k: v for k, v in doc.items() if k not in VOLATILE_FIELDS}
    return json.dumps(kept, sort_keys=True, default=str)


def snapshot(db: Database[DOC]) -> Snapshot:
    """Every stored document but the volatile fields, canonically dumped, by collection and id."""
    names = [
        name
        for name in sorted(db.list_collection_names())
        if name not in UNWATCHED_COLLECTIONS and not name.startswith("system.")
    ]

    def dump(name: str) -> dict[str, str]:
        return {str(d["_id"]): _canonical(d) for d in db[name].find()}

    return dict(zip(names, _READERS.map(dump, names), strict=True))


_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fuzz-snapshot")


def digest(dump: Snapshot) -> str:
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


def changed_documents(before: Snapshot, after: Snapshot) -> list[str]:
    """`collection/_id` of every document inserted, deleted or changed between two snapshots."""
    changed = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name, {}), after.get(name, {})
        changed += [
            f"{name}/{i}" for i in sorted(old.keys() | new.keys()) if old.get(i) != new.get(i)
        ]
    return changed


def wait_until_quiet(db: Database[DOC], quiet_s: float = 1.0, within_s: float = 60.0) -> None:
    """Wait until no consumer changes the database any more (events still in flight settle)."""
    deadline = time.monotonic() + within_s
    last = digest(snapshot(db))
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = digest(snapshot(db))
        if now == last:
            return
        last = now
    raise TimeoutError(f"{db.name} kept changing for {within_s} s")


# ---- seed data --------------------------------------------------------------------------------

Known = dict[str, list[str]]


def _wait_for(check: Callable[[], Any], what: str, within_s: float = 60.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


@dataclass
class Api:
    urls: Mapping[str, str]
    keys: Mapping[str, str]
    client: httpx.Client

    def call(self, service: str, who: str, method: str, path: str, **kw: Any) -> Any:
        response = self.client.request(
            method,
            self.urls[service] + path,
            headers={"X-API-Key": self.keys[who]},
            **kw,
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {service}{path}: {response.status_code} {response.text}")
        return response.json()


def _erasure(serial: str, method: str) -> DOC:
    return {
        "drive_serial": serial,
        "method": method,
        "technique": "shredding" if method == "destroy" else "NVMe secure erase",
        "tool": "HSM shredder" if method == "destroy" else "nwipe",
        "tool_version": "0.37",
        "verified": True,
        "verification": "visual inspection" if method == "destroy" else "full read-back",
        "performed_at": datetime.now(UTC).isoformat(),
        "location": "Warehouse Brussels",
    }


def seed(urls: Mapping[str, str], keys: Mapping[str, str]) -> Known:
    """A little real data in every service, through the public APIs; returns its ids by name.

    Six devices under a scheduled pickup (one without a serial) and a second, requested pickup;
    three devices refurbished and wiped, two decided for recycling, one only received; a request
    fulfilled by matching, one of its devices shipped and delivered, another request still open;
    one device dismantled and recycled in a lot, another awaiting dismantling.
    """
    with httpx.Client(timeout=30) as client:
        return _seed(Api(urls, keys, client))


def _seed(api: Api) -> Known:
    now = datetime.now(UTC)
    pickup_body = {
        "address": {
            "street": "Rue de la Loi 42",
            "postal_code": "1040",
            "city": "Brussels",
            "country": "BE",
        },
        "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
        "window": {
            "start": (now + timedelta(days=1)).isoformat(),
            "end": (now + timedelta(days=3)).isoformat(),
        },
        "expected": {"laptop": 6},
    }
    p1 = api.call("intake", "donor", "POST", "/pickups", json=pickup_body)["pickup_id"]
    p2 = api.call("intake", "donor", "POST", "/pickups", json=pickup_body)["pickup_id"]
    when = {"scheduled_for": (now + timedelta(days=2)).isoformat()}
    api.call("intake", "staff", "POST", f"/pickups/{p1}/schedule", json=when)
    devices: list[str] = []
    for i in range(6):
        scan: DOC = {
            "category": "laptop",
            "make": "HP",
            "model": "EliteBook 840 G5",
            "weight_kg": 1.5,
            "location": "Warehouse Brussels",
        }
        if i:
            scan |= {"serial_number": f"SN-{i:04d}", "asset_tag": f"ACME-{i:04d}"}
        devices.append(
            api.call("intake", "staff", "POST", f"/pickups/{p1}/devices", json=scan)["device_id"]
        )

    _wait_for(
        lambda: len(api.call("diagnostics", "staff", "GET", "/devices")) >= 6,
        "diagnostics to receive the devices",
    )
    passed = dict.fromkeys(
        ("boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"),
        "pass",
    )
    certificates: list[str] = []
    for i, device_id in enumerate(devices[:5]):
        recycle = i >= 3
        report = {
            "specs": {
                "cpu_model": "Intel Core i5-8350U",
                "cpu_cores": 4,
                "ram_gb": 8,
                "drives": [{"serial": f"DRV-{i}", "kind": "ssd", "capacity_gb": 256}],
                "battery_health_pct": 85,
            },
            "tests": passed | ({"boot": "fail"} if recycle else {}),
            "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
            "location": "Warehouse Brussels",
        }
        api.call("diagnostics", "staff", "POST", f"/devices/{device_id}/reports", json=report)
        erasure = _erasure(f"DRV-{i}", "destroy" if recycle else "purge")
        done = api.call(
            "diagnostics", "staff", "POST", f"/devices/{device_id}/erasures", json=erasure
        )
        certificates.append(done["certificate_id"])

    _wait_for(
        lambda: len(api.call("allocation", "staff", "GET", "/stock")) >= 3,
        "allocation to stock the ready devices",
    )
    wanted = {"quantity": 2, "category": "laptop", "purpose": "Classroom", "priority": 2}
    r1 = api.call("allocation", "recipient", "POST", "/requests", json=wanted)["request_id"]
    api.call("allocation", "staff", "POST", "/matching/run")
    allocated = api.call("allocation", "staff", "GET", "/devices", params={"state": "allocated"})
    shipment = api.call(
        "allocation",
        "staff",
        "POST",
        "/shipments",
        json={
            "recipient_id": allocated[0]["recipient_id"],
            "device_ids": [allocated[0]["device_id"]],
        },
    )["shipment_id"]
    api.call(
        "allocation",
        "recipient",
        "POST",
        f"/shipments/{shipment}/accept",
        json={"accepted_by": "Ms. Diallo"},
    )
    more = wanted | {"quantity": 5, "priority": 4}
    r2 = api.call("allocation", "recipient", "POST", "/requests", json=more)["request_id"]

    _wait_for(
        lambda: len(api.call("recycling", "staff", "GET", "/devices")) >= 2,
        "recycling to receive the released devices",
    )
    fractions = {"plastics_kg": 0.5, "ferrous_kg": 0.3, "circuit_boards_kg": 0.25}
    dismantling = {"fractions": fractions, "hazardous_parts": ["li-ion battery"], "location": "W"}
    api.call("recycling", "staff", "POST", f"/devices/{devices[3]}/dismantle", json=dismantling)
    lot = api.call(
        "recycling",
        "staff",
        "POST",
        "/lots",
        json={
            "recycler": {"name": "Recupel Metals NV", "certification": "WEEELABEX"},
            "device_ids": [devices[3]],
        },
    )
    certificates += [c["certificate_id"] for c in lot["certificates"]]
    recipients = sorted({d["recipient_id"] for d in allocated})
    return {
        "pickup_id": [p1, p2],
        "device_id": devices,
        "certificate_id": certificates,
        "request_id": [r1, r2],
        "shipment_id": [shipment],
        "lot_id": [lot["lot_id"]],
        "recipient_id": recipients,
    }


# ---- fuzzing ----------------------------------------------------------------------------------


@dataclass
class Stats:
    service: str
    operations: int = 0
    cases: int = 0
    hostile: int = 0
    client_errors: int = 0
    server_errors: int = 0
    refused_but_changed: int = 0
    seconds: float = 0.0
    request_s: float = 0.0
    snapshot_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    def fail(self, key: str, message: str) -> None:
        self.failures.setdefault(key, message)


def _checks() -> list[Any]:
    from schemathesis import checks

    return [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.response_schema_conformance,
        checks.content_type_conformance,
        checks.negative_data_rejection,
    ]


def _with_known_ids(case: Any, known: Known, choose: Callable[[Sequence[str]], str | None]) -> None:
    """Now and then point a path id, or an id in the body, at a resource that exists."""
    for name in list(case.path_parameters or {}):
        if name in known and (chosen := choose(known[name])) is not None:
            case.path_parameters[name] = chosen
    if isinstance(case.body, dict):
        for name, value in list(case.body.items()):
            if name in known and isinstance(value, str):
                if (chosen := choose(known[name])) is not None:
                    case.body[name] = chosen
            elif (
                name == "device_ids"
                and isinstance(value, list)
                and value
                and (chosen := choose(known["device_id"])) is not None
            ):
                case.body[name] = [chosen, *value[1:]]


@dataclass
class Target:
    """One service under fuzzing: where it answers, its database, the keys and the seeded ids."""

    service: str
    url: str
    db: Database[DOC]
    keys: Mapping[str, str]
    known: Known
    stats: Stats
    session: requests.Session = field(default_factory=requests.Session)
    checks: list[Any] = field(default_factory=_checks)
    stored: Snapshot | None = None

    def own_caller(self, operation: Any) -> str:
        return self.caller_of(operation.method.upper(), operation.path)

    def caller_of(self, method: str, path: str) -> str:
        return caller_of(self.service, method, path)

    def snapshot(self) -> Snapshot:
        started = time.monotonic()
        try:
            return snapshot(self.db)
        finally:
            self.stats.snapshot_s += time.monotonic() - started

    def send(self, case: Any, who: str) -> None:
        """Send one case as `who` and check the answer."""
        headers = {"X-API-Key": self.keys[who]} if who in self.keys else {}
        stats = self.stats
        before = self.stored if self.stored is not None else self.snapshot()
        self.stored = None
        sent = time.monotonic()
        response = case.call(base_url=self.url, session=self.session, headers=headers, timeout=30)
        stats.request_s += time.monotonic() - sent
        stats.cases += 1
        label = f"{case.method.upper()} {case.path}"
        self.compare(
            label,
            response.status_code,
            before,
            lambda: case.as_curl_command(headers=headers, base_url=self.url),
        )
        try:
            case.validate_response(response, checks=self.checks, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                stats.fail(f"{label} {failure.title}", f"{label}: {group}")

    def compare(self, label: str, status: int, before: Snapshot, replay: Callable[[], str]) -> None:
        """Count the answer; a 4xx must have left what is stored as it was."""
        stats = self.stats
        if status >= 500:
            stats.server_errors += 1
        elif status >= 400:
            stats.client_errors += 1
            after = self.snapshot()
            if digest(after) == digest(before):
                # Nothing else writes here while the service is fuzzed: the next case starts
                # from what is stored now, without a second read.
                self.stored = after
            else:
                stats.refused_but_changed += 1
                changed = changed_documents(before, after)
                stats.fail(
                    f"changed {label} {status}",
                    f"{label} answered {status} but changed {changed[:5]}:\n{replay()}",
                )

    def send_hostile(self, hostile: Hostile, who: str) -> None:
        """Send one hostile body as `who`: 422 naming its field (413 for the size), or a failure."""
        headers = {"Content-Type": "application/json"}
        if who in self.keys:
            headers["X-API-Key"] = self.keys[who]
        path = hostile.path_for(self.known)
        before = self.stored if self.stored is not None else self.snapshot()
        self.stored = None
        sent = time.monotonic()
        response = self.session.post(
            self.url + path, data=hostile.body, headers=headers, timeout=30
        )
        self.stats.request_s += time.monotonic() - sent
        self.stats.cases += 1
        self.stats.hostile += 1
        label = f"POST {hostile.path}"
        self.compare(label, response.status_code, before, lambda: f"POST {path} {hostile.what}")
        if problem := hostile.problem_with(response.status_code, response.content):
            self.stats.fail(f"hostile {label} {hostile.what}", f"{label} {hostile.what}: {problem}")


# ---- bodies no JSON encoder writes ------------------------------------------------------------

# Raw JSON values a strict reader must refuse, by what they are.
HOSTILE_VALUES = {
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "1e309": b"1e309",
    "lone surrogate": b'"HP\\ud800"',
}
DEFAULT_KEY = "x"  # a body without properties still gets its hostile values under some key


@dataclass(frozen=True)
class Hostile:
    """One raw body for one operation, and the answer it must get."""

    path: str
    what: str
    body: bytes
    status: int
    loc: tuple[str | int, ...] = ()
    reason: str = ""

    def path_for(self, known: Known) -> str:
        def fill(match: re.Match[str]) -> str:
            ids = known.get(match.group(1)) or [str(uuid.uuid4())]
            return ids[0]

        return re.sub(r"\{(\w+)\}", fill, self.path)

    def problem_with(self, status: int, content: bytes) -> str | None:
        """Why the answer is wrong, or None: the status, a body JSON can read, the field or
        the limit named."""
        try:
            answer = json.loads(content)
        except ValueError:
            return f"answered {status} with a body that is not JSON: {content[:200]!r}"
        if status != self.status:
            return f"answered {status}, not {self.status}: {str(answer)[:300]}"
        detail = answer.get("detail") if isinstance(answer, dict) else None
        if self.status == 413:
            return None if self.reason in str(detail) else f"413 without the limit: {detail}"
        locs = [tuple(e.get("loc", ())) for e in detail or () if isinstance(e, dict)]
        wanted = ("body", *self.loc)
        if not any(loc[: len(wanted)] == wanted for loc in locs):
            return f"422 does not name {list(wanted)}: {str(detail)[:300]}"
        return None


def _resolved(spec: DOC, schema: DOC) -> DOC:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _key_for(spec: DOC, schema: DOC) -> str:
    names = _resolved(spec, schema.get("propertyNames") or {})
    return str(names.get("enum", [DEFAULT_KEY])[0])


def number_fields(
    spec: DOC, schema: DOC, at: tuple[str | int, ...] = (), depth: int = 0
) -> Iterator[tuple[str | int, ...]]:
    """Where a body of this JSON schema holds a number: each path, into nested objects, the
    first item of arrays and a key of maps."""
    schema = _resolved(spec, schema)
    if depth > 8:
        return
    if schema.get("type") in ("integer", "number"):
        yield at
    for choice in (*schema.get("anyOf", ()), *schema.get("oneOf", ()), *schema.get("allOf", ())):
        yield from number_fields(spec, choice, at, depth + 1)
    for name, prop in schema.get("properties", {}).items():
        yield from number_fields(spec, prop, (*at, name), depth + 1)
    if isinstance(schema.get("items"), dict):
        yield from number_fields(spec, schema["items"], (*at, 0), depth + 1)
    if isinstance(schema.get("additionalProperties"), dict):
        key = _key_for(spec, schema)
        yield from number_fields(spec, schema["additionalProperties"], (*at, key), depth + 1)


def _nest(at: tuple[str | int, ...], raw: bytes) -> bytes:
    """The raw JSON text of a body holding `raw` at path `at` (and nothing else)."""
    for step in reversed(at):
        raw = b"[" + raw + b"]" if isinstance(step, int) else _member(step, raw)
    return raw


def _member(key: str, raw: bytes) -> bytes:
    return b"{" + json.dumps(key).encode() + b": " + raw + b"}"


def body_limit(service: str, path: str, env: Mapping[str, str]) -> tuple[int, str]:
    """The body size limit of one route, as a service started with `env` reads it."""
    setting, field_name = "GREENIT_MAX_BODY_BYTES", "max_body_bytes"
    fields = ServiceSettings.model_fields
    if service == "intake" and path == "/pickups/{pickup_id}/manifest":
        from services.intake.settings import Settings as IntakeSettings

        setting, field_name = "GREENIT_MAX_MANIFEST_BODY_BYTES", "max_manifest_body_bytes"
        fields = IntakeSettings.model_fields
    return int(env.get(setting, fields[field_name].default)), setting


def hostile_cases(service: str, spec: DOC, env: Mapping[str, str] = os.environ) -> list[Hostile]:
    """The hostile bodies for every operation of one OpenAPI document that takes JSON."""
    cases = []
    for path, operations in spec.get("paths", {}).items():
        operation = operations.get("post")
        content = (operation or {}).get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        schema = _resolved(spec, content["application/json"]["schema"])
        first = next(iter(schema.get("properties", {})), DEFAULT_KEY)
        for what, raw in HOSTILE_VALUES.items():
            cases.append(Hostile(path, what, _member(first, raw), 422, (first,)))
        repeated = b"{" + b", ".join([json.dumps(first).encode() + b': "a"'] * 2) + b"}"
        cases.append(Hostile(path, "repeated key", repeated, 422, (first,)))
        for at in number_fields(spec, schema):
            cases.append(Hostile(path, f"true for {list(at)}", _nest(at, b"true"), 422, at))
        limit, setting = body_limit(service, path, env)
        oversized = _member(first, json.dumps("x" * limit).encode())
        cases.append(
            Hostile(path, "oversized body", oversized, 413, reason=f"{limit} bytes ({setting})")
        )
    return cases


CALLERS = ("staff", "donor", "recipient", "anonymous")


@dataclass(frozen=True)
class Planned:
    case: Any
    who: str


def _generate(operation: Any, budget: int, known: Known, own: str) -> list[Planned]:
    """Up to `budget` cases for one operation (deterministic: hypothesis is derandomized).

    Most path ids and body ids are then pointed at seeded resources; one case in
    OTHER_CALLER_EVERY is sent by another caller than `own` (another role, or no key).
    """
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.body or operation.query or operation.path_parameters:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    planned: list[Planned] = []

    @given(case=st.one_of(strategies), data=st.data())
    @settings(
        max_examples=budget,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    def run(case: Any, data: st.DataObject) -> None:
        def choose(ids: Sequence[str]) -> str | None:
            return data.draw(st.sampled_from([None, *ids]))

        _with_known_ids(case, known, choose)
        who = own
        if data.draw(st.integers(0, OTHER_CALLER_EVERY - 1)) == 0:
            who = data.draw(st.sampled_from([c for c in CALLERS if c != own]))
        planned.append(Planned(case, who))

    run()
    return planned


def fuzz_service(
    service: str,
    url: str,
    db: Database[DOC],
    keys: Mapping[str, str],
    known: Known,
    cases: int,
) -> Stats:
    """Send about `cases` generated requests, spread over every operation of one service.

    The next operation's cases are generated in a thread while this one's are sent, so the
    generation (CPU here) overlaps the services' work; cases are still sent one at a time.
    """
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    # The caller's X-API-Key is ours to send (a staff, partner or no key), never generated.
    schema.config.generation.update(with_security_parameters=False)
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    # Operations with few distinct cases (no parameters, no body) first: the budget hypothesis
    # leaves unused on them (GET /health has one case) goes to the operations after them.
    operations.sort(key=lambda op: bool(op.body or op.query or op.path_parameters))
    stats = Stats(service, operations=len(operations))
    target = Target(service, url, db, keys, known, stats)
    started = time.monotonic()
    generated = 0

    def generate(i: int) -> Future[list[Planned]]:
        budget = max(1, (cases - generated) // (len(operations) - i))
        own = target.own_caller(operations[i])
        return generator.submit(_generate, operations[i], budget, known, own)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuzz-generate") as generator:
        pending = generate(0)
        for i in range(len(operations)):
            planned = pending.result()
            generated += len(planned)
            if i + 1 < len(operations):
                pending = generate(i + 1)
            for p in planned:
                target.send(p.case, p.who)
    spec = target.session.get(url + "/openapi.json", timeout=30).json()
    for hostile in hostile_cases(service, spec):
        target.send_hostile(hostile, target.caller_of("POST", hostile.path))
    stats.seconds = time.monotonic() - started
    return stats


def fuzz_all(
    urls: Mapping[str, str],
    namespace: str,
    keys: Mapping[str, str],
    known: Known,
    cases: int,
    services: Sequence[str] = SERVICES,
    on_done: Callable[[Stats], None] = lambda stats: None,
) -> list[Stats]:
    """Fuzz the services one after the other, each once what the previous caused has settled.

    Services are fuzzed in the order events flow (intake, diagnostics, allocation, recycling,
    custody),
    so no consumer writes to the database of the service being fuzzed while it is.
    """
    client: MongoClient[DOC] = MongoClient(with_credentials(MONGO_URL), tz_aware=True)
    try:
        results: list[Stats] = []
        for i, service in enumerate(services):
            db = client[database_name(namespace, service)]
            wait_until_quiet(db)
            budget = (cases - sum(s.cases for s in results)) // (len(services) - i)
            results.append(fuzz_service(service, urls[service], db, keys, known, budget))
            on_done(results[-1])
        return results
    finally:
        client.close()


def table(results: Sequence[Stats]) -> str:
    """One row per service and a total; `of which requests/store reads` splits the seconds."""
    header = (
        "service",
        "operations",
        "cases",
        "4xx",
        "5xx",
        "refused-but-changed",
        "seconds",
        "(requests",
        "store reads)",
    )

    def row(name: str, s: Sequence[Stats]) -> tuple[str, ...]:
        return (
            name,
            str(sum(x.operations for x in s)),
            str(sum(x.cases for x in s)),
            str(sum(x.client_errors for x in s)),
            str(sum(x.server_errors for x in s)),
            str(sum(x.refused_but_changed for x in s)),
            f"{sum(x.seconds for x in s):.1f}",
            f"{sum(x.request_s for x in s):.1f}",
            f"{sum(x.snapshot_s for x in s):.1f}",
        )

    rows = [header, *(row(s.service, [s]) for s in results)]
    total = row("total", results)
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


# ---- standalone -------------------------------------------------------------------------------


async def _create_keys(namespace: str) -> dict[str, str]:
    class _Settings(ServiceSettings):
        service = "fuzz"
        kafka_username: str = "admin"
        store_username: str = "admin"

    settings = _Settings(namespace=namespace, kafka_bootstrap=BOOTSTRAP, mongo_url=MONGO_URL)
    client: AsyncMongoClient[DOC] = tool_client(MONGO_URL)
    keys = {}
    try:
        for who, role, partner in (
            ("staff", Role.STAFF, "staff-fuzz"),
            ("donor", Role.DONOR, "donor-fuzz"),
            ("recipient", Role.RECIPIENT, "school-fuzz"),
        ):
            keys[who] = new_key()
            await store_key(
                client, settings, key=keys[who], role=role, partner_id=partner, name=partner
            )
    finally:
        await client.close()
    return keys


@dataclass
class Run:
    namespace: str
    cluster: Cluster
    keys: dict[str, str]
    known: Known


@contextmanager
def started(namespace: str, log_dir: Path) -> Iterator[Run]:
    """Topics, the five services, keys and seed data in `namespace`."""
    asyncio.run(create_topics(BOOTSTRAP, prefix=namespace))
    asyncio.run(store_users.grant_namespace(MONGO_URL, namespace))
    env = {
        **os.environ,
        "GREENIT_NAMESPACE": namespace,
        "GREENIT_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "GREENIT_MONGO_URL": MONGO_URL,
        "GREENIT_LOG_LEVEL": "WARNING",
    }
    with running_cluster(env, log_dir) as cluster:
        keys = asyncio.run(_create_keys(namespace))
        yield Run(namespace, cluster, keys, seed(cluster.urls, keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fuzz", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=1000, help="generated cases in total")
    parser.add_argument("--services", nargs="*", default=list(SERVICES), choices=SERVICES)
    parser.add_argument("--show", type=int, default=20, help="failures shown per service")
    args = parser.parse_args(argv)
    namespace = f"fuzz{uuid.uuid4().hex[:8]}_"
    log_dir = Path(tempfile.gettempdir()) / "greenit-fuzz" / namespace
    if (project_root() / ".local").is_dir():
        log_dir = project_root() / ".local" / "fuzz-logs" / namespace
    print(f"namespace {namespace}; service logs in {log_dir}", flush=True)
    with started(namespace, log_dir) as run:
        results = fuzz_all(
            run.cluster.urls,
            namespace,
            run.keys,
            run.known,
            args.cases,
            args.services,
            on_done=lambda s: print(
                f"{s.service}: {s.cases} cases in {s.seconds:.0f} s", flush=True
            ),
        )
    print(table(results))
    for stats in results:
        for message in list(stats.failures.values())[: args.show]:
            print(f"\n--- {stats.service}: {message}")
    bad = any(s.server_errors or s.refused_but_changed or s.failures for s in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
