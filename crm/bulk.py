"""Dialect-aware bulk writes: the few statements SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.orm import DeclarativeBase, Session


def table_of(model: type[DeclarativeBase]) -> Table:
    """The Core table of a mapped class (typed, for Core bulk statements)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class JsonText(str):
    """A JSON value already serialised: the bulk writers store it in a JSON column as is."""


def insert_ignoring_conflicts(
    session: Session,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    returning: str,
) -> set[Any]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING ``returning``; the values actually inserted.

    This is the idempotence gate: of two racing writers, only one gets each row back.
    Rows (all with the same keys) go through the driver as multi-row ``VALUES``,
    each value converted by its column's type as a Core INSERT would.
    """
    if not rows:
        return set()
    table = table_of(model)
    rows = _with_defaults(table, rows)
    keys = tuple(rows[0])
    conn = session.connection()
    dialect = conn.dialect
    _sql, processors = _plan(table, keys, dialect)
    values = _converted(table, keys, processors, rows)
    col = table.c[returning]
    result_proc = col.type.dialect_impl(dialect).result_processor(dialect, None)
    width = len(keys)
    page = max(1, min(1000, 30_000 // width))
    won: set[Any] = set()
    for start in range(0, len(values), page):
        chunk = values[start : start + page]
        sql = _conflict_sql(table, keys, returning, len(chunk), dialect)
        flat = [v for row in chunk for v in row]
        found = conn.exec_driver_sql(sql, tuple(flat)).scalars().all()
        won.update(result_proc(v) for v in found) if result_proc else won.update(found)
    return won


_CONFLICT_SQL: dict[tuple[str, str, tuple[str, ...], str, int], str] = {}


def _conflict_sql(
    table: Table, keys: tuple[str, ...], returning: str, count: int, dialect: Any
) -> str:
    cache_key = (dialect.name, table.name, keys, returning, count)
    found = _CONFLICT_SQL.get(cache_key)
    if found is None:
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        group = "(" + ", ".join(mark for _ in keys) + ")"
        found = _CONFLICT_SQL[cache_key] = (
            f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
            f"({', '.join(quote(k) for k in keys)}) VALUES "
            + ", ".join(group for _ in range(count))
            + f" ON CONFLICT DO NOTHING RETURNING {quote(returning)}"
        )
    return found


_PLANS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[Any]]] = {}


def _plan(table: Table, keys: tuple[str, ...], dialect: Any) -> tuple[str, list[Any]]:
    """The driver-level INSERT for ``keys`` and each column's bind processor (cached)."""
    cache_key = (dialect.name, table.name, keys)
    found = _PLANS.get(cache_key)
    if found is None:
        processors = [table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys]
        names = ", ".join(dialect.identifier_preparer.quote(k) for k in keys)
        quoted = dialect.identifier_preparer.format_table(table)
        if dialect.name == "postgresql":
            sql = f"COPY {quoted} ({names}) FROM STDIN"
        else:
            marks = ", ".join("?" for _ in keys)
            sql = f"INSERT INTO {quoted} ({names}) VALUES ({marks})"
        found = _PLANS[cache_key] = (sql, processors)
    return found


def insert_many(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) in the session's transaction, through the driver.

    The bulk path of the care run: each value goes through its column's own type
    (money to minor units, times to naive UTC, JSON to text) exactly as a Core
    INSERT would, but without SQLAlchemy's per-row statement machinery: SQLite
    gets the driver's ``executemany``, PostgreSQL a ``COPY … FROM STDIN``. Nothing
    is returned; a constraint violation raises as an INSERT would.
    """
    if not rows:
        return
    rows = _with_defaults(table, rows)
    keys = tuple(rows[0])
    conn = session.connection()
    sql, processors = _plan(table, keys, conn.dialect)
    values = _converted(table, keys, processors, rows)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for value in values:
                copy.write_row(value)
    else:
        conn.exec_driver_sql(sql, values)


def _converted(
    table: Table, keys: tuple[str, ...], processors: list[Any], rows: Sequence[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    """Each row as a tuple in ``keys`` order, every value through its column's bind processor.

    Column by column, so that the loops stay in C where no conversion is needed. A
    :class:`JsonText` in a JSON column is already serialised and kept as is.
    """
    width = len(keys)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"{table.name}: every row must have the columns {', '.join(keys)}")
    if width == 1:
        columns: list[Any] = [[row[keys[0]] for row in rows]]
    else:
        columns = list(zip(*map(itemgetter(*keys), rows), strict=True))
    for i, proc in enumerate(processors):
        if proc is not None:
            columns[i] = _column(columns[i], proc, isinstance(table.c[keys[i]].type, JSON))
    return list(zip(*columns, strict=True))


def _column(values: Sequence[Any], proc: Any, is_json: bool) -> list[Any]:
    """One column's values converted; the last input object and its result are remembered,
    since most batches repeat the same instant, day or flag on every row."""
    out: list[Any] = []
    last_in: Any = object()
    last_out: Any = None
    for value in values:
        if value is not last_in:
            last_in = value
            last_out = value if is_json and isinstance(value, JsonText) else proc(value)
        out.append(last_out)
    return out


def _with_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The rows with the Python-side column defaults a Core INSERT would fill in."""
    missing = [
        c
        for c in table.columns
        if c.key not in rows[0]
        and c.default is not None
        and (c.default.is_scalar or c.default.is_callable)
    ]
    if not missing:
        return rows
    out = []
    for row in rows:
        filled = dict(row)
        for c in missing:
            default: Any = c.default
            filled[c.key] = default.arg if default.is_scalar else default.arg(None)
        out.append(filled)
    return out
