"""Workspace sessions end for real: a cookie copied before sign-out, a password change or a
role change opens nothing afterwards (issue 16, item 6), on SQLite and PostgreSQL.

Before the fix the session was only a signed cookie: signing out deleted it from the
browser that signed out, but a copy still opened ``/day``, posted ``/settings`` with its
CSRF token and downloaded ``/tasks.csv`` until it expired 12 hours later.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from crm.accounts import set_password
from crm.audit import Actor
from crm.db import transaction
from crm.models import AuditLog, StaffAccount
from tests.web_support import NAMES, World, csrf_of, sign_in
from vipcare.settings import get_settings

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

COOKIE = "vipcare_session"


def _client(world: World) -> TestClient:
    return TestClient(world.app(), base_url="http://testserver")


def _signed_in(world: World, login: str) -> TestClient:
    c = _client(world)
    assert sign_in(c, login).status_code == 303
    return c


def _copy(world: World, original: TestClient) -> TestClient:
    """Another browser holding the same cookie (stolen, or copied from dev tools)."""
    thief = _client(world)
    thief.cookies.set(COOKIE, original.cookies[COOKIE])
    return thief


def _locale_of(world: World, ref: str) -> str | None:
    with transaction(world.engine) as s:
        account = s.scalars(
            select(StaffAccount).where(StaffAccount.manager_id == world.crm.manager_id(ref))
        ).one()
        return account.locale


def _refused(response: Any, notice: str) -> None:
    assert response.status_code == 303, response.text[:300]
    assert response.headers["location"].startswith("/login?")
    assert f"notice={notice}" in response.headers["location"]


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(world: World) -> None:
    browser = _signed_in(world, "M1")
    day = browser.get("/day")
    assert day.status_code == 200 and NAMES["A"] in day.text
    token = csrf_of(day.text)
    thief = _copy(world, browser)
    assert thief.get("/day", follow_redirects=False).status_code == 200  # the copy works...

    out = browser.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303

    # ... until the owner signs out: every page, form and export refuses it
    _refused(thief.get("/day", follow_redirects=False), "signed_out")
    posted = thief.post(
        "/settings",
        data={"csrf_token": token, "locale": "en", "timezone": ""},
        follow_redirects=False,
    )
    _refused(posted, "signed_out")
    assert _locale_of(world, "M1") is None  # the settings did not change
    export = thief.get("/tasks.csv", follow_redirects=False)
    _refused(export, "signed_out")
    assert NAMES["A"] not in export.text
    page = thief.get("/login?notice=signed_out")
    assert "您已退出" in page.text
    with transaction(world.engine) as s:
        actions = s.scalars(select(AuditLog.action).where(AuditLog.actor_id == "M1")).all()
    assert actions.count("account.signed_out") == 1


def test_a_new_password_ends_every_session_of_that_account_and_no_other(world: World) -> None:
    first, second = _signed_in(world, "M1"), _signed_in(world, "M1")
    other = _signed_in(world, "M2")
    with transaction(world.engine) as s:
        set_password(s, "M1", "a-brand-new-pass", world.clock(), Actor("cli", "test"))
    for c in (first, second):
        response = c.get("/day", follow_redirects=False)
        _refused(response, "password_changed")
        page = c.get(response.headers["location"])
        assert "密码已更改" in page.text
    assert other.get("/day", follow_redirects=False).status_code == 200


def test_a_role_change_from_the_cli_ends_the_sessions(world: World, db_url: str, monkeypatch):
    from vipcare.cli import app

    browser = _signed_in(world, "M1")
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["managers", "set-password", "M1", "--role", "supervisor", "--stdin"],
            input="li-na-password\n",
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    response = browser.get("/day", follow_redirects=False)
    _refused(response, "role_changed")
    assert "角色已更改" in browser.get(response.headers["location"]).text


def test_an_expired_session_is_told_apart_from_an_ended_one_and_from_none(world: World) -> None:
    browser = _signed_in(world, "M1")
    world.clock.advance(hours=12)
    _refused(browser.get("/day", follow_redirects=False), "expired")
    nobody = _client(world).get("/day", follow_redirects=False)
    assert nobody.status_code == 303 and "notice=" not in nobody.headers["location"]
    forged = _client(world)
    forged.cookies.set(COOKIE, "not-a-session")
    response = forged.get("/day", follow_redirects=False)
    assert response.status_code == 303 and "notice=" not in response.headers["location"]


def test_signing_in_again_after_sign_out_works(world: World) -> None:
    browser = _signed_in(world, "M1")
    token = csrf_of(browser.get("/day").text)
    browser.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert sign_in(browser, "M1").status_code == 303
    assert browser.get("/day", follow_redirects=False).status_code == 200
