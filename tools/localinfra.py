"""A Kafka broker and a document store of one's own, as `./dev` starts them, on other ports.

The chaos run kills and restarts them, so they must never be the ones `./dev` (and everybody
else) uses: the data lives under the directory given, the ports are the caller's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from shared import credentials, store_users
from shared.credentials import (
    ADMIN,
    BROKER,
    PLAINTEXT,
    KafkaCredentials,
    read_password,
    write_secret,
)

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on {port} after {timeout:.0f}s")
        time.sleep(0.2)


@dataclass
class LocalProcess:
    """One infrastructure process: started, SIGKILLed or stopped, and started again."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """What must exist before the first start (formatted storage, directories)."""

    def start(self, timeout: float = 90) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: {self.name} would not be ours")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port(self.port, self.process, timeout, self.name)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        self._signal(signal.SIGKILL, timeout=30)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, timeout=30)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


SCRAM_MARKER = ".greenit-scram"
"""Left in Kafka's log directory by a format that created the broker's and admin's SCRAM
credentials: storage formatted before authentication has none, and no client could log in."""


PLAINTEXT_DROPS = (
    "listeners=",
    "advertised.listeners=",
    "listener.security.protocol.map=",
    "inter.broker.listener.name=",
    "sasl.",
    "listener.name.",
    "authorizer.class.name=",
    "allow.everyone.if.no.acl.found=",
    "super.users=",
)
"""What a broker without authentication leaves out of infra/kafka/server.properties."""


def kafka_properties(port: int, controller_port: int, log_dirs: Path, *, sasl: bool = True) -> str:
    """infra/kafka/server.properties on these ports, with its log directory and the broker's
    own password (from the secrets directory). `sasl=False`: the same broker with no
    authentication and no authorizer (PLAINTEXT listeners), for bench.sasl's arm without SASL
    and never anywhere else."""
    template = (ROOT / "infra/kafka/server.properties").read_text()
    text = template.replace("127.0.0.1:9093", f"127.0.0.1:{controller_port}").replace(
        "127.0.0.1:9092", f"127.0.0.1:{port}"
    )
    if not sasl:
        kept = [line for line in text.splitlines() if not line.startswith(PLAINTEXT_DROPS)]
        return "\n".join(kept) + (
            f"\nlisteners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            f"log.dirs={log_dirs}\n"
        )
    password = read_password(BROKER)
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    return (
        f"{text}\nlog.dirs={log_dirs}\n"
        f"listener.name.controller.plain.sasl.jaas.config={plain} required "
        f'username="{BROKER}" password="{password}" user_{BROKER}="{password}";\n'
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram} required "
        f'username="{BROKER}" password="{password}";\n'
    )


def prepare_kafka(
    *,
    jvm: list[str],
    config: Path,
    log_dirs: Path,
    port: int,
    controller_port: int,
    out: Path,
    sasl: bool = True,
) -> None:
    """Write Kafka's configuration (mode 0600: it holds the broker's password) and format its
    storage the first time, with the broker's and the admin's SCRAM credentials (`sasl=False`:
    none, see kafka_properties)."""
    libs = LOCAL / "kafka/libs"
    if not libs.is_dir():
        raise RuntimeError(f"no Kafka jars in {libs}: run ./dev provision first")
    if sasl:  # a broker without authentication needs no password
        credentials.ensure()
    log_dirs.mkdir(parents=True, exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    properties = kafka_properties(port, controller_port, log_dirs, sasl=sasl)
    write_secret(config, properties, private_dir=False)
    if (log_dirs / "meta.properties").exists():
        if sasl and not (log_dirs / SCRAM_MARKER).exists():
            raise RuntimeError(
                f"Kafka's storage {log_dirs} was formatted before authentication (it has no "
                f"SCRAM credentials): stop Kafka and move the directory aside; the topics are "
                f"created again, their events are not"
            )
        return
    scram = (
        [f"SCRAM-SHA-512=[name={who},password={read_password(who)}]" for who in (BROKER, ADMIN)]
        if sasl
        else []
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as log:
        formatted = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _cluster_id(),
                "-c",
                str(config),
                *(arg for s in scram for arg in ("--add-scram", s)),
            ],
            check=False,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if formatted.returncode != 0:  # not CalledProcessError: its message shows the passwords
        raise RuntimeError(f"formatting Kafka storage failed (log: {out})")
    if sasl:
        (log_dirs / SCRAM_MARKER).touch()


@dataclass
class LocalKafka(LocalProcess):
    """Kafka in KRaft mode, one broker+controller, from the jars `./dev` resolved."""

    controller_port: int = 0
    data: Path = Path()
    sasl: bool = True
    """False: no authentication and no ACLs (bench.sasl's arm without SASL only)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.data / "server.properties"

    def _jvm(self) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.log.parent}",
            "-cp",
            str(LOCAL / "kafka/libs/*"),
        ]

    def argv(self) -> list[str]:
        return [*self._jvm(), "kafka.Kafka", str(self.config)]

    def prepare(self) -> None:
        prepare_kafka(
            jvm=self._jvm(),
            config=self.config,
            log_dirs=self.data / "logs",
            port=self.port,
            controller_port=self.controller_port,
            out=self.log,
            sasl=self.sasl,
        )

    @property
    def credentials(self) -> KafkaCredentials:
        """How a client reaches this broker as the admin."""
        if self.sasl:
            return KafkaCredentials.of(ADMIN)
        return KafkaCredentials(ADMIN, "", PLAINTEXT)

    async def wait_ready(self, within_s: float = 90) -> None:
        """Until the broker answers a metadata request (listening is not yet serving)."""
        deadline = time.monotonic() + within_s
        auth = self.credentials.aiokafka()
        while True:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=5000, **auth
            )
            try:
                await admin.start()
                await admin.list_topics()
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            finally:
                await admin.close()


