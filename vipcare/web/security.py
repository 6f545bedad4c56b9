"""Session cookies and CSRF tokens.

The session cookie holds the random token of a server-side session
(:mod:`crm.staff_sessions`), signed with itsdangerous (HMAC-SHA1 over the secret)
so that a forged cookie is refused before any database lookup. Whether the
session is still open (not expired by the app's injected clock, not ended by a
sign-out, a new password or a new role) is decided by its row, on every request.
Before sign-in, the login form's CSRF token is a second signed cookie (double submit).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeSerializer

SESSION_COOKIE = "vipcare_session"
LOGIN_COOKIE = "vipcare_login"
LANG_COOKIE = "vipcare_lang"


class SessionCodec:
    """Signs and reads the two cookies. ``max_age`` is the absolute session lifetime."""

    def __init__(self, secret: str, max_age: timedelta) -> None:
        self.max_age = max_age
        self._session = URLSafeSerializer(secret, salt="vipcare.web.session")
        self._login = URLSafeSerializer(secret, salt="vipcare.web.login-csrf")

    def cookie(self, token: str) -> str:
        """The cookie value carrying a session's token."""
        return self._session.dumps(token)

    def token(self, cookie: str | None) -> str | None:
        """The session token in a cookie, or None when there is none or it is not ours."""
        if not cookie:
            return None
        try:
            token = self._session.loads(cookie)
        except BadSignature:
            return None
        return token if isinstance(token, str) and token else None

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
