"""Engines and sessions. Nothing is created at import time: callers pass a URL in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for vipcare: SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins, so
            # that BEGIN IMMEDIATE below really takes the write lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if parsed.database and parsed.database != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "sqlite"


GROWING_TABLES = ("journey_occurrences", "call_tasks", "outbound_messages", "grace_periods")
"""The tables a care day inserts into and later queries by (predicates, notices, hygiene)."""


def refresh_statistics(engine: Engine, tables: Sequence[str] = GROWING_TABLES) -> None:
    """PostgreSQL: ``ANALYZE`` tables that just grew by thousands of rows; no-op on SQLite.

    Autovacuum catches up only later: until then the planner believes a freshly
    filled table is empty and picks nested loops that rescan it per row (a
    semi-join over 10k waiting calls took 0.7 s at 10,000 customers). Each table
    in its own short autocommit statement, so concurrent runs never wait long.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            auto.exec_driver_sql(f"ANALYZE {engine.dialect.identifier_preparer.quote(table)}")
