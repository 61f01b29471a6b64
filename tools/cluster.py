"""Starts services as separate processes, as `./dev up` does, on ports of their own
(used by the e2e tests and by tools.chaos / tools.fuzz)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICES = ("intake", "diagnostics", "allocation", "recycling", "custody")


def instance_names(services: Sequence[str], instances: int) -> list[str]:
    """The process names of `instances` processes per service: `intake`, `intake.2`, ..."""
    return [s if n == 1 else f"{s}.{n}" for n in range(1, instances + 1) for s in services]


def service_of(name: str) -> str:
    """The service a process name runs (`intake.2` runs intake)."""
    return name.partition(".")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    env: dict[str, str]
    log_dir: Path
    urls: dict[str, str] = field(default_factory=dict)
    reserved: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def reserve(self, service: str) -> str:
        """The process's URL, on a free port chosen now if it has none yet (a process keeps
        its port across restarts). `service` is a process name: `intake`, or `intake.2` for a
        second instance of intake (same consumer group and database, a port of its own)."""
        if service not in self.reserved:
            self.reserved[service] = self.urls.get(service) or f"http://127.0.0.1:{free_port()}"
        return self.reserved[service]

    def start(self, service: str) -> None:
        self.urls[service] = self.reserve(service)
        port = int(self.urls[service].rsplit(":", 1)[1])
        module = service_of(service)
        env = self.env | {f"GREENIT_{module.upper()}_HTTP_PORT": str(port)}
        # intake redirects its old read paths to custody: tell it where custody listens
        env.setdefault("GREENIT_CUSTODY_PUBLIC_URL", self.reserve("custody"))
        log = (self.log_dir / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"], env=env, stdout=log, stderr=log
        )

    def instances(self, service: str) -> list[str]:
        """The URLs of every running process of a service."""
        return [url for name, url in self.urls.items() if service_of(name) == service]

    def wait_healthy(self, service: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:  # one client: no new TLS context per poll
            while True:
                process = self.processes[service]
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{service} exited with {process.returncode}: {self.tail(service)}"
                    )
                try:
                    if client.get(self.urls[service] + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} not healthy: {self.tail(service)}")
                time.sleep(0.3)

    def stop(self, service: str, *, kill: bool = False) -> None:
        process = self.processes.pop(service)
        if kill:
            process.kill()
        else:
            process.terminate()
        process.wait(timeout=30)

    def tail(self, service: str, lines: int = 30) -> str:
        text = (self.log_dir / f"{service}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_cluster(
    env: Mapping[str, str],
    log_dir: Path,
    services: Sequence[str] = SERVICES,
    *,
    instances: int = 1,
) -> Iterator[Cluster]:
    """The services started as processes, `instances` of each (one consumer group, one
    database per service, as two copies of a deployment would share them)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(env=dict(env) | {"PYTHONUNBUFFERED": "1"}, log_dir=log_dir)
    names = instance_names(services, instances)
    try:
        for service in names:
            cluster.start(service)
        for service in names:
            # four services importing at once on two busy cores can take over a minute
            cluster.wait_healthy(service, 180)
        yield cluster
    finally:
        for service in list(cluster.processes):
            cluster.stop(service)


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
