"""Preloaded by the crash harness's forkserver: imports and rules warm before any fork."""

from __future__ import annotations

from tests.crash_driver import warm

warm()
