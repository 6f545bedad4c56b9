"""Fresh benchmark databases: create, clone and drop, on SQLite and on PostgreSQL.

A size is seeded once; every scenario that must start from the seeded state
(the vipcare run, the SQL floor, the naive sample) gets its own clone: a SQLite
backup, or ``CREATE DATABASE … TEMPLATE`` on PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class BenchError(Exception):
    """A benchmark could not be set up or run; the message says which and why."""


@dataclass(frozen=True)
class Database:
    """One benchmark database: its URL and how to drop it."""

    kind: str
    url: str
    name: str

    @property
    def path(self) -> Path | None:
        return Path(self.name) if self.kind == "sqlite" else None


class Databases:
    """Creates, clones and drops the run's databases (all of them, on :meth:`drop_all`)."""

    def __init__(self, workdir: Path, admin_url: str = PG_ADMIN) -> None:
        self.workdir = workdir
        self.admin_url = admin_url
        self.created: list[Database] = []
        self._prefix = f"vipcare_bench_{os.getpid()}"

    def create(self, kind: str, label: str) -> Database:
        if kind == "sqlite":
            path = self.workdir / f"{label}.db"
            path.unlink(missing_ok=True)
            db = Database(kind, f"sqlite:///{path}", str(path))
        elif kind == "postgresql":
            name = f"{self._prefix}_{label}"
            self._admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
            db = Database(kind, self._pg_url(name), name)
        else:
            raise BenchError(f"unknown database {kind!r}: expected sqlite or postgresql")
        self.created.append(db)
        return db

    def clone(self, source: Database, label: str) -> Database:
        """A copy of ``source`` (no connection to it may be open)."""
        if source.kind == "sqlite":
            path = self.workdir / f"{label}.db"
            path.unlink(missing_ok=True)
            src = sqlite3.connect(source.name)
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            db = Database("sqlite", f"sqlite:///{path}", str(path))
        else:
            name = f"{self._prefix}_{label}"
            for attempt in range(5):  # a late autovacuum worker may still hold the template
                try:
                    self._admin(
                        f'DROP DATABASE IF EXISTS "{name}"',
                        f'CREATE DATABASE "{name}" TEMPLATE "{source.name}"',
                    )
                    break
                except BenchError as exc:
                    if "being accessed by other users" not in str(exc) or attempt == 4:
                        raise
                    time.sleep(3)
            db = Database("postgresql", self._pg_url(name), name)
        self.created.append(db)
        return db

    def drop(self, db: Database) -> None:
        if db.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(db.name + suffix).unlink(missing_ok=True)
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        if db in self.created:
            self.created.remove(db)

    def drop_all(self) -> None:
        for db in list(self.created):
            self.drop(db)

    def _pg_url(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def _admin(self, *statements: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BenchError(f"PostgreSQL at {self.admin_url.split('@')[-1]}: {first}") from exc
        finally:
            engine.dispose()


def server_version(url: str) -> str:
    """The database server's version string (SQLite's library version for SQLite)."""
    if make_url(url).get_backend_name() == "sqlite":
        return sqlite3.sqlite_version
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()
