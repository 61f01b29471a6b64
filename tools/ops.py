"""Operations console (terminal) and page (browser): is the flow moving, and where does it stick?

    python -m tools.ops console [--interval 2] [--stuck-after SECONDS|JSON] [--once]
    python -m tools.ops web [--host 127.0.0.1] [--server-name NAME] [--port 8005] [--poll 3]

Both show the same overview of one namespace (GREENIT_NAMESPACE):
- per-topic messages (the sum of end offsets) and rates, sampled twice, rate = delta / seconds;
- consumer-group lag per service (`{namespace}{service}`), from Kafka's admin API: end offset
  minus committed offset, summed over the partitions of the topics the group reads;
- dead letters (records held by `{namespace}deadletter`), per source topic from their headers;
- each service's consumers, from its `GET /health` (`consumers`): ok, retrying or stuck, failed
  deliveries in a row, the age of the oldest record not yet processed (GREENIT_SERVICE_URLS, JSON
  {service: url}, overrides the defaults http://127.0.0.1:8001-8004 and custody's);
- devices per stage, the oldest and the stuck ones, from custody's `GET /ops/stages` at
  GREENIT_CUSTODY_URL (default http://127.0.0.1:8006), called by the console with the operations
  key in GREENIT_OPS_API_KEY, and by the page with the key its user signed in with.
The page also finds a device by serial number or asset tag and shows its timeline. It holds no
key: each /api/* call carries the user's operations or staff key (kept in the browser tab),
checked by custody; a Host header other than the bind address or a --server-name is refused.
"""

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.custody.ops import StagesView
from shared.http_security import HostGuard, SecurityHeaders, allowed_hosts, csp_nonce
from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS, DEAD_LETTER
from tools.cluster import SERVICES

TEMPLATE = Path(__file__).resolve().parent / "templates" / "ops.html"
DLQ_SOURCE = "dlq_source_topic"
STUCK_SHOWN = 5

Partition = tuple[str, int]


class OpsSettings(ServiceSettings):
    service: ClassVar[str] = "ops"

    ops_api_key: SecretStr | None = Field(None, description="An operations key for custody")
    custody_url: str = Field(
        "http://127.0.0.1:8006",
        # GREENIT_INTAKE_URL: its name when intake served the stage views (deprecated, read
        # for one release: intake's old paths redirect to custody, which the client follows)
        validation_alias=AliasChoices("custody_url", "GREENIT_CUSTODY_URL", "GREENIT_INTAKE_URL"),
    )
    service_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Where each service answers, for its /health: JSON {service: url}; "
        "custody defaults to custody_url, the others to http://127.0.0.1:8001-8004",
    )

    def url_of(self, service: str) -> str:
        if service in self.service_urls:
            return self.service_urls[service]
        if service == "custody":
            return self.custody_url
        return f"http://127.0.0.1:{DEFAULT_PORTS[service]}"


DEFAULT_PORTS = {
    "intake": 8001,
    "diagnostics": 8002,
    "allocation": 8003,
    "recycling": 8004,
    "custody": 8006,
}


# ---- what the console and the page show -------------------------------------------------------


class TopicRate(BaseModel):
    """One topic: messages written so far (its end offsets) and how many per second lately."""

    topic: str
    messages: int
    per_second: float | None = Field(description="None until two samples were taken")


class GroupLag(BaseModel):
    """One service's consumer group: its state and how many records it has yet to process."""

    service: str
    group: str
    state: str
    members: int
    lag: int | None = Field(description="None: the group never committed and has no members")
    by_topic: dict[str, int]


class DeadLetterCount(BaseModel):
    total: int = Field(description="Records held by the dead-letter topic")
    by_source: dict[str, int] = Field(description="Dead letters read so far, per source topic")


class ServiceConsumers(BaseModel):
    """One service's `/health`: its status and how each of its consumer groups fares."""

    service: str
    url: str
    status: str = Field(description="ok, retrying, degraded (503), or unreachable")
    consumers: dict[str, dict[str, Any]] = Field(
        description="Per consumer group: state (ok, retrying, stuck), failed_deliveries, "
        "oldest_unprocessed_age_s, last_error, ..."
    )
    error: str | None = None


class Overview(BaseModel):
    namespace: str
    taken_at: datetime
    window_s: float | None = Field(description="Seconds between the two offset samples")
    topics: list[TopicRate]
    messages_total: int
    per_second_total: float | None
    groups: list[GroupLag]
    dead_letters: DeadLetterCount
    stages: StagesView | None
    stages_error: str | None
    stuck_after: str | None
    consumers: list[ServiceConsumers] = Field(default_factory=list)


