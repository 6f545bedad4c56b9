"""Workspace sessions, kept server-side so that they can be ended: owner of ``staff_sessions``.

A signed cookie alone cannot be taken back: a copy made before sign-out kept working
until it expired. So every sign-in gets a row here, and every request looks its token up
(:func:`crm.accounts.account_for_session`, one indexed join). Signing out ends that one
session; a new password or a new role ends all of the account's sessions. An ended
session keeps its row, with why it ended, until :data:`RETENTION` after it expired, so
the sign-in page can say "you signed out" or "your password was changed" rather than
treat the visitor as a stranger.

The cookie holds a random token; the table stores only its SHA-256, so a copy of the
table (a backup, a replica) opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from crm.bulk import table_of
from crm.models import SESSION_END_REASONS, StaffSession

EndReason = Literal["signed_out", "password_changed", "role_changed"]
assert set(EndReason.__args__) == set(SESSION_END_REASONS)  # type: ignore[attr-defined]
RETENTION = timedelta(days=30)
"""How long a row outlives its session's expiry (for the sign-in page's explanation)."""

_SESSIONS = table_of(StaffSession)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewSession:
    """What the browser gets: the cookie's token (never stored) and the CSRF token."""

    token: str
    csrf: str
    expires_at: datetime


def start(session: Session, manager_id: int, at: datetime, lifetime: timedelta) -> NewSession:
    """A new session for ``manager_id`` lasting ``lifetime``; rows long expired are dropped."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.execute(
        _SESSIONS.insert().values(
            token_hash=token_hash(token),
            manager_id=manager_id,
            csrf=csrf,
            created_at=at,
            expires_at=at + lifetime,
        )
    )
    session.execute(delete(StaffSession).where(StaffSession.expires_at < at - RETENTION))
    return NewSession(token, csrf, at + lifetime)


def end(session: Session, token: str, at: datetime, reason: EndReason) -> int | None:
    """End the open session of ``token``; its manager id, or None when it was not open."""
    row = session.execute(
        update(_SESSIONS)
        .where(
            _SESSIONS.c.token_hash == token_hash(token),
            _SESSIONS.c.ended_at.is_(None),
        )
        .values(ended_at=at, end_reason=reason)
        .returning(_SESSIONS.c.manager_id)
    ).first()
    return None if row is None else int(row[0])


def end_all(session: Session, manager_id: int, at: datetime, reason: EndReason) -> int:
    """End every session of ``manager_id`` not ended yet; how many that was.

    Expired sessions are included: the clock of the process that ends them (the CLI's)
    need not be the web app's.
    """
    result = session.execute(
        update(_SESSIONS)
        .where(
            _SESSIONS.c.manager_id == manager_id,
            _SESSIONS.c.ended_at.is_(None),
        )
        .values(ended_at=at, end_reason=reason)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
