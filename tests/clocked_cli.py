"""The ``vipcare`` command line in a process of its own, its wall clock set by the test.

``python -m tests.clocked_cli 2026-11-23T10:00:00+08:00 run --date 2026-11-23``
runs ``vipcare run --date 2026-11-23`` as if it were that instant: the CLI is the
system's edge and the one place that reads the clock (``now_utc`` in each
command module), so that is what is set. Nothing else differs from
``python -m vipcare``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def main(argv: list[str]) -> None:
    now = datetime.fromisoformat(argv[0]).astimezone(UTC)
    import vipcare.cli as package
    from vipcare.cli import app, common

    def clock() -> datetime:
        return now

    common.now_utc = clock  # type: ignore[assignment]
    for module in vars(package).values():
        if hasattr(module, "now_utc"):
            module.now_utc = clock
    app(argv[1:], prog_name="vipcare")


if __name__ == "__main__":
    main(sys.argv[1:])
