"""The workspace in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The app runs in uvicorn in a thread on a free port, on the test database (SQLite and
PostgreSQL), with an injected clock. Without chromium these tests are skipped loudly;
with ``CI=true`` they fail instead. Screenshots of "My day", the team page and a
customer's timeline, in both languages, go to ``test-artifacts/`` (override with
``VIPCARE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import csv
import io
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crm.audit import Actor
from crm.db import transaction
from crm.models import AuditLog, CallTask, OutboundMessage, QaReview
from crm.tasks import complete
from tests.conftest import IN_CI
from tests.test_workspace_languages import DATA, rich_world, work_some_calls
from tests.web_lang import language_problems
from tests.web_support import AS_OF, NAMES, PASSWORDS

pytest_plugins = ["tests.web_support"]  # the world and cheap_argon2 fixtures

CHROMIUM = os.environ.get("VIPCARE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(
    os.environ.get(
        "VIPCARE_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"
    )
)
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(f"CI=true but {message}", pytrace=False)
        warnings.warn(f"SKIPPING ALL BROWSER TESTS: {message}", stacklevel=1)
        pytest.skip(f"!!! browser tests SKIPPED: {message}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """uvicorn on a free port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # start-up handshake, not a timing assumption
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def site(world) -> Iterator[str]:
    with serve(world.app()) as base:
        yield base


def open_page(browser: Any, base: str, lang: str = "zh-CN", viewport: dict[str, int] | None = None):
    context = browser.new_context(
        base_url=base,
        viewport=viewport or LAPTOP,
        locale=lang,
        extra_http_headers={"Accept-Language": lang},
        accept_downloads=True,
    )
    return context.new_page()


def sign_in(page: Any, login: str) -> None:
    page.goto("/login")
    page.locator("#login").fill(login)
    page.locator("#password").fill(PASSWORDS[login])
    page.locator("form button[type=submit]").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()


def ready_names(page: Any) -> list[str]:
    return page.locator("#ready .task-name").all_inner_texts()


def test_sign_in_and_see_only_my_own_tasks(browser, site):
    page = open_page(browser, site)
    sign_in(page, "M1")
    assert page.url.endswith("/day")
    assert page.locator("h1").inner_text() == "我的今天"
    assert sorted(ready_names(page)) == sorted([NAMES["A"], NAMES["B"], NAMES["D"]])
    assert page.locator("#waiting .task-name").all_inner_texts() == [NAMES["E"]]
    assert NAMES["C"] not in page.content()
    assert page.locator("a.tel[href^='tel:+86']").count() == 4


def test_complete_a_task_and_watch_it_leave_the_list(browser, site, world):
    page = open_page(browser, site, "en")
    sign_in(page, "M1")
    assert NAMES["B"] in ready_names(page)
    page.get_by_role("link", name=f"Work this call: {NAMES['B']}").click()
    page.get_by_label("reached").check()
    page.get_by_label("Satisfaction (1–5)").select_option("5")
    page.get_by_label("Note").fill("Happy with the new plan")
    page.get_by_role("button", name="Save outcome").click()
    page.wait_for_url("**/day?msg=done*")
    assert f"Task #{world.tasks['B']} is done." in page.locator(".flash").inner_text()
    assert NAMES["B"] not in ready_names(page)
    assert page.locator("#ready-title .count").inner_text() == "2"
    task = world.task("B")
    assert (task.status, task.outcome, task.satisfaction) == ("done", "reached", 5)


def test_reschedule_a_task_within_capacity(browser, site, world):
    page = open_page(browser, site, "en")
    sign_in(page, "M1")
    page.goto(f"/tasks/{world.tasks['D']}")
    saturday = AS_OF + timedelta(days=5)
    page.get_by_label("New date").fill(saturday.isoformat())
    page.get_by_label("Reason").fill("customer travelling")
    page.get_by_role("button", name="Reschedule").click()
    error = page.locator("#to-error").inner_text()
    assert "Choose a working day" in error and "next day with room" in error
    assert world.task("D").scheduled_on == AS_OF
    tuesday = AS_OF + timedelta(days=1)
    page.get_by_label("New date").fill(tuesday.isoformat())
    page.get_by_role("button", name="Reschedule").click()
    page.wait_for_url("**/day?msg=rescheduled*")
    assert f"moved to {tuesday.isoformat()}" in page.locator(".flash").inner_text()
    assert NAMES["D"] not in ready_names(page)
    assert world.task("D").scheduled_on == tuesday
    with transaction(world.engine) as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "task.rescheduled")).one()
    assert '"reason":"customer travelling"' in row.details and row.actor_id == "M1"


