"""Sign in, sign out, the start page and the signed-out language switch."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from crm import staff_sessions
from crm.accounts import LoginThrottled, authenticate, sign_out
from crm.statuses import SignInNotice, values
from vipcare.web.deps import (
    CsrfRejected,
    Viewer,
    WebConfig,
    anonymous_locale,
    checked_form,
    config,
    expires_in,
    local_path,
    plain_form,
    render,
    viewer,
)
from vipcare.web.i18n import LOCALES, N_
from vipcare.web.security import LANG_COOKIE, LOGIN_COOKIE, SESSION_COOKIE

router = APIRouter()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_page(
    request: Request,
    web: WebConfig,
    status_code: int = 200,
    error: tuple[str, int] | None = None,
    notice: str | None = None,
    login: str = "",
    next_path: str = "/",
) -> HTMLResponse:
    cookie, token = web.codec.login_token()
    response = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        error=error,
        notice=notice,
        login=login,
        login_csrf=token,
        next_path=local_path(next_path),
    )
    response.set_cookie(
        LOGIN_COOKIE, cookie, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, web: WebConfig = Depends(config), next: str = "/", notice: str = ""
) -> HTMLResponse:
    explained = notice if notice in values(SignInNotice) else None
    return _login_page(request, web, notice=explained, next_path=next)


@router.post("/login", response_model=None)
async def login(request: Request, web: WebConfig = Depends(config)) -> Response:
    form = await request.form()
    login_id = str(form.get("login", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    next_path = local_path(str(form.get("next", "/")))
    if not web.codec.login_token_ok(
        request.cookies.get(LOGIN_COOKIE), str(form.get("csrf_token", ""))
    ):
        raise CsrfRejected()
    plain_form(form)
    client = request.client.host if request.client else "unknown"
    now = web.clock()

    def check() -> staff_sessions.NewSession | None:
        with web.write() as session:
            account = authenticate(session, login_id, password, client, now, web.login_limits)
            if account is None:
                return None
            return staff_sessions.start(session, account.manager_id, now, web.codec.max_age)

    try:  # argon2 takes a good fraction of a second: keep it off the event loop
        opened = await run_in_threadpool(check)
    except LoginThrottled as exc:
        minutes = max(1, (exc.retry_after + 59) // 60)
        page = _login_page(request, web, 429, (N_("login_throttled"), minutes), login=login_id)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    if opened is None:
        return _login_page(request, web, 401, (N_("login_failed"), 0), login=login_id)
    target = next_path if next_path != "/login" else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        web.codec.cookie(opened.token),
        max_age=expires_in(web.codec.max_age),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(
    request: Request, form: FormData = Depends(checked_form), web: WebConfig = Depends(config)
) -> RedirectResponse:
    """Ends the session on the server: a copy of the cookie opens nothing afterwards."""
    token = web.codec.token(request.cookies.get(SESSION_COOKIE))
    if token is not None:
        with web.write() as session:
            sign_out(session, token, web.clock())
    response = RedirectResponse("/login?notice=signed_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(who: Viewer = Depends(viewer)) -> RedirectResponse:
    return RedirectResponse("/team" if who.is_supervisor else "/day", status_code=303)


@router.get("/lang/{code}")
def switch_language(request: Request, code: str, next: str = "/login") -> RedirectResponse:
    """The language of the signed-out pages (signed in, the settings page decides)."""
    response = RedirectResponse(local_path(next, "/login"), status_code=303)
    if code in LOCALES:
        response.set_cookie(
            LANG_COOKIE,
            code,
            max_age=365 * 24 * 3600,
            samesite="lax",
            secure=_secure(request),
            path="/",
        )
    return response


@router.get("/healthz")
def healthz(request: Request) -> dict[str, str]:
    return {"status": "ok", "locale": anonymous_locale(request)}
