"""A small chaos run: devices through the four services while service processes are SIGKILLed.

The same code as `python -m tools.chaos`, on a Kafka broker and a document store of its own
(free ports, data under .local/chaos/). Restarting Kafka (about 40 s here) and the store are left
to the standalone run: on FerretDB, allocation's reads by state scan its stock, and a run that
grows large enough times its calls out (see the README), which must not make the suite flaky.
"""

from __future__ import annotations

import asyncio

import pytest

from tools.chaos import ChaosConfig, run
from tools.cluster import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_every_device_reaches_its_end_once_although_services_are_killed():
    config = ChaosConfig(
        devices=60,
        kills=5,
        restart_kafka=False,
        restart_store=False,
        batch_min=30,
        batch_max=30,
        parallel_batches=2,
        return_share=0.02,
        kafka_port=free_port(),
        controller_port=free_port(),
        store_port=free_port(),
        timeout_s=300,
        settle_s=90,
        quiet=True,
    )

    report = asyncio.run(run(config))

    print(report.table())
    assert not report.failures, report.table()
    assert len(report.stats.kills) == 5
    assert report.stats.infra_restarts == []
    assert report.devices == 60
