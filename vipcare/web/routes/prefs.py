"""The viewer's own settings: language and time zone."""

from __future__ import annotations

from zoneinfo import available_timezones

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from crm.accounts import AccountError, set_preferences
from crm.audit import Actor
from vipcare.web.deps import Viewer, WebConfig, checked_form, config, render, viewer
from vipcare.web.i18n import LOCALES

router = APIRouter()


def _zones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))


def _page(
    request: Request,
    who: Viewer,
    web: WebConfig,
    status_code: int = 200,
    error: str | None = None,
    saved: bool = False,
) -> HTMLResponse:
    return render(
        request,
        "settings.html",
        who,
        status_code=status_code,
        locales=LOCALES,
        zones=_zones(),
        operator_tz=str(web.operator_tz),
        error=error,
        saved=saved,
    )


@router.get("/settings", response_class=HTMLResponse)
def settings_page(
    request: Request,
    saved: int = 0,
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    return _page(request, who, web, saved=bool(saved))


@router.post("/settings", response_model=None)
def save_settings(
    request: Request,
    form: FormData = Depends(checked_form),
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> Response:
    locale = str(form.get("locale", "")) or None
    timezone = str(form.get("timezone", "")).strip() or None
    if locale is not None and locale not in LOCALES:
        locale = None
    try:
        with web.write() as session:
            set_preferences(
                session,
                who.account.manager_id,
                locale,
                timezone,
                web.clock(),
                Actor("manager", who.account.manager_ref),
            )
    except AccountError:
        return _page(request, who, web, 400, error=timezone)
    return RedirectResponse("/settings?saved=1", status_code=303)
