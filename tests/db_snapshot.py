"""Every row of every table, to prove that a refused request wrote nothing.

Used by the security tests: a snapshot before and after a request must be equal
(the audit log, its head, the login failures and the web secrets included).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from crm.db import transaction
from crm.models import Base

Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(engine: Engine) -> Snapshot:
    """Every row of every table, as text and sorted (row order is not a change)."""
    out: Snapshot = {}
    with transaction(engine) as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            out[table.name] = sorted(tuple(str(v) for v in row) for row in rows)
    return out


def changed_rows(before: Snapshot, after: Snapshot) -> dict[str, set[tuple[Any, ...]]]:
    """Per table, the rows that appeared, disappeared or changed (old and new versions)."""
    diff = {}
    for name in before:
        delta = set(before[name]) ^ set(after[name])
        if delta:
            diff[name] = delta
    return diff
