"""One manager cannot read or change another manager's data through any route of the
workspace (issue 12, "Security checks"), on SQLite and PostgreSQL.

The routes are read from the app itself (``app.routes``): every route must have an
attack case below, so a new route fails ``test_every_route_has_an_attack_case`` until
someone says how it could be turned against another manager. Who may call a route is
read from its FastAPI dependencies too (``viewer``, ``supervisor``, or neither), so a
supervisor-only route that a plain manager can open is a failure whatever its case says.

Each case is manager A's request aimed at manager B's objects (B's task, B's customer,
B's id in a filter, B's login). A GET must not answer with anything of B's: no name, no
phone (whole or national). A POST carries A's valid CSRF token and must change nothing
(a snapshot of every table, the audit log included, is equal before and after), or only
A's own rows where the route is A's own business (their settings, their sign-in).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from crm.db import transaction
from crm.models import Base
from tests.db_snapshot import changed_rows, snapshot
from tests.web_support import AS_OF, NAMES, World, csrf_of, sign_in
from vipcare.web.deps import supervisor, viewer

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

OWNED = {"M1": ("A", "B", "D", "E"), "M2": ("C",)}
OTHER = {"M1": "M2", "M2": "M1"}


# --- the route table, read from the app ----------------------------------------------------


def _flatten(routes: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_flatten(inner.routes) if inner is not None else [route])
    return out


def _calls(dependant: Any) -> set[Any]:
    found = set()
    for dep in dependant.dependencies:
        found.add(dep.call)
        found |= _calls(dep)
    return found


def route_table(app: Any) -> dict[tuple[str, str], str]:
    """(method, path) → who may call it: "supervisor", "viewer" (signed in) or "public"."""
    table: dict[tuple[str, str], str] = {}
    for route in _flatten(app.routes):
        if isinstance(route, Mount):
            table[("GET", route.path + "/{path}")] = "public"
            continue
        assert isinstance(route, APIRoute), f"unexpected route type {route!r}"
        calls = _calls(route.dependant)
        access = "supervisor" if supervisor in calls else "viewer" if viewer in calls else "public"
        for method in route.methods - {"HEAD"}:
            table[(method, route.path)] = access
    return table


# --- the attack cases: manager A (the attacker) against manager B (the victim) ---------------


@dataclass(frozen=True)
class Target:
    """What the attacker aims at: the victim's ids, and an id that does not exist."""

    attacker: str
    victim: str
    task: int
    customer: str
    sample: int
    missing_task: int = 999_999
    missing_sample: int = 999_999


@dataclass(frozen=True)
class Case:
    path: Callable[[Target], str]
    expect: frozenset[int]
    form: Callable[[Target], dict[str, str]] = lambda t: {}
    # Tables the request may change, and then only in the attacker's own rows.
    own_writes: frozenset[str] = frozenset()
    # The same request with an id that does not exist: the answers must be identical.
    missing: Callable[[Target], str] | None = None
    login_form: bool = False  # the sign-in form's own token instead of the session's


def _c(
    path: Callable[[Target], str], *expect: int, **kw: Any
) -> Case:  # a short constructor for the table below
    return Case(path, frozenset(expect), **kw)


COMPLETE = {"outcome": "reached", "satisfaction": "5", "note": "done"}
RESCHEDULE = {"to": (AS_OF + timedelta(days=1)).isoformat(), "reason": "customer asked"}
REVIEW = {"accuracy": "5", "courtesy": "5", "proactive_offer": "5", "note": "ok"}
PREFERENCES = {"locale": "en", "timezone": "Europe/London"}

