"""The workspace over HTTP (no browser): sign-in, sessions, CSRF, the login rate limit,
and every role check on every route, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crm.accounts import LoginLimits
from crm.audit import Actor
from crm.db import transaction
from crm.importer import HEADERS, import_csv
from crm.models import AuditLog, CallTask, LoginFailure
from tests.builders import SHANGHAI
from tests.web_support import AS_OF, NAMES, PASSWORDS, csrf_of, local, sign_in

pytest_plugins = ["tests.web_support", "plugins.fake_twilio"]  # world, argon2, Twilio fixtures


def client(world, **kw: Any) -> TestClient:
    return TestClient(world.app(**kw), base_url="http://testserver")


def signed_in(world, login: str, **kw: Any) -> TestClient:
    c = client(world, **kw)
    response = sign_in(c, login)
    assert response.status_code == 303, response.text
    return c


# --- signing in ---------------------------------------------------------------------------


def test_sign_in_sets_a_signed_http_only_cookie_and_lands_on_my_day(world):
    c = client(world)
    response = sign_in(c, "M1")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "vipcare_session=" in cookie and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert PASSWORDS["M1"] not in cookie
    day = c.get("/")
    assert day.url.path == "/day"
    assert NAMES["A"] in day.text and NAMES["C"] not in day.text


def test_supervisor_lands_on_the_team_page(world):
    c = signed_in(world, "S1")
    assert c.get("/").url.path == "/team"


@pytest.mark.parametrize(
    ("login", "password"),
    [("M1", "wrong-password"), ("m1", PASSWORDS["M1"]), ("NOBODY", "whatever-pass")],
)
def test_wrong_id_or_password_is_refused_alike(world, login, password):
    c = client(world)
    response = sign_in(c, login, password)
    assert response.status_code == 401
    assert "vipcare_session" not in response.headers.get("set-cookie", "")
    assert "编号或密码不正确" in response.text  # the same words for a wrong id and password
    assert c.get("/day", follow_redirects=False).status_code == 303


def test_a_tampered_session_cookie_is_no_session(world):
    c = signed_in(world, "M1")
    token = c.cookies["vipcare_session"]
    c.cookies.set("vipcare_session", token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    response = c.get("/day", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_session_expires_after_its_lifetime(world):
    c = signed_in(world, "M1")
    world.clock.advance(hours=11, minutes=59)
    assert c.get("/day", follow_redirects=False).status_code == 200
    world.clock.advance(minutes=1)
    response = c.get("/day", follow_redirects=False)
    assert response.status_code == 303
    assert "notice=expired" in response.headers["location"]
    page = c.get(response.headers["location"])
    assert "登录已过期" in page.text


def test_a_new_password_signs_out_open_sessions(world):
    from crm.accounts import set_password
    from crm.audit import Actor

    c = signed_in(world, "M1")
    with transaction(world.engine) as s:
        set_password(s, "M1", "a-brand-new-pass", world.clock(), Actor("cli", "test"))
    assert c.get("/day", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(world):
    c = signed_in(world, "M1")
    day = c.get("/day")
    out = c.post("/logout", data={"csrf_token": csrf_of(day.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert c.get("/day", follow_redirects=False).status_code == 303


# --- CSRF ---------------------------------------------------------------------------------


def _task_status(world, ref: str) -> str:
    return world.task(ref).status


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_posts_without_the_sessions_csrf_token_are_refused(world, token):
    c = signed_in(world, "M1")
    data = {"outcome": "reached", "satisfaction": "5"}
    if token is not None:
        data["csrf_token"] = token
    response = c.post(f"/tasks/{world.tasks['A']}/complete", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert "表单已过期" in response.text
    assert _task_status(world, "A") == "ready"


def test_another_sessions_token_is_refused(world):
    other = signed_in(world, "M1")
    theirs = csrf_of(other.get("/day").text)
    c = signed_in(world, "M1")
    response = c.post(
        f"/tasks/{world.tasks['A']}/complete",
        data={"outcome": "reached", "csrf_token": theirs},
        follow_redirects=False,
    )
    assert response.status_code == 403 and _task_status(world, "A") == "ready"


def test_the_login_form_needs_its_own_token(world):
    c = client(world)
    c.get("/login")
    response = c.post(
        "/login",
        data={"login": "M1", "password": PASSWORDS["M1"], "csrf_token": "made-up"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "vipcare_session" not in response.headers.get("set-cookie", "")


def test_with_the_token_the_outcome_is_recorded_and_audited(world):
    c = signed_in(world, "M1")
    token = csrf_of(c.get(f"/tasks/{world.tasks['A']}").text)
    response = c.post(
        f"/tasks/{world.tasks['A']}/complete",
        data={"outcome": "reached", "satisfaction": "4", "note": "happy", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    task = world.task("A")
    assert (task.status, task.outcome, task.satisfaction, task.note) == (
        "done",
        "reached",
        4,
        "happy",
    )
    with transaction(world.engine) as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "task.done")).one()
    assert (row.actor_type, row.actor_id, row.customer_ref) == ("manager", "M1", "A")


def _second_topic(world, customer: str, kind: str = "plan_fit") -> int:
    """Another ready task today for ``customer``, with their manager: a second topic."""
    first = world.task(customer)
    with transaction(world.engine) as s:
        extra = CallTask(
            customer_id=first.customer_id,
            manager_id=first.manager_id,
            kind=kind,
            journey=kind,
            occurrence=f"{kind}:second-topic",
            status="ready",
            due_on=AS_OF,
            scheduled_on=AS_OF,
            no_notice=True,
            details={"reason": "second topic"},
            created_at=local(AS_OF, 9),
        )
        s.add(extra)
        s.flush()
        return extra.id


def test_one_customer_is_one_call_on_my_day_with_every_topic(world):
    extra = _second_topic(world, "B")
    c = signed_in(world, "M1")
    page = c.get("/day").text
    ready = page.split('id="ready"')[1].split('id="overdue"')[0]
    assert ready.count(f">{NAMES['B']}</a>") == 1  # one card for B ...
    assert f'href="/tasks/{world.tasks["B"]}"' in ready and f'href="/tasks/{extra}"' in ready
    assert "3 calls, 4 tasks" in ready or "3 通电话，共 4 项任务" in ready  # ... A, B, D
    task_page = c.get(f"/tasks/{world.tasks['B']}").text
    assert 'id="same-call-title"' in task_page and f'href="/tasks/{extra}"' in task_page


def test_after_a_reached_outcome_the_next_topic_of_the_call_opens(world):
    extra = _second_topic(world, "B")
    c = signed_in(world, "M1")
    token = csrf_of(c.get(f"/tasks/{world.tasks['B']}").text)
    response = c.post(
        f"/tasks/{world.tasks['B']}/complete",
        data={"outcome": "reached", "satisfaction": "5", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.headers["location"] == f"/tasks/{extra}?msg=done&id={world.tasks['B']}"
    shown = c.get(response.headers["location"]).text
    assert f"#{world.tasks['B']}" in shown and 'role="status"' in shown
    assert 'id="same-call-title"' not in shown  # nothing else left on this call
    token = csrf_of(shown)
    last = c.post(
        f"/tasks/{extra}/complete",
        data={"outcome": "reached", "csrf_token": token},
        follow_redirects=False,
    )
    assert last.headers["location"] == f"/day?msg=done&id={extra}"


def test_no_answer_goes_back_to_the_day_not_to_the_next_topic(world):
    _second_topic(world, "D")
    c = signed_in(world, "M1")
    token = csrf_of(c.get(f"/tasks/{world.tasks['D']}").text)
    response = c.post(
        f"/tasks/{world.tasks['D']}/complete",
        data={"outcome": "no_answer", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.headers["location"].startswith("/day?")


# --- the login rate limit -----------------------------------------------------------------


def test_failed_sign_ins_are_rate_limited_per_login(world):
    c = client(world)
    for _ in range(5):
        assert sign_in(c, "M1", "wrong-password").status_code == 401
    blocked = sign_in(c, "M1")  # even the right password waits
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "登录失败次数过多" in blocked.text
    assert sign_in(c, "M2").status_code == 303  # another login is not affected
    world.clock.advance(minutes=15, seconds=1)
    assert sign_in(c, "M1").status_code == 303


def test_the_limit_is_kept_in_the_database_for_every_process(world):
    first, second = client(world), client(world)  # two app instances, one database
    for _ in range(3):
        sign_in(first, "M1", "wrong-password")
    for _ in range(2):
        sign_in(second, "M1", "wrong-password")
    assert sign_in(first, "M1").status_code == 429
    with transaction(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 5


def test_failed_sign_ins_are_rate_limited_per_client(world):
    c = client(world, login_limits=LoginLimits(per_login=100, per_client=4))
    for login in ("X1", "X2", "X3", "X4"):
        assert sign_in(c, login, "nope-nope").status_code == 401
    assert sign_in(c, "M1").status_code == 429


def test_a_successful_sign_in_clears_that_logins_failures(world):
    c = client(world)
    for _ in range(4):
        sign_in(c, "M1", "wrong-password")
    assert sign_in(c, "M1").status_code == 303
    with transaction(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 0


# --- who may see what: every route, every role ---------------------------------------------

OK, REDIRECT, FORBIDDEN, MISSING = 200, 303, 403, 404

# (method, path template) → expected status for: anonymous, M1 (the owner), M2 (another
# manager), S1 (the supervisor). {own}/{other} are M1's task A and M2's task C.
MATRIX: list[tuple[str, str, tuple[int, int, int, int]]] = [
    ("GET", "/", (REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    ("GET", "/login", (OK, OK, OK, OK)),
    ("POST", "/login", (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    ("GET", "/lang/en", (REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    ("GET", "/healthz", (OK, OK, OK, OK)),
    ("GET", "/day", (REDIRECT, OK, OK, REDIRECT)),
    ("GET", "/day?manager=M1", (REDIRECT, OK, OK, OK)),
    ("GET", "/tasks", (REDIRECT, OK, OK, OK)),
    ("GET", "/tasks.csv", (REDIRECT, OK, OK, OK)),
    ("GET", "/tasks/{own}", (REDIRECT, OK, MISSING, OK)),
    ("GET", "/tasks/{other}", (REDIRECT, MISSING, OK, OK)),
    ("POST", "/tasks/{own}/reschedule", (REDIRECT, REDIRECT, MISSING, FORBIDDEN)),
    ("POST", "/tasks/{own}/complete", (REDIRECT, REDIRECT, MISSING, FORBIDDEN)),
    ("POST", "/tasks/{other}/complete", (REDIRECT, MISSING, REDIRECT, FORBIDDEN)),
    ("GET", "/customers/A", (REDIRECT, OK, MISSING, OK)),
    ("GET", "/customers/C", (REDIRECT, MISSING, OK, OK)),
    ("GET", "/team", (REDIRECT, FORBIDDEN, FORBIDDEN, OK)),
    ("GET", "/team.csv", (REDIRECT, FORBIDDEN, FORBIDDEN, OK)),
    ("GET", "/qa", (REDIRECT, FORBIDDEN, FORBIDDEN, OK)),
    ("GET", "/qa.csv", (REDIRECT, FORBIDDEN, FORBIDDEN, OK)),
    ("POST", "/qa/draw", (REDIRECT, FORBIDDEN, FORBIDDEN, REDIRECT)),
    ("GET", "/qa/{sample}", (REDIRECT, FORBIDDEN, FORBIDDEN, OK)),
    ("POST", "/qa/{sample}", (REDIRECT, FORBIDDEN, FORBIDDEN, REDIRECT)),
    ("GET", "/settings", (REDIRECT, OK, OK, OK)),
    ("POST", "/settings", (REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    ("POST", "/logout", (REDIRECT, REDIRECT, REDIRECT, REDIRECT)),  # last: it ends the session
]
FORMS = {
    "/tasks/{own}/complete": {"outcome": "reached", "satisfaction": "5"},
    "/tasks/{other}/complete": {"outcome": "reached", "satisfaction": "5"},
    "/tasks/{own}/reschedule": {"to": (AS_OF + timedelta(days=1)).isoformat(), "reason": "ill"},
    "/qa/draw": {"day": AS_OF.isoformat()},
    "/qa/{sample}": {"accuracy": "5", "courtesy": "4", "proactive_offer": "3"},
    "/settings": {"locale": "en", "timezone": ""},
}


def _routes(routes: list[Any]) -> list[Any]:
    """Flatten included routers (FastAPI keeps them nested; no prefixes are used here)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_routes(inner.routes) if inner is not None else [route])
    return out


