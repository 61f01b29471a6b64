"""What the benchmark scripts share: a fresh namespace on the running Kafka and store, keys,
an arrival clock on the topics, peak RSS of a process, percentiles, tables, the invariants.

Every script runs against the shared broker and store (`GREENIT_KAFKA_BOOTSTRAP`,
`GREENIT_MONGO_URL`, defaults 127.0.0.1) in a namespace of its own, and removes that namespace's
topics and databases at the end unless `--keep` is given.
"""

import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from shared import store_users
from shared.admin import create_topics, drop_namespace
from shared.auth import Role, new_key, store_key
from shared.credentials import tool_credentials
from shared.mongo import Document, tool_client
from shared.settings import ServiceSettings, store_auth_on
from tools.cluster import SERVICES, project_root

BOOTSTRAP = os.environ.get("GREENIT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_URL = os.environ.get("GREENIT_MONGO_URL", "mongodb://127.0.0.1:27017/")
ROOT = project_root()
LOGS = ROOT / ".local" / "bench"
KAFKA_LIBS = ROOT / ".local" / "kafka" / "libs"

STAFF = "bench-staff"
DONOR = "bench-donor"
SCHOOL = "bench-school"


def new_namespace(kind: str) -> str:
    return f"b{kind}{uuid.uuid4().hex[:6]}_"


def service_env(namespace: str, log_level: str = "WARNING") -> dict[str, str]:
    """The environment the services run with in `namespace` (as tools.chaos builds it)."""
    return {
        **os.environ,
        "GREENIT_NAMESPACE": namespace,
        "GREENIT_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "GREENIT_MONGO_URL": MONGO_URL,
        "GREENIT_LOG_LEVEL": log_level,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def mongo_client() -> AsyncMongoClient[Document]:
    return tool_client(MONGO_URL, serverSelectionTimeoutMS=10_000)


async def prepare(namespace: str) -> dict[str, str]:
    """Topics of the catalogue in `namespace`, and one key for staff, a donor and a school."""
    await create_topics(BOOTSTRAP, prefix=namespace)
    settings = ServiceSettings(namespace=namespace, mongo_url=MONGO_URL)
    client = mongo_client()
    keys: dict[str, str] = {}
    try:
        if store_auth_on(None):  # each service's store user, on its namespaced database
            await store_users.ensure(client, namespace)
        for partner, role in ((STAFF, Role.STAFF), (DONOR, Role.DONOR), (SCHOOL, Role.RECIPIENT)):
            keys[partner] = new_key()
            await store_key(
                client, settings, key=keys[partner], role=role, partner_id=partner, name=partner
            )
    finally:
        await client.close()
    return keys


async def cleanup(namespace: str, extra_topics: Iterable[str] = ()) -> None:
    """Drop the namespace's databases and delete its topics (the shared broker stays lean)."""
    await drop_namespace(BOOTSTRAP, MONGO_URL, namespace, extra_topics)


# ---- processes ---------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), MiB; 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_pid() -> int | None:
    """The document store's process (the one listening on `GREENIT_MONGO_URL`'s port, whatever
    it is: ferretdb, mongod or secantusd-py), for its CPU time."""
    port = int(re.sub(r"^mongodb://([^@/]*@)?[^:/]*:?", "", MONGO_URL).split("/")[0] or 27017)
    return pid_listening_on(port)


def pid_listening_on(port: int) -> int | None:
    """The local process listening on TCP `port` (from /proc/net and /proc/*/fd), or None."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
    return None


def java_tool(main_class: str, *args: str, timeout: float = 600) -> str:
    """Run one of Kafka's Java tools from .local/kafka/libs; its stdout."""
    command = ["java", "-Xmx512m", "-cp", f"{KAFKA_LIBS}/*", main_class, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{main_class} failed: {done.stderr[-2000:]}")
    return done.stdout


# ---- the topics' clock ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One record as the clock saw it: when it arrived (epoch s) and what the event says."""

    topic: str
    event_type: str
    event_id: str
    subject: str
    occurred_at: float
    arrived_at: float
    size: int


@dataclass
class ArrivalClock:
    """Reads topics of a namespace from the start and notes when each record arrived here.

    Arrival is this process's wall clock when `getmany` handed the record over: it includes
    the broker's delivery and this consumer's fetch wait (at most `fetch_max_wait_ms`), so
    latencies measured with it are upper bounds by a few milliseconds."""

    namespace: str
    topics: Sequence[str]
    arrivals: list[Arrival] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *(self.namespace + t for t in self.topics),
            bootstrap_servers=BOOTSTRAP,
            **tool_credentials().aiokafka(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        cut = len(self.namespace)
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    self.arrivals.append(
                        Arrival(
                            topic=record.topic[cut:],
                            event_type=event.get("event_type", ""),
                            event_id=event.get("event_id", ""),
                            subject=str(event.get("device_id") or record.key.decode()),
                            occurred_at=datetime.fromisoformat(event["occurred_at"]).timestamp(),
                            arrived_at=now,
                            size=len(record.value),
                        )
                    )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def first(self, topic: str) -> dict[str, Arrival]:
        """The first arrival on `topic` per subject."""
        seen: dict[str, Arrival] = {}
        for a in self.arrivals:
            if a.topic == topic and a.subject not in seen:
                seen[a.subject] = a
        return seen


# ---- numbers and tables ------------------------------------------------------------------------


def percentiles(values_s: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds (nearest rank); zeros when there is nothing."""
    if not values_s:
        return 0.0, 0.0, 0.0
    ordered = sorted(values_s)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000

    return rank(0.50), rank(0.95), rank(0.99)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        rest = zip(r[1:], widths[1:], strict=True)
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        out.append("| " + " | ".join(parts) + " |")
        if n == 0:
            out.append(
                "|"
                + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]])
                + "|"
            )
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ---- correctness ------------------------------------------------------------------------------


def run_invariants(namespace: str) -> tuple[int, str]:
    """`python -m tools.invariants` in the namespace: its violation count, and its summary line
    after the first violations it printed."""
    env = service_env(namespace)
    done = subprocess.run(
        [sys.executable, "-m", "tools.invariants"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-300:]
    found = re.search(r"(\d+) violation", summary)
    return (int(found.group(1)) if found else -1), "\n".join([*lines[:-1][:10], summary])


def group_id(namespace: str, service: str) -> str:
    return f"{namespace}{service}"


__all__ = ["SERVICES"]
