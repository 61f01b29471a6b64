"""Credentials. Kafka: one SCRAM-SHA-512 principal per service, one for the operations console,
one admin, and the broker's own. The document store: one user per service, one for the
operations console (read-only), one admin. Their passwords live in a secrets directory.

The directory (`GREENIT_SECRETS_DIR`, default `.local/secrets/`, mode 0700) holds one file per
principal, `kafka-NAME` and `store-NAME` (mode 0600), with the password and nothing else.
`./dev up` and `./dev test` create the missing ones (`python -m shared.credentials ensure`);
nothing here prints or logs a password. Docker Compose mounts the same files as Docker
secrets (README).

`GREENIT_KAFKA_SECURITY_PROTOCOL=PLAINTEXT` connects without authentication: only to a broker
that has none, which only `bench.sasl` starts (on a port of its own, for the measurement of what
SASL costs); the deployment's broker refuses such a client.

Usage: python -m shared.credentials ensure
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faststream.security import SASLScram512

ROOT = Path(__file__).resolve().parent.parent
SERVICES: tuple[str, ...] = ("intake", "diagnostics", "allocation", "recycling", "custody")
OPS = "ops"
ADMIN = "admin"
BROKER = "broker"
"""The broker's own principal: its controller and inter-broker connections (a super user)."""
PRINCIPALS: tuple[str, ...] = (*SERVICES, OPS, ADMIN, BROKER)
STORE_USERS: tuple[str, ...] = (*SERVICES, OPS, ADMIN)
"""The document store's users (`shared.store_users` gives each its roles)."""
MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
PLAINTEXT = "PLAINTEXT"
PROTOCOLS = (SECURITY_PROTOCOL, PLAINTEXT)


class MissingCredential(RuntimeError):
    """A password is neither in the environment nor in the secrets directory."""


def secrets_dir() -> Path:
    return Path(os.environ.get("GREENIT_SECRETS_DIR") or ROOT / ".local" / "secrets")


def secret_file(principal: str, directory: Path | None = None) -> Path:
    return (directory or secrets_dir()) / f"kafka-{principal}"


def store_secret_file(user: str, directory: Path | None = None) -> Path:
    return (directory or secrets_dir()) / f"store-{user}"


def security_protocol() -> str:
    """How clients of this process connect: GREENIT_KAFKA_SECURITY_PROTOCOL, SASL_PLAINTEXT
    (SCRAM-SHA-512, the default) or PLAINTEXT (no authentication, no password needed)."""
    protocol = os.environ.get("GREENIT_KAFKA_SECURITY_PROTOCOL") or SECURITY_PROTOCOL
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"GREENIT_KAFKA_SECURITY_PROTOCOL={protocol}: use {' or '.join(PROTOCOLS)}"
        )
    return protocol


def new_password() -> str:
    # URL-safe characters only: the broker's JAAS configuration quotes it as it is
    return secrets.token_urlsafe(32)