def _route_shapes(app: Any) -> set[tuple[str, str]]:
    shapes = set()
    for route in _routes(app.routes):
        methods = getattr(route, "methods", None)
        if not methods or route.path.startswith("/static"):
            continue
        for method in methods - {"HEAD"}:
            shapes.add((method, route.path))
    return shapes


def _shape(path: str) -> str:
    bare = path.split("?", 1)[0]
    return (
        bare.replace("{own}", "{task_id}")
        .replace("{other}", "{task_id}")
        .replace("{sample}", "{sample_id}")
        .replace("/lang/en", "/lang/{code}")
        .replace("/customers/A", "/customers/{ref}")
        .replace("/customers/C", "/customers/{ref}")
    )


def test_the_matrix_covers_every_route(world):
    covered = {(method, _shape(path)) for method, path, _ in MATRIX}
    assert _route_shapes(world.app()) == covered


def _sample_id(world) -> int:
    from crm import qa
    from crm.audit import Actor
    from crm.tasks import complete

    with transaction(world.engine) as s:
        complete(s, world.tasks["B"], "reached", world.clock(), AS_OF, Actor("manager", "M1"), 5)
        qa.draw_sample(
            s,
            AS_OF,
            share=world.crm.ruleset.call_qa.share,
            seed="test",
            outcomes=("reached",),
            tz=world.settings.tz,
            at=world.clock(),
            actor=Actor("cli", "test"),
        )
        (sample,) = qa.list_samples(s)[0]
        return sample.sample_id


