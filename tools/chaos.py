"""Chaos run: thousands of devices through the five services while processes die under them.

    uv run python -m tools.chaos --devices 10000 --kills 20

Starts a Kafka broker and a document store of its own (ports 19092/19093 and 27018, data under
.local/chaos/), the five services in a fresh namespace, and drives every device from pickup to
a school or to certified recycling through the public HTTP APIs only. Meanwhile it SIGKILLs a
random service at random moments (restarting it 0.5-3 s later) and restarts Kafka once and the
store once. Every step is an idempotent "ensure": it survives a dead service or an unknown
outcome by retrying and, on a 409, by re-reading whether the step already took effect.

At the end it checks that nothing was lost and nothing applied twice (terminal states,
certificates, allocations, custody history order), prints a table and exits 1 if any check
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from shared import store_users
from shared.admin import create_topics
from shared.auth import Role, new_key, store_key
from shared.codec import decode
from shared.credentials import tool_credentials
from shared.mongo import Document, tool_client
from shared.settings import ServiceSettings
from tools.cluster import Cluster, running_cluster, service_of
from tools.localinfra import LOCAL, LocalKafka, LocalStore, local_infra

T = TypeVar("T")

DONORS = ("acme-consulate", "globex-bank", "initech-schools")
SCHOOLS = ("school-rosa-parks", "school-malala", "ngo-open-doors", "school-mandela")
STAFF = "staff-chaos"
RECYCLER = {"name": "Recupel Metals NV", "certification": "WEEELABEX"}
FRACTIONS = {
    "plastics_kg": 0.5,
    "ferrous_kg": 0.3,
    "aluminium_kg": 0.2,
    "circuit_boards_kg": 0.25,
    "batteries_kg": 0.3,
}
ALL_PASS = dict.fromkeys(
    ("boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"),
    "pass",
)
PRISTINE = {"casing": "none", "screen_scratches": "none", "cracked": False}
MAX_PER_CALL = 500  # shipments and lots take at most 1000 devices

RANK = {
    "device.received": 1,
    "device.diagnosed": 2,
    "device.wiped": 3,
    "device.ready": 4,
    "device.released_for_recycling": 4,
    "device.allocated": 5,
    "device.shipped": 6,
    "device.delivered": 7,
    "device.reported": 8,
    "device.returned": 9,
    "device.dismantled": 10,
    "device.recycled": 11,
}


class ChaosError(RuntimeError):
    """The run cannot go on: an answer no retry can change, or the deadline passed."""


@dataclass(frozen=True)
class ChaosConfig:
    devices: int = 10_000
    kills: int = 20
    restart_kafka: bool = True
    restart_store: bool = True
    batch_min: int = 100
    batch_max: int = 500
    parallel_batches: int = 4
    concurrency: int = 24
    recycle_share: float = 0.2
    return_share: float = 0.01
    seed: int = 0
    kafka_port: int = 19092
    controller_port: int = 19093
    store_port: int = 27018
    timeout_s: float = 4 * 3600
    settle_s: float = 300
    base: Path = LOCAL / "chaos"
    keep_data: bool = False
    log_level: str = "WARNING"
    quiet: bool = False
    instances: int = 1
    """Processes per service, sharing its consumer group and database; the driver spreads its
    calls over them at random."""


def small_run(**changes: Any) -> ChaosConfig:
    """The e2e tests' run: 60 devices in two batches of 30, a broker and a store of its own on
    free ports, quiet, within 8 minutes and 90 s to settle; `changes` set the rest."""
    from tools.cluster import free_port

    preset: dict[str, Any] = {
        "devices": 60,
        "batch_min": 30,
        "batch_max": 30,
        "parallel_batches": 2,
        "return_share": 0.02,
        "kafka_port": free_port(),
        "controller_port": free_port(),
        "store_port": free_port(),
        "timeout_s": 480,
        "settle_s": 90,
        "quiet": True,
    }
    return ChaosConfig(**(preset | changes))


# ---- the plan ---------------------------------------------------------------------------------


@dataclass
class DevicePlan:
    index: int
    batch: int
    category: str
    serial: str
    asset_tag: str | None
    recycle: bool
    drives: tuple[str, ...]
    device_id: str = ""
    returned: bool = False

    @property
    def expected_stage(self) -> str:
        return "recycled" if self.recycle or self.returned else "delivered"


def plan_batches(config: ChaosConfig, rng: random.Random) -> list[list[DevicePlan]]:
    batches: list[list[DevicePlan]] = []
    index = 0
    while index < config.devices:
        size = min(config.devices - index, rng.randint(config.batch_min, config.batch_max))
        batch = []
        for _ in range(size):
            drives = 2 if rng.random() < 0.1 else 1
            batch.append(
                DevicePlan(
                    index=index,
                    batch=len(batches),
                    category="desktop" if rng.random() < 0.15 else "laptop",
                    serial=f"SN-{index:06d}",
                    asset_tag=None if rng.random() < 0.05 else f"CH-{index:06d}",
                    recycle=rng.random() < config.recycle_share,
                    drives=tuple(f"DRV-{index:06d}-{n}" for n in range(drives)),
                )
            )
            index += 1
        batches.append(batch)
    return batches


def _erasure(serial: str, method: str) -> dict[str, Any]:
    destroy = method == "destroy"
    return {
        "drive_serial": serial,
        "method": method,
        "technique": "shredding" if destroy else "NVMe secure erase",
        "tool": "HSM shredder" if destroy else "nwipe",
        "tool_version": "0.37",
        "verified": True,
        "verification": "visual inspection" if destroy else "full read-back",
        "performed_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "location": "Warehouse Brussels",
    }


def _chunks(items: Sequence[T], size: int = MAX_PER_CALL) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- driving the services over HTTP -----------------------------------------------------------


@dataclass
class Stats:
    calls: int = 0
    transport_errors: int = 0
    server_errors: int = 0
    rereads_after_409: int = 0
    waits: int = 0
    kills: list[str] = field(default_factory=list)
    infra_restarts: list[str] = field(default_factory=list)
    milestones: int = 0


class Driver:
    """Every step as an idempotent ensure, through the public HTTP APIs only."""

    def __init__(
        self,
        config: ChaosConfig,
        namespace: str,
        urls: dict[str, str],
        keys: dict[str, str],
        rng: random.Random,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.urls = urls
        self.keys = keys
        self.rng = rng
        self.stats = Stats()
        self.deadline = time.monotonic() + config.timeout_s
        self.inflight = asyncio.Semaphore(config.concurrency)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0),
            trust_env=False,
            limits=httpx.Limits(max_connections=config.concurrency * 2),
        )
        self.failures: list[str] = []

    async def close(self) -> None:
        await self.http.aclose()

    def url(self, service: str) -> str:
        """One of the service's processes, at random (the only one, or any of its instances)."""
        urls = [url for name, url in self.urls.items() if service_of(name) == service]
        return urls[0] if len(urls) == 1 else self.rng.choice(urls)

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChaosError(f"deadline of {self.config.timeout_s:.0f}s passed")

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        who: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send until the answer is definitive (2xx, 404 or 409). Only for what is safe to send
        again: reads, and writes the service itself recognises as repeated."""
        failures = 0
        while True:
            response = await self.try_once(
                method, service, path, who, json=json, headers=headers, failures=failures
            )
            if response is not None:
                return response
            failures += 1

    async def try_once(
        self,
        method: str,
        service: str,
        path: str,
        who: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        failures: int = 0,
    ) -> httpx.Response | None:
        """One try: the definitive answer, or None (after a backoff pause) when the outcome is
        unknown: a dead service, a timeout or a 5xx may or may not have taken effect."""
        self._check_deadline()
        try:
            async with self.inflight:
                self.stats.calls += 1
                response = await self.http.request(
                    method,
                    self.url(service) + path,
                    headers={"X-API-Key": self.keys[who], **(headers or {})},
                    json=json,
                )
        except httpx.TransportError:
            self.stats.transport_errors += 1
        else:
            if response.status_code in (404, 409) or response.is_success:
                return response
            if response.status_code < 500:
                raise ChaosError(
                    f"{method} {service}{path}: {response.status_code} {response.text}"
                )
            self.stats.server_errors += 1
        await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures + 1, 6)) * self.rng.uniform(0.5, 1.0))
        return None

    async def wait(self, what: str, attempt: int) -> None:
        """A step waits for an event another service has not consumed yet."""
        self._check_deadline()
        self.stats.waits += 1
        await asyncio.sleep(min(3.0, 0.2 * 1.5 ** min(attempt, 10)) * self.rng.uniform(0.7, 1.0))

    def fail(self, message: str) -> None:
        self.failures.append(message)

    # ---- intake -------------------------------------------------------------------------------

    async def ensure_pickup(self, batch: int, devices: list[DevicePlan]) -> str:
        donor = DONORS[batch % len(DONORS)]
        marker = f"chaos {self.namespace} batch {batch}"
        expected = Counter(d.category for d in devices)
        now = datetime.now(UTC)
        body = {
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
            "expected": dict(expected),
            "notes": marker,
        }
        failures = 0
        while (pickup_id := await self._find_pickup(donor, marker)) is None:
            created = await self.try_once(
                "POST", "intake", "/pickups", donor, json=body, failures=failures
            )
            if created is None:  # it may exist now: look before asking again
                failures += 1
                continue
            if created.status_code != 201:
                raise ChaosError(f"pickup refused: {created.text}")
            pickup_id = str(created.json()["pickup_id"])
            break
        await self._ensure_pickup_status(
            pickup_id,
            "schedule",
            {"scheduled_for": (now + timedelta(days=2)).isoformat()},
            done=("scheduled", "completed"),
        )
        return pickup_id

    async def _find_pickup(self, donor: str, marker: str) -> str | None:
        """A pickup asked for before: the answer to a POST may have been lost in a crash."""
        listed = await self.call("GET", "intake", "/pickups", donor)
        return next((str(p["pickup_id"]) for p in listed.json() if p["notes"] == marker), None)

    async def _ensure_pickup_status(
        self, pickup_id: str, action: str, body: dict[str, Any], done: tuple[str, ...]
    ) -> None:
        while True:
            response = await self.call(
                "POST", "intake", f"/pickups/{pickup_id}/{action}", STAFF, json=body
            )
            if response.status_code == 200:
                return
            current = await self.call("GET", "intake", f"/pickups/{pickup_id}", STAFF)
            self.stats.rereads_after_409 += 1
            if current.status_code == 200 and current.json()["status"] in done:
                return
            if response.status_code == 409 and current.json()["status"] not in done:
                raise ChaosError(f"{action} pickup {pickup_id} refused: {response.text}")

    async def ensure_scanned(self, pickup_id: str, device: DevicePlan) -> None:
        body: dict[str, Any] = {
            "serial_number": device.serial,
            "category": device.category,
            "make": "HP" if device.category == "laptop" else "Dell",
            "model": "EliteBook 840 G5" if device.category == "laptop" else "OptiPlex 7060",
            "weight_kg": 1.5 if device.category == "laptop" else 7.8,
            "location": "Warehouse Brussels",
        }
        if device.asset_tag:
            body["asset_tag"] = device.asset_tag
        response = await self.call(
            "POST", "intake", f"/pickups/{pickup_id}/devices", STAFF, json=body
        )
        if response.status_code not in (200, 201):
            raise ChaosError(f"scan of {device.serial} refused: {response.text}")
        device.device_id = response.json()["device_id"]
        self.stats.milestones += 1

    async def ensure_completed(self, pickup_id: str) -> None:
        await self._ensure_pickup_status(pickup_id, "complete", {}, done=("completed",))

    # ---- diagnostics --------------------------------------------------------------------------

    async def ensure_diagnosed(self, device: DevicePlan) -> None:
        tests = ALL_PASS | ({"boot": "fail"} if device.recycle else {})
        body = {
            "specs": {
                "cpu_model": "Intel Core i5-8350U",
                "cpu_cores": 4,
                "ram_gb": 8,
                "drives": [{"serial": s, "kind": "ssd", "capacity_gb": 256} for s in device.drives],
                "battery_health_pct": 85,
            },
            "tests": tests,
            "cosmetic": PRISTINE,
            "location": "Warehouse Brussels",
        }
        path = f"/devices/{device.device_id}"
        attempt = 0
        while True:
            response = await self.call("POST", "diagnostics", path + "/reports", STAFF, json=body)
            if response.status_code == 201:
                decision = response.json()["decision"]
                break
            if response.status_code == 404:  # device.received not consumed yet
                attempt += 1
                await self.wait("received in diagnostics", attempt)
                continue
            self.stats.rereads_after_409 += 1
            current = (await self.call("GET", "diagnostics", path, STAFF)).json()
            if current["state"] != "received":
                decision = current["decision"]
                break
        if decision != ("recycle" if device.recycle else "refurbish"):
            self.fail(f"device {device.device_id} decided {decision}")
        self.stats.milestones += 1
        await self.ensure_wiped(device)

    async def ensure_wiped(self, device: DevicePlan) -> None:
        path = f"/devices/{device.device_id}"
        method = "destroy" if device.recycle else "purge"
        while True:
            current = (await self.call("GET", "diagnostics", path, STAFF)).json()
            if current["certificate_id"]:
                self.stats.milestones += 1
                return
            for serial in current["drives_pending"]:
                # once: a repeated erasure of one drive of several would be recorded twice
                response = await self.try_once(
                    "POST", "diagnostics", path + "/erasures", STAFF, json=_erasure(serial, method)
                )
                if response is None or response.status_code != 201:
                    self.stats.rereads_after_409 += response is not None
                    break

    # ---- allocation ---------------------------------------------------------------------------

    async def wait_in_stock(self, device: DevicePlan) -> None:
        attempt = 0
        while True:
            response = await self.call("GET", "allocation", f"/devices/{device.device_id}", STAFF)
            if response.status_code == 200:
                return
            attempt += 1
            await self.wait("device.ready consumed by allocation", attempt)

    async def ensure_request(self, batch: int, category: str, quantity: int) -> tuple[str, str]:
        school = SCHOOLS[batch % len(SCHOOLS)]
        marker = f"chaos {self.namespace} batch {batch} {category}"
        body = {"quantity": quantity, "category": category, "purpose": marker, "priority": 3}
        failures = 0
        while True:
            listed = await self.call("GET", "allocation", "/requests", school)
            for request in listed.json():
                if request["purpose"] == marker:
                    return school, str(request["request_id"])
            created = await self.try_once(
                "POST", "allocation", "/requests", school, json=body, failures=failures
            )
            if created is None:  # it may exist now: look before asking again
                failures += 1
            elif created.status_code == 201:
                return school, str(created.json()["request_id"])
            else:
                raise ChaosError(f"request refused: {created.text}")

    async def ensure_fulfilled(self, school: str, request_id: str, quantity: int) -> list[str]:
        attempt = 0
        while True:
            view = (await self.call("GET", "allocation", f"/requests/{request_id}", school)).json()
            if view["allocated"] >= quantity:
                if view["allocated"] > quantity:
                    self.fail(f"request {request_id} got {view['allocated']} of {quantity}")
                self.stats.milestones += quantity
                return [str(d) for d in view["device_ids"]]
            await self.call("POST", "allocation", "/matching/run", STAFF)
            attempt += 1
            if attempt > 1:
                await self.wait("stock for matching", attempt)

    async def ensure_shipped_and_delivered(self, school: str, device_ids: list[str]) -> None:
        while True:
            states = await gather_limited(
                [self._stock(d) for d in device_ids], self.config.concurrency
            )
            shipments = {d["shipment_id"] for d in states if d["state"] == "shipped"}
            # a shipment whose devices were claimed but whose insert failed does not exist
            phantoms = set()
            for shipment_id in shipments:
                found = await self.call("GET", "allocation", f"/shipments/{shipment_id}", school)
                if found.status_code == 404:
                    phantoms.add(shipment_id)
            pending = [
                d["device_id"]
                for d in states
                if d["state"] == "allocated" or d["shipment_id"] in phantoms
            ]
            if not pending:
                break
            for chunk in _chunks(pending):
                body = {"recipient_id": school, "device_ids": list(chunk), "carrier": "Bpost"}
                response = await self.call("POST", "allocation", "/shipments", STAFF, json=body)
                if response.status_code == 409:
                    self.stats.rereads_after_409 += 1
        for shipment_id in sorted(shipments):
            await self.ensure_accepted(school, shipment_id)
        self.stats.milestones += len(device_ids)
        attempt = 0
        while True:  # accepting commits on the shipment; its devices follow
            states = await gather_limited(
                [self._stock(d) for d in device_ids], self.config.concurrency
            )
            if all(d["state"] != "shipped" for d in states):
                break
            attempt += 1
            await self.wait("shipment's devices delivered", attempt)
        self.stats.milestones += len(device_ids)

    async def _stock(self, device_id: str) -> dict[str, Any]:
        response = await self.call("GET", "allocation", f"/devices/{device_id}", STAFF)
        if response.status_code != 200:
            raise ChaosError(f"allocated device {device_id} missing from stock")
        view: dict[str, Any] = response.json()
        return view

    async def ensure_accepted(self, school: str, shipment_id: str) -> None:
        """Accept; after a failure accept again: a 409 (already delivered) is the answer that
        tells the step took effect."""
        path = f"/shipments/{shipment_id}"
        body = {"accepted_by": "Ms. Diallo"}
        while True:
            response = await self.call("POST", "allocation", path + "/accept", school, json=body)
            if response.status_code == 200:
                return
            self.stats.rereads_after_409 += 1
            current = await self.call("GET", "allocation", path, school)
            if current.status_code == 200 and current.json()["status"] == "delivered":
                return

    async def ensure_returned(self, device: DevicePlan) -> None:
        path = f"/devices/{device.device_id}"
        while True:
            current = await self._stock(device.device_id)
            if current["state"] == "returned":
                return
            if current["state"] != "delivered":
                raise ChaosError(f"device {device.device_id} is {current['state']}, not delivered")
            body = {"reason": "end_of_life", "note": "hinge broken after years of use"}
            response = await self.call(
                "POST", "allocation", path + "/return", current["recipient_id"], json=body
            )
            if response.status_code == 200:
                return
            self.stats.rereads_after_409 += 1

    # ---- recycling ----------------------------------------------------------------------------

    async def ensure_dismantled(self, device: DevicePlan) -> None:
        path = f"/devices/{device.device_id}"
        body: dict[str, Any] = {
            "fractions": FRACTIONS,
            "hazardous_parts": ["li-ion battery"],
            "location": "Recycling hall",
        }
        if device.returned:
            body["storage_destroyed"] = [
                _erasure(s, "destroy") | {"operator": STAFF} for s in device.drives
            ]
        attempt = 0
        while True:
            current = await self.call("GET", "recycling", path, STAFF)
            if current.status_code == 404:  # not released or returned to recycling yet
                attempt += 1
                await self.wait("device admitted by recycling", attempt)
                continue
            if current.json()["state"] != "awaiting_dismantling":
                break
            response = await self.call("POST", "recycling", path + "/dismantle", STAFF, json=body)
            if response.status_code == 201:
                break
            self.stats.rereads_after_409 += 1
        if not device.returned:
            self.stats.milestones += 1

    async def ensure_lot(self, key: str, devices: list[DevicePlan]) -> None:
        for n, chunk in enumerate(_chunks(devices)):
            body = {"recycler": RECYCLER, "device_ids": [d.device_id for d in chunk]}
            headers = {"Idempotency-Key": f"{self.namespace}{key}-{n}"}
            response = await self.call(
                "POST", "recycling", "/lots", STAFF, json=body, headers=headers
            )
            if response.status_code != 201:
                raise ChaosError(f"lot {key}-{n} refused: {response.status_code} {response.text}")
            lot = response.json()
            if len(lot["certificates"]) != len(chunk):
                self.fail(f"lot {lot['lot_id']}: {len(lot['certificates'])} certificates")
        self.stats.milestones += sum(1 for d in devices if not d.returned)

    # ---- one pickup, start to finish ----------------------------------------------------------

    async def run_batch(self, batch: int, devices: list[DevicePlan]) -> None:
        pickup_id = await self.ensure_pickup(batch, devices)
        await gather_limited([self.ensure_scanned(pickup_id, d) for d in devices], 64)
        await self.ensure_completed(pickup_id)
        await gather_limited([self.ensure_diagnosed(d) for d in devices], 64)
        refurbish = [d for d in devices if not d.recycle]
        recycle = [d for d in devices if d.recycle]
        await asyncio.gather(self._to_schools(batch, refurbish), self._to_recycling(batch, recycle))

    async def _to_schools(self, batch: int, devices: list[DevicePlan]) -> None:
        await gather_limited([self.wait_in_stock(d) for d in devices], 64)
        for category, quantity in sorted(Counter(d.category for d in devices).items()):
            school, request_id = await self.ensure_request(batch, category, quantity)
            device_ids = await self.ensure_fulfilled(school, request_id, quantity)
            await self.ensure_shipped_and_delivered(school, device_ids)

    async def _to_recycling(self, batch: int, devices: list[DevicePlan]) -> None:
        if not devices:
            return
        await gather_limited([self.ensure_dismantled(d) for d in devices], 64)
        await self.ensure_lot(f"batch-{batch}", devices)

    async def end_of_life(self, devices: list[DevicePlan]) -> None:
        """A few delivered devices come back and are recycled with their drives destroyed."""
        if not devices:
            return
        for device in devices:
            device.returned = True
        await gather_limited([self.ensure_returned(d) for d in devices], 64)
        await gather_limited([self.ensure_dismantled(d) for d in devices], 64)
        await self.ensure_lot("returns", devices)


async def gather_limited(steps: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """Run the steps with at most `limit` at once (the HTTP semaphore bounds calls anyway)."""
    gate = asyncio.Semaphore(limit)

    async def one(step: Awaitable[T]) -> T:
        async with gate:
            return await step

    return list(await asyncio.gather(*(one(s) for s in steps)))


# ---- chaos ------------------------------------------------------------------------------------


class Chaos:
    """Kills a random service (and once Kafka, once the store) as the workload progresses."""

    def __init__(
        self,
        config: ChaosConfig,
        cluster: Cluster,
        kafka: LocalKafka,
        store: LocalStore,
        driver: Driver,
        total_milestones: int,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.kafka = kafka
        self.store = store
        self.driver = driver
        self.total = max(1, total_milestones)
        self.rng = rng
        self.workload_done = asyncio.Event()

    def progress(self) -> float:
        return self.driver.stats.milestones / self.total

    def schedule(self) -> list[tuple[float, str]]:
        kills = self.config.kills
        moments = [
            ((k + self.rng.uniform(0.1, 0.9)) / max(1, kills) * 0.92, "kill") for k in range(kills)
        ]
        if self.config.restart_kafka:
            moments.append((self.rng.uniform(0.25, 0.4), "kafka"))
        if self.config.restart_store:
            moments.append((self.rng.uniform(0.55, 0.7), "store"))
        return sorted(moments)

    async def run(self) -> None:
        for threshold, action in self.schedule():
            while self.progress() < threshold and not self.workload_done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.workload_done.wait(), timeout=0.2)
            await asyncio.sleep(self.rng.uniform(0.0, 0.7))
            if action == "kill":
                await self.kill_one()
            else:
                await self.restart_infra(self.kafka if action == "kafka" else self.store)

    async def kill_one(self) -> None:
        service = self.rng.choice(sorted(self.cluster.processes))
        process = self.cluster.processes[service]
        process.kill()
        await asyncio.to_thread(process.wait)
        self.driver.stats.kills.append(f"{service}@{self.progress():.0%}")
        say(self.config, f"chaos: SIGKILL {service} at {self.progress():.0%}")
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        await self._start(service)

    async def _start(self, service: str) -> None:
        for attempt in range(5):
            await asyncio.to_thread(self.cluster.start, service)
            try:
                await asyncio.to_thread(self.cluster.wait_healthy, service, 120)
                return
            except (RuntimeError, TimeoutError) as exc:
                say(self.config, f"chaos: {service} did not come back ({exc}); again")
                with contextlib.suppress(Exception):
                    self.cluster.stop(service, kill=True)
                await asyncio.sleep(1 + attempt)
        raise ChaosError(f"{service} could not be restarted")

    async def restart_infra(self, component: LocalKafka | LocalStore) -> None:
        say(self.config, f"chaos: SIGKILL {component.name} at {self.progress():.0%}")
        started = time.monotonic()
        await asyncio.to_thread(component.kill)
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        await asyncio.to_thread(component.start)
        if isinstance(component, LocalKafka):
            await component.wait_ready()
        for service in list(self.cluster.processes):
            await asyncio.to_thread(self.cluster.wait_healthy, service, 180)
        took = time.monotonic() - started
        self.driver.stats.infra_restarts.append(
            f"{component.name}@{self.progress():.0%} ({took:.0f}s)"
        )
        say(self.config, f"chaos: {component.name} back, services healthy after {took:.0f}s")


# ---- checks -----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    expected: str
    observed: str
    ok: bool


@dataclass
class Report:
    config: ChaosConfig
    namespace: str
    checks: list[Check] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    elapsed_s: float = 0.0
    workload_s: float = 0.0
    settle_s: float = 0.0
    devices: int = 0
    invariant_violations: int | None = None

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, expected: object, observed: object, ok: bool) -> None:
        self.checks.append(Check(name, str(expected), str(observed), ok))

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"{'check':<{width}}  {'expected':>12}  {'observed':>12}  result"]
        for c in self.checks:
            result = "ok" if c.ok else "FAILED"
            lines.append(f"{c.name:<{width}}  {c.expected:>12}  {c.observed:>12}  {result}")
        s = self.stats
        rate = self.devices / self.workload_s if self.workload_s else 0.0
        lines += [
            "",
            f"namespace {self.namespace}: {self.devices} devices, "
            f"{len(s.kills)} service kills, infra restarts: {', '.join(s.infra_restarts) or '-'}",
            f"kills: {' '.join(s.kills) or '-'}",
            f"elapsed {self.elapsed_s:.0f}s (workload {self.workload_s:.0f}s, settle "
            f"{self.settle_s:.0f}s); throughput {rate:.1f} devices/s, "
            f"{s.calls / self.workload_s if self.workload_s else 0:.0f} HTTP calls/s",
            f"HTTP calls {s.calls}, transport errors {s.transport_errors}, 5xx {s.server_errors}, "
            f"re-reads after 409 {s.rereads_after_409}, waits for consumers {s.waits}",
        ]
        if self.invariant_violations is not None:
            lines.append(f"tools.invariants violations: {self.invariant_violations}")
        return "\n".join(lines)


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic from the beginning up to its end at the time of reading."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **tool_credentials().aiokafka(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        records: list[Any] = []
        while not consumer.assignment():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def _per_device(
    records: Iterable[Any], attr: str
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Distinct event ids and distinct `attr` values per device."""
    events: dict[str, set[str]] = defaultdict(set)
    values: dict[str, set[str]] = defaultdict(set)
    for record in records:
        event = decode(record.value)
        device = str(event.subject_id)
        events[device].add(str(event.event_id))
        values[device].add(str(getattr(event, attr)))
    return events, values