def store_kind() -> str:
    """Which store `./dev` starts: `GREENIT_STORE` (ferretdb, secantus or mongod) when set, else
    mongod if it is on PATH, else SecantusDB (docs/store.md)."""
    kind = os.environ.get("GREENIT_STORE", "")
    if not kind:
        return "mongod" if shutil.which("mongod") else "secantus"
    if kind not in ("ferretdb", "secantus", "mongod"):
        raise RuntimeError(f"GREENIT_STORE={kind}: use ferretdb, secantus or mongod")
    return kind


SECANTUS = LOCAL / "secantus"


def secantus_binary() -> Path:
    """`secantusd-py` from the venv `./dev provision` made."""
    binary = SECANTUS / "venv/bin/secantusd-py"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no {binary}: run ./dev provision")
    return binary


@dataclass
class LocalStore(LocalProcess):
    """The store `./dev` would start (`store_kind`): mongod, SecantusDB or FerretDB (SQLite)."""

    kind: str = field(default_factory=store_kind)

    @property
    def is_ferretdb(self) -> bool:
        return self.kind == "ferretdb"

    data: Path = Path()
    ferretdb_args: tuple[str, ...] = ()
    """Extra arguments for FerretDB (ignored by the others)."""
    extra_args: tuple[str, ...] = ()
    auth: bool | None = None
    """Users and `--auth` (SecantusDB only): unset, on unless GREENIT_STORE_AUTH is false."""

    @property
    def with_users(self) -> bool:
        return self.kind == "secantus" and (self.auth if self.auth is not None else auth_wanted())

    """Extra arguments for whichever store it is (e.g. SecantusDB's `--auth`)."""

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def argv(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        port = str(self.port)
        if self.kind == "mongod":
            mongod = shutil.which("mongod") or "mongod"
            args = ["--dbpath", str(self.data), "--bind_ip", "127.0.0.1", "--port", port]
            return [mongod, *args, *self.extra_args]
        if self.kind == "secantus":
            # --standalone: drivers then send no retryable writes, whose records (kept 30 min,
            # scanned and sorted on every write) slow SecantusDB 0.7 down (docs/store.md)
            return [
                str(secantus_binary()),
                "--config",
                str(SECANTUS / "secantusd.toml"),
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--storage-path",
                str(self.data),
                "--standalone",
                "--log-level",
                "WARNING",
                *(["--auth"] if self.with_users else []),
                *self.extra_args,
            ]
        return [
            str(ferretdb_binary()),
            "--listen-addr",
            address,
            "--sqlite-dir",
            str(self.data),
            *self.ferretdb_args,
            *self.extra_args,
        ]

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if self.with_users and not (self.data / USERS_MARKER).exists():
            self._create_users()

    def _create_users(self) -> None:
        """SecantusDB has no localhost exception: its users are created on a store started
        without `--auth`, on a free port of its own for the few seconds it takes, then it is
        stopped and started as asked (docs/store.md). Users already there get the passwords of
        the secrets directory (remove the marker after losing `.local/secrets`)."""
        bootstrap = LocalStore(
            name=f"{self.name}-users",
            port=free_port(),
            log=self.log,
            kind=self.kind,
            data=self.data,
            auth=False,
        )
        bootstrap.start()
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(
                bootstrap.url, serverSelectionTimeoutMS=30_000
            )
            try:
                for user in credentials.STORE_USERS:
                    password = credentials.read_store_password(user)
                    roles = store_users.roles(user)
                    try:
                        client.admin.command("createUser", user, pwd=password, roles=roles)
                    except OperationFailure as exc:  # there from an earlier run: its password now
                        if exc.code != store_users.USER_EXISTS:
                            raise
                        client.admin.command("updateUser", user, pwd=password, roles=roles)
            finally:
                client.close()
        finally:
            bootstrap.stop()
        (self.data / USERS_MARKER).write_text("users created; passwords in the secrets directory\n")


USERS_MARKER = ".greenit-users"
"""Left in SecantusDB's storage directory once its users exist (created before its first start
with `--auth`)."""


def auth_wanted() -> bool:
    value = os.environ.get("GREENIT_STORE_AUTH", "").strip().lower()
    return value not in ("0", "false", "no", "off")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


FERRETDB_SOURCE = ROOT / "infra/ferretdb"


def ferretdb_fingerprint() -> str:
    """`./dev provision`'s fingerprint of the launcher's sources (go.mod, go.sum, *.go)."""
    files = [FERRETDB_SOURCE / "go.mod", FERRETDB_SOURCE / "go.sum"]
    files += sorted(FERRETDB_SOURCE.glob("*.go"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def ferretdb_binary() -> Path:
    """The FerretDB launcher built from this checkout's sources: `./dev provision`'s when its
    stamp matches them, else one built (once per fingerprint) into the temporary directory, so a
    store started here never runs an older launcher than the code beside it."""
    want = ferretdb_fingerprint()
    provisioned = LOCAL / "bin/ferretdb"
    stamp = LOCAL / "bin/.ferretdb.stamp"
    if os.access(provisioned, os.X_OK) and stamp.is_file() and stamp.read_text().strip() == want:
        return provisioned
    built = Path(tempfile.gettempdir()) / f"greenit-ferretdb-{want}" / "ferretdb"
    if os.access(built, os.X_OK):
        return built
    if shutil.which("go") is None:
        raise RuntimeError(f"no current {provisioned}, no go and no mongod: run ./dev provision")
    built.parent.mkdir(parents=True, exist_ok=True)
    partial = built.with_name(f"ferretdb.{os.getpid()}.partial")
    result = subprocess.run(
        ["go", "build", "-o", str(partial), "."],
        cwd=FERRETDB_SOURCE,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build of {FERRETDB_SOURCE} failed:\n{result.stderr[-3000:]}")
    partial.replace(built)
    return built


def local_infra(
    base: Path, *, kafka_port: int, controller_port: int, store_port: int
) -> tuple[LocalKafka, LocalStore]:
    logs = base / "logs"
    kafka = LocalKafka(
        name="kafka",
        port=kafka_port,
        log=logs / "kafka.log",
        controller_port=controller_port,
        data=base / "kafka",
    )
    store = LocalStore(name="store", port=store_port, log=logs / "store.log", data=base / "store")
    return kafka, store


def _cluster_id() -> str:
    """What `StorageTool random-uuid` prints, without starting a JVM for it: like Kafka's own
    Uuid.randomUuid it never starts with "-", which the tool's parser would take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    """`./dev`'s Kafka set-up: python -m tools.localinfra prepare-kafka CONFIG LOG_DIRS LOGS."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.localinfra")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["prepare-store"]:
        return _prepare_store(argv[1:])
    parser.add_argument("command", choices=["prepare-kafka"])
    parser.add_argument("config", type=Path)
    parser.add_argument("log_dirs", type=Path)
    parser.add_argument("logs", type=Path, help="Kafka's log4j directory")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    args = parser.parse_args(argv)
    kafka = LocalKafka(
        name="kafka",
        port=args.port,
        log=args.logs / "format.log",
        controller_port=args.controller_port,
        data=args.log_dirs,
    )
    try:
        prepare_kafka(
            jvm=kafka._jvm(),
            config=args.config,
            log_dirs=args.log_dirs,
            port=args.port,
            controller_port=args.controller_port,
            out=kafka.log,
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _prepare_store(argv: list[str]) -> int:
    """`./dev`'s store set-up: python -m tools.localinfra prepare-store DATA LOG (SecantusDB's
    users, created once, before its first start with `--auth`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.localinfra prepare-store")
    parser.add_argument("data", type=Path)
    parser.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    store = LocalStore(name="store", port=0, log=args.log, data=args.data)
    try:
        store.prepare()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: could not create the store's users: {exc}", file=sys.stderr)
        return 1
    print("auth" if store.with_users else "no-auth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