# ---- pure arithmetic --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """End offsets of every partition, taken at one moment (monotonic seconds)."""

    taken_at: float
    end: Mapping[Partition, int]

    def per_topic(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (topic, _), offset in self.end.items():
            totals[topic] += offset
        return dict(totals)


def topic_rates(
    before: OffsetSample | None, after: OffsetSample, namespace: str = ""
) -> list[TopicRate]:
    """Messages per topic at `after` and the rate since `before`; a topic unseen then has none."""
    now = after.per_topic()
    then = before.per_topic() if before else {}
    elapsed = after.taken_at - before.taken_at if before else 0.0
    rates = []
    for topic, messages in sorted(now.items()):
        rate = None
        if elapsed > 0 and topic in then:
            rate = max(0, messages - then[topic]) / elapsed
        rates.append(
            TopicRate(topic=topic.removeprefix(namespace), messages=messages, per_second=rate)
        )
    return rates


def total_rate(rates: Iterable[TopicRate]) -> float | None:
    known = [r.per_second for r in rates if r.per_second is not None]
    return sum(known) if known else None


def group_lag(
    committed: Mapping[Partition, int],
    beginning: Mapping[Partition, int],
    end: Mapping[Partition, int],
    topics: Iterable[str],
) -> dict[str, int]:
    """Records each topic still holds for a group: end offset minus the committed offset.

    A partition the group never committed is read from its beginning (the services'
    `auto_offset_reset` is `earliest`), and a committed offset older than what retention kept
    counts from the beginning too.
    """
    wanted = set(topics)
    existing = {topic for topic, _ in end}
    lags: Counter[str] = Counter()
    for (topic, partition), last in end.items():
        if topic not in wanted:
            continue
        first = beginning.get((topic, partition), 0)
        position = committed.get((topic, partition), -1)
        lags[topic] += max(0, last - max(position, first))
    return {topic: lags[topic] for topic in sorted(wanted & existing)}


def records_held(
    beginning: Mapping[Partition, int], end: Mapping[Partition, int], topic: str
) -> int:
    """How many records `topic` holds now: end minus beginning offset, over its partitions."""
    return sum(max(0, last - beginning.get(tp, 0)) for tp, last in end.items() if tp[0] == topic)


def human_duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `12m 5s`, `42s`: the two largest units, for a table cell."""
    whole = int(max(0.0, seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _members_and_topics(description: Any, group: str) -> tuple[str, int, set[str]]:
    """State, member count and assigned topics from a raw DescribeGroups response."""
    for entry in getattr(description, "groups", ()):
        if len(entry) < 6 or entry[1] != group:
            continue
        topics: set[str] = set()
        for member in entry[5]:
            assignment = member[-1]
            if assignment:
                decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                topics.update(topic for topic, _ in decoded.assignment)
        return str(entry[2] or "unknown"), len(entry[5]), topics
    return "unknown", 0, set()


# ---- gathering it -----------------------------------------------------------------------------


class Collector:
    """Samples Kafka and asks custody; one per console or page process."""

    def __init__(
        self,
        settings: OpsSettings,
        *,
        stuck_after: str | None = None,
        stages_every_s: float = 15.0,
        min_window_s: float = 1.0,
        max_window_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.stuck_after = stuck_after
        self.stages_every_s = stages_every_s
        self.min_window_s = min_window_s
        self.max_window_s = max_window_s
        self.dead_letter_topic = settings.topic(DEAD_LETTER.name)
        self._catalogue = [settings.topic(t.name) for t in ALL_TOPICS]
        self._partitions: dict[str, list[int]] = {}
        self._last_sample: OffsetSample | None = None
        self._last: Overview | None = None
        self._last_monotonic = 0.0
        self._lock = asyncio.Lock()
        self._dead_by_source: Counter[str] = Counter()
        self._dead_assigned = False
        self._stages: StagesView | None = None
        self._stages_error: str | None = None
        self._stages_at: float | None = None
        self._stages_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Collector":
        bootstrap = self.settings.kafka_bootstrap
        auth = self.settings.kafka_credentials().aiokafka()  # the console's own principal, ops
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="greenit-ops", request_timeout_ms=10_000, **auth
        )
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **auth
        )
        self._dead = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            **auth,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._http = httpx.AsyncClient(
            base_url=self.settings.custody_url, timeout=60, follow_redirects=True
        )
        await self._admin.start()
        await self._offsets.start()
        await self._dead.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stages_task is not None:
            self._stages_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stages_task
        await self._http.aclose()
        await self._dead.stop()
        await self._offsets.stop()
        await self._admin.close()

    async def overview(self, key: SecretStr | None = None) -> Overview:
        """`key`: the caller's operations or staff key for custody (the page's signed-in user);
        the console's is GREENIT_OPS_API_KEY."""
        async with self._lock:
            if self._last and time.monotonic() - self._last_monotonic < self.min_window_s:
                return self._last
            before, after = await self._two_samples()
            beginning = await self._beginning()
            rates = topic_rates(before, after, self.namespace)
            stages, stages_error = await self._current_stages(key or self.settings.ops_api_key)
            self._last = Overview(
                namespace=self.namespace,
                taken_at=datetime.now(UTC),
                window_s=round(after.taken_at - before.taken_at, 3) if before else None,
                topics=rates,
                messages_total=sum(r.messages for r in rates),
                per_second_total=total_rate(rates),
                groups=[await self._lag(s, beginning, after.end) for s in SERVICES],
                dead_letters=await self._dead_letters(beginning, after.end),
                stages=stages,
                stages_error=stages_error,
                stuck_after=self.stuck_after,
                consumers=await self._consumers(),
            )
            self._last_monotonic = time.monotonic()
            return self._last

    async def search(self, query: str, key: SecretStr | None = None) -> tuple[int, Any]:
        """Custody's answer to `GET /ops/devices?q=`: its status code and body."""
        return await self._ask_custody("/ops/devices", key, {"q": query})

    async def operator(self, key: SecretStr) -> tuple[int, Any]:
        """Custody's answer to `GET /ops/me`: whose operations or staff key this is, or 401/403."""
        return await self._ask_custody("/ops/me", key)

    async def _ask_custody(
        self, path: str, key: SecretStr | None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        key = key or self.settings.ops_api_key
        if key is None:
            return 503, {"detail": _NO_KEY}
        try:
            response = await self._http.get(
                path, params=params, headers={"X-API-Key": key.get_secret_value()}
            )
        except httpx.HTTPError as exc:
            return 502, {"detail": f"custody at {self.settings.custody_url} did not answer: {exc}"}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"detail": response.text[:500]}

    # -- Kafka --

    async def _topic_partitions(self) -> list[TopicPartition]:
        existing = set(await self._admin.list_topics())
        present = [t for t in self._catalogue if t in existing]
        unknown = [t for t in present if t not in self._partitions]
        if unknown:
            for described in await self._admin.describe_topics(unknown):
                partitions = sorted(p["partition"] for p in described["partitions"])
                if not described["error_code"] and partitions:
                    self._partitions[described["topic"]] = partitions
        return [
            TopicPartition(t, p)
            for t in present
            if t in self._partitions
            for p in self._partitions[t]
        ]

    async def _sample(self) -> OffsetSample:
        partitions = await self._topic_partitions()
        ends = await self._offsets.end_offsets(partitions) if partitions else {}
        return OffsetSample(
            taken_at=time.monotonic(), end={(tp.topic, tp.partition): o for tp, o in ends.items()}
        )

    async def _two_samples(self) -> tuple[OffsetSample | None, OffsetSample]:
        before = self._last_sample
        if before is None or time.monotonic() - before.taken_at > self.max_window_s:
            before = await self._sample()
        wait = self.min_window_s - (time.monotonic() - before.taken_at)
        if wait > 0:
            await asyncio.sleep(wait)
        after = await self._sample()
        self._last_sample = after
        return before, after

    async def _beginning(self) -> dict[Partition, int]:
        partitions = await self._topic_partitions()
        first = await self._offsets.beginning_offsets(partitions) if partitions else {}
        return {(tp.topic, tp.partition): o for tp, o in first.items()}

    async def _lag(
        self, service: str, beginning: Mapping[Partition, int], end: Mapping[Partition, int]
    ) -> GroupLag:
        group = self.namespace + service
        committed = await self._admin.list_consumer_group_offsets(group)
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()}
        try:
            description = await asyncio.wait_for(
                self._admin.describe_consumer_groups([group]), timeout=10
            )
            state, members, assigned = _members_and_topics(description[0], group)
        except Exception:  # an odd reply must not take the whole console down
            state, members, assigned = "unknown", 0, set()
        topics = {t for t, _ in offsets} | assigned
        by_topic = group_lag(offsets, beginning, end, topics)
        seen = bool(topics) or members > 0
        return GroupLag(
            service=service,
            group=group,
            state=state,
            members=members,
            lag=sum(by_topic.values()) if seen else None,
            by_topic={t.removeprefix(self.namespace): n for t, n in by_topic.items() if n},
        )

    async def _dead_letters(
        self, beginning: Mapping[Partition, int], end: Mapping[Partition, int]
    ) -> DeadLetterCount:
        partitions = [TopicPartition(t, p) for t, p in end if t == self.dead_letter_topic]
        if partitions:
            await self._read_dead_letters(partitions, end)
        return DeadLetterCount(
            total=records_held(beginning, end, self.dead_letter_topic),
            by_source=dict(sorted(self._dead_by_source.items())),
        )

    async def _read_dead_letters(
        self, partitions: list[TopicPartition], end: Mapping[Partition, int]
    ) -> None:
        """Reads the dead letters written since the last call (each is read once)."""
        if not self._dead_assigned:
            self._dead.assign(partitions)
            await self._dead.seek_to_beginning(*partitions)
            self._dead_assigned = True
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            positions = {tp: await self._dead.position(tp) for tp in partitions}
            if all(positions[tp] >= end[(tp.topic, tp.partition)] for tp in partitions):
                return
            batches = await self._dead.getmany(*partitions, timeout_ms=200)
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers or ())
                    source = headers.get(DLQ_SOURCE, b"").decode(errors="replace")
                    self._dead_by_source[source.removeprefix(self.namespace) or "unknown"] += 1

    # -- each service's /health --

    async def _consumers(self) -> list[ServiceConsumers]:
        return list(await asyncio.gather(*(self._health_of(s) for s in SERVICES)))

    async def _health_of(self, service: str) -> ServiceConsumers:
        url = self.settings.url_of(service)
        try:
            response = await self._http.get(url.rstrip("/") + "/health", timeout=5)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return ServiceConsumers(
                service=service, url=url, status="unreachable", consumers={}, error=repr(exc)
            )
        return ServiceConsumers(
            service=service,
            url=url,
            status=str(body.get("status", f"HTTP {response.status_code}")),
            consumers=body.get("consumers") or {},
        )

    # -- custody --

    async def _current_stages(self, key: SecretStr | None) -> tuple[StagesView | None, str | None]:
        """The latest stage table; refreshed in the background every `stages_every_s`, since
        with a large custody view one refresh may take seconds."""
        due = self._stages_at is None or time.monotonic() - self._stages_at >= self.stages_every_s
        if due and self._stages_task is None:
            self._stages_task = asyncio.create_task(self._fetch_stages(key))
        if self._stages_at is None and self._stages_task is not None:
            await asyncio.shield(self._stages_task)
        return self._stages, self._stages_error

    async def _fetch_stages(self, key: SecretStr | None) -> None:
        try:
            self._stages, self._stages_error = await self._ask_stages(key)
        finally:
            self._stages_at = time.monotonic()
            self._stages_task = None

    async def _ask_stages(self, key: SecretStr | None) -> tuple[StagesView | None, str | None]:
        if key is None:
            return None, _NO_KEY
        params = {"stuck_after": self.stuck_after} if self.stuck_after else {}
        params["limit"] = str(STUCK_SHOWN)
        try:
            response = await self._http.get(
                "/ops/stages", params=params, headers={"X-API-Key": key.get_secret_value()}
            )
        except httpx.HTTPError as exc:
            return self._stages, f"custody at {self.settings.custody_url} did not answer: {exc!r}"
        if response.status_code != 200:
            return self._stages, f"custody answered {response.status_code}: {response.text[:300]}"
        return StagesView.model_validate_json(response.content), None