@pytest.mark.parametrize("role", range(4), ids=["anonymous", "owner", "other", "supervisor"])
def test_every_route_checks_the_role(world, role):
    sample = _sample_id(world)
    login = (None, "M1", "M2", "S1")[role]
    failures = []
    c = signed_in(world, login) if login else client(world)
    for method, template, expected in MATRIX:
        path = template.format(own=world.tasks["A"], other=world.tasks["C"], sample=sample)
        if method == "GET":
            response = c.get(path, follow_redirects=False)
        else:
            token = csrf_of(c.get("/settings").text) if login else "none"
            data = {**FORMS.get(template, {}), "csrf_token": token}
            response = c.post(path, data=data, follow_redirects=False)
        if response.status_code != expected[role]:
            failures.append((method, path, response.status_code, expected[role]))
        if response.status_code == MISSING:  # a 404 never names what it hides
            assert NAMES["A"] not in response.text and NAMES["C"] not in response.text
    assert failures == []


def test_another_managers_task_and_customer_look_like_nothing_is_there(world):
    c = signed_in(world, "M1")
    theirs = c.get(f"/tasks/{world.tasks['C']}")
    nothing = c.get("/tasks/999999")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.text == nothing.text
    assert c.get("/customers/C").text == c.get("/customers/NOPE").text
    token = csrf_of(c.get("/day").text)
    response = c.post(
        f"/tasks/{world.tasks['C']}/complete",
        data={"outcome": "reached", "csrf_token": token},
    )
    assert response.status_code == 404 and world.task("C").status == "ready"


