"""P1, P4, P5: devices from scan to a terminal state through the four services' public APIs.

    uv run python -m bench.lifecycle --devices 2000                  # P1 + P5 (throughput)
    uv run python -m bench.lifecycle --rate 200 --duration 60        # P4 (paced latency)
    uv run python -m bench.lifecycle --devices 2000 --profile 30     # + py-spy on the busiest

Starts intake, diagnostics, allocation, recycling and custody as separate processes
(tools.cluster) in a fresh namespace on the running Kafka and store, and drives each device
as staff would:

  scan (intake POST /pickups/{id}/devices)
  -> wait until diagnostics holds it (its GET /devices/{id} is 200: device.received consumed)
  -> test report (POST /devices/{id}/reports; a failed boot test for ~20%: decided recycle)
  -> erasure of its drive (POST /devices/{id}/erasures: purge, or destroy for recycling)
  -> refurbish: wait until allocation holds it (device.ready consumed); an allocator loop opens a
     request for what is in stock and runs POST /matching/run: terminal = `allocated`
  -> recycle: wait until recycling holds it (device.released_for_recycling consumed), dismantle
     (POST /devices/{id}/dismantle); a recycler loop dispatches lots (POST /lots): `recycled`.

Throughput mode keeps `--concurrency` devices in flight; paced mode (`--rate`) starts a device
every 1/rate s for `--duration` s. Completion is every device allocated or recycled, as the
allocation and recycling APIs answered. An ArrivalClock reads every device topic and notes when
each record arrived, for the hop latencies (defined in `hop_latencies`). At the end: peak RSS
(VmHWM) and CPU seconds per service process, and `python -m tools.invariants`.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.common import DONOR, SCHOOL, STAFF, say
from tools.cluster import SERVICES, Cluster, running_cluster

DEVICE_TOPICS = (
    "device.received",
    "device.diagnosed",
    "device.wiped",
    "device.ready",
    "device.released_for_recycling",
    "device.allocated",
    "device.dismantled",
    "device.recycled",
)
ALL_PASS = dict.fromkeys(
    ("boot", "cpu", "memory", "storage", "screen", "keyboard", "battery", "ports", "network"),
    "pass",
)
FRACTIONS = {
    "plastics_kg": 0.5,
    "ferrous_kg": 0.3,
    "aluminium_kg": 0.2,
    "circuit_boards_kg": 0.25,
    "batteries_kg": 0.3,
}
RECYCLER = {"name": "Recupel Metals NV", "certification": "WEEELABEX"}
STEPS = ("scanned", "held by diagnostics", "diagnosed", "wiped", "handed on", "terminal")


@dataclass(frozen=True)
class LifecycleConfig:
    devices: int = 100_000
    concurrency: int = 64
    rate: float = 0.0
    duration_s: float = 60.0
    recycle_share: float = 0.2
    poll_s: float = 0.25
    pickup_size: int = 500
    profile_s: float = 0.0
    profile_service: str = ""
    timeout_s: float = 4 * 3600
    keep: bool = False
    log_level: str = "WARNING"

    @property
    def total(self) -> int:
        return round(self.rate * self.duration_s) if self.rate else self.devices


@dataclass
class DeviceTimes:
    """Wall-clock moments (epoch s) of one device's steps, as the driver saw them."""

    index: int
    recycle: bool
    device_id: str = ""
    at: dict[str, float] = field(default_factory=dict)


@dataclass
class LifecycleResult:
    namespace: str
    config: LifecycleConfig
    devices: int = 0
    completed: int = 0
    elapsed_s: float = 0.0
    step_rates: list[tuple[str, int, float]] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    hops: list[tuple[str, int, float, float, float]] = field(default_factory=list)
    events: int = 0
    mean_event_bytes: float = 0.0
    http_calls: int = 0
    invariants: int = -1
    invariants_summary: str = ""
    profile: list[str] = field(default_factory=list)

    @property
    def devices_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s else 0.0