def write_secret(path: Path, value: str, *, private_dir: bool = True) -> None:
    """Replace `path` with `value`, mode 0600 from the start, atomically; its directory is
    made 0700 too unless `private_dir` is false."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure(directory: Path | None = None) -> list[str]:
    """Create the password of every principal that has none yet; returns their names."""
    created = []
    for principal in PRINCIPALS:
        path = secret_file(principal, directory)
        if not path.exists():
            write_secret(path, new_password())
            created.append(principal)
    for user in STORE_USERS:
        path = store_secret_file(user, directory)
        if not path.exists():
            write_secret(path, new_password())
            created.append(f"store {user}")
    return created


def write_compose_env(directory: Path | None = None) -> None:
    """docker-compose.yml's env files (mode 0600), one per container, each with only the
    passwords that container needs; written again from the secret files each time."""
    d = directory or secrets_dir()
    for service in (*SERVICES, ADMIN):
        password = read_password(service, d)
        store_password = read_store_password(service, d)
        write_secret(
            d / f"{service}.env",
            f"GREENIT_KAFKA_PASSWORD={password}\nGREENIT_STORE_PASSWORD={store_password}\n",
        )
    write_secret(
        d / "kafka.env",
        f"KAFKA_BROKER_PASSWORD={read_password(BROKER, d)}\n"
        f"KAFKA_ADMIN_PASSWORD={read_password(ADMIN, d)}\n",
    )
    module = "org.apache.kafka.common.security.scram.ScramLoginModule"
    write_secret(
        d / "kafka-ui.env",
        "KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG="
        f'{module} required username="{OPS}" password="{read_password(OPS, d)}";\n',
    )


def read_password(principal: str, directory: Path | None = None) -> str:
    path = secret_file(principal, directory)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingCredential(
            f"no Kafka password for principal {principal!r}: no file {path} "
            f"(GREENIT_SECRETS_DIR; ./dev up and ./dev test create it) and "
            f"GREENIT_KAFKA_PASSWORD is not set"
        ) from None


def read_store_password(user: str, directory: Path | None = None) -> str:
    path = store_secret_file(user, directory)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingCredential(
            f"no store password for user {user!r}: no file {path} (GREENIT_SECRETS_DIR; "
            f"./dev up and ./dev test create it) and GREENIT_STORE_PASSWORD is not set "
            f"(GREENIT_STORE_AUTH=false if the store has no users)"
        ) from None


@dataclass(frozen=True, slots=True)
class KafkaCredentials:
    username: str
    password: str
    protocol: str = SECURITY_PROTOCOL
    """PLAINTEXT: no authentication (the password is then empty and unused)."""

    def __repr__(self) -> str:  # never show the password
        return f"KafkaCredentials(username={self.username!r})"

    @classmethod
    def of(cls, principal: str) -> KafkaCredentials:
        """`principal`'s password from the secrets directory (none under PLAINTEXT)."""
        if security_protocol() == PLAINTEXT:
            return cls(principal, "", PLAINTEXT)
        return cls(principal, read_password(principal))

    @property
    def authenticates(self) -> bool:
        return self.protocol != PLAINTEXT

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        if not self.authenticates:
            return {"security_protocol": PLAINTEXT}
        return {
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients (the admin's ACLs and SCRAM calls)."""
        return self.aiokafka()

    def faststream(self) -> SASLScram512 | None:
        if not self.authenticates:
            return None
        return SASLScram512(username=self.username, password=self.password)

    def properties_file(self) -> Path:
        """A client configuration for Kafka's own command-line classes (`--command-config`,
        `--producer.config`): written mode 0600 into the secrets directory."""
        module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        path = secrets_dir() / f"client-{self.username}.properties"
        if not self.authenticates:
            path = secrets_dir() / "client-plaintext.properties"
            write_secret(path, f"security.protocol={PLAINTEXT}\n")
            return path
        write_secret(
            path,
            f"security.protocol={SECURITY_PROTOCOL}\nsasl.mechanism={MECHANISM}\n"
            f"sasl.jaas.config={module} required "
            f'username="{self.username}" password="{self.password}";\n',
        )
        return path


def tool_credentials(default: str = ADMIN) -> KafkaCredentials:
    """Who a command-line tool connects as: GREENIT_KAFKA_USERNAME (and GREENIT_KAFKA_PASSWORD,
    else that principal's secret file) if set, else `default`."""
    username = os.environ.get("GREENIT_KAFKA_USERNAME") or default
    password = os.environ.get("GREENIT_KAFKA_PASSWORD")
    if password and security_protocol() != PLAINTEXT:
        return KafkaCredentials(username, password)
    return KafkaCredentials.of(username)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure"]:
        print("usage: python -m shared.credentials ensure", file=sys.stderr)
        return 2
    created = ensure()
    write_compose_env()
    if created:
        print(f"credentials: created for {', '.join(created)} in {secrets_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
