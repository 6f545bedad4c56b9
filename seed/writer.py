"""Bulk writers for generated rows: executemany on SQLite, ``COPY`` on PostgreSQL.

Rows arrive in *storage form*: money as integer minor units (what
:class:`~crm.types.Money` stores), times as naive UTC datetimes (what
:class:`~crm.types.UTCDateTime` stores), dates as :class:`~datetime.date`.
Going below the ORM's type processing is what makes a million customers take
minutes instead of an hour; tests read the rows back through the ORM to prove
the stored form is exactly what the types would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Engine, text

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "id",
    "external_id",
    "name",
    "phone",
    "locale",
    "timezone",
    "birthday",
    "birth_mmdd",
    "tier",
    "tier_rank",
    "plan_id",
    "manager_id",
    "balance",
    "balance_as_of",
    "credit_limit",
    "status",
    "sms_opt_out",
    "do_not_call",
    "joined_on",
    "last_contact_on",
    "points",
)
CLUB_COLUMNS: tuple[str, ...] = ("customer_id", "club")
USAGE_COLUMNS: tuple[str, ...] = ("customer_id", "month", "voice_minutes", "data_mb", "sms")

Row = tuple[Any, ...]


@dataclass
class Chunk:
    """One chunk of generated rows, in storage form and column order above."""

    customers: list[Row] = field(default_factory=list)
    clubs: list[Row] = field(default_factory=list)
    usage: list[Row] = field(default_factory=list)


class ChunkWriter(Protocol):
    def write(self, chunk: Chunk) -> None: ...

    def finish(self) -> None: ...


def writer_for(engine: Engine) -> ChunkWriter:
    if engine.dialect.name == "sqlite":
        return SqliteWriter(engine)
    if engine.dialect.name == "postgresql":
        return PostgresWriter(engine)
    raise NotImplementedError(f"no bulk writer for {engine.dialect.name}")


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


class SqliteWriter:
    """One ``executemany`` per table and one transaction per chunk.

    SQLAlchemy stores dates on SQLite as ISO text and datetimes as
    ``YYYY-MM-DD HH:MM:SS.ffffff``; the encoders reproduce exactly that.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dates: dict[date, str] = {}

    def _date(self, value: date | None) -> str | None:
        if value is None:
            return None
        text_ = self._dates.get(value)
        if text_ is None:
            text_ = self._dates[value] = value.isoformat()
        return text_

    @staticmethod
    def _stamp(value: datetime | None) -> str | None:
        return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")

    def write(self, chunk: Chunk) -> None:
        d = self._date
        ts = self._stamp
        customers = [
            (
                *r[:6],
                d(r[6]),
                *r[7:13],
                ts(r[13]),
                r[14],
                r[15],
                int(r[16]),
                int(r[17]),
                d(r[18]),
                d(r[19]),
                r[20],
            )
            for r in chunk.customers
        ]
        usage = [(r[0], d(r[1]), r[2], r[3], r[4]) for r in chunk.usage]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(_insert_sql("customers", CUSTOMER_COLUMNS), customers)
            if chunk.clubs:
                conn.exec_driver_sql(_insert_sql("customer_clubs", CLUB_COLUMNS), chunk.clubs)
            if usage:
                conn.exec_driver_sql(_insert_sql("monthly_usage", USAGE_COLUMNS), usage)

    def finish(self) -> None:
        """Nothing to do: SQLite's rowid follows max(id) by itself."""


class PostgresWriter:
    """psycopg ``COPY ... FROM STDIN`` per table, one transaction per chunk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, chunk: Chunk) -> None:
        raw = self.engine.raw_connection()
        try:
            cur = cast(Any, raw.cursor())
            for table, columns, rows in (
                ("customers", CUSTOMER_COLUMNS, chunk.customers),
                ("customer_clubs", CLUB_COLUMNS, chunk.clubs),
                ("monthly_usage", USAGE_COLUMNS, chunk.usage),
            ):
                if not rows:
                    continue
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    write_row: Callable[[Row], None] = copy.write_row
                    for row in rows:
                        write_row(row)
            cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    def finish(self) -> None:
        """COPY with explicit ids does not move the serial sequence; move it past them."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('customers', 'id'), "
                    "COALESCE((SELECT max(id) FROM customers), 0) + 1, false)"
                )
            )