class Driver:
    """Drives devices through the public HTTP APIs; retries only transport errors and 5xx."""

    def __init__(self, urls: dict[str, str], keys: dict[str, str], config: LifecycleConfig):
        self.urls = urls
        self.keys = keys
        self.config = config
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0),
            trust_env=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )
        self.calls = 0
        self.ready: list[DeviceTimes] = []
        self.dismantled: list[DeviceTimes] = []
        self.by_id: dict[str, DeviceTimes] = {}
        self.terminal = 0
        self.all_done = asyncio.Event()
        self.expected = config.total

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        who: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        for attempt in range(8):
            self.calls += 1
            try:
                response = await self.http.request(
                    method,
                    self.urls[service] + path,
                    headers={"X-API-Key": self.keys[who], **(headers or {})},
                    json=json,
                )
            except httpx.TransportError:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code in ok:
                return response
            if response.status_code < 500:
                raise RuntimeError(
                    f"{method} {service}{path}: {response.status_code} {response.text}"
                )
            await asyncio.sleep(0.2 * 2**attempt)
        raise RuntimeError(f"{method} {service}{path}: no answer after retries")

    async def until_held(self, service: str, device_id: str) -> None:
        """Poll the service's GET /devices/{id} until it holds the device (404 before)."""
        deadline = time.monotonic() + 600
        while True:
            found = await self.call("GET", service, f"/devices/{device_id}", STAFF, ok=(200, 404))
            if found.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} never held device {device_id}")
            await asyncio.sleep(self.config.poll_s)

    # ---- intake ---------------------------------------------------------------------------------

    async def new_pickup(self, size: int) -> str:
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
            "expected": {"laptop": size},
        }
        created = await self.call("POST", "intake", "/pickups", DONOR, json=body)
        pickup_id = str(created.json()["pickup_id"])
        scheduled = {"scheduled_for": (now + timedelta(days=2)).isoformat()}
        await self.call("POST", "intake", f"/pickups/{pickup_id}/schedule", STAFF, json=scheduled)
        return pickup_id

    async def complete(self, pickup_id: str) -> None:
        await self.call("POST", "intake", f"/pickups/{pickup_id}/complete", STAFF, json={})

    # ---- one device -----------------------------------------------------------------------------

    async def flow(self, pickup_id: str, device: DeviceTimes) -> None:
        i = device.index
        scan = {
            "serial_number": f"SN-{i:07d}",
            "asset_tag": f"BN-{i:07d}",
            "category": "laptop",
            "make": "HP",
            "model": "EliteBook 840 G5",
            "weight_kg": 1.5,
            "location": "Warehouse Brussels",
        }
        device.at["scan sent"] = time.time()
        scanned = await self.call(
            "POST", "intake", f"/pickups/{pickup_id}/devices", STAFF, json=scan
        )
        device.device_id = str(scanned.json()["device_id"])
        self.by_id[device.device_id] = device
        device.at["scanned"] = time.time()
        await self.until_held("diagnostics", device.device_id)
        device.at["held by diagnostics"] = time.time()
        await self.diagnose(device)
        if device.recycle:
            await self.until_held("recycling", device.device_id)
            device.at["held by recycling"] = device.at["handed on"] = time.time()
            body = {
                "fractions": FRACTIONS,
                "hazardous_parts": ["li-ion battery"],
                "location": "Hall 2",
            }
            path = f"/devices/{device.device_id}/dismantle"
            await self.call("POST", "recycling", path, STAFF, json=body)
            device.at["dismantled"] = time.time()
            self.dismantled.append(device)
        else:
            await self.until_held("allocation", device.device_id)
            device.at["held by allocation"] = device.at["handed on"] = time.time()
            self.ready.append(device)

    async def diagnose(self, device: DeviceTimes) -> None:
        path = f"/devices/{device.device_id}"
        report = {
            "specs": {
                "cpu_model": "Intel Core i5-8350U",
                "cpu_cores": 4,
                "ram_gb": 8,
                "drives": [
                    {"serial": f"DRV-{device.index:07d}", "kind": "ssd", "capacity_gb": 256}
                ],
                "battery_health_pct": 85,
            },
            "tests": ALL_PASS | ({"boot": "fail"} if device.recycle else {}),
            "cosmetic": {"casing": "none", "screen_scratches": "none", "cracked": False},
            "location": "Warehouse Brussels",
        }
        decided = await self.call("POST", "diagnostics", path + "/reports", STAFF, json=report)
        decision = decided.json()["decision"]
        if decision != ("recycle" if device.recycle else "refurbish"):
            raise RuntimeError(f"device {device.device_id} decided {decision}")
        device.at["diagnosed"] = time.time()
        method = "destroy" if device.recycle else "purge"
        erasure = {
            "drive_serial": f"DRV-{device.index:07d}",
            "method": method,
            "technique": "shredding" if device.recycle else "NVMe secure erase",
            "tool": "HSM shredder" if device.recycle else "nwipe",
            "tool_version": "0.37",
            "verified": True,
            "verification": "visual inspection" if device.recycle else "full read-back",
            "performed_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "location": "Warehouse Brussels",
        }
        wiped = await self.call("POST", "diagnostics", path + "/erasures", STAFF, json=erasure)
        if not wiped.json()["certificate_id"]:
            raise RuntimeError(f"device {device.device_id} not certified after its erasure")
        device.at["wiped"] = time.time()

    # ---- the loops that end the lifecycle -------------------------------------------------------

    def _finished(self, devices: list[DeviceTimes]) -> None:
        now = time.time()
        for d in devices:
            d.at["terminal"] = now
        self.terminal += len(devices)
        if self.terminal >= self.expected:
            self.all_done.set()

    async def allocator(self) -> None:
        """Open a request for what reached stock and run the matching; what is allocated is
        read back from the requests (a matching answer lost to a retried 5xx still counts)."""
        open_requests: list[str] = []
        allocated: set[str] = set()
        while not self.all_done.is_set():
            taken, self.ready = self.ready, []
            if taken:
                body = {"quantity": len(taken), "category": "laptop", "purpose": "bench"}
                created = await self.call("POST", "allocation", "/requests", SCHOOL, json=body)
                open_requests.append(str(created.json()["request_id"]))
            if open_requests:
                await self.call("POST", "allocation", "/matching/run", STAFF)
            newly: list[DeviceTimes] = []
            for request_id in list(open_requests):
                view = (
                    await self.call("GET", "allocation", f"/requests/{request_id}", SCHOOL)
                ).json()
                fresh = [str(d) for d in view["device_ids"] if str(d) not in allocated]
                allocated.update(fresh)
                newly += [self.by_id[d] for d in fresh]
                if view["allocated"] >= view["quantity"]:
                    open_requests.remove(request_id)
            self._finished(newly)
            if not newly:
                await asyncio.sleep(0.2)

    async def recycler(self) -> None:
        """Dispatch what is dismantled in lots of at most 500 (the API takes 1000)."""
        lots = 0
        while not self.all_done.is_set():
            taken, self.dismantled = self.dismantled[:500], self.dismantled[500:]
            if not taken:
                await asyncio.sleep(0.2)
                continue
            lots += 1
            body = {"recycler": RECYCLER, "device_ids": [d.device_id for d in taken]}
            headers = {"Idempotency-Key": f"bench-lot-{lots}-{taken[0].device_id}"}
            lot = await self.call("POST", "recycling", "/lots", STAFF, json=body, headers=headers)
            if len(lot.json()["certificates"]) != len(taken):
                raise RuntimeError(f"lot {lot.json()['lot_id']}: certificates missing")
            self._finished(taken)


