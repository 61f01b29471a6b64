"""A small chaos run: devices through the five services while service processes are SIGKILLed,
and the Kafka broker and the document store are each killed and restarted once.

The same code as `python -m tools.chaos`, on a Kafka broker and a document store of its own
(free ports, data under .local/chaos/).
"""

from __future__ import annotations

import asyncio

import pytest

from tools.chaos import run, small_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_every_device_reaches_its_end_once_although_services_kafka_and_store_are_killed():
    config = small_run(kills=5, restart_kafka=True, restart_store=True)

    report = asyncio.run(run(config))

    print(report.table())
    assert not report.failures, report.table()
    assert len(report.stats.kills) == 5
    assert [r.split("@")[0] for r in report.stats.infra_restarts] == ["kafka", "store"]
    assert report.devices == 60