def test_a_customer_moved_to_another_manager_takes_their_open_call_along(world, tmp_path):
    """A re-import that gives C to M1: C's open call moves with C (audited), M2 no longer
    sees C's call or card, M1 does; a closed call stays in its worker's history but its
    page is no longer M2's to open either."""
    open_call = world.task("C")
    old = open_call.id
    with transaction(world.engine) as s:
        s.add(
            CallTask(
                customer_id=open_call.customer_id, manager_id=open_call.manager_id, kind="callback",
                journey="callback", occurrence="old-call", status="done", outcome="reached",
                due_on=AS_OF, scheduled_on=AS_OF, created_at=local(AS_OF, 8),
                completed_at=local(AS_OF, 9),
            )
        )  # fmt: skip
    with world.engine.connect() as conn:
        done_id = conn.execute(
            select(CallTask.id).where(CallTask.occurrence == "old-call")
        ).scalar_one()
    csv = tmp_path / "customers.csv"
    csv.write_text(
        ",".join(HEADERS["customers"])
        + f"\nC,{NAMES['C']},{world.crm.get('C').phone},,,,diamond,,,M1,,,,,,,\n",
        encoding="utf-8",
    )
    import_csv(world.engine, "customers", csv, Actor("cli", "ops"), local(AS_OF, 10), SHANGHAI)
    m1_id = world.crm.manager_id("M1")
    with transaction(world.engine) as s:
        moved = s.get(CallTask, old)
        assert moved is not None and moved.manager_id == m1_id
    with world.engine.connect() as conn:
        details = conn.execute(
            select(AuditLog.details).where(AuditLog.action == "task.reassigned")
        ).scalar_one()
    assert json.loads(details) == {"task_id": old, "from_manager": "M2", "to_manager": "M1"}
    m2 = signed_in(world, "M2")
    assert m2.get(f"/tasks/{old}").status_code == 404
    assert m2.get(f"/tasks/{done_id}").status_code == 404
    assert NAMES["C"] not in m2.get("/day").text
    m1 = signed_in(world, "M1")
    assert m1.get(f"/tasks/{old}").status_code == 200
    assert NAMES["C"] in m1.get("/day").text


