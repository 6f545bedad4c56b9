"""One line about an error, for a person: what went wrong, never a traceback or SQL.

:func:`describe_error` is the driver's message. :func:`outage` classifies the errors
that are not the user's input but the database's state — a full disk, a read-only
database, a lost or refused connection, a busy database, no free connection — into a
:class:`Outage` with one line that says what happened and where (the SQLite file, or
the URL without its password). The CLI prints that line (exit 1); the workspace shows
a page for its ``kind`` (503).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crm.phones import mask_in_text


def describe_error(exc: BaseException) -> str:
    """The driver's message for database errors (no SQL, no parameters); else type and text.

    Invalid rule files give every located problem (``file:line:col: ...``, up to 20) on
    the one line, never just the first line of the listing.
    """
    from rules.errors import RulesValidationError

    if isinstance(exc, RulesValidationError):
        text = str(exc).strip().splitlines()
        if len(text) == 1:  # already one line with its problems (rules.live.NoLiveRules)
            return f"{type(exc).__name__}: {text[0]}"
        head = f"{exc.total} problem{'s' if exc.total != 1 else ''} in the rule files"
        return f"{type(exc).__name__}: {head}: " + "; ".join(exc.listing(overall=20))
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        source = orig if orig is not None else exc
        text = str(source).strip().splitlines()
        return f"database error: {type(source).__name__}: {text[0] if text else ''}".rstrip(": ")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class Outage:
    """Why the database (or the disk) cannot do what was asked, for a person."""

    kind: str
    """``disk_full``, ``read_only``, ``lost`` (connection lost or refused), ``busy``
    (locked, or no free connection), or ``failed`` (any other database error)."""
    line: str


_HINTS = {
    "disk_full": "free some space and run it again",
    "read_only": "make the database writable again (file or mount permissions, or "
    "PostgreSQL's default_transaction_read_only) and run it again",
    "lost": "check that the database server is up and reachable, then run it again",
    "busy": "another process holds the database; run it again in a moment",
    "failed": "run it again; if it keeps failing, tell your operator",
}
_WHAT = {
    "disk_full": "the disk is full",
    "read_only": "the database is read-only",
    "lost": "the connection to the database was lost or refused",
    "busy": "the database is busy",
    "failed": "the database refused the command",
}
_LOST_STATES = ("08", "57P")
_LOST_WORDS = (
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "could not connect",
    "connection is closed",
    "consuming input failed",
    "connection timed out",
    "the connection is lost",
    "ssl syscall error",
)


def outage(exc: BaseException, where: str, path: str | None = None) -> Outage:
    """``exc`` (a database or OS error) as one line naming ``where``.

    ``path`` is the SQLite file, if any: SQLite says "disk I/O error" or "unable to open
    database file" when it cannot create or grow its journal, so a full disk or a
    read-only mount is recognised by looking at the file system.
    """
    orig = getattr(exc, "orig", None) if isinstance(exc, SQLAlchemyError) else None
    source = orig if orig is not None else exc
    text = mask_in_text((str(source).strip().splitlines() or [""])[0]).strip()
    kind = _kind(exc, source, text.lower(), path)
    detail = f"{type(source).__name__}: {text}" if text else type(source).__name__
    return Outage(kind, f"{where}: {_WHAT[kind]} ({detail}); {_HINTS[kind]}")


def _kind(exc: BaseException, source: BaseException, text: str, path: str | None) -> str:
    state = str(getattr(source, "sqlstate", "") or "")
    code = getattr(source, "errno", None)
    if isinstance(exc, PoolTimeout):
        return "busy"
    if code == errno.ENOSPC or state == "53100" or "disk is full" in text:
        return "disk_full"
    if code in (errno.EROFS, errno.EACCES) or state == "25006" or "readonly" in text:
        return "read_only"
    if "read-only" in text:
        return "read_only"
    if path is not None and ("disk i/o error" in text or "unable to open" in text):
        if _no_space(path):
            return "disk_full"
        if _read_only_fs(path):
            return "read_only"
    if state.startswith(_LOST_STATES) or any(w in text for w in _LOST_WORDS):
        return "lost"
    if "database is locked" in text or state in ("55P03", "40P01"):
        return "busy"
    return "failed"


def _read_only_fs(path: str) -> bool:
    """The file system holding ``path`` is mounted read-only."""
    try:
        return bool(os.statvfs(os.path.dirname(os.path.abspath(path)) or ".").f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _no_space(path: str) -> bool:
    """The file system holding ``path`` has (almost) no room left."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free < 1 << 20
    except OSError:
        return False
