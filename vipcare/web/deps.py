"""What every route shares: the app's configuration, who is asking, and page rendering.

``viewer`` reads the signed session cookie and looks its server-side session and
account up (one indexed query), so a session that was ended is refused at once;
``supervisor`` adds the role check; ``checked_form`` parses a POST body and
refuses it (403) unless its CSRF token matches the session's. Every POST route
takes ``checked_form``, so none can forget the check.

Input the database cannot hold never reaches it: ``plain_url`` (an app-wide
dependency) and ``plain_form`` refuse control characters such as NUL, which
PostgreSQL rejects in any text, and ``RowId`` and ``PageNumber`` bound the
integers that become ids and offsets to what a 64-bit column holds. Each is a
400 page, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from crm.accounts import Account, LoginLimits, account_for_session
from crm.db import session_factory
from crm.tasks import RetryPolicy
from rules import RuleSet
from vipcare.settings import Settings
from vipcare.web import charts
from vipcare.web.fmt import Formatter
from vipcare.web.i18n import pick_locale
from vipcare.web.security import LANG_COOKIE, SESSION_COOKIE, SessionCodec, same_token

TEMPLATES = FilePath(__file__).resolve().parent / "templates"
PAGE_SIZE = 50
MAX_ROW_ID = 2**63 - 1
"""The largest id a BIGINT (PostgreSQL) or INTEGER (SQLite) key can hold."""
MAX_PAGE = 1_000_000
"""Far past any list's end; keeps ``(page - 1) * page_size`` a 64-bit offset."""
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
PageNumber = Annotated[int, Query(le=MAX_PAGE)]
# C0 controls but tab, newline and carriage return (notes are multi-line), and DEL.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class WebConfig:
    """Built once per app; routes read it from ``request.app.state.web``."""

    engine: Engine
    settings: Settings
    clock: Callable[[], datetime]
    ruleset: RuleSet
    codec: SessionCodec
    login_limits: LoginLimits = field(default_factory=LoginLimits)
    page_size: int = PAGE_SIZE

    @property
    def operator_tz(self) -> ZoneInfo:
        return self.settings.tz

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (rolled back at the end)."""
        with session_factory(self.engine)() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with session_factory(self.engine)() as session, session.begin():
            yield session

    def retry_policy(self) -> RetryPolicy:
        rule = self.ruleset.journeys.get("callback")
        trigger = getattr(rule, "trigger", None)
        if trigger is None:
            return RetryPolicy()
        return RetryPolicy(trigger.no_answer_retry_days, trigger.max_attempts)


templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.auto_reload = False  # templates ship with the package; no stat() per render
templates.env.globals["quote"] = quote
templates.env.globals["charts"] = charts


def config(request: Request) -> WebConfig:
    web: WebConfig = request.app.state.web
    return web


class SignInRequired(Exception):
    """No valid session: the app answers with a redirect to the sign-in page.

    ``reason`` tells a session that ended (``expired``, ``signed_out``,
    ``password_changed``, ``role_changed``) from none at all (None), so the sign-in
    page can explain what happened.
    """

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason


class Forbidden(Exception):
    """Signed in, but the role does not allow this page (403)."""


class CsrfRejected(Exception):
    """A POST without the session's CSRF token (403)."""


@dataclass(frozen=True)
class Viewer:
    account: Account
    csrf: str
    locale: str
    tz: ZoneInfo
    now: datetime

    @property
    def today(self) -> date:
        return self.now.astimezone(self.tz).date()

    @property
    def is_supervisor(self) -> bool:
        return self.account.is_supervisor

    def owns(self, manager_id: int | None) -> bool:
        return manager_id is not None and manager_id == self.account.manager_id


def anonymous_locale(request: Request) -> str:
    return pick_locale(
        None, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
    )


def viewer(request: Request, web: WebConfig = Depends(config)) -> Viewer:
    now = web.clock()
    token = web.codec.token(request.cookies.get(SESSION_COOKIE))
    if token is None:
        raise SignInRequired()
    with web.read() as session:
        found = account_for_session(session, token, now)
    account = found.account
    if account is None:
        raise SignInRequired(found.reason)
    locale = pick_locale(
        account.locale, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
    )
    tz = ZoneInfo(account.timezone) if account.timezone else web.operator_tz
    return Viewer(account, found.csrf, locale, tz, now)


def supervisor(who: Viewer = Depends(viewer)) -> Viewer:
    if not who.is_supervisor:
        raise Forbidden()
    return who


def score(value: str, low: int = 1, high: int = 5) -> int | None:
    """An ASCII whole number in ``low..high``, else None (``'¹'.isdigit()`` is true, yet
    ``int('¹')`` fails)."""
    if value.isascii() and value.isdigit() and low <= int(value) <= high:
        return int(value)
    return None


def plain_url(request: Request) -> None:
    """Every route's guard: a path or query with a control character is a 400."""
    if CONTROL.search(request.url.path) or any(
        CONTROL.search(key) or CONTROL.search(value)
        for key, value in request.query_params.multi_items()
    ):
        raise HTTPException(400, detail="control character")


def plain_form(form: FormData) -> FormData:
    """The form, or a 400 when a field holds a control character (NUL cannot be stored)."""
    for key, value in form.multi_items():
        if CONTROL.search(key) or (isinstance(value, str) and CONTROL.search(value)):
            raise HTTPException(400, detail="control character")
    return form


async def checked_form(request: Request, who: Viewer = Depends(viewer)) -> FormData:
    form = await request.form()
    token = form.get("csrf_token")
    if not same_token(who.csrf, token if isinstance(token, str) else None):
        raise CsrfRejected()
    return plain_form(form)


def render(
    request: Request,
    template: str,
    who: Viewer | None,
    status_code: int = 200,
    locale: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page in the viewer's language and zone (the browser's language when signed out)."""
    web = config(request)
    lang = who.locale if who else (locale or anonymous_locale(request))
    tz = who.tz if who else web.operator_tz
    fmt = Formatter(lang, tz)
    context.update(
        request=request,
        who=who,
        locale=lang,
        t=fmt.t,
        f=fmt,
        tz_name=str(tz),
        csrf=who.csrf if who else "",
        path=request.url.path,
    )
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def local_path(target: str | None, default: str = "/") -> str:
    """Only same-site paths may be redirect targets (no ``//host`` or ``https://``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def expires_in(max_age: timedelta) -> int:
    return int(max_age.total_seconds())
