"""Creates the catalogue's topics with their partition counts (idempotent).

Usage: python -m shared.admin create-topics [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient

from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS


async def create_topics(bootstrap: str, prefix: str = "") -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="greenit-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=prefix + t.name, num_partitions=t.partitions, replication_factor=1)
            for t in ALL_TOPICS
            if prefix + t.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def drop_namespace(
    bootstrap: str, mongo_url: str, namespace: str, extra_topics: Iterable[str] = ()
) -> None:
    """Delete the namespace's topics and drop its databases: a broker keeps every partition's
    files open, so test and benchmark runs that leave theirs behind exhaust its file limit."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        for name in await client.list_database_names():
            if name.startswith(namespace):
                await client.drop_database(name)
    finally:
        await client.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="greenit-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [namespace + t.name for t in ALL_TOPICS] + list(extra_topics)
        doomed = [t for t in names if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def _with_wait(bootstrap: str, prefix: str, wait_s: float) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await create_topics(bootstrap, prefix)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.admin")
    parser.add_argument("command", choices=["create-topics"])
    parser.add_argument("--bootstrap", default=ServiceSettings().kafka_bootstrap)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the broker")
    args = parser.parse_args(argv)
    created = asyncio.run(_with_wait(args.bootstrap, ServiceSettings().namespace, args.wait))
    print(f"topics: {len(ALL_TOPICS)} in catalogue, {len(created)} created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