def test_the_timeline_shows_the_text_that_was_sent(browser, site, world):
    with transaction(world.engine) as s:
        body = s.scalars(
            select(OutboundMessage.body).where(
                OutboundMessage.id == world.task("E").notice_message_id
            )
        ).one()
    page = open_page(browser, site, "en")
    sign_in(page, "M1")
    page.goto("/customers/E")
    first = page.locator(".timeline li").first
    assert "SMS (pre-call notice): queued" in first.inner_text()
    assert first.locator("blockquote.sms").inner_text() == body
    world.dispatch(world.clock() + timedelta(minutes=5))
    page.reload()
    first = page.locator(".timeline li").first
    assert "SMS (pre-call notice): sent" in first.inner_text()
    assert first.locator("blockquote.sms").inner_text() == body


def test_another_managers_task_is_refused(browser, site, world):
    page = open_page(browser, site)
    sign_in(page, "M1")
    response = page.goto(f"/tasks/{world.tasks['C']}")
    assert response.status == 404
    assert "没有这个页面" in page.content() and NAMES["C"] not in page.content()
    assert page.goto("/customers/C").status == 404


def test_export_the_filtered_task_list_as_csv(browser, site, world, tmp_path):
    page = open_page(browser, site, "en")
    sign_in(page, "M1")
    page.goto("/tasks")
    page.get_by_label("Status").select_option("ready")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/tasks?status=ready*")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert sorted(r["customer_name"] for r in rows) == sorted([NAMES["A"], NAMES["B"], NAMES["D"]])
    assert {r["status"] for r in rows} == {"ready"}


def test_a_supervisor_reviews_a_qa_sample(browser, site, world):
    with transaction(world.engine) as s:
        for ref in ("A", "B"):
            complete(
                s, world.tasks[ref], "reached", world.clock(), AS_OF, Actor("manager", "M1"), 4
            )
    page = open_page(browser, site, "en")
    sign_in(page, "S1")
    assert page.url.endswith("/team")
    page.goto("/qa")
    page.get_by_label("Day to sample").fill(AS_OF.isoformat())
    page.get_by_role("button", name="Draw the sample").click()
    assert "2 calls, 1 new samples drawn" in page.locator(".flash").inner_text()
    page.locator("table.list a[href^='/qa/']").first.click()
    for criterion, score in (("Accuracy", 5), ("Courtesy", 4), ("Proactive offer", 3)):
        page.get_by_role("group", name=criterion).get_by_label(str(score)).check()
    page.get_by_label("Note").fill("Clear and friendly; offered the plan")
    page.get_by_role("button", name="Save review").click()
    page.wait_for_url("**/qa?msg=reviewed*")
    per_manager = page.locator("#per-manager-title + table tbody tr").first.inner_text()
    assert "Li Na" in per_manager and "M1" in per_manager
    assert "5.0" in per_manager and "4.0" in per_manager and "3.0" in per_manager
    with transaction(world.engine) as s:
        review = s.scalars(select(QaReview)).one()
        audited = s.scalars(select(AuditLog).where(AuditLog.action == "qa.reviewed")).one()
    assert (review.accuracy, review.courtesy, review.proactive_offer) == (5, 4, 3)
    assert audited.actor_id == "S1" and '"note":"Clear and friendly' in audited.details


