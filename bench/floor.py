"""The SQL floor: the least database work a first care day cannot avoid, through the bare driver.

It counts, exactly:

* **read**: for each journey, as many customer rows as that journey had candidates
  on the first day, with the columns every journey reads (the customer joined to
  its manager), keyset-paginated 5,000 rows a statement;
* **write**: the very rows the first day inserted into ``journey_occurrences``,
  ``credit_ledger``, ``grace_periods``, ``outbound_messages``, ``call_tasks``,
  ``audit_log`` and ``journey_passes`` (copied from the vipcare run's database,
  which is not timed), inserted into a fresh clone of the seeded database with
  the driver's ``executemany``, 5,000 rows a statement, one transaction each (on
  PostgreSQL a second floor does the same with ``COPY … FROM STDIN``, the driver's
  fastest path; the targets are judged against the lower of the two);
* not counted: deciding, rendering, hashing the audit chain (the copied rows carry
  their hashes), and the customers' balance/status updates of grace credits and
  suspensions (a few percent of the rows).

The driver is the one vipcare uses: ``sqlite3`` for SQLite, ``psycopg`` 3 for
PostgreSQL. No SQLAlchemy, no ORM.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import make_url

BATCH = 5000
READ_COLUMNS = (
    "c.id, c.external_id, c.name, c.phone, c.locale, c.timezone, c.tier, c.status, "
    "c.balance, c.points, c.sms_opt_out, c.do_not_call, c.manager_id, "
    "m.name, m.name_latin, m.phone"
)


def _connect(url: str) -> Any:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database or "", isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    import psycopg

    return psycopg.connect(
        parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    )


def _is_sqlite(conn: Any) -> bool:
    return isinstance(conn, sqlite3.Connection)


def _begin(conn: Any) -> None:
    if _is_sqlite(conn):
        conn.execute("BEGIN IMMEDIATE")


def read_customers(conn: Any, rows: int) -> int:
    """Read ``rows`` candidate rows, keyset-paginated as the journeys read theirs."""
    mark = "?" if _is_sqlite(conn) else "%s"
    sql = (
        f"SELECT {READ_COLUMNS} FROM customers c LEFT JOIN managers m ON m.id = c.manager_id "
        f"WHERE c.id > {mark} ORDER BY c.id LIMIT {mark}"
    )
    done, last = 0, 0
    cur = conn.cursor()
    while done < rows:
        cur.execute(sql, (last, min(BATCH, rows - done)))
        batch = cur.fetchall()
        if not batch:
            break
        done += len(batch)
        last = batch[-1][0]
    if not _is_sqlite(conn):
        conn.rollback()
    return done


def _chunks(conn: Any, table: Any, low: int, high: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` with low < pk <= high, a batch at a time, as insertable tuples."""
    (pk,) = table.primary_key.columns
    sqlite = _is_sqlite(conn)
    mark = "?" if sqlite else "%s"
    json_at = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    sql = (
        f'SELECT {names} FROM "{table.name}" WHERE "{pk.name}" > {mark} AND "{pk.name}" <= {mark} '
        f'ORDER BY "{pk.name}" LIMIT {BATCH}'
    )
    wrap: Any = None
    if not sqlite and json_at:
        from psycopg.types.json import Json

        wrap = Json
    pk_at = [c.name for c in table.columns].index(pk.name)
    cur = conn.cursor()
    last = low
    while True:
        cur.execute(sql, (last, high))
        rows = cur.fetchall()
        if not sqlite:
            conn.rollback()
        if not rows:
            return
        last = rows[-1][pk_at]
        if wrap is not None:
            rows = [
                tuple(wrap(v) if i in json_at and v is not None else v for i, v in enumerate(r))
                for r in rows
            ]
        yield rows


def measure_floor(
    source_url: str,
    target_url: str,
    marks: dict[str, Sequence[int]],
    candidates: dict[str, int],
    method: str = "executemany",
) -> dict[str, Any]:
    """Time the floor on ``target_url`` (a clone of the seeded database).

    ``method`` is ``executemany`` or, on PostgreSQL only, ``copy`` (``COPY … FROM STDIN``).
    """
    if method not in ("executemany", "copy"):
        raise ValueError(f"unknown floor method {method!r}: expected executemany or copy")
    from crm.models import Base

    source = _connect(source_url)
    target = _connect(target_url)
    sqlite = _is_sqlite(target)
    mark = "?" if sqlite else "%s"
    read_seconds = 0.0
    rows_read = 0
    for _journey, count in candidates.items():
        t = time.perf_counter()
        rows_read += read_customers(target, count)
        read_seconds += time.perf_counter() - t
    write_seconds = 0.0
    inserted: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        if table.name not in marks:
            continue
        low, high = marks[table.name]
        names = ", ".join(f'"{c.name}"' for c in table.columns)
        sql = (
            f'INSERT INTO "{table.name}" ({names}) VALUES '
            f"({', '.join([mark] * len(table.columns))})"
        )
        inserted[table.name] = 0
        for rows in _chunks(source, table, low, high):
            t = time.perf_counter()
            _begin(target)
            if method == "copy" and not sqlite:
                with target.cursor().copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                target.cursor().executemany(sql, rows)
            target.commit() if not sqlite else target.execute("COMMIT")
            write_seconds += time.perf_counter() - t
            inserted[table.name] += len(rows)
    source.close()
    target.close()
    return {
        "seconds": read_seconds + write_seconds,
        "read_seconds": read_seconds,
        "write_seconds": write_seconds,
        "rows_read": rows_read,
        "rows_inserted": inserted,
        "rows": rows_read + sum(inserted.values()),
        "method": "executemany" if sqlite else method,
    }