CASES: dict[tuple[str, str], Case] = {
    ("GET", "/"): _c(lambda t: "/", 303),
    ("GET", "/login"): _c(lambda t: f"/login?next=/customers/{t.customer}", 200),
    # Guessing the victim's password: refused; only the attacker-side failure count grows.
    ("POST", "/login"): _c(
        lambda t: "/login",
        401,
        form=lambda t: {"login": t.victim, "password": "a-guessed-password"},
        own_writes=frozenset({"login_failures"}),
        login_form=True,
    ),
    # Ends the attacker's own session on the server (and audits it): nobody else's.
    ("POST", "/logout"): _c(
        lambda t: "/logout",
        303,
        own_writes=frozenset({"staff_sessions", "audit_log", "audit_head"}),
    ),
    ("GET", "/lang/{code}"): _c(lambda t: f"/lang/en?next=/customers/{t.customer}", 303),
    ("GET", "/healthz"): _c(lambda t: "/healthz", 200),
    ("GET", "/day"): _c(lambda t: f"/day?manager={t.victim}", 200),
    ("GET", "/tasks"): _c(lambda t: f"/tasks?manager={t.victim}&status=open", 200),
    ("GET", "/tasks.csv"): _c(lambda t: f"/tasks.csv?manager={t.victim}", 200),
    ("GET", "/tasks/{task_id}"): _c(
        lambda t: f"/tasks/{t.task}", 404, missing=lambda t: f"/tasks/{t.missing_task}"
    ),
    ("POST", "/tasks/{task_id}/complete"): _c(
        lambda t: f"/tasks/{t.task}/complete",
        404,
        form=lambda t: COMPLETE,
        missing=lambda t: f"/tasks/{t.missing_task}/complete",
    ),
    ("POST", "/tasks/{task_id}/reschedule"): _c(
        lambda t: f"/tasks/{t.task}/reschedule",
        404,
        form=lambda t: RESCHEDULE,
        missing=lambda t: f"/tasks/{t.missing_task}/reschedule",
    ),
    ("GET", "/customers/{ref}"): _c(
        lambda t: f"/customers/{t.customer}", 404, missing=lambda t: "/customers/NOBODY"
    ),
    ("GET", "/team"): _c(lambda t: "/team", 403),
    ("GET", "/team.csv"): _c(lambda t: "/team.csv", 403),
    ("GET", "/qa"): _c(lambda t: f"/qa?manager={t.victim}", 403),
    ("GET", "/qa.csv"): _c(lambda t: f"/qa.csv?manager={t.victim}", 403),
    ("POST", "/qa/draw"): _c(lambda t: "/qa/draw", 403, form=lambda t: {"day": AS_OF.isoformat()}),
    ("GET", "/qa/{sample_id}"): _c(
        lambda t: f"/qa/{t.sample}", 403, missing=lambda t: f"/qa/{t.missing_sample}"
    ),
    ("POST", "/qa/{sample_id}"): _c(
        lambda t: f"/qa/{t.sample}",
        403,
        form=lambda t: REVIEW,
        missing=lambda t: f"/qa/{t.missing_sample}",
    ),
    ("GET", "/settings"): _c(lambda t: "/settings", 200),
    # Their own preferences, with the victim's ids smuggled in: only the attacker's rows move.
    ("POST", "/settings"): _c(
        lambda t: f"/settings?manager={t.victim}",
        303,
        form=lambda t: {**PREFERENCES, "manager": t.victim, "manager_id": t.victim},
        own_writes=frozenset({"staff_accounts", "managers", "audit_log", "audit_head"}),
    ),
    ("GET", "/static/{path}"): _c(lambda t: "/static/app.css", 200),
}
LAST = ("POST", "/logout")  # it ends the attacker's session


# --- snapshots and leaks -----------------------------------------------------------------


# The column that names a row's owner, in the tables a request may write for its caller.
OWNER = {
    "staff_accounts": "manager_id",
    "staff_sessions": "manager_id",
    "managers": "id",
    "audit_log": "actor_id",
}


def foreign_writes(
    diff: dict[str, set[tuple[Any, ...]]], allowed: frozenset[str], attacker_id: int, ref: str
) -> list[str]:
    """What a request changed beyond the attacker's own rows of the allowed tables."""
    problems = []
    for table, rows in diff.items():
        if table not in allowed:
            problems.append(f"{table}: {len(rows)} row(s) changed")
            continue
        column = OWNER.get(table)
        if column is None:  # audit_head (the chain's head), login_failures (the guess itself)
            continue
        own = ref if column == "actor_id" else str(attacker_id)
        at = [c.name for c in Base.metadata.tables[table].columns].index(column)
        problems += [f"{table}: {row}" for row in rows if row[at] != own]
    return problems


