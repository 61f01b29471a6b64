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
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

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


@dataclass
class LocalKafka(LocalProcess):
    """Kafka in KRaft mode, one broker+controller, from the jars `./dev` resolved."""

    controller_port: int = 0
    data: Path = Path()

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
        libs = LOCAL / "kafka/libs"
        if not libs.is_dir():
            raise RuntimeError(f"no Kafka jars in {libs}: run ./dev provision first")
        logs = self.data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        template = (ROOT / "infra/kafka/server.properties").read_text()
        text = template.replace("127.0.0.1:9093", f"127.0.0.1:{self.controller_port}").replace(
            "127.0.0.1:9092", f"127.0.0.1:{self.port}"
        )
        self.config.write_text(f"{text}\nlog.dirs={logs}\n")
        if (logs / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        with self.log.open("ab") as out:
            subprocess.run(
                [
                    *self._jvm(),
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.config),
                ],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, within_s: float = 90) -> None:
        """Until the broker answers a metadata request (listening is not yet serving)."""
        deadline = time.monotonic() + within_s
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
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
    mongod if it is on PATH, else FerretDB (docs/store.md)."""
    kind = os.environ.get("GREENIT_STORE", "")
    if not kind:
        return "mongod" if shutil.which("mongod") else "ferretdb"
    if kind not in ("ferretdb", "secantus", "mongod"):
        raise RuntimeError(f"GREENIT_STORE={kind}: use ferretdb, secantus or mongod")
    return kind


SECANTUS = LOCAL / "secantus"


def secantus_binary() -> Path:
    """`secantusd-py` from the venv `GREENIT_STORE=secantus ./dev provision` made."""
    binary = SECANTUS / "venv/bin/secantusd-py"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no {binary}: run GREENIT_STORE=secantus ./dev provision")
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