_NO_KEY = (
    "GREENIT_OPS_API_KEY is not set: create an operations key "
    "(./dev key operations ops-console) and export it"
)


# ---- the console ------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def stages_table(overview: Overview) -> Table:
    table = Table(title="Devices per stage (the custody view)", title_justify="left")
    for column in ("stage", "devices", "oldest", "in stage for", "stuck", "stuck after"):
        table.add_column(column, justify="right" if column in ("devices", "stuck") else "left")
    table.add_column("longest waiting", overflow="fold")
    if overview.stages is None:
        return table
    for stage in overview.stages.stages:
        oldest = stage.oldest
        table.add_row(
            stage.stage,
            str(stage.count),
            oldest.asset_tag if oldest else "",
            human_duration(oldest.age_s) if oldest else "",
            Text(str(stage.stuck), style="bold red" if stage.stuck else ""),
            "never" if stage.stuck_after_s is None else human_duration(stage.stuck_after_s),
            ", ".join(d.asset_tag for d in stage.stuck_devices),
        )
    table.add_row("total", str(overview.stages.total), "", "", "", "", "", style="bold")
    return table


def lag_table(overview: Overview) -> Table:
    table = Table(title="Consumer lag per service", title_justify="left")
    for column in ("service", "group", "state", "members", "lag", "lagging topics"):
        table.add_column(column, justify="right" if column in ("members", "lag") else "left")
    for group in overview.groups:
        lag = "-" if group.lag is None else str(group.lag)
        topics = ", ".join(f"{t} {n}" for t, n in group.by_topic.items())
        style = "bold red" if group.lag else ""
        table.add_row(
            group.service, group.group, group.state, str(group.members), Text(lag, style), topics
        )
    return table