def test_a_manager_cannot_widen_their_lists_with_a_manager_filter(world):
    c = signed_in(world, "M1")
    assert NAMES["C"] not in c.get("/tasks?manager=M2").text
    assert NAMES["C"] not in c.get("/day?manager=M2").text
    rows = list(csv.DictReader(io.StringIO(c.get("/tasks.csv?manager=M2").text.lstrip("\ufeff"))))
    assert {r["manager_id"] for r in rows} == {"M1"}


def test_the_owner_sees_the_whole_phone_others_a_masked_one(world):
    number = world.crm.get("A").phone
    owner = signed_in(world, "M1").get(f"/tasks/{world.tasks['A']}").text
    boss = signed_in(world, "S1").get(f"/tasks/{world.tasks['A']}").text
    assert f'href="tel:{number}"' in owner
    assert number not in boss and "tel:" not in boss and number[-4:] in boss


# --- CSV, languages, time zones -----------------------------------------------------------


def test_task_csv_is_utf8_with_bom_and_follows_the_filters(world):
    c = signed_in(world, "M1")
    response = c.get(f"/tasks.csv?status=ready&until={AS_OF}")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert sorted(r["customer_id"] for r in rows) == ["A", "B", "D"]
    assert {r["status"] for r in rows} == {"ready"}
    waiting = c.get("/tasks.csv?status=awaiting_notice").content.decode("utf-8-sig")
    assert [r["customer_id"] for r in csv.DictReader(io.StringIO(waiting))] == ["E"]