async def wait_settled(
    config: ChaosConfig,
    client: AsyncMongoClient[Document],
    namespace: str,
    plans: list[DevicePlan],
    within_s: float,
) -> bool:
    """Until the custody view shows every device in its terminal stage."""
    db = client[f"{namespace}greenit_custody"]
    expected = {d.device_id: d.expected_stage for d in plans}
    deadline = time.monotonic() + within_s
    while True:
        stages = {doc["_id"]: doc.get("stage") async for doc in db.devices.find({}, {"stage": 1})}
        behind = Counter(
            f"{stages.get(i)}->{stage}" for i, stage in expected.items() if stages.get(i) != stage
        )
        if not behind:
            return True
        if time.monotonic() > deadline:
            return False
        say(config, f"settling: {sum(behind.values())} devices behind: {dict(behind)}")
        await asyncio.sleep(2.0)


async def unpublished(client: AsyncMongoClient[Document], ns: str) -> int:
    """Documents whose outbox still holds events (each read whole: a check, not a hot path)."""
    pending = 0
    for service, collections in _OUTBOXES.items():
        db = client[f"{ns}greenit_{service}"]
        for name in collections:
            pending += await db[name].count_documents({"outbox": {"$nin": [{}, None]}})
    return pending


async def wait_published(client: AsyncMongoClient[Document], ns: str, within_s: float) -> None:
    """Until no outbox holds an event: entries a crash left are published by the restarted
    service's first sweep, a failed publication by the relay's retry every second."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not await unpublished(client, ns):
            return
        await asyncio.sleep(2.0)


async def check_everything(
    report: Report,
    client: AsyncMongoClient[Document],
    bootstrap: str,
    plans: list[DevicePlan],
    driver: Driver,
) -> None:
    ns = report.namespace
    ids = {d.device_id for d in plans}
    n = len(plans)
    recycled = {d.device_id for d in plans if d.expected_stage == "recycled"}
    returned = {d.device_id for d in plans if d.returned}
    delivered = ids - recycled

    intake = client[f"{ns}greenit_intake"]
    registered = {doc["_id"] async for doc in intake.devices.find({}, {"_id": 1})}
    report.add("devices registered in intake", n, len(registered), registered == ids)
    custody_db = client[f"{ns}greenit_custody"]
    custody = {doc["_id"]: doc async for doc in custody_db.devices.find({}, {"applied": 0})}
    expected = {d.device_id: d.expected_stage for d in plans}
    wrong = [i for i in ids if (custody.get(i) or {}).get("stage") != expected[i]]
    report.add("devices in expected terminal stage", n, n - len(wrong), not wrong)

    allocation = client[f"{ns}greenit_allocation"]
    stock = {doc["_id"]: doc async for doc in allocation.stock.find({}, {"outbox": 0})}
    want = {i: ("returned" if i in returned else "delivered") for i in delivered | returned}
    good = sum(1 for i, state in want.items() if (stock.get(i) or {}).get("state") == state)
    report.add("allocation: delivered/returned", len(want), good, good == len(want))
    stray = set(stock) - delivered - returned
    report.add("allocation: devices never meant for reuse", 0, len(stray), not stray)

    recycling = client[f"{ns}greenit_recycling"]
    held = {doc["_id"]: doc async for doc in recycling.devices.find({}, {"outbox": 0})}
    good = sum(1 for i in recycled if (held.get(i) or {}).get("state") == "recycled")
    report.add("recycling: recycled", len(recycled), good, good == len(recycled))
    stray = set(held) - recycled
    report.add("recycling: devices never meant for it", 0, len(stray), not stray)

    diagnostics = client[f"{ns}greenit_diagnostics"]
    certified = {
        doc["_id"]: (doc.get("certificate") or {}).get("certificate_id")
        async for doc in diagnostics.devices.find({}, {"certificate.certificate_id": 1})
    }
    have = sum(1 for i in ids if certified.get(i))
    report.add("erasure certificate on each device", n, have, have == n)
    copies: Counter[str] = Counter()
    async for doc in diagnostics.certificates.find({}, {"device_id": 1}):
        copies[str(doc["device_id"])] += 1
    twice = sum(1 for c in copies.values() if c > 1)
    report.add("erasure certificate docs > 1 per device", 0, twice, twice == 0)
    missing = [i for i in ids if copies[i] == 0 and certified.get(i)]
    healed = 0
    for device_id in missing:  # a crash between the two writes: the read copies it
        response = await driver.call(
            "GET", "diagnostics", f"/certificates/{certified[device_id]}", STAFF
        )
        healed += response.status_code == 200 and response.json()["device_id"] == device_id
    report.add(
        "erasure certificate docs (healed on read)",
        f"{n} ({len(missing)})",
        f"{len(ids) - len(missing) + healed} ({healed})",
        healed == len(missing),
    )

    wiped = await read_topic(bootstrap, ns + "device.wiped")
    events, certificates = _per_device(wiped, "certificate_id")
    once = sum(1 for i in ids if len(events[i]) == 1 and len(certificates[i]) == 1)
    report.add("device.wiped: one event id+cert", n, once, once == n)
    report.add(
        "device.wiped: certificate = stored",
        n,
        sum(1 for i in ids if certificates[i] == {str(certified.get(i))}),
        all(certificates[i] == {str(certified.get(i))} for i in ids),
    )

    stored = {i: (held.get(i) or {}).get("certificate_id") for i in recycled}
    have = sum(1 for c in stored.values() if c)
    report.add("recycling certificate on each device", len(recycled), have, have == len(recycled))
    recycled_events = await read_topic(bootstrap, ns + "device.recycled")
    events, certificates = _per_device(recycled_events, "certificate_id")
    once = sum(1 for i in recycled if len(events[i]) == 1 and certificates[i] == {stored[i]})
    report.add("device.recycled: one event id+cert", len(recycled), once, once == len(recycled))
    extra = set(events) - recycled
    report.add("device.recycled: for other devices", 0, len(extra), not extra)

    allocated = await read_topic(bootstrap, ns + "device.allocated")
    events, allocations = _per_device(allocated, "allocation_id")
    twice = sum(1 for a in allocations.values() if len(a) > 1)
    report.add("devices allocated more than once", 0, twice, twice == 0)
    once = sum(1 for i in delivered | returned if len(allocations[i]) == 1)
    want_n = len(delivered | returned)
    report.add("device.allocated: reused devices", want_n, once, once == want_n)

    backwards = duplicated = 0
    for doc in custody.values():
        history = sorted(doc.get("history") or (), key=lambda h: h["occurred_at"])
        ranks = [RANK.get(h["event_type"], 0) for h in history]
        backwards += any(b < a for a, b in itertools.pairwise(ranks))
        kinds = Counter(h["event_type"] for h in history)
        event_ids = [h["event_id"] for h in history]
        duplicated += any(c > 1 for c in kinds.values()) or len(set(event_ids)) != len(event_ids)
    report.add("custody history out of lifecycle order", 0, backwards, backwards == 0)
    report.add("custody history with a repeated event", 0, duplicated, duplicated == 0)

    dead = await read_topic(bootstrap, ns + "deadletter")
    report.add("dead letters", 0, len(dead), not dead)
    pending = await unpublished(client, ns)
    report.add("outbox entries left unpublished", 0, pending, pending == 0)
    for message in driver.failures:
        report.add(message, "-", "-", False)


_OUTBOXES = {
    "intake": ("pickups", "devices", "refusals"),
    "diagnostics": ("devices", "refusals"),
    "allocation": ("stock", "requests", "shipments", "refusals"),
    "recycling": ("devices", "lots", "refusals"),
    "custody": ("refusals",),
}


async def run_invariants(
    client: AsyncMongoClient[Document], namespace: str
) -> tuple[int, list[str]] | None:
    """tools.invariants (another helper's) if it exists: its violations, counted and listed."""
    try:
        module = importlib.import_module("tools.invariants")
    except ModuleNotFoundError:
        return None
    check: Callable[..., Awaitable[Any]] | None = getattr(module, "check", None)
    if check is None:
        return None
    result = await check(client, namespace)
    violations = getattr(result, "violations", result)
    if isinstance(violations, int):
        return violations, []
    listed = [str(v) for v in violations]
    return len(listed), listed


# ---- the run ----------------------------------------------------------------------------------


def say(config: ChaosConfig, message: str) -> None:
    if not config.quiet:
        print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


async def make_keys(client: AsyncMongoClient[Document], namespace: str) -> dict[str, str]:
    settings = ServiceSettings(namespace=namespace)
    keys: dict[str, str] = {}
    partners = [(STAFF, Role.STAFF)]
    partners += [(d, Role.DONOR) for d in DONORS] + [(s, Role.RECIPIENT) for s in SCHOOLS]
    for partner, role in partners:
        keys[partner] = new_key()
        await store_key(
            client, settings, key=keys[partner], role=role, partner_id=partner, name=partner
        )
    return keys


async def run(config: ChaosConfig) -> Report:
    """Start everything, drive the devices under chaos, check, stop everything started."""
    started = time.monotonic()
    namespace = f"chaos{uuid.uuid4().hex[:8]}_"
    report = Report(config=config, namespace=namespace)
    base = config.base / namespace.rstrip("_")
    kafka, store = local_infra(
        base,
        kafka_port=config.kafka_port,
        controller_port=config.controller_port,
        store_port=config.store_port,
    )
    say(config, f"chaos run {namespace}: infra under {base}")
    try:
        await asyncio.to_thread(kafka.start)
        await kafka.wait_ready()
        await asyncio.to_thread(store.start)
        await create_topics(kafka.bootstrap, prefix=namespace)
        client: AsyncMongoClient[Document] = tool_client(
            store.url, auth=store.with_users, serverSelectionTimeoutMS=30_000
        )
        if store.with_users:
            await store_users.ensure(client, namespace)
        try:
            await _run_with(config, report, namespace, base, kafka, store, client)
        finally:
            await client.close()
    finally:
        kafka.stop()
        store.stop()
        if not config.keep_data and not report.failures:
            shutil.rmtree(base / "kafka", ignore_errors=True)
            shutil.rmtree(base / "store", ignore_errors=True)
    report.elapsed_s = time.monotonic() - started
    return report


async def _run_with(
    config: ChaosConfig,
    report: Report,
    namespace: str,
    base: Path,
    kafka: LocalKafka,
    store: LocalStore,
    client: AsyncMongoClient[Document],
) -> None:
    rng = random.Random(config.seed or None)
    keys = await make_keys(client, namespace)
    batches = plan_batches(config, rng)
    plans = [d for b in batches for d in b]
    report.devices = len(plans)
    env = {
        **os.environ,
        "GREENIT_NAMESPACE": namespace,
        "GREENIT_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "GREENIT_MONGO_URL": store.url,
        "GREENIT_LOG_LEVEL": config.log_level,
    }
    services_started = time.monotonic()
    with running_cluster(env, base / "logs", instances=config.instances) as cluster:
        say(config, f"services healthy after {time.monotonic() - services_started:.1f}s")
        driver = Driver(config, namespace, cluster.urls, keys, rng)
        refurbish = sum(1 for d in plans if not d.recycle)
        total = 3 * len(plans) + 3 * refurbish + 2 * (len(plans) - refurbish)
        chaos = Chaos(config, cluster, kafka, store, driver, total, rng)
        chaos_task = asyncio.create_task(chaos.run())
        progress_task = asyncio.create_task(_progress(config, driver, chaos))
        workload_started = time.monotonic()
        try:
            gate = asyncio.Semaphore(config.parallel_batches)

            async def one(batch: list[DevicePlan]) -> None:
                async with gate:
                    await driver.run_batch(batch[0].batch, batch)

            try:
                await _until_first_failure(asyncio.gather(*(one(b) for b in batches)), chaos_task)
                delivered = [d for d in plans if not d.recycle]
                returns = rng.sample(delivered, max(1, round(len(delivered) * config.return_share)))
                await _until_first_failure(driver.end_of_life(returns), chaos_task)
                chaos.workload_done.set()
                await chaos_task
            except ChaosError as exc:
                say(config, f"workload stopped: {exc!r}")
                report.add(f"workload completed ({exc})"[:60], True, False, False)
                chaos_task.cancel()
            report.workload_s = time.monotonic() - workload_started
            say(config, "workload done; waiting for the system to settle")
            settle_started = time.monotonic()
            settled = await wait_settled(config, client, namespace, plans, config.settle_s)
            await wait_published(client, namespace, within_s=60)
            report.settle_s = time.monotonic() - settle_started
            report.add("settled within settle time", True, settled, settled)
            say(config, f"settled: {settled}; checking")
            driver.deadline = time.monotonic() + 600  # the checks' own reads, past the workload's
            await check_everything(report, client, kafka.bootstrap, plans, driver)
            say(config, "checked")
            for line in slow_commands(cluster.log_dir):
                say(config, line)
            invariants = await run_invariants(client, namespace)
            if invariants is not None:
                count, listed = invariants
                report.invariant_violations = count
                report.add("tools.invariants violations", 0, count, count == 0)
                for violation in listed[:20]:
                    say(config, f"invariant violated: {violation}")
        finally:
            report.stats = driver.stats
            for task in (chaos_task, progress_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await driver.close()
            await asyncio.to_thread(_stop_services, cluster)


def slow_commands(log_dir: Path, top: int = 10) -> list[str]:
    """The store commands the services logged as slow, grouped by shape, most time first: where
    the store's time went (a filter the store cannot look up by index reads a collection)."""
    totals: dict[tuple[str, str, str, str], list[float]] = {}
    for path in sorted(log_dir.glob("*.log")):
        for raw in path.read_text(errors="replace").splitlines():
            if '"slow store command"' not in raw:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(raw)
                shape = record["store_command"]
                key = (
                    record.get("service", path.stem),
                    shape["command"],
                    shape["collection"],
                    ",".join(shape["filter"]) or "-",
                )
                totals.setdefault(key, []).append(float(shape["ms"]))
    ranked = sorted(totals.items(), key=lambda item: -sum(item[1]))[:top]
    lines = [
        f"slow store commands: {sum(len(v) for v in totals.values())} "
        f"(logged by the services over GREENIT_SLOW_STORE_COMMAND_MS)"
    ]
    lines += [
        f"  {service:<12} {command:<8} {collection:<18} by {fields:<28} "
        f"{len(ms):>6}x  total {sum(ms) / 1000:8.1f} s  max {max(ms) / 1000:6.1f} s"
        for (service, command, collection, fields), ms in ranked
    ]
    return lines


def _stop_services(cluster: Cluster) -> None:
    """SIGTERM, and SIGKILL what does not exit in time (a wedged service ignores SIGTERM)."""
    for service in list(cluster.processes):
        process = cluster.processes.pop(service)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


async def _until_first_failure(work: Awaitable[Any], chaos: asyncio.Task[None]) -> None:
    """Wait for the work; it stops at its first failure or when the chaos task fails (a
    service never came back)."""
    work_task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({work_task, chaos}, return_when=asyncio.FIRST_COMPLETED)
        if chaos in done and not chaos.cancelled() and chaos.exception() is not None:
            raise ChaosError(f"chaos failed: {chaos.exception()!r}")
        await work_task
    finally:
        work_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work_task


async def _progress(config: ChaosConfig, driver: Driver, chaos: Chaos) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(15)
        s = driver.stats
        say(
            config,
            f"{time.monotonic() - started:5.0f}s progress {chaos.progress():5.1%} calls {s.calls} "
            f"transport errors {s.transport_errors} 5xx {s.server_errors} "
            f"409 re-reads {s.rereads_after_409} kills {len(s.kills)}",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-kafka-restart", action="store_true")
    parser.add_argument("--no-store-restart", action="store_true")
    parser.add_argument("--batch-min", type=int, default=100)
    parser.add_argument("--batch-max", type=int, default=500)
    parser.add_argument("--parallel-batches", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=24, help="HTTP calls in flight")
    parser.add_argument("--seed", type=int, default=0, help="0: a random run")
    parser.add_argument("--kafka-port", type=int, default=19092)
    parser.add_argument("--controller-port", type=int, default=19093)
    parser.add_argument("--store-port", type=int, default=27018)
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds for the workload")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument(
        "--instances", type=int, default=1, help="processes per service (one consumer group)"
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        devices=args.devices,
        kills=args.kills,
        restart_kafka=not args.no_kafka_restart,
        restart_store=not args.no_store_restart,
        batch_min=min(args.batch_min, args.batch_max),
        batch_max=args.batch_max,
        parallel_batches=args.parallel_batches,
        concurrency=args.concurrency,
        seed=args.seed,
        kafka_port=args.kafka_port,
        controller_port=args.controller_port,
        store_port=args.store_port,
        timeout_s=args.timeout,
        keep_data=args.keep_data,
        instances=max(1, args.instances),
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stopped from outside: clean up as on Ctrl-C
    try:
        report = asyncio.run(run(config))
    except KeyboardInterrupt:
        say(config, "chaos: interrupted; what it started is stopped, no counts")
        return 130
    print(report.table())
    return 1 if report.failures else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as KeyboardInterrupt: asyncio cancels the run, whose `finally` blocks stop the
    services, the broker and the store it started (a plain SIGTERM left them running)."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
