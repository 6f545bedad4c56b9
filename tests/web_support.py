"""A small workspace world for the HTTP and browser tests: two managers and a supervisor,
customers with ready, waiting and other managers' call tasks, passwords set, and a
clock the tests move."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from crm.accounts import LoginLimits, set_password
from crm.audit import Actor
from crm.db import transaction
from crm.models import CallTask, Customer, CustomerClub
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from notifications.dispatcher import dispatch
from tests.builders import SHANGHAI, Crm, months_before
from vipcare.settings import Settings
from vipcare.web import create_app

AS_OF = date(2026, 11, 23)  # a Monday
PASSWORDS = {"M1": "li-na-password", "M2": "zhang-wei-password", "S1": "supervisor-password"}
NAMES = {
    "A": "Alice Opted-Out",
    "B": "Bob Notified",
    "D": "Dora Platinum",
    "E": "Eve Waiting",
    "C": "Carol Other-Manager",
}


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI).astimezone(UTC)


class Clock:
    """The app's injected wall clock; tests move it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    engine: Engine
    crm: Crm
    clock: Clock
    settings: Settings
    tasks: dict[str, int] = field(default_factory=dict)
    store: MockStore = field(default_factory=MockStore)

    def app(self, **kw: Any) -> Any:
        kw.setdefault("login_limits", LoginLimits())
        return create_app(
            self.engine, self.settings, clock=self.clock, ruleset=self.crm.ruleset, **kw
        )

    def dispatch(self, at: datetime) -> None:
        dispatch(
            self.engine,
            self.settings.notifications(),
            self.crm.ruleset.contact_policy,
            at,
            lead_time=self.crm.ruleset.precall_lead_time,
            backends={
                "sms": MockSMSBackend(store=self.store),
                "voice": MockVoiceBackend(store=self.store),
            },
        )

    def task(self, customer: str) -> CallTask:
        with transaction(self.engine) as s:
            return s.scalars(
                select(CallTask)
                .join(Customer, Customer.id == CallTask.customer_id)
                .where(Customer.external_id == customer)
                .order_by(CallTask.id.desc())
            ).first()  # type: ignore[return-value]


def build_world(engine: Engine) -> World:
    """M1 (Li Na) has A (ready, no notice: opted out), B (ready: notice sent), D (ready)
    and E (waiting: notice still queued); M2 has C; S1 supervises and has no customers."""
    crm = Crm(engine)
    plan = crm.plan("P128", fee="128.00", voice=500, data=10240, sms=100)
    crm.manager("M1", capacity=10, name="Li Na")
    crm.manager("M2", capacity=10, name="Zhang Wei")
    crm.manager("S1", capacity=0, name="Wang Supervisor")
    m1, m2 = crm.manager_id("M1"), crm.manager_id("M2")
    long_ago = AS_OF - timedelta(days=40)
    a = crm.customer(
        "A", name=NAMES["A"], tier="diamond", sms_opt_out=True, last_contact_on=long_ago,
        manager_id=m1, plan_id=plan, clubs=[CustomerClub(club="music"), CustomerClub(club="film")],
    )  # fmt: skip
    crm.usage(a, months_before(AS_OF, 3), voice=650, data=4096, sms=20)
    crm.customer("B", name=NAMES["B"], tier="diamond", last_contact_on=long_ago, manager_id=m1)
    crm.customer(
        "D", name=NAMES["D"], tier="platinum", last_contact_on=AS_OF - timedelta(days=70),
        manager_id=m1,
    )  # fmt: skip
    crm.customer("C", name=NAMES["C"], tier="diamond", last_contact_on=long_ago, manager_id=m2)
    crm.run(AS_OF)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        timezone="Asia/Shanghai",
        web_session_hours=12,
        send_rate_per_second=1000.0,
        dispatch_concurrency=2,
        batch_size=100,
    )
    world = World(engine, crm, Clock(local(AS_OF, 11, 30)), settings)
    world.dispatch(local(AS_OF, 9, 0))
    world.dispatch(local(AS_OF, 11, 5))  # the notices' 2-hour lead time has passed
    crm.customer("E", name=NAMES["E"], tier="diamond", last_contact_on=long_ago, manager_id=m1)
    crm.run(AS_OF, "callback", "precall_notice", at=local(AS_OF, 11, 10))  # E's stays queued
    with transaction(engine) as s:
        for ref, password in PASSWORDS.items():
            role = "supervisor" if ref == "S1" else "manager"
            set_password(s, ref, password, local(AS_OF, 8), Actor("cli", "test"), role=role)
    for ref in NAMES:
        world.tasks[ref] = world.task(ref).id
    return world


@pytest.fixture
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2 with light parameters: the web tests sign in hundreds of times."""
    from argon2 import PasswordHasher

    from crm import accounts

    light = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    monkeypatch.setattr(accounts, "hasher", lambda: light)


@pytest.fixture
def world(engine: Engine, cheap_argon2: None) -> World:
    """The world on each database (``engine`` is the conftest's SQLite/PostgreSQL fixture)."""
    return build_world(engine)


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: Any, login: str, password: str | None = None) -> Any:
    """Sign in through the form (GET for the token, POST); returns the POST response."""
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "login": login,
            "password": password if password is not None else PASSWORDS[login],
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
