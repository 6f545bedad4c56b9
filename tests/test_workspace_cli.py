"""The workspace's actions from the command line: tasks show / reschedule, --until today,
"showing N of M", manager ids that do not exist, message texts, passwords, the QA sample."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from crm.db import transaction
from crm.models import AuditLog, StaffAccount
from tests.web_support import AS_OF, NAMES
from vipcare.cli import app
from vipcare.settings import get_settings

pytest_plugins = ["tests.web_support"]  # the world and cheap_argon2 fixtures


@pytest.fixture
def cli(db_url, monkeypatch, world):
    """The CLI on the world's database, its clock (the CLI's edge) set to the world's."""
    import vipcare.cli as package

    for module in vars(package).values():
        if hasattr(module, "now_utc"):
            monkeypatch.setattr(module, "now_utc", world.clock)
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "400")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(cli, *args: str, **kw):
    return cli.invoke(app, list(args), **kw)


def test_tasks_show_masks_the_phone_unless_the_owner_asks(cli, world):
    phone = world.crm.get("A").phone
    task = str(world.tasks["A"])
    masked = run(cli, "tasks", "show", task)
    assert masked.exit_code == 0, masked.output
    assert phone not in masked.output and phone[-4:] in masked.output
    assert "--manager OWNER_ID" in masked.output
    owner = run(cli, "tasks", "show", task, "--manager", "M1", "--json")
    data = json.loads(owner.stdout)
    assert data["phone"] == phone and data["customer_name"] == NAMES["A"]
    assert data["pre_call_sms"] == "no_notice" and data["why"].startswith("callback due")
    other = run(cli, "tasks", "show", task, "--manager", "M2")
    assert other.exit_code == 1 and "another manager" in other.output and phone not in other.output
    missing = run(cli, "tasks", "show", "99999")
    assert missing.exit_code == 1 and "no task with id 99999" in missing.output


def test_tasks_show_lists_the_latest_timeline_with_texts(cli, world):
    out = run(cli, "tasks", "show", str(world.tasks["B"]), "--json")
    recent = json.loads(out.stdout)["recent"]
    texts = [r["text"] for r in recent if r["what"] == "message"]
    assert texts and NAMES["B"].split()[0] in texts[0]


def test_tasks_reschedule_from_the_cli(cli, world):
    task = str(world.tasks["D"])
    saturday = (AS_OF + timedelta(days=5)).isoformat()
    refused = run(cli, "tasks", "reschedule", task, "--to", saturday, "--reason", "away")
    assert refused.exit_code == 1
    assert "not a working day" in refused.output and "next working day with room" in refused.output
    tomorrow = (AS_OF + timedelta(days=30)).isoformat()
    ok = run(
        cli, "tasks", "reschedule", task, "--to", tomorrow, "--reason", "away", "--manager", "M1"
    )
    assert ok.exit_code == 0, ok.output
    assert f"to {tomorrow}" in ok.output
    assert world.task("D").scheduled_on.isoformat() == tomorrow
    wrong = run(cli, "tasks", "reschedule", task, "--to", "soon", "--reason", "x")
    assert wrong.exit_code == 2 and "expected YYYY-MM-DD" in wrong.output


def test_until_today_and_showing_n_of_m(cli, world):
    out = run(cli, "tasks", "list", "--manager", "M1", "--until", "today", "--json")
    assert out.exit_code == 0, out.output
    assert {r["customer_id"] for r in json.loads(out.stdout)} == {"A", "B", "D", "E"}
    short = run(cli, "tasks", "list", "--manager", "M1", "--limit", "2")
    assert "showing 2 of 4 tasks" in short.output
    whole = run(cli, "tasks", "list", "--manager", "M1")
    assert "showing" not in whole.output
    messages = run(cli, "messages", "list", "--limit", "1")
    assert "showing 1 of" in messages.output


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "list", "--manager", "m1"),
        ("tasks", "done", "1", "--outcome", "reached", "--manager", "m1"),
        ("tasks", "show", "1", "--manager", "m1"),
        ("customers", "list", "--manager", "m1"),
        ("qa", "list", "--manager", "m1"),
    ],
)
def test_a_mis_cased_manager_id_is_an_error_with_a_suggestion(cli, args):
    out = run(cli, *args)
    assert out.exit_code == 1
    assert "unknown manager 'm1'" in out.output and "did you mean 'M1'?" in out.output


