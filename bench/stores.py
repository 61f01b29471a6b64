"""The document stores side by side: what the services need of MongoDB semantics, measured.

    uv run python -m bench.stores measure mongodb://127.0.0.1:27017/ mongodb://127.0.0.1:27117/
    uv run python -m bench.stores auth
    uv run python -m bench.stores probe mongodb://127.0.0.1:27118/ --every 300 --batch 500

`measure` prints one row per store reachable (an unreachable one is named and skipped), in a
database of its own that it drops at the end:

- 100 concurrent `$inc`: one document, 100 `update_one({_id}, {$inc: {n: 1}})` in flight at once
  (one client, pool of 100); how many the document kept (MongoDB: 100).
- guarded update, 10k docs: median and p95 ms of 50 updates whose filter holds the condition
  (`_id`, `version`, `applied $ne`) on a collection of 10,000 device-sized documents, as the
  services write on MongoDB.
- secondary index used: `explain` of `find({stage: ...})` after `create_index("stage")`; yes when
  the winning plan names an IXSCAN (or an index) rather than a collection scan.
- concurrent upserts: 60 `find_one_and_update(..., upsert=True, return_document=AFTER)` of one
  counter document that does not exist yet (intake's asset-tag counter); how many returned
  None (MongoDB: none; a duplicate-key error is retried by the driver's caller).

`auth` starts a SecantusDB of its own (`GREENIT_STORE=secantus ./dev provision` first), creates
users without `--auth` (it has no localhost exception), restarts it with `--auth` and checks
least privilege: one user per service with `readWrite` on its own database only; no credentials,
a wrong password or another service's user is refused; a password rotation takes effect.

`probe` measures one store's write capacity over time, while other traffic (a soak) runs on it:
every `--every` seconds a fixed batch (`--batch` inserts then as many guarded updates, one at a
time), printing writes/s of the batch, the store's own write rate since the last sample (its
`serverStatus` opcounters) and, when the store runs on this machine, its CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from bench import common
from bench.common import table

Document = dict[str, Any]
T = TypeVar("T")


def _client(url: str, pool: int = 100) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        url, serverSelectionTimeoutMS=3000, socketTimeoutMS=300_000, maxPoolSize=pool
    )


def _device(i: int) -> Document:
    history = [{"event_id": str(uuid.uuid4()), "type": "device.received", "n": k} for k in range(5)]
    return {
        "_id": f"d{i:06d}",
        "stage": ("received", "diagnosed", "wiped", "ready", "allocated")[i % 5],
        "version": 0,
        "applied": [],
        "history": history,
    }


async def concurrent_inc(client: AsyncMongoClient[Document], db: str, n: int = 100) -> int:
    c = client[db].counter
    await c.insert_one({"_id": "c", "n": 0})
    await asyncio.gather(*(c.update_one({"_id": "c"}, {"$inc": {"n": 1}}) for _ in range(n)))
    doc = await c.find_one({"_id": "c"})
    return int(doc["n"]) if doc else 0


async def guarded_update(
    client: AsyncMongoClient[Document], db: str, docs: int = 10_000, ops: int = 50
) -> tuple[float, float]:
    c = client[db].devices
    for start in range(0, docs, 1000):
        await c.insert_many([_device(i) for i in range(start, min(docs, start + 1000))])
    times = []
    for k in range(ops):
        i = (k * 7919) % docs
        started = time.perf_counter()
        await c.update_one(
            {"_id": f"d{i:06d}", "version": {"$gte": 0}, "applied": {"$ne": f"e{k}"}},
            {"$set": {"s": k}, "$inc": {"version": 1}, "$push": {"applied": f"e{k}"}},
        )
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


async def index_used(client: AsyncMongoClient[Document], db: str) -> str:
    c = client[db].devices  # filled by guarded_update
    await c.create_index("stage")
    plan = await c.find({"stage": "wiped"}).explain()
    text = str(plan.get("queryPlanner", plan))
    if "IXSCAN" in text:
        return "yes (IXSCAN)"
    if "COLLSCAN" in text:
        return "no (COLLSCAN)"
    if "detail=SCAN" in text and "USING INDEX" not in text:
        return "no (SQLite SCAN of the table)"
    return "unknown: " + text[:60].replace("|", "/")


async def concurrent_upserts(client: AsyncMongoClient[Document], db: str, n: int = 60) -> str:
    c = client[db].sequences

    async def one() -> str:
        try:
            doc = await c.find_one_and_update(
                {"_id": "asset_tag"},
                {"$inc": {"next": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return "dup"
        return "none" if doc is None else "doc"

    outcomes = await asyncio.gather(*(one() for _ in range(n)))
    final = await c.find_one({"_id": "asset_tag"})
    kept = final["next"] if final else 0
    return (
        f"{outcomes.count('none')} None, {outcomes.count('dup')} dup-key, "
        f"counter {kept}/{n - outcomes.count('dup')}"
    )


async def _step(what: Awaitable[T], within_s: float = 600) -> T | str:
    """One measurement, or why it gave none (a store that hangs or fails must not stop the rest)."""
    try:
        return await asyncio.wait_for(what, within_s)
    except TimeoutError:
        return f"no answer in {within_s:.0f} s"
    except PyMongoError as e:
        return f"failed: {type(e).__name__}: {str(e)[:60]}"


async def measure(url: str) -> list[object]:
    client = _client(url)
    db = f"storebench_{uuid.uuid4().hex[:8]}"
    try:
        info = await client.admin.command("buildInfo")
        version = (
            f"FerretDB (reports {info['ferretdbVersion']})"
            if "ferretdbVersion" in info
            else f"reports {info.get('version', '?')}"
        )
        kept = await _step(concurrent_inc(client, db))
        guarded = await _step(guarded_update(client, db))
        index = await _step(index_used(client, db))
        upserts = await _step(concurrent_upserts(client, db))
        return [
            url,
            version,
            f"{kept}/100" if isinstance(kept, int) else kept,
            f"{guarded[0]:.1f} / {guarded[1]:.1f}" if isinstance(guarded, tuple) else guarded,
            index,
            upserts,
        ]
    finally:
        try:
            await client.drop_database(db)
        finally:
            await client.close()


async def measure_all(urls: list[str]) -> int:
    rows = []
    for url in urls:
        try:
            rows.append(await measure(url))
        except PyMongoError as e:
            print(f"{url}: not measured ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
    print(
        table(
            [
                "store",
                "version",
                "100 concurrent $inc kept",
                "guarded update 10k docs ms (median / p95)",
                "secondary index used",
                "60 concurrent upserts",
            ],
            rows,
        )
    )
    return 0 if rows else 1


async def probe(url: str, every: float, batch: int, samples: int) -> int:
    client = _client(url, pool=4)
    db = f"storeprobe_{uuid.uuid4().hex[:8]}"
    c = client[db].probe
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    pid = common.pid_listening_on(port)
    last_ops: float | None = None
    last_at = time.monotonic()
    last_cpu = common.cpu_seconds(pid) if pid else float("nan")
    started = time.monotonic()
    print("utc\tminute\tprobe writes/s\tstore writes/s (others)\tstore CPU s/s", flush=True)
    try:
        for n in range(samples):
            status = await client.admin.command("serverStatus")
            ops = status.get("opcounters", {})
            total = float(sum(ops.get(k, 0) for k in ("insert", "update", "delete")))
            now = time.monotonic()
            cpu = common.cpu_seconds(pid) if pid else float("nan")
            others = (total - last_ops) / (now - last_at) if last_ops is not None else float("nan")
            cpu_rate = (cpu - last_cpu) / (now - last_at) if n else float("nan")
            t0 = time.perf_counter()
            ids = [f"p{n}_{i}" for i in range(batch)]
            for i in ids:
                await c.insert_one({"_id": i, "version": 0, "applied": [], "history": [1, 2, 3]})
            for k, i in enumerate(ids):
                await c.update_one(
                    {"_id": i, "version": 0, "applied": {"$ne": k}},
                    {"$inc": {"version": 1}, "$push": {"applied": k}},
                )
            rate = 2 * batch / (time.perf_counter() - t0)
            status = await client.admin.command("serverStatus")
            ops = status.get("opcounters", {})
            last_ops = float(sum(ops.get(k, 0) for k in ("insert", "update", "delete")))
            last_at = time.monotonic()
            last_cpu = common.cpu_seconds(pid) if pid else float("nan")
            minute = (now - started) / 60
            print(
                f"{datetime.now(UTC):%H:%M:%S}\t{minute:.1f}\t{rate:.1f}\t{others:.1f}\t{cpu_rate:.2f}",
                flush=True,
            )
            if n + 1 < samples:
                await asyncio.sleep(max(0.0, every - (time.monotonic() - now)))
    finally:
        try:
            await client.drop_database(db)
        finally:
            await client.close()
    return 0


def auth_check() -> int:
    import socket
    import tempfile

    from pymongo import MongoClient

    from tools.localinfra import LocalStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="greenit-store-auth-"))
    store = LocalStore(
        name="store-auth", port=port, log=base / "store.log", data=base / "data", kind="secantus"
    )
    url = store.url
    store.start(timeout=60)
    try:
        c: MongoClient[Document] = MongoClient(url)
        c.admin.command("createUser", "admin", pwd="adminpw", roles=["root"])
        for svc in ("intake", "allocation"):
            c[f"greenit_{svc}"].command(
                "createUser",
                svc,
                pwd=f"{svc}pw",
                roles=[{"role": "readWrite", "db": f"greenit_{svc}"}],
            )
        c.greenit_intake.devices.insert_one({"_id": "d1"})
        c.close()
    finally:
        store.stop()
    store.extra_args = ("--auth",)
    store.start(timeout=60)
    results: list[bool] = []

    def client(user: str = "", pwd: str = "", source: str = "admin") -> MongoClient[Document]:
        if not user:
            return MongoClient(url, serverSelectionTimeoutMS=3000)
        return MongoClient(
            url, username=user, password=pwd, authSource=source, serverSelectionTimeoutMS=3000
        )

    def check(what: str, want: bool, fn: Callable[[], object]) -> None:
        try:
            fn()
            allowed, why = True, ""
        except PyMongoError as e:
            allowed, why = False, str(e).split(", full error")[0][:80]
        results.append(allowed == want)
        verdict = "as wanted" if allowed == want else "WRONG"
        print(f"{verdict:9}  {'allowed' if allowed else 'refused':7}  {what}  {why}")

    try:
        intake = client("intake", "intakepw", "greenit_intake")
        alloc = client("allocation", "allocationpw", "greenit_allocation")
        anon, admin = client(), client("admin", "adminpw")
        wrong = client("intake", "nope", "greenit_intake")
        check("intake reads its own db", True, lambda: intake.greenit_intake.devices.find_one())
        check("intake writes its own db", True, lambda: intake.greenit_intake.d.insert_one({}))
        check("intake indexes its own db", True, lambda: intake.greenit_intake.d.create_index("s"))
        check("intake reads allocation's db", False, lambda: intake.greenit_allocation.d.find_one())
        check(
            "allocation writes intake's api_keys",
            False,
            lambda: alloc.greenit_intake.api_keys.insert_one({"_id": "forged"}),
        )
        check("no credentials: read", False, lambda: anon.greenit_intake.devices.find_one())
        check(
            "no credentials: write",
            False,
            lambda: anon.greenit_intake.api_keys.insert_one({"_id": "forged"}),
        )
        check("no credentials: list databases", False, lambda: anon.list_database_names())
        check("wrong password: read", False, lambda: wrong.greenit_intake.devices.find_one())
        check(
            "intake drops allocation's db",
            False,
            lambda: intake.drop_database("greenit_allocation"),
        )
        check(
            "intake creates a user",
            False,
            lambda: intake.greenit_intake.command("createUser", "x", pwd="x", roles=["readWrite"]),
        )
        check(
            "admin rotates intake's password",
            True,
            lambda: admin.greenit_intake.command("updateUser", "intake", pwd="intakepw2"),
        )
        check(
            "old password after rotation",
            False,
            lambda: client("intake", "intakepw", "greenit_intake").greenit_intake.d.find_one(),
        )
        check(
            "new password after rotation",
            True,
            lambda: client("intake", "intakepw2", "greenit_intake").greenit_intake.d.find_one(),
        )
        forged = admin.greenit_intake.api_keys.count_documents({})
        print(f"forged documents written: {forged}")
        results.append(forged == 0)
    finally:
        store.stop()
    print(f"{sum(results)}/{len(results)} as wanted")
    return 0 if all(results) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="the micro-measurements, one row per store URL")
    m.add_argument("urls", nargs="+")
    q = sub.add_parser("probe", help="a fixed batch of writes every --every seconds")
    q.add_argument("url")
    q.add_argument("--every", type=float, default=300.0)
    q.add_argument("--batch", type=int, default=500, help="inserts (and as many updates)")
    q.add_argument("--samples", type=int, default=15)
    sub.add_parser("auth", help="SecantusDB users and roles: least privilege per service")
    args = p.parse_args(argv)
    if args.command == "auth":
        return auth_check()
    if args.command == "measure":
        return asyncio.run(measure_all(args.urls))
    return asyncio.run(probe(args.url, args.every, args.batch, args.samples))


if __name__ == "__main__":
    raise SystemExit(main())
