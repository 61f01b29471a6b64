"""Fakes shared by unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest


class _AsyncioWithSleep:
    """`asyncio` as one module sees it, with its own `sleep`."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def fake_sleep_in(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Replace `asyncio.sleep` for `module` only. Patching `module.asyncio.sleep` replaces it for
    the whole process: every other task of the session's event loop (a relay left by an earlier
    test) then loops without ever yielding, and the test never resumes."""
    monkeypatch.setattr(module, "asyncio", _AsyncioWithSleep(sleep))
