"""Signed session cookies that expire, and CSRF tokens.

The session cookie holds ``{manager id, session version, issued-at, CSRF token}``
signed with itsdangerous (HMAC-SHA1 over the secret). Expiry is checked against
the app's injected clock, not the wall clock, so tests can move time. The
session version must match the account's: a new password signs every old
session out. Before sign-in, the login form's CSRF token is a second signed
cookie (double submit).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

SESSION_COOKIE = "vipcare_session"
LOGIN_COOKIE = "vipcare_login"
LANG_COOKIE = "vipcare_lang"
CLOCK_SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionData:
    manager_id: int
    version: int
    issued_at: datetime
    csrf: str


class SessionCodec:
    """Signs and reads the two cookies. ``max_age`` is the absolute session lifetime."""

    def __init__(self, secret: str, max_age: timedelta) -> None:
        self.max_age = max_age
        self._session = URLSafeSerializer(secret, salt="vipcare.web.session")
        self._login = URLSafeSerializer(secret, salt="vipcare.web.login-csrf")

    def issue(self, manager_id: int, version: int, at: datetime) -> tuple[str, SessionData]:
        data = SessionData(manager_id, version, at, secrets.token_urlsafe(24))
        token = self._session.dumps([manager_id, version, int(at.timestamp()), data.csrf])
        return token, data

    def read(self, cookie: str | None, now: datetime) -> tuple[SessionData | None, bool]:
        """(session, expired): a valid session, or None and whether it had merely expired."""
        if not cookie:
            return None, False
        try:
            manager_id, version, issued, csrf = self._session.loads(cookie)
            issued_at = datetime.fromtimestamp(int(issued), tz=now.tzinfo)
        except (BadSignature, ValueError, TypeError, OverflowError):
            return None, False
        if issued_at > now + CLOCK_SKEW:
            return None, False
        if now - issued_at >= self.max_age:
            return None, True
        return SessionData(int(manager_id), int(version), issued_at, str(csrf)), False

    def login_token(self) -> tuple[str, str]:
        """(cookie value, form value) for the sign-in form."""
        raw = secrets.token_urlsafe(24)
        return self._login.dumps(raw), raw

    def login_token_ok(self, cookie: str | None, submitted: str | None) -> bool:
        if not cookie or not submitted:
            return False
        try:
            raw = self._login.loads(cookie)
        except BadSignature:
            return False
        return isinstance(raw, str) and hmac.compare_digest(raw, submitted)


def same_token(expected: str, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(expected, submitted or "")
