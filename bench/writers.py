"""Concurrent writers of one database: how the store's write throughput and latency change with
the number of updates in flight, and with those updates queued in the service instead.

FerretDB v1 (SQLite) lets one writer into a database file at a time; the others wait in
SQLite's busy handler, which sleeps in steps of up to 100 ms between tries. In the 10,000- and
2,000-device chaos runs, updates by `_id` of intake's devices took 0.5 s on average (the
slow-command log) while one update alone takes a few ms. This measures, on a store of its own
(fresh data directory, port 27033), the same updates by `_id` of device-sized documents with
K in flight at once: let through as they come ("direct"), or through a gate in the client
that lets G at a time ("gated"). The baseline is one at a time.

    uv run python -m bench.writers --docs 2000 --ops 600 --concurrency 1 8 32 64
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from bench.common import table
from bench.store import _seed
from shared.mongo import Document, tool_client
from tools.localinfra import LocalStore


async def _run(
    collection: AsyncCollection[Document], ids: list[str], in_flight: int, gate: int | None
) -> tuple[float, float, float]:
    """Writes per second, median and 99th-percentile latency (ms) of `len(ids)` updates."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for doc_id in ids:
        queue.put_nowait(doc_id)
    gate_lock = asyncio.Semaphore(gate) if gate else None
    latencies: list[float] = []

    async def update(doc_id: str, n: int) -> None:
        await collection.update_one(
            {"_id": doc_id}, {"$set": {"s": n}, "$push": {"applied": f"e{n}"}}
        )

    async def worker() -> None:
        n = 0
        while not queue.empty():
            doc_id = queue.get_nowait()
            n += 1
            started = time.perf_counter()
            if gate_lock is None:
                await update(doc_id, n)
            else:
                async with gate_lock:
                    await update(doc_id, n)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(ids) / elapsed, statistics.median(latencies), p99


async def measure(url: str, docs: int, ops: int, levels: list[int], gates: list[int]) -> None:
    client: AsyncMongoClient[Document] = tool_client(url)
    pools = {g: tool_client(url, maxPoolSize=g) for g in gates}
    try:
        name = f"bwriters{uuid.uuid4().hex[:6]}"
        collection = client[name].devices
        ids = await _seed(collection, docs)
        await asyncio.sleep(1.0)  # let the launcher add its `_id` index to the new table
        sample = ids[:: max(1, docs // ops)][:ops]
        baseline, _, _ = await _run(collection, sample, 1, None)
        rows = []
        for in_flight in levels:
            # (label, collection to write through, client-side gate), the fewer than in flight
            variants: list[tuple[str, AsyncCollection[Document], int | None]] = [
                ("direct", collection, None),
                *((f"gated, {g} at a time", collection, g) for g in gates if g < in_flight),
                *(
                    (f"client pool of {g} connections", pool[name][collection.name], None)
                    for g, pool in pools.items()
                    if g < in_flight
                ),
            ]
            for label, target, gate in variants:
                rate, p50, p99 = await _run(target, sample, in_flight, gate)
                rows.append(
                    [
                        f"{in_flight} in flight, {label}",
                        f"{rate:.0f}",
                        f"{p50:.1f}",
                        f"{p99:.1f}",
                        f"{rate / baseline:.2f}x",
                    ]
                )
        print(
            f"{docs:,} documents, {len(sample)} updates by _id per row; baseline: one at a "
            f"time, {baseline:.0f} writes/s"
        )
        print(table(["updates", "writes/s", "p50 ms", "p99 ms", "x baseline"], rows))
        await client.drop_database(collection.database.name)
    finally:
        await client.close()
        for pool in pools.values():
            await pool.close()


async def run(docs: int, ops: int, levels: list[int], gates: list[int]) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-writers-"))
    store = LocalStore(name="store-writers", port=27033, log=base / "store.log", data=base / "d")
    try:
        store.prepare()
        await asyncio.to_thread(store.start)
        await measure(store.url, docs, ops, levels, gates)
    finally:
        await asyncio.to_thread(store.stop)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writers", description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--ops", type=int, default=600)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--gates", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    asyncio.run(run(args.docs, args.ops, args.concurrency, args.gates))


if __name__ == "__main__":
    main()