def test_an_unknown_manager_id_is_an_error_not_an_empty_list(cli):
    out = run(cli, "tasks", "list", "--manager", "M9")
    assert out.exit_code == 1 and "unknown manager 'M9'" in out.output
    assert "nothing to show" not in out.output


def test_messages_list_shows_the_text(cli, world):
    out = run(cli, "messages", "list", "--customer", "B", "--json")
    (message,) = json.loads(out.stdout)
    assert message["body"].startswith("尊敬的Bob Notified")
    assert "*" in message["to"]
    table = run(cli, "messages", "list", "--customer", "B")
    assert message["body"] in table.output.replace("\n", "")


def test_set_password_from_stdin_and_prompt(cli, world):
    ok = run(cli, "managers", "set-password", "M2", "--role", "supervisor", "--stdin",
             input="a-good-password\n")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "role supervisor" in ok.output and "a-good-password" not in ok.output
    prompted = run(cli, "managers", "set-password", "M1", input="another-secret\nanother-secret\n")
    assert prompted.exit_code == 0, prompted.output
    with transaction(world.engine) as s:
        roles = dict(s.execute(select(StaffAccount.manager_id, StaffAccount.role)).all())
        audit = list(
            s.scalars(select(AuditLog.details).where(AuditLog.action == "account.password_set"))
        )
    assert roles[world.crm.manager_id("M2")] == "supervisor"
    assert roles[world.crm.manager_id("M1")] == "manager"
    assert not any("secret" in d or "good-password" in d for d in audit)
    short = run(cli, "managers", "set-password", "M1", "--stdin", input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    unknown = run(cli, "managers", "set-password", "m2", "--stdin", input="a-good-password\n")
    assert unknown.exit_code == 1 and "did you mean 'M2'?" in unknown.output


def test_qa_sample_is_idempotent(cli, world):
    from crm.audit import Actor
    from crm.tasks import complete

    with transaction(world.engine) as s:
        for ref in ("A", "B", "D"):
            complete(s, world.tasks[ref], "reached", world.clock(), AS_OF, Actor("manager", "M1"))
    first = json.loads(run(cli, "qa", "sample", "--date", AS_OF.isoformat(), "--json").stdout)
    assert first == {"day": AS_OF.isoformat(), "calls": 3, "target": 1, "drawn": 1, "sampled": 1}
    again = json.loads(run(cli, "qa", "sample", "--date", AS_OF.isoformat(), "--json").stdout)
    assert again["drawn"] == 0 and again["sampled"] == 1
    listed = json.loads(run(cli, "qa", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["manager_id"] == "M1" and listed[0]["scores"] is None


def test_the_demo_prints_working_manager_and_supervisor_sign_ins(world, capsys, monkeypatch):
    import re

    from crm.accounts import authenticate
    from vipcare.demo import SUPERVISOR_REF, _workspace_logins

    monkeypatch.setenv("COLUMNS", "300")
    _workspace_logins(world.engine, AS_OF, world.clock())
    out = capsys.readouterr().out
    assert "vipcare web" in out and "http://127.0.0.1:8000/" in out
    rows = dict(re.findall(r"│ (?:manager|supervisor)\s+│ (\S+)\s+│ (\S+)\s+│", out))
    assert set(rows) == {"M1", SUPERVISOR_REF}  # M1 has the most calls ready today
    with transaction(world.engine) as s:
        for ref, password in rows.items():
            account = authenticate(s, ref, password, "demo", world.clock())
            assert account is not None
            assert account.role == ("supervisor" if ref == SUPERVISOR_REF else "manager")
