"""The command line's wall clock, set by a test (no tests here).

The CLI is the system's edge and the one place that reads the clock (``now_utc`` in
each command module); :func:`set_cli_clock` points every one of them at ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest


class Wall:
    """A wall clock the test moves: ``wall.now = ...``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def set_cli_clock(monkeypatch: pytest.MonkeyPatch, clock: Callable[[], datetime]) -> None:
    import vipcare.cli as package

    for module in vars(package).values():
        if hasattr(module, "now_utc"):
            monkeypatch.setattr(module, "now_utc", clock)