def test_team_and_qa_reports_download_as_csv(world):
    _sample_id(world)
    c = signed_in(world, "S1")
    team = list(csv.DictReader(io.StringIO(c.get("/team.csv").content.decode("utf-8-sig"))))
    by_ref = {r["manager_id"]: r for r in team}
    assert by_ref["M1"]["open_tasks"] == "3" and by_ref["M1"]["done_last_30_days"] == "1"
    assert "S1" not in by_ref  # no customers, no calls, no capacity
    qa_rows = list(csv.DictReader(io.StringIO(c.get("/qa.csv").content.decode("utf-8-sig"))))
    assert [(r["task_id"], r["manager_id"]) for r in qa_rows] == [(str(world.tasks["B"]), "M1")]
    assert c.get("/qa.csv?manager=M2").content.decode("utf-8-sig").count("\n") == 1


@pytest.mark.parametrize(
    ("header", "word"),
    [(None, "我的今天"), ("en-US,en;q=0.9", "My day"), ("fr-FR,zh-TW;q=0.5", "我的今天")],
)
def test_the_browser_language_decides_when_the_user_has_not(world, header, word):
    c = signed_in(world, "M1")
    headers = {"Accept-Language": header} if header else {}
    assert word in c.get("/day", headers=headers).text


def test_the_users_setting_beats_the_browser_and_times_follow_their_zone(world):
    c = signed_in(world, "M1")
    page = c.get("/customers/A", headers={"Accept-Language": "en"})
    assert "2026-11-23 09:00" in page.text  # the 09:00 run, in Shanghai time
    token = csrf_of(page.text)
    saved = c.post(
        "/settings",
        data={"locale": "zh-CN", "timezone": "Europe/London", "csrf_token": token},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    again = c.get("/customers/A", headers={"Accept-Language": "en"})
    assert "客户时间线" in again.text
    assert "2026-11-23 01:00" in again.text and "Europe/London" in again.text
    with transaction(world.engine) as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "account.preferences")).one()
    assert (row.actor_id, row.details) == (
        "M1",
        '{"locale":"zh-CN","timezone":"Europe/London"}',
    )


def test_an_unknown_time_zone_is_refused(world):
    c = signed_in(world, "M1")
    token = csrf_of(c.get("/settings").text)
    response = c.post("/settings", data={"timezone": "Mars/Olympus", "csrf_token": token})
    assert response.status_code == 400 and "Mars/Olympus" in response.text


@pytest.mark.parametrize(
    "path", ["/tasks?until=someday", "/tasks?status=finished", "/tasks/abc", "/qa?day=2026-13-01"]
)
def test_bad_input_gets_a_clear_page_not_a_traceback(world, path):
    c = signed_in(world, "S1")
    response = c.get(path, headers={"Accept-Language": "en"})
    assert response.status_code in (400, 404)
    assert "Traceback" not in response.text and "Sign out" in response.text
    if response.status_code == 400:
        assert "was not valid" in response.text


def test_vipcare_web_serves_the_twilio_webhooks_beside_the_workspace(world, twilio_settings):
    """With Twilio configured, /twilio/... reaches the (signed) webhook app, the rest the
    workspace."""
    from notifications.webhooks import create_app as create_webhooks
    from vipcare.web import Dispatcher

    hooks = create_webhooks(world.engine, twilio_settings, clock=world.clock)
    c = TestClient(Dispatcher(world.app(), hooks))
    unsigned = c.post("/twilio/status", data={"MessageSid": "SM1", "MessageStatus": "sent"})
    assert unsigned.status_code == 403  # the webhook app's signature check answered
    assert c.get("/login").status_code == 200
    assert TestClient(Dispatcher(world.app(), None)).post("/twilio/status").status_code == 404
