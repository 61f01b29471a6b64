"""Scans on one pickup while another pickup's asset list is long: does the long list slow them?

Starts intake in a namespace of its own, gives a small pickup an asset list of `--scans` rows,
and times `POST /pickups/{id}/scan-code` (which also answers the list's progress) for half of
them: the baseline. It then imports `--rows` rows onto a second pickup through the API, in
calls of 1,000 rows, and times the other half of the small pickup's scans, then one page
(`--page` rows) of each list. Intake's limit of rows per pickup is raised to `--rows` for the
run. Every lookup of a scan is by `_id`, so the ratio should stay near 1.

    uv run python -m bench.manifest --rows 20000 --scans 40
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.common import (
    DONOR,
    LOGS,
    STAFF,
    cleanup,
    new_namespace,
    percentiles,
    prepare,
    say,
    service_env,
    table,
)
from tools.cluster import running_cluster

CALL = 1000
CATEGORIES = ("laptop", "desktop", "monitor")


def row(line: int, prefix: str) -> dict[str, Any]:
    n = line - 2
    return {
        "row": line,
        "asset_tag": f"{prefix}-{n:06d}",
        "serial_number": f"{prefix}SN{n:06d}",
        "category": CATEGORIES[n % 3],
        "make": "HP",
        "model": f"Model {n % 7}",
        "weight_kg": 1.5,
    }


async def open_pickup(client: httpx.AsyncClient, keys: dict[str, str], expected: int) -> str:
    now = datetime.now(UTC)
    body = {
        "address": {"street": "Rue 1", "postal_code": "1040", "city": "Brussels", "country": "BE"},
        "contact": {"name": "Bench", "email": "bench@example.org"},
        "window": {
            "start": (now + timedelta(days=1)).isoformat(),
            "end": (now + timedelta(days=2)).isoformat(),
        },
        "expected": {"laptop": max(1, expected)},
    }
    answer = await client.post("/pickups", json=body, headers={"X-API-Key": keys[DONOR]})
    answer.raise_for_status()
    return str(answer.json()["pickup_id"])


async def import_rows(
    client: httpx.AsyncClient, keys: dict[str, str], pickup: str, rows: list[dict[str, Any]]
) -> None:
    for start in range(0, len(rows), CALL):
        answer = await client.post(
            f"/pickups/{pickup}/manifest",
            json={"rows": rows[start : start + CALL]},
            headers={"X-API-Key": keys[DONOR]},
        )
        answer.raise_for_status()
        assert not answer.json()["errors"], answer.text


async def scan(
    client: httpx.AsyncClient, keys: dict[str, str], pickup: str, codes: list[str]
) -> list[float]:
    took = []
    for code in codes:
        began = time.perf_counter()
        answer = await client.post(
            f"/pickups/{pickup}/scan-code",
            json={"code": code, "location": "bench"},
            headers={"X-API-Key": keys[STAFF]},
        )
        took.append(time.perf_counter() - began)
        assert answer.status_code == 201, answer.text
    return took


async def page(client: httpx.AsyncClient, keys: dict[str, str], pickup: str, limit: int) -> float:
    began = time.perf_counter()
    answer = await client.get(
        f"/pickups/{pickup}/manifest", params={"limit": limit}, headers={"X-API-Key": keys[STAFF]}
    )
    answer.raise_for_status()
    return (time.perf_counter() - began) * 1000


async def main(args: argparse.Namespace) -> None:
    namespace = new_namespace("manifest")
    keys = await prepare(namespace)
    env = service_env(namespace) | {"GREENIT_INTAKE_MANIFEST_MAX_ROWS": str(max(args.rows, 1))}
    try:
        with running_cluster(env, LOGS / namespace, ["intake"]) as cluster:
            async with httpx.AsyncClient(base_url=cluster.urls["intake"], timeout=600) as client:
                small = await open_pickup(client, keys, args.scans)
                small_rows = [row(line, "SMALL") for line in range(2, args.scans + 2)]
                await import_rows(client, keys, small, small_rows)
                codes = [r["asset_tag"] for r in small_rows]
                half = len(codes) // 2
                before = await scan(client, keys, small, codes[:half])
                small_page_before = await page(client, keys, small, args.page)

                big = await open_pickup(client, keys, args.rows)
                say(f"importing {args.rows:,} rows onto another pickup")
                began = time.perf_counter()
                await import_rows(
                    client, keys, big, [row(n, "BIG") for n in range(2, args.rows + 2)]
                )
                seeded_s = time.perf_counter() - began
                say(f"imported in {seeded_s:.1f} s")

                after = await scan(client, keys, small, codes[half:])
                small_page_after = await page(client, keys, small, args.page)
                big_page = await page(client, keys, big, args.page)
    finally:
        if not args.keep:
            await cleanup(namespace)

    p50_before, p95_before, _ = percentiles(before)
    p50_after, p95_after, _ = percentiles(after)
    print(
        table(
            [
                "scan-code on the small pickup",
                "rows on the other pickup",
                "scans",
                "p50 ms",
                "p95 ms",
                "max ms",
                "p50 ratio",
            ],
            [
                ["baseline", 0, len(before), p50_before, p95_before, max(before) * 1000, 1.0],
                [
                    "with the long list",
                    args.rows,
                    len(after),
                    p50_after,
                    p95_after,
                    max(after) * 1000,
                    p50_after / p50_before if p50_before else 0.0,
                ],
            ],
        )
    )
    print()
    print(
        table(
            ["read", "ms"],
            [
                [f"small pickup, page of {args.page}, before", small_page_before],
                [f"small pickup, page of {args.page}, after", small_page_after],
                [f"long list, first page of {args.page}", big_page],
                [f"import of {args.rows:,} rows (calls of {CALL:,})", seeded_s * 1000],
            ],
        )
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.manifest", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the long list")
    parser.add_argument("--scans", type=int, default=40, help="rows (and scans) of the small list")
    parser.add_argument("--page", type=int, default=500, help="rows of the pages read")
    parser.add_argument("--keep", action="store_true", help="keep the namespace")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
