"""Two processes of every service at once, in one consumer group and on one database each, as a
deployment scaled out would run them: devices driven through both at random (and one of them
SIGKILLed now and then) reach their end once, with no scan, claim, certificate or outbox entry
applied twice and no update lost (tools.chaos's checks and tools.invariants).

The same code as `python -m tools.chaos --instances 2`, on a Kafka broker and a document store
of its own (the default store, `tools.localinfra.store_kind`).
"""

from __future__ import annotations

import asyncio

import pytest

from tools.chaos import run, small_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_two_instances_of_every_service_apply_each_step_once():
    config = small_run(kills=2, restart_kafka=False, restart_store=False, instances=2)

    report = asyncio.run(run(config))

    print(report.table())
    assert not report.failures, report.table()
    assert report.devices == 60
    assert len(report.stats.kills) == 2
