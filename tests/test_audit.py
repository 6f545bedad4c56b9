"""The hash-chained audit log: appends, verification and tampering, on both databases."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from crm import audit
from crm.audit import SYSTEM, Actor, AuditEntry
from crm.db import transaction
from vipcare.cli import app
from vipcare.settings import get_settings


def _fill(engine, now, n: int = 5) -> None:
    with transaction(engine) as s:
        audit.append(
            s, SYSTEM, now, [AuditEntry("test.event", {"i": i, "amount": "1.50"}) for i in range(n)]
        )


def test_chain_verifies_and_links_rows(engine, now):
    _fill(engine, now)
    with transaction(engine) as s:
        audit.record(
            s,
            Actor("manager", "M1"),
            now + timedelta(seconds=1),
            "task.done",
            {"task_id": 1},
            customer_ref="C1",
        )
        rows = audit.list_rows(s)
        result = audit.verify(s)
    assert result.ok and result.rows_checked == 6
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert rows[-1].actor_type == "manager" and rows[-1].customer_ref == "C1"


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "problem"),
    [
        ("UPDATE audit_log SET details = '{\"i\":9}' WHERE seq = 3", 3, "content"),
        ("UPDATE audit_log SET actor_id = 'mallory' WHERE seq = 2", 2, "content"),
        ("DELETE FROM audit_log WHERE seq = 4", 4, "missing"),
        ("DELETE FROM audit_log WHERE seq = 5", 5, "deleted"),
        ("UPDATE audit_log SET prev_hash = hash WHERE seq = 2", 2, "prev_hash"),
    ],
)
def test_tampering_is_detected_at_the_first_bad_row(engine, now, tamper, bad_seq, problem):
    _fill(engine, now)
    with engine.begin() as conn:
        conn.exec_driver_sql(tamper)
    with transaction(engine) as s:
        result = audit.verify(s)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert problem in (result.problem or "")


def test_recomputed_hash_cannot_hide_an_edit(engine, now):
    """Rewriting a row and its own hash still breaks the link to the next row."""
    _fill(engine, now)
    with transaction(engine) as s:
        row = audit.list_rows(s)[1]
        forged = audit.row_hash(
            prev_hash=row.prev_hash,
            seq=row.seq,
            at=row.at,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            action="forged",
            customer_id=None,
            customer_ref=None,
            entity=None,
            rule_id=None,
            rule_hash=None,
            details=row.details,
        )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET action='forged', hash=:h WHERE seq=2"), {"h": forged}
        )
    with transaction(engine) as s:
        result = audit.verify(s)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_concurrent_writers_never_fork_the_chain(engine, now):
    def writer(k: int) -> None:
        for j in range(5):
            with transaction(engine) as s:
                audit.record(s, SYSTEM, now, "concurrent", {"writer": k, "j": j})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with transaction(engine) as s:
        result = audit.verify(s)
    assert result.ok and result.rows_checked == 20


def test_naive_time_is_refused(engine, now):
    with transaction(engine) as s, pytest.raises(ValueError, match="timezone-aware"):
        audit.record(s, SYSTEM, now.replace(tzinfo=None), "x")


@pytest.fixture
def cli_env(db_url, monkeypatch):
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_audit_cli_verify_and_list(engine, now, cli_env):
    _fill(engine, now, 3)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "3 rows verified" in ok.output
    listed = runner.invoke(app, ["audit", "list", "--json"])
    assert listed.exit_code == 0
    assert '"action": "test.event"' in listed.output
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET details='{}' WHERE seq=2"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "row 2" in bad.output
