"""A customer moved to another manager (issue 16, item 9), on SQLite and PostgreSQL.

The move is what an operator does: ``vipcare import customers`` with a new
``account_manager_id``. Before the fix the old manager's ``/tasks.csv`` still carried
the moved customer's whole phone number, balance and plan on the calls they had worked
(masking followed the task's manager, not the customer's current one), and the queued
pre-call SMS still said "your account manager Li Na will call you soon from <Li Na's
number>".
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from crm.db import transaction
from crm.importer import HEADERS
from crm.models import AuditLog, CallTask, Customer, Manager, OutboundMessage
from tests.web_support import AS_OF, NAMES, World, local, sign_in
from vipcare.settings import get_settings

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

M1_PHONE = "+8613900000001"
M2_PHONE = "+8613900000002"


@pytest.fixture
def cli(world: World, db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    import vipcare.cli as package

    for module in vars(package).values():
        if hasattr(module, "now_utc"):
            monkeypatch.setattr(module, "now_utc", world.clock)
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    with transaction(world.engine) as s:  # the builder gives every manager one number
        s.execute(update(Manager).where(Manager.external_id == "M2").values(phone=M2_PHONE))
    yield CliRunner()
    get_settings.cache_clear()


def _move(cli: CliRunner, world: World, tmp_path: Path, ref: str, to: str) -> None:
    """``vipcare import customers`` with ``ref``'s row naming manager ``to``."""
    from vipcare.cli import app

    customer = world.crm.get(ref)
    row = {h: "" for h in HEADERS["customers"]}
    row.update(customer_id=ref, name=customer.name, phone=customer.phone, tier=customer.tier)
    row["account_manager_id"] = to
    path = tmp_path / f"move-{ref}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADERS["customers"])
        writer.writeheader()
        writer.writerow(row)
    result = cli.invoke(app, ["import", "customers", str(path)])
    assert result.exit_code == 0, result.output


def _export(world: World, login: str) -> list[dict[str, str]]:
    """The rows of ``login``'s /tasks.csv (the leading ' that defuses ``+86…`` for
    spreadsheets taken off the phone column)."""
    c = TestClient(world.app(), base_url="http://testserver")
    assert sign_in(c, login).status_code == 303
    text = c.get("/tasks.csv").text.lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        r["phone"] = r["phone"].removeprefix("'")
    return rows


def test_the_old_managers_export_no_longer_shows_a_moved_customers_details(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    from crm import tasks
    from crm.audit import Actor

    a = world.crm.get("A")
    with transaction(world.engine) as s:  # M1 has called A: that call is M1's history
        tasks.complete(
            s, world.tasks["A"], "reached", local(AS_OF, 11), AS_OF, Actor("manager", "M1"), 5
        )
    before = {r["task_id"]: r for r in _export(world, "M1")}
    row = before[str(world.tasks["A"])]
    assert row["phone"] == a.phone and row["plan_code"] == "P128"  # theirs: whole

    _move(cli, world, tmp_path, "A", "M2")

    after = {r["task_id"]: r for r in _export(world, "M1")}
    row = after[str(world.tasks["A"])]  # the call M1 worked stays in M1's history ...
    assert (row["customer_id"], row["outcome"]) == ("A", "reached")
    assert a.phone not in row["phone"] and row["phone"].endswith(a.phone[-4:])  # ... masked
    assert row["balance"] == row["plan_code"] == row["tier"] == row["clubs"] == ""
    m2 = TestClient(world.app(), base_url="http://testserver")
    sign_in(m2, "M2")
    assert f'href="tel:{a.phone}"' in m2.get("/customers/A").text  # the new manager's now


def _notice_of(world: World, ref: str) -> OutboundMessage:
    with transaction(world.engine) as s:
        return s.scalars(
            select(OutboundMessage)
            .join(CallTask, CallTask.notice_message_id == OutboundMessage.id)
            .join(Customer, Customer.id == CallTask.customer_id)
            .where(Customer.external_id == ref)
        ).one()


def test_a_queued_pre_call_sms_names_the_new_manager_and_number(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    notice = _notice_of(world, "E")
    assert notice.status == "queued"
    assert "Li Na" in notice.body and M1_PHONE in notice.body

    _move(cli, world, tmp_path, "E", "M2")

    moved = _notice_of(world, "E")
    assert moved.id == notice.id and moved.status == "queued"  # the same text, re-rendered
    assert "Zhang Wei" in moved.body and M2_PHONE in moved.body
    assert "Li Na" not in moved.body and M1_PHONE not in moved.body
    with transaction(world.engine) as s:
        audited = s.scalars(select(AuditLog).where(AuditLog.action == "message.rerendered")).all()
    assert [a.entity for a in audited] == [f"message:{notice.id}"]
    assert '"to_manager":"M2"' in audited[0].details.replace(" ", "")

    world.dispatch(local(AS_OF, 12))
    sent = [r for r in world.store.records() if r.to == world.crm.get("E").phone]
    assert len(sent) == 1 and "Zhang Wei" in sent[0].body and M2_PHONE in sent[0].body


def test_a_text_already_sent_is_not_rewritten(world: World, cli: CliRunner, tmp_path: Path):
    sent = _notice_of(world, "B")
    assert sent.status in ("sent", "delivered")
    _move(cli, world, tmp_path, "B", "M2")
    after = _notice_of(world, "B")
    assert after.body == sent.body and after.updated_at == sent.updated_at
    assert NAMES["B"].split()[0] in after.body


def test_a_managers_new_number_reaches_their_queued_texts(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    from vipcare.cli import app

    new_number = "+8613900000009"
    path = tmp_path / "managers.csv"
    path.write_text(
        ",".join(HEADERS["managers"]) + f"\nM1,Li Na,{new_number},,10\n", encoding="utf-8"
    )
    result = cli.invoke(app, ["import", "managers", str(path)])
    assert result.exit_code == 0, result.output
    notice = _notice_of(world, "E")
    assert notice.status == "queued" and new_number in notice.body and M1_PHONE not in notice.body
    assert "Li Na" in notice.body