# ---- the run -------------------------------------------------------------------------------------


async def drive(driver: Driver, config: LifecycleConfig) -> list[DeviceTimes]:
    n = config.total
    recycle_every = round(1 / config.recycle_share) if config.recycle_share else 0
    devices = [DeviceTimes(i, bool(recycle_every) and i % recycle_every == 0) for i in range(n)]
    sizes = [min(config.pickup_size, n - s) for s in range(0, n, config.pickup_size)]
    pickups = list(await asyncio.gather(*(driver.new_pickup(s) for s in sizes)))
    loops = [asyncio.create_task(driver.allocator()), asyncio.create_task(driver.recycler())]
    gate = asyncio.Semaphore(config.concurrency if not config.rate else 100_000)

    async def one(device: DeviceTimes) -> None:
        async with gate:
            await driver.flow(pickups[device.index // config.pickup_size], device)

    started = time.monotonic()
    flows = []
    for device in devices:
        if config.rate:
            await asyncio.sleep(max(0.0, started + device.index / config.rate - time.monotonic()))
        flows.append(asyncio.create_task(one(device)))
        if len(flows) % 1000 == 0:
            say(f"{len(flows)} devices started, {driver.terminal} terminal")
    try:
        await _watch(asyncio.gather(*flows), loops)
        say(f"every device handed on; waiting for allocation and lots ({driver.terminal}/{n})")
        await _watch(asyncio.wait_for(driver.all_done.wait(), config.timeout_s), loops)
    finally:
        for task in (*loops, *flows):
            task.cancel()
        await asyncio.gather(*loops, *flows, return_exceptions=True)
    await asyncio.gather(*(driver.complete(p) for p in pickups))
    return devices


async def _watch(work: Awaitable[Any], loops: list[asyncio.Task[None]]) -> None:
    """Await the work, but fail as soon as a loop fails."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task, *loops}, return_when=asyncio.FIRST_EXCEPTION)
    for finished in done:
        if finished is not task and finished.exception() is not None:
            task.cancel()
            raise RuntimeError("a loop failed") from finished.exception()
    await task


def step_rates(devices: list[DeviceTimes]) -> list[tuple[str, int, float]]:
    """Per step: devices that reached it and their rate over the step's own span."""
    start = min((d.at["scan sent"] for d in devices if "scan sent" in d.at), default=0.0)
    rows = []
    for step in STEPS:
        moments = [d.at[step] for d in devices if step in d.at]
        span = (max(moments) - start) if moments else 0.0
        rows.append((step, len(moments), len(moments) / span if span else 0.0))
    return rows


def hop_latencies(
    devices: list[DeviceTimes], clock: common.ArrivalClock
) -> list[tuple[str, int, float, float, float]]:
    """The hops, each as (name, samples, p50, p95, p99 ms):

    - publish `<topic>`: the event's occurred_at (stamped by the producing service as it
      decided, before its store write) -> the record's arrival on the topic (ArrivalClock):
      store write + outbox relay + Kafka produce and fetch;
    - consume `<topic>` by `<service>`: the record's arrival -> the first 200 from the consuming
      service's GET /devices/{id} (polled every --poll-s, so up to that much too high);
    - scan -> received on topic: the scan's HTTP request sent -> device.received arrival;
    - scan -> ready on topic: the scan's HTTP request sent -> device.ready arrival (includes
      the driver's own report and erasure calls: the end-to-end time to stock).
    """
    rows: list[tuple[str, int, float, float, float]] = []
    firsts = {t: clock.first(t) for t in DEVICE_TOPICS}
    for topic in DEVICE_TOPICS:
        lags = [a.arrived_at - a.occurred_at for a in firsts[topic].values()]
        rows.append((f"publish {topic}", len(lags), *common.percentiles(lags)))
    for topic, service, step in (
        ("device.received", "diagnostics", "held by diagnostics"),
        ("device.ready", "allocation", "held by allocation"),
        ("device.released_for_recycling", "recycling", "held by recycling"),
    ):
        arrived = firsts[topic]
        lags = [
            d.at[step] - arrived[d.device_id].arrived_at
            for d in devices
            if step in d.at and d.device_id in arrived
        ]
        rows.append((f"consume {topic} by {service}", len(lags), *common.percentiles(lags)))
    for topic, name in (("device.received", "received"), ("device.ready", "ready")):
        arrived = firsts[topic]
        lags = [
            arrived[d.device_id].arrived_at - d.at["scan sent"]
            for d in devices
            if d.device_id in arrived
        ]
        rows.append((f"scan -> {name} on topic", len(lags), *common.percentiles(lags)))
    return rows


def profile(pid: int, seconds: float, out: Path) -> list[str]:
    """py-spy record on `pid` for `seconds`: the top 10 functions by own (leaf) samples and the
    top 10 by inclusive samples among this project's and its libraries' frames."""
    raw = out.with_suffix(".txt")
    command = [
        str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
        "--duration", str(int(seconds)), "--rate", "50", "--format", "raw", "--output", str(raw),
        "--nonblocking",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not raw.exists():
        return [f"py-spy failed: {done.stderr.strip()[-300:]}"]
    return summarise_profile(raw.read_text())


# Where a sample's time goes: the first bucket whose marker is in the stack's leafmost
# matching frame wins; markers are checked from the leaf upwards.
BUCKETS = (
    ("idle: waiting in select", ("EpollSelector.select",)),
    ("JSON encode/decode", ("json/", "orjson", "codec.py")),
    ("pydantic validation/serialisation", ("pydantic",)),
    ("store round trips (pymongo, bson)", ("pymongo/", "bson/")),
    ("Kafka client (aiokafka)", ("aiokafka/",)),
    ("FastStream consumer plumbing", ("faststream/",)),
    (
        "HTTP stack (uvicorn, h11, starlette, fastapi)",
        ("uvicorn/", "h11", "starlette/", "fastapi/"),
    ),
    ("metrics and tracing", ("prometheus_client", "opentelemetry", "observability.py")),
    ("asyncio event loop itself", ("asyncio/", "selectors.py")),
)
LOOP_FRAMES = (
    "run_forever", "_run_once", "run_until_complete", "Runner.run", "Server.run", "serve (",
    "_run_code", "asyncio_run", "Handle._run", "_run_module_as_main", "main (", "<module>",
)  # fmt: skip


def summarise_profile(text: str, top: int = 10) -> list[str]:
    """py-spy's raw (collapsed) stacks -> where the time goes: own time per leaf frame,
    inclusive time per frame below the event loop, and a breakdown by kind of work."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        bucket = _bucket(stack.split(";"))
        buckets[bucket] = buckets.get(bucket, 0) + count
    if not total:
        return ["no samples"]

    def ranked(counts: dict[str, int]) -> list[str]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in best]

    below_loop = {f: n for f, n in inclusive.items() if not any(m in f for m in LOOP_FRAMES)}
    return [
        f"{total} samples (active threads only); by kind of work:",
        *ranked(buckets),
        "own time (leaf frames):",
        *ranked(own),
        "inclusive time (frame anywhere on the stack), below the event loop:",
        *ranked(below_loop),
    ]


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in BUCKETS:
            if any(m in frame for m in markers):
                return name
    return "other (project code)"


def _frame(frame: str) -> str:
    """`func (path/to/module.py:line)` -> `func (module.py)`: lines differ, functions do not."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


async def run(config: LifecycleConfig) -> LifecycleResult:
    namespace = common.new_namespace("life")
    result = LifecycleResult(namespace=namespace, config=config, devices=config.total)
    mode = f"paced at {config.rate}/s" if config.rate else f"{config.concurrency} in flight"
    say(f"lifecycle {namespace}: {config.total} devices, {mode}")
    keys = await common.prepare(namespace)
    env = common.service_env(namespace, config.log_level)
    clock = common.ArrivalClock(namespace, DEVICE_TOPICS)
    store_pid = common.store_pid()
    try:
        with running_cluster(env, common.LOGS / namespace.rstrip("_")) as cluster:
            await clock.start()
            driver = Driver(cluster.urls, keys, config)
            cpu_before = _cpu(cluster, store_pid)
            profiler = _start_profiler(cluster, config) if config.profile_s else None
            started = time.time()
            try:
                devices = await drive(driver, config)
            finally:
                await driver.close()
            result.elapsed_s = max(d.at.get("terminal", 0.0) for d in devices) - started
            result.completed = sum(1 for d in devices if "terminal" in d.at)
            result.http_calls = driver.calls
            cpu_after = _cpu(cluster, store_pid)
            result.cpu_s = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
            result.rss_mb = {s: common.peak_rss_mb(p.pid) for s, p in cluster.processes.items()}
            if profiler is not None:
                result.profile = await profiler
            await asyncio.sleep(6)  # the outbox sweep publishes what a crash left (none here)
            await clock.stop()
            result.step_rates = step_rates(devices)
            result.hops = hop_latencies(devices, clock)
            result.events = len(clock.arrivals)
            result.mean_event_bytes = common.mean([a.size for a in clock.arrivals])
            settled = await custody_settled(namespace, devices, within_s=120)
            say(f"the custody view settled: {settled}; running tools.invariants")
            result.invariants, result.invariants_summary = await asyncio.to_thread(
                common.run_invariants, namespace
            )
    finally:
        with contextlib.suppress(Exception):
            await clock.stop()
        if not config.keep:
            await common.cleanup(namespace)
    return result


async def custody_settled(namespace: str, devices: list[DeviceTimes], within_s: float) -> bool:
    """Until the custody view (custody consumes every device event) shows each device in its
    terminal stage: the invariants compare it with the other services' stores."""
    client = common.mongo_client()
    custody = client[f"{namespace}greenit_custody"].devices
    want = {d.device_id: "recycled" if d.recycle else "allocated" for d in devices}
    deadline = time.monotonic() + within_s
    try:
        while True:
            stages = {str(d["_id"]): d.get("stage") async for d in custody.find({}, {"stage": 1})}
            if all(stages.get(i) == stage for i, stage in want.items()):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(1.0)
    finally:
        await client.close()


def _cpu(cluster: Cluster, store_pid: int | None) -> dict[str, float]:
    cpu = {s: common.cpu_seconds(p.pid) for s, p in cluster.processes.items()}
    if store_pid is not None:
        cpu["store"] = common.cpu_seconds(store_pid)
    return cpu


def _start_profiler(cluster: Cluster, config: LifecycleConfig) -> Awaitable[list[str]]:
    """After a warm-up, py-spy on the named service or, by default, the one using most CPU."""

    async def later() -> list[str]:
        before = {s: common.cpu_seconds(p.pid) for s, p in cluster.processes.items()}
        await asyncio.sleep(10)
        used = {s: common.cpu_seconds(p.pid) - before[s] for s, p in cluster.processes.items()}
        service = config.profile_service or max(used, key=lambda s: used[s])
        say(f"profiling {service} for {config.profile_s:.0f}s (CPU in 10 s: {used})")
        out = common.LOGS / f"profile-{service}-{datetime.now():%H%M%S}"
        lines = await asyncio.to_thread(
            profile, cluster.processes[service].pid, config.profile_s, out
        )
        return [f"py-spy on {service} ({out}.txt):", *lines]

    return asyncio.ensure_future(later())


def report(result: LifecycleResult) -> str:
    c = result.config
    mode = f"paced {c.rate:g}/s for {c.duration_s:g} s" if c.rate else f"{c.concurrency} in flight"
    lines = [
        f"lifecycle {result.namespace}: {result.completed:,}/{result.devices:,} devices terminal "
        f"in {result.elapsed_s:.1f} s ({mode}): {result.devices_per_s:,.1f} devices/s; "
        f"{result.http_calls:,} HTTP calls, {result.events:,} device events "
        f"(mean {result.mean_event_bytes:,.0f} bytes)",
        "",
        common.table(["step", "devices", "devices/s"], result.step_rates),
        "",
        common.table(["hop", "n", "p50 ms", "p95 ms", "p99 ms"], result.hops),
        "",
        common.table(
            ["process", "peak RSS MiB", "CPU s"],
            [
                (s, result.rss_mb.get(s, 0.0), result.cpu_s.get(s, 0.0))
                for s in (*SERVICES, "store")
            ],
        ),
        "",
        f"tools.invariants: {result.invariants} violation(s) ({result.invariants_summary})",
    ]
    if result.profile:
        lines += ["", *result.profile]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.lifecycle", description=__doc__.split("\n")[0]
    )
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument(
        "--concurrency", type=int, default=64, help="devices in flight (throughput mode)"
    )
    p.add_argument("--rate", type=float, default=0.0, help="devices/s started (paced mode)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of paced scans")
    p.add_argument("--poll-s", type=float, default=0.25, help="poll interval for consume hops")
    p.add_argument("--profile", type=float, default=0.0, help="py-spy seconds (0: none)")
    p.add_argument("--profile-service", default="", choices=["", *SERVICES])
    p.add_argument("--keep", action="store_true", help="keep the namespace's topics and data")
    return p


def config_from(args: argparse.Namespace) -> LifecycleConfig:
    return LifecycleConfig(
        devices=args.devices,
        concurrency=args.concurrency,
        rate=args.rate,
        duration_s=args.duration,
        poll_s=args.poll_s,
        profile_s=args.profile,
        profile_service=args.profile_service,
        keep=args.keep,
    )


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    result = asyncio.run(run(config_from(parser().parse_args(argv))))
    out(report(result))
    return 0 if result.completed == result.devices and result.invariants == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
