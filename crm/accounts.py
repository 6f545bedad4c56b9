"""Workspace sign-in: staff accounts, argon2 passwords, the login rate limit, signing keys.

Owner of ``staff_accounts``, ``login_failures`` and ``web_secrets`` (and of a
manager's workspace preferences); the sessions themselves belong to
:mod:`crm.staff_sessions`. Passwords are only ever stored as argon2 hashes; a
wrong id and a wrong password are indistinguishable to the caller, and cost the
same time. Failed sign-ins are counted in the database, so every web process
enforces one limit. A new password or a new role ends every open session of the
account.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from crm import audit, staff_sessions
from crm.audit import Actor, AuditEntry
from crm.bulk import insert_ignoring_conflicts
from crm.errors import CrmError, NotFound
from crm.models import (
    ACCOUNT_ROLES,
    LoginFailure,
    Manager,
    StaffAccount,
    StaffSession,
    WebSecret,
)
from crm.text import describe, first_invisible

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
LOCALES = ("zh-CN", "en")


class AccountError(CrmError):
    """A password, role or preference the account module refuses."""


class LoginThrottled(CrmError):
    """Too many failed sign-ins; ``retry_after`` seconds until the next try is allowed."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed sign-ins; try again in {retry_after} seconds")


@dataclass(frozen=True)
class LoginLimits:
    """At most ``per_login`` failures per login id and ``per_client`` per client address
    within ``window``; the oldest failure leaving the window frees one try."""

    window: timedelta = timedelta(minutes=15)
    per_login: int = 5
    per_client: int = 50


