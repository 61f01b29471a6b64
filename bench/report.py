"""Times the donor impact report for one donor with many devices (default 10,000).

    uv run python -m bench.report [--devices 10000] [--repeat 5]

Seeds the devices straight into a fresh namespaced custody database (the running store,
GREENIT_MONGO_URL), each built by custody's own domain and store functions with a realistic
history: received, diagnosed, wiped, then about 70% ready, allocated, shipped, delivered (most
with a usage report) and about 30% released, dismantled and recycled, spread over a year. Then
times, median of `--repeat` runs: the raw find of the donor's devices (the baseline), the
report's own projected find, the computation, HTML, PDF, and the HTTP-free path end to end
(projected find, compute, PDF). Prints a table and drops the database.
"""

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from services.custody import domain, impact, impact_render, store
from services.custody.settings import Settings
from shared import events as ev
from shared import mongo
from shared.examples import EXAMPLES
from shared.mongo import Database, Document

DONOR = "bench-donor"
PERIOD = impact.Period(start=date(2030, 1, 1), end=date(2031, 1, 1))
MODELS = [
    (ev.DeviceCategory.LAPTOP, "HP", "EliteBook 840 G5", 1.5, 40),
    (ev.DeviceCategory.LAPTOP, "Lenovo", "ThinkPad T480", 1.6, 25),
    (ev.DeviceCategory.LAPTOP, "Dell", "Latitude 7490", 1.4, 15),
    (ev.DeviceCategory.DESKTOP, "Dell", "OptiPlex 7060", 5.2, 8),
    (ev.DeviceCategory.MONITOR, "Dell", "P2419H", 4.2, 7),
    (ev.DeviceCategory.TABLET, "Apple", "iPad 9", 0.5, 3),
    (ev.DeviceCategory.PHONE, "Fairphone", "4", 0.2, 2),
]
RECIPIENTS = [(f"school-{i:02d}", f"School or NGO number {i}") for i in range(40)]
RECYCLERS = [("Umicore Hoboken", "R2v3"), ("Galloo", "WEEELABEX"), ("Coolrec", "e-Stewards")]

T = TypeVar("T")


def _event(cls: type[ev.Event], device_id: uuid.UUID, at: datetime, **fields: Any) -> Any:
    """The catalogue's example of `cls`, about this device, at `at`."""
    base = EXAMPLES[cls].model_dump()
    return cls.model_validate(
        base | {"event_id": uuid.uuid4(), "device_id": device_id, "occurred_at": at} | fields
    )


def _lifecycle(rng: random.Random, device_id: uuid.UUID, received: datetime) -> Iterator[Any]:
    """The events after `received`: delivered (~70%, most with a usage report) or recycled."""
    at = received + timedelta(days=rng.uniform(1, 5))
    reuse = rng.random() < 0.7
    decision = ev.Decision.REFURBISH if reuse else ev.Decision.RECYCLE
    yield _event(ev.DeviceDiagnosed, device_id, at, decision=decision)
    at += timedelta(hours=rng.uniform(1, 30))
    yield _event(ev.DeviceWiped, device_id, at, certificate_id=uuid.uuid4())
    if reuse:
        recipient_id, name = rng.choice(RECIPIENTS)
        yield _event(ev.DeviceReady, device_id, at)
        at += timedelta(days=rng.uniform(3, 30))
        yield _event(
            ev.DeviceAllocated, device_id, at, recipient_id=recipient_id, recipient_name=name
        )
        at += timedelta(days=2)
        yield _event(ev.DeviceShipped, device_id, at, recipient_id=recipient_id)
        at += timedelta(days=3)
        yield _event(ev.DeviceDelivered, device_id, at, recipient_id=recipient_id)
        if rng.random() < 0.8:
            at += timedelta(days=rng.uniform(30, 180))
            yield _event(
                ev.DeviceUsageReported,
                device_id,
                at,
                recipient_id=recipient_id,
                students=rng.randint(5, 60),
                classrooms=rng.randint(1, 3),
            )
        return
    yield _event(ev.DeviceReleasedForRecycling, device_id, at)
    at += timedelta(days=rng.uniform(5, 20))
    fractions = ev.MaterialFractions(
        plastics_kg=round(rng.uniform(0.2, 1.5), 2),
        ferrous_kg=round(rng.uniform(0.1, 2.0), 2),
        aluminium_kg=round(rng.uniform(0.0, 0.5), 2),
        circuit_boards_kg=round(rng.uniform(0.1, 0.4), 2),
        batteries_kg=round(rng.uniform(0.0, 0.3), 2),
    )
    yield _event(ev.DeviceDismantled, device_id, at, fractions=fractions)
    at += timedelta(days=rng.uniform(7, 30))
    name, certification = rng.choice(RECYCLERS)
    yield _event(
        ev.DeviceRecycled,
        device_id,
        at,
        fractions=fractions,
        recycler=ev.Recycler(name=name, certification=certification),
        certificate_id=uuid.uuid4(),
    )


