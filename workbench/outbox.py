"""What the workbench sends, queued on the stick first, so a station without network loses nothing.

Every post is written to `<stick>/queue/` as one JSON file before it is sent (numbered: a report
goes before its erasures); `upload` sends them in order and moves each answered one to `sent/`
(or `refused/`, with the answer, when the service refused it for good). A post carries the ids
diagnostics deduplicates by (`report_id`, `erasure_id`), so a post sent twice - a crash between
sending and moving it, or a stick uploaded from two stations - is applied once.

A queued post names its device by asset tag or serial when its id was not known yet (offline):
`upload` asks diagnostics for the id first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from workbench import TOOL_NAME, VERSION


class Unreachable(Exception):
    """The service did not answer (no network, not running, busy): try again later."""


@dataclass(frozen=True)
class Services:
    diagnostics: str
    intake: str
    key_file: Path
    timeout: float = 15.0

    def _key(self) -> str:
        try:
            key = self.key_file.read_text().strip()
        except OSError as exc:
            raise SystemExit(
                f"cannot read the workbench key file {self.key_file}: {exc.strerror}"
            ) from None
        if not key:
            raise SystemExit(f"the workbench key file {self.key_file} is empty")
        return key

    def request(self, service: str, method: str, path: str, **kw: Any) -> httpx.Response:
        base = self.diagnostics if service == "diagnostics" else self.intake
        headers = {"X-API-Key": self._key(), "User-Agent": f"{TOOL_NAME}/{VERSION}"}
        try:
            response = httpx.request(
                method, base.rstrip("/") + path, headers=headers, timeout=self.timeout, **kw
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"{service} at {base}: {type(exc).__name__}") from None
        if response.status_code in (502, 503, 504) or response.status_code == 429:
            raise Unreachable(f"{service} answered {response.status_code}: {_detail(response)}")
        return response

    def find_device(self, *, asset_tag: str | None, serial: str | None) -> dict[str, Any] | None:
        """The device diagnostics knows by this asset tag, else by this serial."""
        for name, value in (("asset_tag", asset_tag), ("serial_number", serial)):
            if not value:
                continue
            response = self.request("diagnostics", "GET", "/devices", params={name: value})
            if response.status_code != 200:
                raise SystemExit(f"diagnostics refused the lookup: {_detail(response)}")
            found: list[dict[str, Any]] = response.json()
            if found:
                return found[0]
        return None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return str(detail)[:500]


@dataclass
class Queue:
    root: Path

    @property
    def pending(self) -> list[Path]:
        directory = self.root / "queue"
        return sorted(directory.glob("*.json")) if directory.is_dir() else []

    def put(self, kind: str, item_id: UUID, post: dict[str, Any]) -> Path:
        directory = self.root / "queue"
        directory.mkdir(parents=True, exist_ok=True)
        number = 1 + max((int(p.name.split("-", 1)[0]) for p in self._all()), default=0)
        path = directory / f"{number:06d}-{kind}-{item_id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(post, indent=2, default=str))
        os.replace(temporary, path)  # a half-written post is never taken for a whole one
        return path

    def _all(self) -> list[Path]:
        return [
            p
            for sub in ("queue", "queue/sent", "queue/refused")
            for p in (self.root / sub).glob("*.json")
        ]

    def settle(self, path: Path, where: str, answer: dict[str, Any]) -> None:
        target = self.root / "queue" / where
        target.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text()) | {"answer": answer}
        (target / path.name).write_text(json.dumps(data, indent=2, default=str))
        path.unlink()


@dataclass
class Sent:
    sent: list[str]
    refused: list[str]
    left: int
    offline: str | None = None
    device_ids: set[str] | None = None


def upload(queue: Queue, services: Services) -> Sent:
    """Send every queued post in order; stop at the first that cannot reach its service."""
    result = Sent(sent=[], refused=[], left=0, device_ids=set())
    for path in queue.pending:
        post = json.loads(path.read_text())
        try:
            device_id = post.get("device_id") or _resolve(services, post["identify"])
            if device_id is None:
                answer = {"status": 404, "detail": f"no device with {post['identify']}"}
                queue.settle(path, "refused", answer)
                result.refused.append(f"{path.name}: {answer['detail']}")
                continue
            response = services.request(
                "diagnostics", "POST", post["path"].format(device_id=device_id), json=post["body"]
            )
        except Unreachable as exc:
            result.offline = str(exc)
            break
        answer = {"status": response.status_code, "body": _json(response)}
        if response.is_success:
            queue.settle(path, "sent", answer)
            result.sent.append(path.name)
            assert result.device_ids is not None
            result.device_ids.add(str(device_id))
        else:
            queue.settle(path, "refused", answer)
            result.refused.append(f"{path.name}: {response.status_code} {_detail(response)}")
    result.left = len(queue.pending)
    return result


def _resolve(services: Services, identify: dict[str, str | None]) -> str | None:
    device = services.find_device(
        asset_tag=identify.get("asset_tag"), serial=identify.get("serial")
    )
    return None if device is None else str(device["device_id"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]
