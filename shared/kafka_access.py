"""Does Kafka accept this process's credentials? Asked once at start (a wrong password stops
the service with a message naming the setting) and by `/health` when the broker does not answer
(it says whether the broker refused the credentials)."""

from __future__ import annotations

import asyncio
from typing import Literal

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed

from shared.credentials import secret_file
from shared.settings import ServiceSettings

Refusal = Literal["authentication"]


class KafkaRefused(RuntimeError):
    """The broker refused this process's principal."""


async def refusal(settings: ServiceSettings, timeout_s: float = 5.0) -> Refusal | None:
    """ "authentication" if a broker refuses the credentials; None if one accepts them or none
    can be reached (then the problem is not the credentials)."""
    creds = settings.kafka_credentials()
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, int(port), request_timeout_ms=int(timeout_s * 1000), **creds.aiokafka()
                ),
                timeout_s,
            )
        except SaslAuthenticationFailed:
            return "authentication"
        except (OSError, KafkaError, TimeoutError, ValueError):
            continue
        conn.close()
        return None
    return None


async def check_credentials(settings: ServiceSettings) -> None:
    """Raise KafkaRefused, naming the setting, if the broker refuses this process's password."""
    if await refusal(settings) == "authentication":
        username = settings.kafka_credentials().username
        where = (
            "GREENIT_KAFKA_PASSWORD"
            if settings.kafka_password is not None
            else f"GREENIT_KAFKA_PASSWORD is unset, so {secret_file(username)}"
        )
        raise KafkaRefused(
            f"Kafka at {settings.kafka_bootstrap} refused principal {username!r} "
            f"(authentication failed): the password ({where}) is not the broker's; "
            f"`./dev rotate-kafka-password {username}` sets a new one in both"
        )
