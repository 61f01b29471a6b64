"""Exit 0 when the service named by $SERVICE answers /health (container healthchecks)."""

from __future__ import annotations

import importlib
import os
import sys

import httpx


def main() -> int:
    service = os.environ["SERVICE"]
    settings = importlib.import_module(f"services.{service}.settings").Settings()
    try:
        response = httpx.get(f"http://127.0.0.1:{settings.http_port}/health", timeout=3)
    except httpx.HTTPError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        return 1
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
