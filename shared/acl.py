"""Who may do what on Kafka: the ACLs, derived from which events each service publishes and
consumes (the topic catalogue maps an event to its topic).

Nothing is allowed by default on the broker (`allow.everyone.if.no.acl.found=false`); a service
may WRITE its own events' topics, the refusals topic and the dead-letter topic, READ the topics
it consumes and use its own consumer group; the operations console may DESCRIBE every topic and
the services' groups and READ the dead-letter topic. Only the admin (topic creation, dead-letter
re-drive, the tests' set-up) and the broker itself are super users.

Every binding names one topic or group exactly (namespace included), so the test namespaces'
grants are as narrow as the deployment's, and `shared.admin` deletes them with the namespace.
tests/unit/test_acl.py checks this table against what each service's broker publishes and
subscribes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.credentials import OPS, SERVICES
from shared.events import (
    DeviceAllocated,
    DeviceDelivered,
    DeviceDiagnosed,
    DeviceDismantled,
    DeviceReady,
    DeviceReceived,
    DeviceRecycled,
    DeviceReleasedForRecycling,
    DeviceReported,
    DeviceReturned,
    DeviceShipped,
    DeviceUsageReported,
    DeviceWiped,
    Event,
    LotDispatched,
    PickupCancelled,
    PickupCompleted,
    PickupRequested,
    PickupScheduled,
    RequestClosed,
    RequestOpened,
    TransitionRefused,
)
from shared.topics import ALL_TOPICS, DEAD_LETTER, EVENT_TOPICS, device_topics, topic_of

PUBLISHES: dict[str, tuple[type[Event], ...]] = {
    "intake": (
        PickupRequested,
        PickupScheduled,
        PickupCompleted,
        PickupCancelled,
        DeviceReceived,
    ),
    "diagnostics": (DeviceDiagnosed, DeviceReady, DeviceReleasedForRecycling, DeviceWiped),
    "allocation": (
        DeviceAllocated,
        DeviceDelivered,
        DeviceReported,
        DeviceReturned,
        DeviceShipped,
        DeviceUsageReported,
        RequestClosed,
        RequestOpened,
    ),
    "recycling": (DeviceDismantled, DeviceRecycled, LotDispatched),
    "custody": (),
}
"""The events each service owns. Every service also writes refusals and dead letters."""

CONSUMES: dict[str, tuple[type[Event], ...]] = {
    "intake": (),
    # custody keeps the history of every device
    "custody": tuple(cls for cls, t in EVENT_TOPICS.items() if t.name in device_topics()),
    "diagnostics": (DeviceReceived,),
    "allocation": (DeviceReady,),
    "recycling": (DeviceReleasedForRecycling, DeviceReturned),
}

Operation = Literal["READ", "WRITE", "DESCRIBE"]


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """ALLOW `principal` to `operation` the topic or consumer group `name` (exactly)."""

    principal: str
    resource: Literal["topic", "group"]
    name: str
    operation: Operation


def written_topics(service: str) -> list[str]:
    events: list[type[Event]] = [*PUBLISHES[service], TransitionRefused]
    # only a consumer dead-letters what it cannot process
    dead_letters = [DEAD_LETTER.name] if CONSUMES[service] else []
    return [topic_of(cls).name for cls in events] + dead_letters


def read_topics(service: str) -> list[str]:
    return [topic_of(cls).name for cls in CONSUMES[service]]


def grants(namespace: str = "") -> list[Grant]:
    """Every ACL the namespace needs: its topics and groups are `namespace + name`."""
    out: set[Grant] = set()
    for service in SERVICES:
        out.update(Grant(service, "topic", namespace + t, "WRITE") for t in written_topics(service))
        out.update(Grant(service, "topic", namespace + t, "READ") for t in read_topics(service))
        if CONSUMES[service]:
            out.add(Grant(service, "group", namespace + service, "READ"))
    out.update(Grant(OPS, "topic", namespace + t.name, "DESCRIBE") for t in ALL_TOPICS)
    # every service's group, also a producer's that has none: the console asks about each
    out.update(Grant(OPS, "group", namespace + s, "DESCRIBE") for s in SERVICES)
    out.add(Grant(OPS, "topic", namespace + DEAD_LETTER.name, "READ"))
    return sorted(out)
