"""The transition primitive (``crm.state``): guarded, audited moves on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

import pytest
from sqlalchemy import Engine, select

from crm import audit
from crm.audit import Actor
from crm.bulk import insert_many, table_of
from crm.db import session_factory
from crm.errors import InvalidTransition, NotFound
from crm.models import AuditLog, GracePeriod
from crm.state import Machine, move, move_one
from tests.builders import Crm

AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
ACTOR = Actor("system", "test")


class Grace(StrEnum):
    OPEN = "open"
    REPAID = "repaid"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


MACHINE = Machine(
    entity="grace",
    table=table_of(GracePeriod),
    status_enum=Grace,
    moves={
        Grace.OPEN: {
            Grace.REPAID: "grace.repaid",
            Grace.SUSPENDED: "grace.suspended",
            Grace.EXPIRED: "grace.expired",
            Grace.CANCELLED: "grace.cancelled",
        },
        Grace.REPAID: {},
        Grace.SUSPENDED: {},
        Grace.EXPIRED: {},
        Grace.CANCELLED: {},
    },
    refusals={(Grace.REPAID, Grace.SUSPENDED): "the customer topped up; nothing to suspend"},
    audit_columns=("rule_hash",),
    noun="a grace",
)


def _graces(engine: Engine, n: int) -> list[int]:
    crm = Crm(engine)
    crm.manager()
    customers = [crm.customer(f"C{i}") for i in range(n)]
    with session_factory(engine)() as s, s.begin():
        insert_many(
            s,
            table_of(GracePeriod),
            [
                {
                    "customer_id": c,
                    "occurrence": "grace:2026-12",
                    "amount": Decimal("10.00"),
                    "granted_on": date(2026, 12, 1),
                    "granted_at": AT,
                    "deadline": date(2026, 12, 4),
                    "status": "open",
                    "closed_on": None,
                    "rule_hash": "h" * 64,
                }
                for c in customers
            ],
        )
        return list(s.scalars(select(GracePeriod.id).order_by(GracePeriod.id)))


def _audit(engine: Engine) -> list[AuditLog]:
    with session_factory(engine)() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action.like("grace.%"))))


def test_a_machine_must_declare_every_status() -> None:
    with pytest.raises(ValueError, match="no moves declared"):
        Machine(entity="x", table=table_of(GracePeriod), status_enum=Grace, moves={})


def test_reasons_name_the_refusal() -> None:
    assert MACHINE.reason("open", "repaid") is None
    assert MACHINE.reason("repaid", "suspended") == "the customer topped up; nothing to suspend"
    assert MACHINE.reason("expired", "open") == "expired is final; a grace never leaves it"
    assert MACHINE.reason("open", "open") == "a grace is already open"
    assert "unknown status 'paid'" in (MACHINE.reason("open", "paid") or "")
    assert MACHINE.terminal == {Grace.REPAID, Grace.SUSPENDED, Grace.EXPIRED, Grace.CANCELLED}
    assert MACHINE.open == (Grace.OPEN,)


def test_move_changes_only_legal_rows_and_audits_exactly_them(engine: Engine) -> None:
    ids = _graces(engine, 5)
    with session_factory(engine)() as s, s.begin():
        first = move(
            s,
            MACHINE,
            ids[:2],
            Grace.REPAID,
            at=AT,
            actor=ACTOR,
            values={"closed_on": date(2026, 12, 2)},
            details={"reason": "topped up"},
        )
    assert [m.id for m in first] == ids[:2]
    assert all(m.source is Grace.OPEN and m.values == {"rule_hash": "h" * 64} for m in first)
    assert [m.customer_ref for m in first] == ["C0", "C1"]

    with session_factory(engine)() as s, s.begin():
        # all five asked; the two repaid ones are no longer open and do not move
        second = move(
            s,
            MACHINE,
            GracePeriod.id.in_(ids),
            Grace.EXPIRED,
            at=AT,
            actor=ACTOR,
            details=lambda m: {"grace": m.id},
        )
    assert [m.id for m in second] == ids[2:]
    with session_factory(engine)() as s:
        status: dict[int, str] = dict(
            s.execute(select(GracePeriod.id, GracePeriod.status)).tuples().all()
        )
    assert status == {**{i: "repaid" for i in ids[:2]}, **{i: "expired" for i in ids[2:]}}
    rows = _audit(engine)
    assert [(r.action, r.entity) for r in rows] == [
        *(("grace.repaid", f"grace:{i}") for i in ids[:2]),
        *(("grace.expired", f"grace:{i}") for i in ids[2:]),
    ]
    assert json.loads(rows[0].details) == {"from": "open", "reason": "topped up"}
    assert json.loads(rows[-1].details) == {"from": "open", "grace": ids[-1]}
    assert rows[0].customer_ref == "C0"
    with session_factory(engine)() as s:
        assert audit.verify(s).ok


def test_an_illegal_target_is_refused_before_any_write(engine: Engine) -> None:
    ids = _graces(engine, 1)
    with session_factory(engine)() as s, s.begin():
        with pytest.raises(InvalidTransition, match="no status of grace may go to open"):
            move(s, MACHINE, ids, Grace.OPEN, at=AT, actor=ACTOR)
        with pytest.raises(InvalidTransition, match="topped up"):
            move(s, MACHINE, ids, Grace.SUSPENDED, at=AT, actor=ACTOR, sources=[Grace.REPAID])
    assert _audit(engine) == []


def test_move_one_says_why_a_row_did_not_move(engine: Engine) -> None:
    ids = _graces(engine, 1)
    with session_factory(engine)() as s, s.begin():
        done = move_one(s, MACHINE, ids[0], Grace.REPAID, at=AT, actor=ACTOR)
    assert done.source is Grace.OPEN
    with session_factory(engine)() as s, s.begin():
        with pytest.raises(InvalidTransition) as refused:
            move_one(s, MACHINE, ids[0], Grace.SUSPENDED, at=AT, actor=ACTOR)
        with pytest.raises(NotFound):
            move_one(s, MACHINE, 999_999, Grace.REPAID, at=AT, actor=ACTOR)
    assert refused.value.reason == "the customer topped up; nothing to suspend"
    assert len(_audit(engine)) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_of_two_racing_writers_exactly_one_moves_and_audits_each_row(engine: Engine) -> None:
    ids = _graces(engine, 50)
    barrier = threading.Barrier(2)
    results: dict[str, list[int]] = {}

    def writer(name: str, to: Grace) -> None:
        with session_factory(engine)() as s, s.begin():
            barrier.wait()
            results[name] = [m.id for m in move(s, MACHINE, ids, to, at=AT, actor=ACTOR)]

    threads = [
        threading.Thread(target=writer, args=("repay", Grace.REPAID)),
        threading.Thread(target=writer, args=("suspend", Grace.SUSPENDED)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results["repay"] + results["suspend"]) == ids
    assert not set(results["repay"]) & set(results["suspend"])
    rows = _audit(engine)
    assert len(rows) == 50
    assert {r.entity for r in rows} == {f"grace:{i}" for i in ids}