def consumers_table(overview: Overview) -> Table:
    table = Table(title="Consumers (each service's /health)", title_justify="left")
    for column in (
        "service",
        "health",
        "group",
        "state",
        "failed deliveries",
        "oldest unprocessed",
    ):
        table.add_column(column, justify="right" if column == "failed deliveries" else "left")
    table.add_column("last error", overflow="fold")
    for entry in overview.consumers:
        health_style = "" if entry.status in ("ok", "retrying") else "bold red"
        health = Text(entry.status, style=health_style)
        if not entry.consumers:
            table.add_row(entry.service, health, "", "", "", "", entry.error or "")
        for group, c in entry.consumers.items():
            state = str(c.get("state", "?"))
            style = {"ok": "", "retrying": "yellow"}.get(state, "bold red")
            table.add_row(
                entry.service,
                health,
                group,
                Text(state, style=style),
                str(c.get("failed_deliveries", "")),
                human_duration(float(c.get("oldest_unprocessed_age_s") or 0)),
                str(c.get("last_error") or ""),
            )
    return table


def topics_table(overview: Overview) -> Table:
    title = f"Topics (rates over {overview.window_s or 0:.1f} s)"
    table = Table(title=title, title_justify="left")
    table.add_column("topic")
    table.add_column("messages", justify="right")
    table.add_column("msg/s", justify="right")
    busy = [t for t in overview.topics if t.messages]
    for topic in busy:
        table.add_row(topic.topic, str(topic.messages), _rate(topic.per_second))
    idle = len(overview.topics) - len(busy)
    if idle:
        table.add_row(Text(f"({idle} topics without messages)", style="dim"), "", "")
    table.add_row(
        "total", str(overview.messages_total), _rate(overview.per_second_total), style="bold"
    )
    return table


