"""The account-manager workspace as one ASGI app (FastAPI + Jinja2, server-rendered).

``create_app`` wires the routes, the error pages and the static files; nothing
is read from the environment here: the CLI edge builds the settings, the engine
and the clock and passes them in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from crm.accounts import LoginLimits, signing_secret
from crm.db import transaction
from rules import RuleSet
from rules.live import load_live_rules
from vipcare.errors import outage
from vipcare.settings import Settings
from vipcare.web.deps import (
    CsrfRejected,
    Forbidden,
    SignInRequired,
    Viewer,
    WebConfig,
    config,
    plain_url,
    render,
    viewer,
)
from vipcare.web.i18n import N_, known
from vipcare.web.routes import auth, prefs, team, work
from vipcare.web.security import SESSION_COOKIE, SessionCodec

STATIC = Path(__file__).resolve().parent / "static"
OUTAGE_MESSAGES = {
    "read_only": N_("db_read_only"),
    "disk_full": N_("db_disk_full"),
    "lost": N_("db_lost"),
    "busy": N_("db_busy"),
    "failed": N_("db_failed"),
}
"""What the 503 page says for each kind of outage (:func:`vipcare.errors.outage`)."""
log = logging.getLogger(__name__)


def create_app(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    ruleset: RuleSet | None = None,
    login_limits: LoginLimits | None = None,
    page_size: int | None = None,
) -> FastAPI:
    """The workspace. ``clock`` returns aware UTC now: sessions, "today" and audit times."""
    rules = (
        ruleset
        if ruleset is not None
        else load_live_rules(engine, settings.rules_dir, clock()).require()
    )
    if settings.web_secret is not None and settings.web_secret.get_secret_value():
        secret = settings.web_secret.get_secret_value()
    else:
        with transaction(engine) as session:
            secret = signing_secret(session, "session", clock())
    codec = SessionCodec(secret, timedelta(hours=settings.web_session_hours))
    web = WebConfig(engine, settings, clock, rules, codec, login_limits or LoginLimits())
    if page_size is not None:
        web.page_size = page_size
    app = FastAPI(
        title="vipcare workspace",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(plain_url)],
    )
    app.state.web = web
    if settings.trusted_proxies:
        # Only the configured proxies may say who the client is (the sign-in limit counts
        # per client) and whether it came over https (Secure cookies); empty by default.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    for router in (auth.router, work.router, team.router, prefs.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _error_pages(app)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        return response

    return app


def _error_pages(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        target = request.url.path
        if request.url.query and request.method == "GET":
            target += "?" + request.url.query
        query = {"next": target if request.method == "GET" else "/"}
        if exc.reason:
            query["notice"] = exc.reason
        response = RedirectResponse(f"/login?{urlencode(query)}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, N_("forbidden_title"), N_("forbidden"))

    @app.exception_handler(CsrfRejected)
    async def csrf(request: Request, exc: CsrfRejected) -> Response:
        return _error(request, 403, N_("forbidden_title"), N_("form_expired"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(request, 404, N_("not_found_title"), N_("not_found"))
        if exc.status_code == 403:
            return _error(request, 403, N_("forbidden_title"), str(exc.detail))
        if exc.status_code == 405:
            return _error(request, 405, N_("bad_request_title"), N_("not_found"))
        return _error(request, exc.status_code, N_("bad_request_title"), N_("bad_request"))

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> Response:
        return await run_in_threadpool(_unavailable, request, exc)

    @app.exception_handler(OSError)
    async def disk_error(request: Request, exc: OSError) -> Response:
        return await run_in_threadpool(_unavailable, request, exc)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(
            request, "error.html", None, 500, title=N_("error_title"), message=N_("error")
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return _error(request, 400, N_("bad_request_title"), N_("bad_request"))


def _unavailable(request: Request, exc: BaseException) -> HTMLResponse:
    """A full disk, a read-only database, a lost connection: a 503 page that says which,
    in the reader's language, and one line in the log (never a traceback)."""
    web = config(request)
    url = web.engine.url
    path = url.database if url.get_backend_name() == "sqlite" else None
    where = path or url.render_as_string(hide_password=True)
    found = outage(exc, where, path)
    log.warning("%s %s: the database %s", request.method, request.url.path, found.line)
    who: Viewer | None = None
    if found.kind in ("read_only", "disk_full"):  # reads still work: the viewer's language
        try:
            who = viewer(request, web)
        except (SignInRequired, SQLAlchemyError):
            who = None
    message = OUTAGE_MESSAGES.get(found.kind, N_("db_failed"))
    page = render(request, "error.html", who, 503, title=N_("unavailable_title"), message=message)
    page.headers["Retry-After"] = "60"
    return page


def _error(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    if not known(message):
        message = N_("not_found")
    try:
        who: Viewer | None = viewer(request, config(request))
    except (SignInRequired, SQLAlchemyError):  # the page still renders, in the browser's language
        who = None
    return render(request, "error.html", who, status_code=status, title=title, message=message)


class Dispatcher:
    """Routes ``/twilio/...`` to the webhook app and everything else to the workspace."""

    def __init__(self, workspace: ASGIApp, webhooks: ASGIApp | None) -> None:
        self.workspace = workspace
        self.webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if self.webhooks is not None and path.startswith("/twilio/"):
            await self.webhooks(scope, receive, send)
        else:
            await self.workspace(scope, receive, send)
