"""Dialect-aware bulk writes: the few statements SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session


def table_of(model: type[DeclarativeBase]) -> Table:
    """The Core table of a mapped class (typed, for Core bulk statements)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def insert_ignoring_conflicts(
    session: Session,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    returning: str,
) -> set[Any]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING ``returning``; the values actually inserted.

    This is the idempotence gate: of two racing writers, only one gets each row back.
    """
    if not rows:
        return set()
    table = table_of(model)
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).on_conflict_do_nothing().returning(table.c[returning])
    won: set[Any] = set()
    for start in range(0, len(rows), 2000):
        won.update(session.execute(stmt, list(rows[start : start + 2000])).scalars().all())
    return won