def dead_letters_table(overview: Overview) -> Table:
    dead = overview.dead_letters
    table = Table(title=f"Dead letters: {dead.total}", title_justify="left")
    table.add_column("source topic")
    table.add_column("dead letters", justify="right")
    for source, count in dead.by_source.items():
        table.add_row(source, str(count))
    return table


def render(overview: Overview) -> Group:
    when = overview.taken_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = Text.assemble(
        ("Green IT operations", "bold"), f"  namespace '{overview.namespace}'  {when}"
    )
    parts: list[Any] = [header, stages_table(overview)]
    if overview.stages_error:
        parts.append(Text(f"stages: {overview.stages_error}", style="yellow"))
    parts += [
        lag_table(overview),
        consumers_table(overview),
        dead_letters_table(overview),
        topics_table(overview),
    ]
    return Group(*parts)


async def run_console(collector: Collector, interval_s: float, once: bool) -> int:
    async with collector:
        overview = await collector.overview()
        if once:
            Console().print(render(overview))
            return 0
        with Live(render(overview), refresh_per_second=4) as live:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    overview = await collector.overview()
                except Exception as exc:  # keep the last screen and say why it is stale
                    failed = Text(f"refresh failed, showing the last view: {exc!r}", style="red")
                    live.update(Group(render(overview), failed))
                    continue
                live.update(render(overview))


# ---- the page ---------------------------------------------------------------------------------


