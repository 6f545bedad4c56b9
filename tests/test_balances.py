"""The balances feed reconciled with the ledger (crm.balances), on both databases.

A balance is the latest feed value plus vipcare's postings after its ``as_of``; the
balance *known at* an instant uses only feed rows that had arrived by then. These
are the owner's own guarantees; ``tests/test_facts_as_of.py`` shows them from the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from crm import balances, ledger
from crm.balances import BalanceAt, BalanceFact, BalanceFactError, record_balances
from crm.db import transaction
from crm.invariants import check
from crm.models import Customer
from tests.builders import Crm


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def known(engine: Engine, cid: int, at: datetime) -> Decimal | None:
    with transaction(engine) as s:
        value = s.scalar(select(BalanceAt(at).value).where(Customer.id == cid))
    return value


def fact(cid: int, balance: str, as_of: datetime) -> BalanceFact:
    return BalanceFact(customer_id=cid, balance=Decimal(balance), as_of=as_of)


def test_the_balance_known_at_an_instant_and_the_current_one(engine: Engine) -> None:
    crm = Crm(engine)
    cid = crm.customer("G", tier="gold", balance=Decimal("0.00"))
    with transaction(engine) as s:  # billing: -10.00 at the end of the 20th, sent the 21st
        out = record_balances(
            s, [fact(cid, "-10.00", utc(2026, 11, 20, 16))], utc(2026, 11, 20, 23)
        )
    assert out.as_dict() == {"applied": 1, "repeated": 0, "stale": 0}
    with transaction(engine) as s:  # vipcare advances 5.00 on the 21st at 09:00 (01:00 UTC)
        ledger.post(
            s,
            [ledger.Posting(cid, "G", Decimal("5.00"), "grace_advance", "j", "o", "j", None)],
            utc(2026, 11, 21, 1),
        )
    with transaction(engine) as s:  # the end-of-21st file includes the advance
        record_balances(s, [fact(cid, "-5.00", utc(2026, 11, 21, 16))], utc(2026, 11, 21, 23))
        later = record_balances(  # a late file, older than the stored one: skipped, counted
            s, [fact(cid, "-30.00", utc(2026, 11, 20, 4))], utc(2026, 11, 22, 2)
        )
    assert (later.stale_count, later.stale[0].stored_as_of) == (1, utc(2026, 11, 21, 16))
    assert known(engine, cid, utc(2026, 11, 21, 0)) == Decimal("-10.00")
    assert known(engine, cid, utc(2026, 11, 21, 2)) == Decimal("-5.00")  # feed + the advance
    assert known(engine, cid, utc(2026, 11, 21, 22)) == Decimal("-5.00")  # not yet received
    assert known(engine, cid, utc(2026, 11, 22, 0)) == Decimal("-5.00")
    assert known(engine, cid, utc(2026, 11, 19)) is None  # nothing fed had arrived yet
    assert crm.get("G").balance == Decimal("-5.00")
    with transaction(engine) as s:
        assert check(s).ok


def test_a_repeated_fact_is_a_no_op_and_a_contradicting_or_future_one_is_refused(
    engine: Engine,
) -> None:
    crm = Crm(engine)
    cid = crm.customer("G", tier="gold", balance=Decimal("0.00"))
    row = fact(cid, "-10.00", utc(2026, 11, 20, 16))
    with transaction(engine) as s:
        record_balances(s, [row], utc(2026, 11, 20, 23))
    with transaction(engine) as s:
        again = record_balances(s, [row], utc(2026, 11, 21, 5))
    assert again.as_dict() == {"applied": 0, "repeated": 1, "stale": 0}
    with pytest.raises(BalanceFactError, match=r"contradicts -10\.00"), transaction(engine) as s:
        record_balances(s, [fact(cid, "-9.99", utc(2026, 11, 20, 16))], utc(2026, 11, 21, 6))
    with pytest.raises(BalanceFactError, match="is in the future"), transaction(engine) as s:
        record_balances(s, [fact(cid, "1.00", utc(2062, 11, 20, 16))], utc(2026, 11, 21, 6))
    assert balances.future_reason(utc(2026, 11, 21), utc(2026, 11, 21)) is None
    assert crm.get("G").balance == Decimal("-10.00")


def test_a_feed_other_than_a_file_is_audited_with_its_counts(engine: Engine) -> None:
    from crm.audit import Actor
    from crm.models import AuditLog

    crm = Crm(engine)
    cid = crm.customer("G", tier="gold", balance=Decimal("0.00"))
    with transaction(engine) as s:
        record_balances(
            s, [fact(cid, "3.00", utc(2026, 11, 20, 16))], utc(2026, 11, 21), Actor("system", "api")
        )
    with transaction(engine) as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "balances.recorded")).one()
    assert (row.actor_id, row.details) == ("api", '{"applied":1,"repeated":0,"stale":0}')
