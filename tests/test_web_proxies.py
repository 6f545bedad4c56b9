"""Proxy headers are trusted only from the configured proxies (issue 16, item 10).

The workspace is served by uvicorn on a real socket with the options ``vipcare web``
uses. Before the fix uvicorn trusted ``X-Forwarded-For`` from 127.0.0.1 by default, so
a guesser on the same host (or behind any local reverse proxy) that sent a different
address with each try was a new client every time: 55 of 55 sign-in tries, none
throttled.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from crm.db import transaction
from crm.models import LoginFailure
from tests.served_app import served
from tests.web_support import World, csrf_of
from vipcare.settings import Settings
from vipcare.web.serve import server_options

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

TRIES = 55  # the per-client limit is 50 within 15 minutes


def _guess(world: World, base: str, forwarded: bool) -> list[int]:
    """55 wrong passwords for 55 different ids, each claiming another client address."""
    statuses = []
    with httpx.Client(base_url=base) as c:
        token = csrf_of(c.get("/login").text)
        for n in range(TRIES):
            headers = {"X-Forwarded-For": f"198.51.100.{n + 1}"} if forwarded else {}
            r = c.post(
                "/login",
                data={"login": f"X{n:04d}", "password": "wrong-password", "csrf_token": token},
                headers=headers,
            )
            statuses.append(r.status_code)
            token = csrf_of(r.text)
    return statuses


def _with(world: World, **settings: object) -> Settings:
    return world.settings.model_copy(update=settings)


def test_a_rotating_x_forwarded_for_does_not_bypass_the_sign_in_limit(world: World) -> None:
    settings = world.settings
    assert settings.trusted_proxies == ()  # the default: nobody's proxy headers count
    with served(world.app(), **server_options(settings)) as base:
        statuses = _guess(world, base, forwarded=True)
    assert statuses.count(401) == 50, statuses
    assert statuses[50:] == [429] * 5
    with transaction(world.engine) as s:
        clients = set(s.scalars(select(LoginFailure.client)))
    assert clients == {"127.0.0.1"}


def test_a_configured_proxy_is_believed_about_its_clients(world: World) -> None:
    settings = _with(world, trusted_proxies=("127.0.0.1",))
    world.settings = settings
    with served(world.app(), **server_options(settings)) as base:
        statuses = _guess(world, base, forwarded=True)
    assert statuses == [401] * TRIES  # 55 different clients behind the proxy, one try each
    with transaction(world.engine) as s:
        clients = set(s.scalars(select(LoginFailure.client)))
    assert clients == {f"198.51.100.{n + 1}" for n in range(TRIES)}


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", ()),
        ("10.0.0.5", ("10.0.0.5",)),
        (" 10.0.0.5 , 192.168.0.0/16,::1", ("10.0.0.5", "192.168.0.0/16", "::1")),
    ],
)
def test_the_trusted_proxies_setting_is_a_comma_separated_list(monkeypatch, raw, parsed):
    monkeypatch.setenv("VIPCARE_TRUSTED_PROXIES", raw)
    assert Settings(_env_file=None).trusted_proxies == parsed  # type: ignore[call-arg]


def test_a_trusted_proxy_that_is_not_an_address_is_a_configuration_error(monkeypatch):
    from typer.testing import CliRunner

    from vipcare.cli import app
    from vipcare.settings import get_settings

    monkeypatch.setenv("VIPCARE_TRUSTED_PROXIES", "10.0.0.5,my-proxy.local")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["web"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "VIPCARE_TRUSTED_PROXIES" in result.output and "my-proxy.local" in result.output
    assert "Traceback" not in result.output