def web_app(
    collector: Collector, poll_s: float = 3.0, hosts: Iterable[str] = allowed_hosts("127.0.0.1")
) -> FastAPI:
    """The page and its /api/*: every call signed in with an operations or staff key, which
    custody checks (`/ops/me`) and which is the one forwarded to custody; the page holds none."""
    page = TEMPLATE.read_text(encoding="utf-8").replace("{{POLL_MS}}", str(int(poll_s * 1000)))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with collector:
            yield

    app = FastAPI(title="Green IT operations", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def signed_in(key: Annotated[str | None, Security(_KEY_HEADER)]) -> SecretStr:
        if not key:
            raise HTTPException(
                401, "sign in: send an operations or staff key in X-API-Key", _CHALLENGE
            )
        secret = SecretStr(key)
        status_code, body = await collector.operator(secret)
        if status_code == 200:
            return secret
        detail = body.get("detail") if isinstance(body, dict) else None
        if status_code in (401, 403):
            headers = _CHALLENGE if status_code == 401 else None
            raise HTTPException(status_code, detail or "this key was refused", headers)
        raise HTTPException(502, f"custody could not check the key: {detail or status_code}")

    operator = Depends(signed_in)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page.replace("{{NONCE}}", csp_nonce(request)))

    @app.get("/api/me")
    async def me(key: Annotated[SecretStr, operator]) -> JSONResponse:
        status_code, body = await collector.operator(key)
        return JSONResponse(body, status_code=status_code)

    @app.get("/api/overview", response_model=Overview)
    async def overview(key: Annotated[SecretStr, operator]) -> Overview | JSONResponse:
        try:
            return await collector.overview(key)
        except Exception as exc:  # the page says why instead of going blank
            return JSONResponse({"detail": f"could not gather the overview: {exc!r}"}, 503)

    @app.get("/api/devices")
    async def devices(
        key: Annotated[SecretStr, operator],
        q: Annotated[str, Query(min_length=1, max_length=128, description="Tag or serial")],
    ) -> JSONResponse:
        status_code, body = await collector.search(q, key)
        return JSONResponse(body, status_code=status_code)

    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostGuard, hosts=hosts)
    return app


_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "APIKey"}


def run_web(
    collector: Collector, host: str, port: int, poll_s: float, names: Iterable[str] = ()
) -> int:
    import uvicorn

    hosts = allowed_hosts(host, names)
    shown = f"[{host}]" if ":" in host else host
    print(f"ops page on http://{shown}:{port}/ (answers to Host {', '.join(sorted(hosts))})")
    app = web_app(collector, poll_s, hosts)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


# ---- command line -----------------------------------------------------------------------------


def _stuck_after(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: give seconds (3600) or JSON per stage ({{"received": 3600}})'
        ) from None
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = OpsSettings()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=defaults.namespace, help="GREENIT_NAMESPACE")
    common.add_argument("--bootstrap", default=defaults.kafka_bootstrap)
    common.add_argument("--custody-url", default=defaults.custody_url, help="GREENIT_CUSTODY_URL")
    common.add_argument(
        "--stuck-after",
        type=_stuck_after,
        help="seconds for every stage, or JSON per stage: '{\"received\": 3600}' "
        "(default: custody's per-stage defaults)",
    )
    common.add_argument(
        "--stages-every",
        type=float,
        default=15.0,
        help="seconds between refreshes of the stage table (each reads the whole custody view)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m tools.ops", description="Operations console and page."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    console = sub.add_parser("console", parents=[common], help="a live view in the terminal")
    console.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    console.add_argument("--once", action="store_true", help="print one screen and exit")
    web = sub.add_parser("web", parents=[common], help="the same numbers on a web page")
    web.add_argument("--port", type=int, default=8005)
    web.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    web.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="a name the page is reached by (repeatable); other Host headers get 400",
    )
    web.add_argument("--poll", type=float, default=3.0, help="seconds between page refreshes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = OpsSettings(
        namespace=args.namespace, kafka_bootstrap=args.bootstrap, custody_url=args.custody_url
    )
    if args.command == "web":  # the page forwards its signed-in user's key, never this one
        settings = settings.model_copy(update={"ops_api_key": None})
    collector = Collector(
        settings, stuck_after=args.stuck_after, stages_every_s=max(0.0, args.stages_every)
    )
    if args.command == "web":
        return run_web(collector, args.host, args.port, args.poll, args.server_name)
    try:
        return asyncio.run(run_console(collector, max(0.5, args.interval), args.once))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