@dataclass(frozen=True)
class Account:
    """Who is signed in: what the workspace needs on every request."""

    manager_id: int
    manager_ref: str
    name: str
    role: str
    session_version: int
    locale: str | None
    timezone: str | None

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when the login id is unknown, so both answers take as long."""
    return hasher().hash(secrets.token_urlsafe(16))


def _manager(session: Session, manager_ref: str) -> Manager:
    manager = session.scalar(select(Manager).where(Manager.external_id == manager_ref))
    if manager is None:
        raise NotFound(f"unknown manager {manager_ref!r}")
    return manager


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"the password is {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    if password != password.strip():
        raise AccountError("the password starts or ends with a space; remove it")


def set_password(
    session: Session,
    manager_ref: str,
    password: str,
    at: datetime,
    actor: Actor,
    role: str | None = None,
) -> Account:
    """Create or update the sign-in of a manager; ends every open session of it.

    ``role`` None keeps the current role (``manager`` for a new account).
    """
    if role is not None and role not in ACCOUNT_ROLES:
        raise AccountError(f"unknown role {role!r}; expected one of {', '.join(ACCOUNT_ROLES)}")
    check_password(password)
    manager = _manager(session, manager_ref)
    digest = hasher().hash(password)
    account = session.get(StaffAccount, manager.id, with_for_update=True)
    ended = 0
    if account is None:
        account = StaffAccount(
            manager_id=manager.id,
            role=role or "manager",
            password_hash=digest,
            session_version=1,
            password_set_at=at,
        )
        session.add(account)
    else:
        role_changed = role is not None and role != account.role
        account.password_hash = digest
        account.session_version += 1
        account.password_set_at = at
        if role is not None:
            account.role = role
        ended = staff_sessions.end_all(
            session, manager.id, at, "role_changed" if role_changed else "password_changed"
        )
    session.flush()
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action="account.password_set",
                details={
                    "manager": manager.external_id,
                    "role": account.role,
                    "sessions_ended": ended,
                },
                entity=f"manager:{manager.external_id}",
            )
        ],
    )
    return _view(manager, account)


def add_staff(
    session: Session, ref: str, name: str, phone: str, at: datetime, actor: Actor
) -> bool:
    """A managers row for staff without customers (a supervisor): capacity 0. False when
    the id exists already (nothing changes)."""
    for what, value in (("id", ref), ("name", name)):
        if (hidden := first_invisible(value)) is not None:
            raise AccountError(
                f"the staff {what} {value!r} has the invisible character {describe(hidden[1])} "
                f"at character {hidden[0]}"
            )
    if session.scalar(select(Manager.id).where(Manager.external_id == ref)) is not None:
        return False
    session.add(Manager(external_id=ref, name=name, phone=phone, email=None, daily_call_capacity=0))
    session.flush()
    audit.append(
        session,
        actor,
        at,
        [AuditEntry(action="manager.added", details={"name": name}, entity=f"manager:{ref}")],
    )
    return True


def _view(manager: Manager, account: StaffAccount) -> Account:
    return Account(
        manager_id=manager.id,
        manager_ref=manager.external_id,
        name=manager.name,
        role=account.role,
        session_version=account.session_version,
        locale=account.locale,
        timezone=manager.timezone,
    )


def account_for(session: Session, manager_id: int) -> Account | None:
    """The account behind a session, or None when it no longer exists.

    Asked on every request: one indexed join of plain columns on the connection.
    """
    row = (
        session.connection()
        .execute(
            select(
                Manager.id,
                Manager.external_id,
                Manager.name,
                StaffAccount.role,
                StaffAccount.session_version,
                StaffAccount.locale,
                Manager.timezone,
            )
            .join(StaffAccount, StaffAccount.manager_id == Manager.id)
            .where(Manager.id == manager_id)
        )
        .first()
    )
    return None if row is None else Account(*row)


@dataclass(frozen=True)
class SessionCheck:
    """What a session cookie's token opens: an account, or why it opens nothing.

    ``state`` is ``open`` (``account`` and ``csrf`` set), ``expired``, ``ended``
    (``reason`` says why: signed out, password or role changed) or ``unknown`` (no
    such session: a forged token or a row long gone).
    """

    state: str
    account: Account | None = None
    csrf: str = ""
    reason: str | None = None


def account_for_session(session: Session, token: str, now: datetime) -> SessionCheck:
    """The account behind a session token, checked on every request: one indexed join."""
    row = (
        session.connection()
        .execute(
            select(
                Manager.id,
                Manager.external_id,
                Manager.name,
                StaffAccount.role,
                StaffAccount.session_version,
                StaffAccount.locale,
                Manager.timezone,
                StaffSession.csrf,
                StaffSession.expires_at,
                StaffSession.end_reason,
            )
            .join(StaffAccount, StaffAccount.manager_id == StaffSession.manager_id)
            .join(Manager, Manager.id == StaffSession.manager_id)
            .where(StaffSession.token_hash == staff_sessions.token_hash(token))
        )
        .first()
    )
    if row is None:
        return SessionCheck("unknown")
    if row.end_reason is not None:
        return SessionCheck("ended", reason=row.end_reason)
    if now >= row.expires_at:
        return SessionCheck("expired", reason="expired")
    return SessionCheck("open", Account(*row[:7]), row.csrf)


def sign_out(session: Session, token: str, at: datetime) -> bool:
    """End the session of ``token`` (audited ``account.signed_out``); False if it was not open."""
    manager_id = staff_sessions.end(session, token, at, "signed_out")
    if manager_id is None:
        return False
    ref = session.scalar(select(Manager.external_id).where(Manager.id == manager_id))
    audit.append(
        session,
        Actor("manager", ref or str(manager_id)),
        at,
        [AuditEntry(action="account.signed_out", entity=f"manager:{ref}")],
    )
    return True


def _login_key(login: str) -> str:
    return login.strip().casefold()[:64]


def _throttle_wait(
    session: Session,
    col: InstrumentedAttribute[str],
    key: str,
    limit: int,
    at: datetime,
    window: timedelta,
) -> int:
    """Seconds until ``key`` may try again (0: now)."""
    since = at - window
    count, oldest = session.execute(
        select(func.count(), func.min(LoginFailure.at)).where(col == key, LoginFailure.at > since)
    ).one()
    if count < limit or oldest is None:
        return 0
    if count > limit:  # the window holds more than the limit: wait for enough to age out
        oldest = session.scalars(
            select(LoginFailure.at)
            .where(col == key, LoginFailure.at > since)
            .order_by(LoginFailure.at.desc())
            .offset(limit - 1)
            .limit(1)
        ).one()
    return max(1, int((oldest + window - at).total_seconds() + 0.999))


def authenticate(
    session: Session,
    login: str,
    password: str,
    client: str,
    at: datetime,
    limits: LoginLimits | None = None,
) -> Account | None:
    """The account for a correct id and password, else None (and the failure is counted).

    Raises :class:`LoginThrottled` before checking anything when the id or the
    client has failed too often within the window. Runs in the caller's
    transaction: commit it, also when this returns None, so the failure counts.
    """
    limits = limits or LoginLimits()
    key = _login_key(login)
    client_key = (client or "unknown")[:64]
    wait = max(
        _throttle_wait(session, LoginFailure.login, key, limits.per_login, at, limits.window),
        _throttle_wait(
            session, LoginFailure.client, client_key, limits.per_client, at, limits.window
        ),
    )
    if wait:
        raise LoginThrottled(wait)
    row = session.execute(
        select(Manager, StaffAccount)
        .join(StaffAccount, StaffAccount.manager_id == Manager.id)
        .where(Manager.external_id == login.strip())
    ).first()
    digest = row[1].password_hash if row is not None else _dummy_hash()
    try:
        ok = hasher().verify(digest, password) and row is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        session.add(LoginFailure(login=key, client=client_key, at=at))
        session.execute(delete(LoginFailure).where(LoginFailure.at < at - limits.window * 4))
        return None
    manager, account = row
    session.execute(delete(LoginFailure).where(LoginFailure.login == key))
    if hasher().check_needs_rehash(account.password_hash):
        account.password_hash = hasher().hash(password)
    audit.append(
        session,
        Actor("manager", manager.external_id),
        at,
        [AuditEntry(action="account.signed_in", entity=f"manager:{manager.external_id}")],
    )
    return _view(manager, account)


def set_preferences(
    session: Session,
    manager_id: int,
    locale: str | None,
    timezone: str | None,
    at: datetime,
    actor: Actor,
) -> Account:
    """The workspace language (None: the browser's) and time zone (None: the operator's)."""
    if locale is not None and locale not in LOCALES:
        raise AccountError(f"unknown language {locale!r}; expected one of {', '.join(LOCALES)}")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise AccountError(f"unknown IANA time zone {timezone!r}") from None
    manager = session.get(Manager, manager_id)
    account = session.get(StaffAccount, manager_id)
    if manager is None or account is None:
        raise NotFound(f"no account for manager id {manager_id}")
    changed = {}
    if account.locale != locale:
        changed["locale"] = locale
        account.locale = locale
    if manager.timezone != timezone:
        changed["timezone"] = timezone
        manager.timezone = timezone
    if changed:
        audit.append(
            session,
            actor,
            at,
            [
                AuditEntry(
                    action="account.preferences",
                    details=changed,
                    entity=f"manager:{manager.external_id}",
                )
            ],
        )
    return _view(manager, account)


def signing_secret(session: Session, name: str, at: datetime) -> str:
    """A random key stored once per database, so every process signs with the same one.

    The first caller creates it; a concurrent first caller's insert is ignored and
    both read the winner's. Never printed or logged.
    """
    found = session.scalar(select(WebSecret.value).where(WebSecret.name == name))
    if found is not None:
        return found
    insert_ignoring_conflicts(
        session,
        WebSecret,
        [{"name": name, "value": secrets.token_urlsafe(48), "created_at": at}],
        "name",
    )
    return session.scalars(select(WebSecret.value).where(WebSecret.name == name)).one()
