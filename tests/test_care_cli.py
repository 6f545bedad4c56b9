"""`vipcare tasks`, `vipcare ledger` and `vipcare run` arguments, through the real CLI app."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from crm.models import CallTask
from tests.builders import Crm
from vipcare.cli import app
from vipcare.settings import get_settings

AS_OF = date(2026, 11, 23)


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def crm(engine):
    c = Crm(engine)
    c.manager("M1", capacity=10, name="Li Na")
    c.manager("M2", capacity=10, name="Zhang Wei")
    m2 = c.manager_id("M2")
    c.customer("A", tier="diamond", sms_opt_out=True, last_contact_on=AS_OF - timedelta(days=40))
    c.customer("B", tier="gold", balance=Decimal("-5.00"), last_contact_on=AS_OF)
    c.customer("C", tier="diamond", manager_id=m2, last_contact_on=AS_OF - timedelta(days=40))
    c.run(AS_OF)
    return c


def test_tasks_list_json_per_manager(cli, crm):
    out = cli.invoke(app, ["tasks", "list", "--manager", "M1", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["customer_id"], r["kind"], r["status"], r["no_notice"]) for r in rows] == [
        ("A", "callback", "ready", True)
    ]
    assert rows[0]["manager_id"] == "M1" and rows[0]["customer_phone"].count("*") >= 4
    other = json.loads(cli.invoke(app, ["tasks", "list", "--manager", "M2", "--json"]).stdout)
    assert [(r["customer_id"], r["status"], r["notice_status"]) for r in other] == [
        ("C", "awaiting_notice", "queued")
    ]


def test_tasks_done_records_outcome_and_refuses_bad_input(cli, crm):
    (task,) = crm.rows(CallTask, status="ready")
    bad = cli.invoke(app, ["tasks", "done", str(task.id), "--outcome", "reachd"])
    assert bad.exit_code == 2 and "reachd" in bad.output
    other = cli.invoke(
        app, ["tasks", "done", str(task.id), "--outcome", "reached", "--manager", "M2"]
    )
    assert other.exit_code == 1 and "another manager" in other.output
    missing = cli.invoke(app, ["tasks", "done", "99999", "--outcome", "reached"])
    assert missing.exit_code == 1 and "99999" in missing.output
    ok = cli.invoke(
        app,
        [
            "tasks",
            "done",
            str(task.id),
            "--outcome",
            "reached",
            "--satisfaction",
            "4",
            "--note",
            "likes the new plan",
            "--manager",
            "M1",
        ],
    )
    assert ok.exit_code == 0, ok.output
    done = crm.rows(CallTask, id=task.id)[0]
    assert (done.status, done.outcome, done.satisfaction, done.note) == (
        "done",
        "reached",
        4,
        "likes the new plan",
    )
    again = cli.invoke(app, ["tasks", "done", str(task.id), "--outcome", "reached"])
    assert again.exit_code == 1 and "closed" in again.output


def test_awaiting_notice_task_cannot_be_completed(cli, crm):
    (task,) = crm.rows(CallTask, status="awaiting_notice")
    out = cli.invoke(app, ["tasks", "done", str(task.id), "--outcome", "reached"])
    assert out.exit_code == 1 and "pre-call SMS" in out.output


def test_ledger_list_json(cli, crm):
    out = cli.invoke(app, ["ledger", "list", "--json"])
    assert out.exit_code == 0
    rows = json.loads(out.stdout)
    assert [(r["customer_id"], r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
        ("B", "grace_advance", "10.00", "5.00")
    ]
    assert rows[0]["created_at"].endswith("Z")


def test_tasks_list_rejects_unknown_status(cli, crm):
    out = cli.invoke(app, ["tasks", "list", "--status", "redy"])
    assert out.exit_code == 2 and "redy" in out.output


def test_commands_refuse_a_database_that_was_never_initialised(tmp_path, monkeypatch):
    target = tmp_path / "missing.db"
    monkeypatch.setenv("VIPCARE_DATABASE_URL", f"sqlite:///{target}")
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["tasks", "list"])
        assert out.exit_code == 1 and "vipcare init" in out.output
        assert not target.exists()  # a read-only command does not create an empty file
        assert CliRunner().invoke(app, ["init"]).exit_code == 0
        assert CliRunner().invoke(app, ["tasks", "list", "--json"]).stdout.strip() == "[]"
    finally:
        get_settings.cache_clear()