def device_docs(n: int, seed: int = 42) -> Iterator[Document]:
    rng = random.Random(seed)
    pickup_id = uuid.uuid4()
    weights = [m[4] for m in MODELS]
    for i in range(n):
        category, make, model, kg, _ = rng.choices(MODELS, weights)[0]
        received_at = domain.to_millis(
            datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=365 * i / n)
        )
        device_id = uuid.uuid4()
        received: ev.DeviceReceived = _event(
            ev.DeviceReceived,
            device_id,
            received_at,
            pickup_id=pickup_id,
            correlation_id=pickup_id,
            partner_id=DONOR,
            category=category,
            make=make,
            model=model,
            weight_kg=kg,
            serial_number=f"SN{i:08d}",
            asset_tag=f"BENCH-{i:06d}",
            asset_tag_generated=False,
        )
        custody = domain.record(domain.Custody(), received)
        events = [received, *_lifecycle(rng, device_id, received_at)]
        for event in events[1:]:
            custody = domain.record(custody, event)
        yield {
            "_id": str(device_id),
            **store.identity_fields(received),
            **store.custody_fields(custody),
            "applied": [str(e.event_id) for e in events],
            "version": len(events),
        }


@dataclass
class _Connected:
    db: Database


def custody_store(db: Database) -> store.Store:
    return store.Store(_Connected(db))


async def seed(db: Database, n: int) -> None:
    await custody_store(db).setup()
    batch: list[Document] = []
    for doc in device_docs(n):
        batch.append(doc)
        if len(batch) == 500:
            await _insert(db, batch)
            batch = []
    if batch:
        await _insert(db, batch)


async def _insert(db: Database, docs: list[Document]) -> None:
    """As custody writes them: the custody documents and their compact summaries."""
    await db.devices.insert_many(docs)
    await db.device_summaries.insert_many([store.summary_of(d) for d in docs])


async def timed(repeat: int, step: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    """Median milliseconds over `repeat` runs, and the last result."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await step()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def _sync(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def run() -> T:
        return fn()

    return run


async def measure(db: Database, repeat: int) -> list[tuple[str, float]]:
    factors = impact.BUILT_IN_FACTORS
    baseline, raw = await timed(repeat, lambda: db.devices.find({"partner_id": DONOR}).to_list())
    find_ms, docs = await timed(repeat, lambda: custody_store(db).donor_devices(DONOR))

    def compute() -> impact.ImpactReport:
        return impact.compute(docs, partner_id=DONOR, period=PERIOD, factors=factors)

    compute_ms, report = await timed(repeat, _sync(compute))
    html_ms, html = await timed(repeat, _sync(lambda: impact_render.render_html(report)))
    pdf_ms, pdf = await timed(repeat, _sync(lambda: impact_render.render_pdf(report)))

    async def end_to_end() -> bytes:
        found = await custody_store(db).donor_devices(DONOR)
        computed = impact.compute(found, partner_id=DONOR, period=PERIOD, factors=factors)
        return impact_render.render_pdf(computed)

    total_ms, _ = await timed(repeat, end_to_end)
    print(
        f"{len(raw):,} devices; {report.received_total:,} received, "
        f"{report.delivered_total:,} delivered, {report.recycled_total:,} recycled, "
        f"{report.in_process_total:,} in process in {PERIOD.start} to {PERIOD.end}; "
        f"HTML {len(html) / 1024:,.0f} KiB, PDF {len(pdf) / 1024:,.0f} KiB"
    )
    return [
        ("baseline: find the donor's full custody documents", baseline),
        ("find the donor's device summaries (what the report loads)", find_ms),
        ("compute the report", compute_ms),
        ("render HTML", html_ms),
        ("render PDF", pdf_ms),
        ("end to end: summaries + compute + PDF", total_ms),
    ]


def table(rows: list[tuple[str, float]]) -> str:
    baseline = rows[0][1]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'step':<{width}} | {'ms':>8} | {'x baseline':>10} |"]
    lines.append(f"|{'-' * (width + 2)}|{'-' * 9}:|{'-' * 11}:|")
    lines += [f"| {name:<{width}} | {ms:>8,.0f} | {ms / baseline:>10.2f} |" for name, ms in rows]
    return "\n".join(lines)


async def run(devices: int, repeat: int) -> None:
    settings = Settings(namespace=f"bench{uuid.uuid4().hex[:8]}_")
    client = mongo.connect(settings)
    db = mongo.database(client, settings)
    try:
        started = time.perf_counter()
        await seed(db, devices)
        print(f"seeded {devices:,} devices into {db.name} in {time.perf_counter() - started:.1f} s")
        print(table(await measure(db, repeat)))
    finally:
        await client.drop_database(db.name)
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.devices, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
