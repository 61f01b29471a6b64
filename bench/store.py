"""The document store's own cost per operation the services make, with and without the `_id`
path index our FerretDB launcher adds (`infra/ferretdb/idindex.go`).

Starts two stores of its own side by side (fresh data directories, ports 27031 and 27032): the
baseline is FerretDB as released (`--id-index-every 0`), the other runs with the index. Each
gets the same documents (device-sized: a short history) and the same operations, in turns of
one operation kind, so the machine's noise falls on both alike. With `mongod` on PATH there is
no FerretDB to compare: it measures mongod alone. "As update_if writes it" is how the services
write conditionally (shared/mongo.py): on FerretDB, read by `_id`, test the condition here,
write by `_id`, instead of sending the condition in the filter.

    uv run python -m bench.store --docs 1000 10000 --ops 200
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from bench.common import table
from shared.mongo import Document, tool_client, update_if
from tools.localinfra import LocalStore

Op = Callable[[AsyncCollection[Document], str, int], Awaitable[Any]]

OPERATIONS: dict[str, Op] = {
    "find by _id": lambda c, i, n: c.find_one({"_id": i}),
    "update by _id": lambda c, i, n: c.update_one({"_id": i}, {"$set": {"s": n}}),
    "guarded update (_id, version, applied)": lambda c, i, n: c.update_one(
        {"_id": i, "version": {"$gte": 0}, "applied": {"$ne": f"e{n}"}},
        {"$set": {"s": n}, "$inc": {"version": 1}, "$push": {"applied": f"e{n}"}},
    ),
    "the same, as update_if writes it": lambda c, i, n: update_if(
        c,
        i,
        {"version": {"$gte": 0}, "applied": {"$ne": f"e{n}"}},
        {"$set": {"s": n}, "$inc": {"version": 1}, "$push": {"applied": f"e{n}"}},
    ),
    "replace by _id (upsert)": lambda c, i, n: c.replace_one({"_id": i}, _doc(i, n), upsert=True),
}


def _doc(doc_id: str, n: int = 0) -> Document:
    history = [{"event_id": str(uuid.uuid4()), "type": "device.received", "n": k} for k in range(5)]
    return {"_id": doc_id, "status": "received", "version": 0, "applied": [], "history": history}


async def _seed(collection: AsyncCollection[Document], docs: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(docs)]
    for start in range(0, docs, 1000):
        await collection.insert_many([_doc(i) for i in ids[start : start + 1000]])
    return ids


async def _time(op: Op, collection: AsyncCollection[Document], ids: list[str]) -> float:
    """Mean milliseconds of `op` over `ids`, one after the other (as a consumer does)."""
    started = time.perf_counter()
    for n, doc_id in enumerate(ids):
        await op(collection, doc_id, n)
    return (time.perf_counter() - started) / len(ids) * 1000


async def measure(urls: dict[str, str], docs: int, ops: int) -> dict[tuple[str, str], float]:
    clients = {name: tool_client(url) for name, url in urls.items()}
    try:
        cols = {name: c[f"bstore{uuid.uuid4().hex[:6]}"].devices for name, c in clients.items()}
        sample: dict[str, list[str]] = {}
        for name, col in cols.items():
            ids = await _seed(col, docs)
            await asyncio.sleep(1.0)  # let the launcher add its index to the new table
            sample[name] = ids[:: max(1, docs // ops)][:ops]
        results: dict[tuple[str, str], float] = {}
        for op_name, op in OPERATIONS.items():
            for name, col in cols.items():
                results[(op_name, name)] = await _time(op, col, sample[name])
        for col in cols.values():
            await col.database.client.drop_database(col.database.name)
        return results
    finally:
        for client in clients.values():
            await client.close()


async def run(doc_counts: list[int], ops: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-store-"))
    stores = {
        "as released": LocalStore(
            name="store-baseline",
            port=27031,
            log=base / "baseline.log",
            data=base / "baseline",
            ferretdb_args=("--id-index-every", "0"),
        ),
        "with _id path index": LocalStore(
            name="store-indexed", port=27032, log=base / "indexed.log", data=base / "indexed"
        ),
    }
    if not stores["as released"].is_ferretdb:
        stores = {"mongod": stores["with _id path index"]}
    try:
        for store in stores.values():
            store.prepare()
            await asyncio.to_thread(store.start)
        names = list(stores)
        rows = []
        for docs in doc_counts:
            urls = {name: store.url for name, store in stores.items()}
            results = await measure(urls, docs, ops)
            for op_name in OPERATIONS:
                times = [results[(op_name, name)] for name in names]
                ratio = [f"{times[0] / t:.1f}x" for t in times[1:]]
                rows.append([f"{op_name}, {docs:,} docs", *(f"{t:.2f}" for t in times), *ratio])
        headers = ["operation (ms each, sequential)", *names]
        if len(names) > 1:
            headers.append("speed-up")
        print(table(headers, rows))
    finally:
        for store in stores.values():
            await asyncio.to_thread(store.stop)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--ops", type=int, default=200, help="operations timed per kind")
    args = parser.parse_args(argv)
    asyncio.run(run(args.docs, args.ops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
