"""One JSON form for values vipcare stores or prints: money as text, times as UTC ISO 8601."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

_PLAIN = frozenset({str, int, bool, float})


def jsonable(value: Any) -> Any:
    """Decimal → ``"-5.00"``, datetime → ``"2026-11-21T01:00:00Z"``, date → ``"2026-11-21"``."""
    if value is None or type(value) in _PLAIN:  # the common case first: it is called per row
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