def secrets_of(world: World, manager: str) -> list[str]:
    """What must never reach another manager: names, whole and national phone numbers."""
    out = []
    for ref in OWNED[manager]:
        customer = world.crm.get(ref)
        out += [NAMES[ref], customer.phone, customer.phone[3:]]
    return out


def leaked(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


# --- fixtures ------------------------------------------------------------------------------


def sample_for(world: World) -> int:
    """A call-QA sample of M1's completed call with B."""
    from crm import qa
    from crm.audit import Actor
    from crm.tasks import complete

    with transaction(world.engine) as s:
        complete(s, world.tasks["B"], "reached", world.clock(), AS_OF, Actor("manager", "M1"), 5)
        qa.draw_sample(
            s,
            AS_OF,
            share=1.0,
            seed="test",
            outcomes=("reached",),
            tz=world.settings.tz,
            at=world.clock(),
            actor=Actor("cli", "test"),
        )
        (sample,) = qa.list_samples(s)[0]
        return sample.sample_id


def target(world: World, attacker: str, sample: int) -> Target:
    victim = OTHER[attacker]
    customer = OWNED[victim][0]
    return Target(attacker, victim, world.tasks[customer], customer, sample)


def signed_in(app: Any, login: str) -> TestClient:
    c = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    assert sign_in(c, login).status_code == 303
    return c


def send(c: TestClient, method: str, path: str, form: dict[str, str], token: str) -> Any:
    if method == "GET":
        return c.get(path, follow_redirects=False)
    return c.post(path, data={**form, "csrf_token": token}, follow_redirects=False)


def ordered(cases: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(cases, key=lambda k: (k == LAST, k))


# --- the tests -----------------------------------------------------------------------------


def test_every_route_has_an_attack_case(world: World) -> None:
    table = route_table(world.app())
    assert set(table) - set(CASES) == set(), "routes without an attack case"
    assert set(CASES) - set(table) == set(), "attack cases for routes that no longer exist"
    # the reading of the dependencies finds both kinds of protection
    assert table[("GET", "/team")] == "supervisor" and table[("GET", "/day")] == "viewer"
    assert table[("POST", "/login")] == "public"


@pytest.mark.parametrize("attacker", ["M1", "M2"])
def test_no_route_lets_a_manager_read_or_change_another_managers_data(
    world: World, attacker: str
) -> None:
    app = world.app()
    table = route_table(app)
    t = target(world, attacker, sample_for(world))
    attacker_id = world.crm.manager_id(attacker)
    secrets = secrets_of(world, t.victim)
    assert world.crm.get(t.customer).manager_id != attacker_id
    c = signed_in(app, attacker)
    failures: list[str] = []
    requests = 0
    for key in ordered(table):
        method, route = key
        case = CASES[key]
        if case.login_form:
            token = csrf_of(c.get("/login").text)
        else:
            token = csrf_of(c.get("/settings").text)
        before = snapshot(world.engine)
        response = send(c, method, case.path(t), case.form(t), token)
        requests += 1
        expect = frozenset({403}) if table[key] == "supervisor" else case.expect
        if response.status_code not in expect:
            failures.append(f"{method} {route}: {response.status_code}, expected {set(expect)}")
        body = response.content.decode("utf-8", "replace")
        if found := leaked(body + str(response.headers), secrets):
            failures.append(f"{method} {route}: the victim's {found} in the answer")
        diff = changed_rows(before, snapshot(world.engine))
        if problems := foreign_writes(diff, case.own_writes, attacker_id, attacker):
            failures.append(f"{method} {route}: wrote {problems}")
        if case.missing is not None and method == "GET":
            nothing = send(c, method, case.missing(t), case.form(t), token)
            requests += 1
            if (nothing.status_code, nothing.text) != (response.status_code, response.text):
                failures.append(f"{method} {route}: answers unlike an id that does not exist")
    print(f"routes: {len(table)}, requests as {attacker}: {requests}, findings: {len(failures)}")
    assert failures == []
    assert requests >= len(table)


@pytest.mark.parametrize("attacker", ["M1", "M2"])
def test_posts_against_another_managers_ids_change_nothing_even_with_the_right_form(
    world: World, attacker: str
) -> None:
    """Every POST that names an object, aimed at the victim's and at a missing one: 403/404
    alike, and the tables (audit log included) are equal before and after."""
    app = world.app()
    t = target(world, attacker, sample_for(world))
    c = signed_in(app, attacker)
    token = csrf_of(c.get("/settings").text)
    posts = [k for k in route_table(app) if k[0] == "POST" and "{" in k[1]]
    assert len(posts) >= 3  # complete, reschedule, the QA review
    for method, route in posts:
        case = CASES[(method, route)]
        assert case.missing is not None, f"{route} needs a missing-id case"
        before = snapshot(world.engine)
        theirs = send(c, method, case.path(t), case.form(t), token)
        nothing = send(c, method, case.missing(t), case.form(t), token)
        assert theirs.status_code in (403, 404), route
        assert (theirs.status_code, theirs.text) == (nothing.status_code, nothing.text), route
        assert snapshot(world.engine) == before, route


def test_signed_out_requests_go_to_sign_in_and_change_nothing(world: World) -> None:
    app = world.app()
    table = route_table(app)
    t = target(world, "M1", sample_for(world))
    everyone = secrets_of(world, "M1") + secrets_of(world, "M2")
    c = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    failures = []
    for key in ordered(table):
        method, route = key
        case = CASES[key]
        token = csrf_of(c.get("/login").text) if case.login_form else "no-session-no-token"
        before = snapshot(world.engine)
        response = send(c, method, case.path(t), case.form(t), token)
        if table[key] != "public":
            location = response.headers.get("location", "")
            if response.status_code != 303 or not location.startswith("/login?"):
                failures.append(f"{method} {route}: {response.status_code} {location!r}")
        elif response.status_code >= 500:
            failures.append(f"{method} {route}: {response.status_code}")
        if found := leaked(response.text, everyone):
            failures.append(f"{method} {route}: {found} shown signed out")
        diff = changed_rows(before, snapshot(world.engine))
        if problems := foreign_writes(diff, case.own_writes, -1, "nobody"):
            failures.append(f"{method} {route}: wrote {problems}")
    assert failures == []


def test_supervisor_only_routes_refuse_plain_managers_and_admit_the_supervisor(
    world: World,
) -> None:
    app = world.app()
    table = route_table(app)
    t = target(world, "M1", sample_for(world))
    boss, manager = signed_in(app, "S1"), signed_in(app, "M1")
    only = [k for k, who in table.items() if who == "supervisor"]
    assert {("GET", "/team"), ("POST", "/qa/draw"), ("GET", "/qa/{sample_id}")} <= set(only)
    for method, route in only:
        case = CASES[(method, route)]
        before = snapshot(world.engine)
        refused = send(
            manager, method, case.path(t), case.form(t), csrf_of(manager.get("/settings").text)
        )
        assert refused.status_code == 403, route
        assert snapshot(world.engine) == before, route
        if method == "GET":
            assert boss.get(case.path(t), follow_redirects=False).status_code == 200, route


def test_one_managers_sign_out_leaves_anothers_session_alone(world: World) -> None:
    app = world.app()
    mine, theirs = signed_in(app, "M1"), signed_in(app, "M2")
    token = csrf_of(mine.get("/settings").text)
    assert mine.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code
    assert mine.get("/day", follow_redirects=False).status_code == 303
    assert theirs.get("/day", follow_redirects=False).status_code == 200


def test_the_task_export_of_a_manager_holds_only_their_customers(world: World) -> None:
    c = signed_in(world.app(), "M2")
    raw = c.get("/tasks.csv?manager=M1&status=open").content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert rows and {r["customer_id"] for r in rows} == {"C"}
    assert leaked(raw, secrets_of(world, "M1")) == []
