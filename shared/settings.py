"""Settings from environment variables (prefix GREENIT_), with safe local defaults."""

from __future__ import annotations

import os
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.credentials import (
    PLAINTEXT,
    KafkaCredentials,
    MissingCredential,
    read_password,
    read_store_password,
)
from shared.store_adapter import STORES_WITHOUT_USERS


def store_auth_on(setting: bool | None) -> bool:
    """Does this process authenticate to the store? The setting, else: unless the store
    `./dev` runs (GREENIT_STORE) is one it starts without users."""
    if setting is not None:
        return setting
    return os.environ.get("GREENIT_STORE", "") not in STORES_WITHOUT_USERS


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREENIT_", extra="ignore")

    service: ClassVar[str] = ""

    namespace: str = Field(
        "",
        pattern=r"^[a-z0-9_]*$",
        description="Prefix of every topic, consumer group and database: isolates test runs.",
    )
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_username: str = Field(
        "",
        description="The SCRAM-SHA-512 principal this process connects to Kafka as; "
        "empty: the service's name.",
    )
    kafka_password: SecretStr | None = Field(
        None,
        description="Its password; unset: read from the secrets directory "
        "(GREENIT_SECRETS_DIR, default .local/secrets/), file kafka-<principal>.",
    )
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "PLAINTEXT"] = Field(
        "SASL_PLAINTEXT",
        description="SASL_PLAINTEXT: SCRAM-SHA-512 with the principal and password above. "
        "PLAINTEXT: no authentication, only for a broker without it (bench.sasl starts one); "
        "the deployment's broker refuses such a client.",
    )
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    store_auth: bool | None = Field(
        None,
        description="Authenticate to the document store (SCRAM, user store_username, "
        "authSource admin). Unset: yes, unless GREENIT_STORE names a store ./dev starts "
        "without users (docs/store.md).",
    )
    store_username: str = Field(
        "", description="The store user this process connects as; empty: the service's name."
    )
    store_password: SecretStr | None = Field(
        None,
        description="Its password; unset: read from the secrets directory "
        "(GREENIT_SECRETS_DIR, default .local/secrets/), file store-<user>.",
    )
    mongo_db_prefix: str = "greenit"
    http_host: str = "127.0.0.1"
    http_port: int = 0
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        "json", description="JSON lines (default) or human-readable text for local debugging."
    )
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Where spans go: nowhere (default), stdout as JSON lines, or OTLP/HTTP "
        "to OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    retry_attempts: int = 5
    retry_base_delay_s: float = 0.2
    consumer_stuck_after: int = Field(
        default=3,
        ge=1,
        description="Deliveries of one batch that fail in a row (each after its retries) before "
        "the consumer is reported stuck: /health answers 503 with status 'degraded', "
        "greenit_consumer_stuck is 1. It goes on retrying; a committed batch clears it.",
    )
    dead_letter_give_up_after: int = Field(
        default=3,
        ge=1,
        description="Deliveries of one record whose dead letter (whole, then cut down, each "
        "publish retried) could not be published, before the consumer skips the record so its "
        "partition moves on: it logs the cut-down dead letter as CRITICAL 'dead letter not "
        "published' and counts greenit_dead_letters_unpublished_total.",
    )
    consume_batch: int = Field(
        default=50,
        ge=1,
        le=500,
        description="Records a consumer takes at once: records of different subjects are "
        "handled concurrently (those of one subject in order), and the batch's offsets are "
        "committed once, after all of them.",
    )
    outbox_full_sweep_s: float = Field(
        default=600.0,
        gt=0,
        description="How often the outbox relay reads every document for entries left behind "
        "by another instance that died and did not come back (a service sweeps everything when "
        "it starts, so its own crash is covered then, and retries its own failed flushes every "
        "second). Each sweep reads every document of the service's collections, so keep it "
        "rare (its cost under load: docs/consistency.md).",
    )

    store_max_pool_size: int = Field(
        default=100,
        ge=1,
        description="Connections to the store at most (PyMongo's maxPoolSize; its default). "
        "Commands beyond it wait in the client. On a store that lets one writer into a database "
        "at a time, fewer connections can write more per second (bench/writers.py; "
        "docs/benchmarks.md).",
    )
    slow_store_command_ms: float = Field(
        default=1000.0,
        ge=0,
        description="Log every store command slower than this (its name, collection and "
        "filter field names, never values) as 'slow store command'; 0 turns it off.",
    )

    auth_failures_per_minute: int = Field(
        default=20,
        ge=0,
        description="Unknown or revoked API keys one client address may present in a sliding "
        "minute; past it, its unknown keys are answered 429 with Retry-After until the oldest "
        "failure is a minute old (keys that authenticated from that address keep working); "
        "0 turns it off.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Largest request body a service reads (1 MiB); a larger one is answered "
        "413 with this limit in the reason, without being read whole. A route may have its "
        "own limit (intake's manifest import: GREENIT_MAX_MANIFEST_BODY_BYTES).",
    )

    def kafka_credentials(self) -> KafkaCredentials:
        """Who this process is to Kafka; MissingCredential names the setting when unknown."""
        username = self.kafka_username or self.service
        if not username:
            raise MissingCredential("no Kafka principal: set GREENIT_KAFKA_USERNAME")
        if self.kafka_security_protocol == PLAINTEXT:
            return KafkaCredentials(username, "", PLAINTEXT)
        if self.kafka_password is not None:
            return KafkaCredentials(username, self.kafka_password.get_secret_value())
        return KafkaCredentials(username, read_password(username))

    def store_credentials(self) -> dict[str, str]:
        """The store client's credential arguments (none when the store has no users);
        MissingCredential names the setting when the password is unknown."""
        if not store_auth_on(self.store_auth):
            return {}
        username = self.store_username or self.service
        if not username:
            raise MissingCredential("no store user: set GREENIT_STORE_USERNAME")
        if self.store_password is not None:
            password = self.store_password.get_secret_value()
        else:
            password = read_store_password(username)
        return {"username": username, "password": password, "authSource": "admin"}

    @property
    def database(self) -> str:
        return f"{self.namespace}{self.mongo_db_prefix}_{self.service}"

    @property
    def group_id(self) -> str:
        return self.namespace + self.service

    def topic(self, name: str) -> str:
        return self.namespace + name