def _axe(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page)
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} "
        + "; ".join(n["target"][0] for n in v["nodes"][:3])
        for v in result.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_no_serious_accessibility_problems_on_any_page(browser, site, world):
    with transaction(world.engine) as s:
        complete(s, world.tasks["B"], "reached", world.clock(), AS_OF, Actor("manager", "M1"), 5)
    problems: list[str] = []
    for lang in ("zh-CN", "en"):
        anonymous = open_page(browser, site, lang)
        anonymous.goto("/login")
        problems += _axe(anonymous)
        manager = open_page(browser, site, lang)
        sign_in(manager, "M1")
        for path in (
            "/day",
            "/tasks",
            "/tasks?status=done",
            f"/tasks/{world.tasks['A']}",
            f"/tasks/{world.tasks['B']}",
            f"/tasks/{world.tasks['E']}",
            "/customers/A",
            "/settings",
            "/tasks/999999",
        ):
            manager.goto(path)
            problems += _axe(manager)
        manager.goto(f"/tasks/{world.tasks['D']}")  # a form with errors
        manager.locator("#reason").fill("")
        manager.locator("#reschedule-title ~ form button").click()
        problems += _axe(manager)
        boss = open_page(browser, site, lang)
        sign_in(boss, "S1")
        boss.goto("/qa")
        boss.locator("#draw-day").fill(AS_OF.isoformat())
        boss.locator("form[action='/qa/draw'] button").click()
        problems += _axe(boss)
        sample = boss.locator("table.list a[href^='/qa/']").first.get_attribute("href")
        for path in ("/team", sample, "/day?manager=M1", "/tasks?manager=M2", "/settings"):
            boss.goto(path)
            problems += _axe(boss)
    phone = open_page(browser, site, "zh-CN", PHONE)
    sign_in(phone, "M1")
    problems += _axe(phone)
    assert problems == []


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_screenshots_of_my_day(browser, site, request, lang, device):
    page = open_page(browser, site, lang, LAPTOP if device == "laptop" else PHONE)
    sign_in(page, "M1")
    assert page.locator("h1").inner_text() == ("我的今天" if lang == "zh-CN" else "My day")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the {device} screen"
    database = request.node.callspec.params["db_url"]
    target = ARTIFACTS / "screenshots" / database / f"my-day-{lang}-{device}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def test_a_waiting_task_cannot_be_completed_yet(browser, site, world):
    page = open_page(browser, site, "en")
    sign_in(page, "M1")
    page.goto(f"/tasks/{world.tasks['E']}")
    assert "pre-call SMS has not gone out yet" in page.content()
    page.get_by_label("reached").check()
    page.get_by_role("button", name="Save outcome").click()
    assert page.locator("p.error[role=alert]").count() == 1
    assert world.task("E").status == "awaiting_notice"
    with transaction(world.engine) as s:
        assert s.scalar(select(CallTask.outcome).where(CallTask.id == world.tasks["E"])) is None


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_screenshots_of_the_team_and_a_timeline(
    browser, engine, cheap_argon2, tmp_path, request, lang
):
    """In Chromium: the team page (the messages chart with its expired status and the
    legend's colour keys) and a customer's timeline, a screenshot of each per language."""
    world = rich_world(engine, tmp_path)
    work_some_calls(world)
    database = request.node.callspec.params["db_url"]
    folder = ARTIFACTS / "screenshots" / database
    folder.mkdir(parents=True, exist_ok=True)
    with serve(world.app()) as base:
        boss = open_page(browser, base, lang)
        sign_in(boss, "S1")
        boss.goto("/team")
        legend = boss.locator("ul.legend li")
        assert legend.count() >= 3 and boss.locator("ul.legend svg.swatch rect").count() >= 3
        expired = "已过期" if lang == "zh-CN" else "expired"
        assert any(t.startswith(expired) for t in legend.all_inner_texts())
        assert language_problems(boss.content(), lang, DATA) == []
        boss.screenshot(path=str(folder / f"team-{lang}.png"), full_page=True)
        page = open_page(browser, base, lang)
        sign_in(page, "M1")
        for ref in ("J", "H"):
            page.goto(f"/customers/{ref}")
            assert language_problems(page.content(), lang, DATA) == []
        page.screenshot(path=str(folder / f"customer-{lang}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
