"""The invariant checker is not vacuous: each corruption of a clean day is reported by name.

One clean, completed care day per database (journeys, then every dispatch round);
it must show no violation. Then each corruption below is applied inside a
transaction, checked, and rolled back: the checker must report the invariant it
breaks, naming the row it broke.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import SYSTEM, AuditEntry
from crm.models import CallTask, CreditLedger, GracePeriod, JourneyOccurrence, OutboundMessage
from rules import RuleSet, load_rules
from tests.crash_driver import RULES_DIR
from tests.crash_driver import run as run_day
from tests.harness_day import LAST, balances, plan, seed_day
from tests.invariants import INVARIANTS, check_invariants

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Corruption:
    name: str
    expect: str
    """The invariant that must be reported."""
    apply: Callable[[Connection], str]
    """Corrupts the day; returns a text the violation's detail must contain."""
    rules: Callable[[RuleSet], RuleSet] | None = None


def _one(conn: Connection, sql: str) -> Any:
    row = conn.execute(text(sql)).first()
    assert row is not None, f"the clean day has no row for: {sql}"
    return row


def _ref(conn: Connection, customer_id: int) -> str:
    return str(_one(conn, f"SELECT external_id FROM customers WHERE id = {customer_id}")[0])


def _copy(conn: Connection, model: Any, where: str, **changes: Any) -> dict[str, Any]:
    """Insert a copy of one row (a new id, typed values) with ``changes``; returns it."""
    table = model.__table__
    found = conn.execute(select(table).where(text(where)).order_by(*table.primary_key).limit(1))
    first = found.first()
    assert first is not None, f"the clean day has no {table.name} row where {where}"
    row = dict(first._mapping)
    row.pop("id")
    row.update(changes)
    conn.execute(insert(table).values(row))
    return row


def _copy_message(conn: Connection, where: str, **changes: Any) -> int:
    return int(_copy(conn, OutboundMessage, where, **changes)["customer_id"])


def _append_audit(conn: Connection, entry: AuditEntry) -> None:
    with Session(bind=conn) as session:
        audit.append(session, SYSTEM, LAST, [entry])
        session.flush()


def _duplicate_message(conn: Connection) -> str:
    return _ref(conn, _copy_message(conn, "status = 'sent'", template="second_text"))


def _duplicate_task(conn: Connection) -> str:
    return _ref(conn, _copy(conn, CallTask, "kind = 'callback'", kind="care")["customer_id"])


def _duplicate_credit(conn: Connection) -> str:
    row = _copy(conn, CreditLedger, "kind = 'grace_advance'", kind="goodwill", amount=ZERO)
    return _ref(conn, row["customer_id"])


def _balance_moved(conn: Connection) -> str:
    cid = _one(conn, "SELECT customer_id FROM credit_ledger LIMIT 1")[0]
    conn.execute(text(f"UPDATE customers SET balance = balance + 1 WHERE id = {cid}"))
    return _ref(conn, cid)


def _fact_lost(conn: Connection) -> str:
    cid = _one(conn, "SELECT customer_id FROM credit_ledger LIMIT 1")[0]
    conn.execute(text(f"DELETE FROM balance_facts WHERE customer_id = {cid}"))
    return _ref(conn, cid)


def _chain_broken(conn: Connection) -> str:
    lid, cid = _one(conn, "SELECT id, customer_id FROM credit_ledger ORDER BY id LIMIT 1")
    conn.execute(
        text(f"UPDATE credit_ledger SET balance_after = balance_after + 1 WHERE id = {lid}")
    )
    return _ref(conn, cid)


def _second_open_grace(conn: Connection) -> str:
    row = _copy(conn, GracePeriod, "status = 'open'", occurrence="grace:2026-10")
    return _ref(conn, row["customer_id"])


def _suspended_untold(conn: Connection) -> str:
    gid, cid = _one(conn, "SELECT id, customer_id FROM grace_periods WHERE status = 'open'")
    conn.execute(text(f"UPDATE grace_periods SET status = 'suspended' WHERE id = {gid}"))
    conn.execute(
        text(
            "UPDATE outbound_messages SET status = 'expired', sent_at = NULL "
            f"WHERE journey = 'grace_credit' AND customer_id = {cid}"
        )
    )
    return _ref(conn, cid)


def _credit_without_audit(conn: Connection) -> str:
    last = _one(conn, "SELECT max(id) FROM credit_ledger")[0]
    _copy(conn, CreditLedger, f"id = {last}", kind="goodwill", amount=ZERO, occurrence="gw:1")
    return "gw:1"


def _audit_without_credit(conn: Connection) -> str:
    cid = _one(conn, "SELECT customer_id FROM credit_ledger LIMIT 1")[0]
    _append_audit(
        conn,
        AuditEntry(
            "ledger.credit",
            {"amount": "5.00", "kind": "grace_advance", "balance_after": "0.00"},
            customer_id=cid,
            customer_ref=_ref(conn, cid),
            entity="occurrence:grace_credit:grace:2026-10",
        ),
    )
    return "grace:2026-10"


def _grace_tier_lowered(conn: Connection) -> str:
    cid = _one(
        conn,
        "SELECT customer_id FROM credit_ledger WHERE kind = 'grace_advance' AND amount > 10",
    )[0]
    conn.execute(text(f"UPDATE customers SET tier = 'gold', tier_rank = 1 WHERE id = {cid}"))
    return _ref(conn, cid)


def _grace_to_silver(conn: Connection) -> str:
    cid = _one(conn, "SELECT customer_id FROM credit_ledger WHERE kind = 'grace_advance'")[0]
    conn.execute(text(f"UPDATE customers SET tier = 'silver', tier_rank = 0 WHERE id = {cid}"))
    return "tier silver"


def _grace_twice(conn: Connection) -> str:
    row = _copy(
        conn, CreditLedger, "kind = 'grace_advance'", occurrence="grace:2026-11b", amount=ZERO
    )
    return _ref(conn, row["customer_id"])


def _nothing(conn: Connection) -> str:
    """The data stays; the rules change (see ``_lower_grace_cap``)."""
    return "> cap"


def _lower_grace_cap(rules: RuleSet) -> RuleSet:
    policy = rules.contact_policy.model_copy(
        update={"max_credit": {**rules.contact_policy.max_credit, "grace_credit": Decimal("5")}}
    )
    return dataclasses.replace(rules, contact_policy=policy)


def _opted_out(conn: Connection) -> str:
    cid = _one(conn, "SELECT customer_id FROM outbound_messages WHERE status = 'sent'")[0]
    conn.execute(text(f"UPDATE customers SET sms_opt_out = true WHERE id = {cid}"))
    return _ref(conn, cid)


def _at_night(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'sent' ORDER BY id")[0]
    night = datetime(2026, 11, 22, 19, 0, tzinfo=UTC)  # 03:00 in Shanghai
    messages = OutboundMessage.__table__
    conn.execute(
        update(messages).where(messages.c.id == mid).values(sending_at=night, sent_at=night)
    )
    return f"message {mid}"


def _over_cap(conn: Connection) -> str:
    cid = _copy_message(conn, "status = 'sent' AND category = 'service'", occurrence="x1")
    for n in range(2, 5):
        _copy_message(
            conn, f"customer_id = {cid} AND occurrence = 'x1'", occurrence=f"x{n}", template="t"
        )
    return _ref(conn, cid)


def _after_validity(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'sent' ORDER BY id")[0]
    conn.execute(text(f"UPDATE outbound_messages SET valid_until = sending_at WHERE id = {mid}"))
    return f"message {mid}"


def _stuck(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'sent' ORDER BY id")[0]
    conn.execute(text(f"UPDATE outbound_messages SET status = 'sending' WHERE id = {mid}"))
    return f"message {mid}"


def _left_queued(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'sent' ORDER BY id")[0]
    conn.execute(text(f"UPDATE outbound_messages SET status = 'queued' WHERE id = {mid}"))
    return f"message {mid}"


def _no_reason(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'suppressed'")[0]
    conn.execute(text(f"UPDATE outbound_messages SET status_reason = NULL WHERE id = {mid}"))
    return f"message {mid}"


def _sent_without_provider(conn: Connection) -> str:
    mid = _one(conn, "SELECT id FROM outbound_messages WHERE status = 'sent' ORDER BY id")[0]
    conn.execute(text(f"UPDATE outbound_messages SET provider_message_id = NULL WHERE id = {mid}"))
    return f"message {mid}"


def _task_ready_twice(conn: Connection) -> str:
    tid, cid = _one(
        conn, "SELECT id, customer_id FROM call_tasks WHERE status = 'ready' AND NOT no_notice"
    )
    _append_audit(
        conn,
        AuditEntry("task.ready", {"task_id": tid}, customer_id=cid, entity=f"task:{tid}"),
    )
    return f"task {tid}"


def _sent_audited_twice(conn: Connection) -> str:
    mid, cid = _one(conn, "SELECT id, customer_id FROM outbound_messages WHERE status = 'sent'")
    _append_audit(
        conn,
        AuditEntry("message.sent", {"message_id": mid}, customer_id=cid, entity=f"message:{mid}"),
    )
    return f"message {mid}"


def _decision_unaudited(conn: Connection) -> str:
    _copy(conn, JourneyOccurrence, "journey = 'callback'", occurrence="callback:1999-01-01")
    return "callback:1999-01-01"


def _audit_edited(conn: Connection) -> str:
    seq = _one(conn, "SELECT seq FROM audit_log WHERE action = 'task.ready' ORDER BY seq")[0]
    conn.execute(text(f"UPDATE audit_log SET details = '{{}}' WHERE seq = {seq}"))
    return f"row {seq}"


CORRUPTIONS = [
    Corruption("second message, same occurrence", "duplicate_message", _duplicate_message),
    Corruption("second task, same occurrence", "duplicate_task", _duplicate_task),
    Corruption("second credit, same occurrence", "duplicate_credit", _duplicate_credit),
    Corruption("balance moved outside the ledger", "ledger_balance", _balance_moved),
    Corruption("balance without its feed row", "balance_fact", _fact_lost),
    Corruption("balance_after off by one", "ledger_chain", _chain_broken),
    Corruption("two graces open at once", "grace_two_open", _second_open_grace),
    Corruption("suspended, never told", "suspension_without_notice", _suspended_untold),
    Corruption("credit without its audit row", "credit_unaudited", _credit_without_audit),
    Corruption("audit row without its credit", "audit_without_credit", _audit_without_credit),
    Corruption("grace above the tier's amount", "grace_over_cap", _grace_tier_lowered),
    Corruption(
        "grace above the policy's cap", "grace_over_cap", lambda c: "> cap", _lower_grace_cap
    ),
    Corruption("grace to an ineligible tier", "grace_ineligible", _grace_to_silver),
    Corruption("grace twice in one month", "grace_twice_in_month", _grace_twice),
    Corruption("sent to an opted-out customer", "message_to_opted_out", _opted_out),
    Corruption("sent at night", "message_outside_window", _at_night),
    Corruption("four service texts in a day", "message_over_cap", _over_cap),
    Corruption("sent after its validity", "message_after_valid_until", _after_validity),
    Corruption("left in sending", "message_stuck_sending", _stuck),
    Corruption("due but still queued", "message_due_not_final", _left_queued),
    Corruption("suppressed without a reason", "message_without_reason", _no_reason),
    Corruption("sent without a provider id", "message_without_reason", _sent_without_provider),
    Corruption("task audited ready twice", "audit_mismatch", _task_ready_twice),
    Corruption("message audited sent twice", "audit_mismatch", _sent_audited_twice),
    Corruption("decision without its audit row", "audit_mismatch", _decision_unaudited),
    Corruption("audit row edited", "audit_chain", _audit_edited),
]


def test_every_invariant_is_checked_and_a_clean_day_passes(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    seed_day(engine)
    openings = balances(engine)
    rules = load_rules(RULES_DIR)
    assert run_day(plan(db_url, tmp_path / "day"), ruleset=rules)
    assert check_invariants(engine, rules, now=LAST, opening_balances=openings) == []
    missed: list[str] = []
    for case in CORRUPTIONS:
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                needle = case.apply(conn)
                found = check_invariants(
                    conn,
                    case.rules(rules) if case.rules else rules,
                    now=LAST + timedelta(seconds=1),
                    opening_balances=openings,
                )
            finally:
                trans.rollback()
        hits = [v for v in found if v.invariant == case.expect and needle in v.detail]
        if not hits:
            missed.append(f"{case.name}: wanted {case.expect} naming {needle!r}, got {found}")
    assert not missed, "\n".join(missed)
    print(
        f"\ninvariants [{engine.dialect.name}]: clean day 0 violations; "
        f"{len(CORRUPTIONS)} of {len(CORRUPTIONS)} corruptions reported by name "
        f"({len(INVARIANTS)} invariants)"
    )
    assert {c.expect for c in CORRUPTIONS} == set(INVARIANTS)  # each one is exercised
    # and the clean day is still clean: every corruption was rolled back
    assert check_invariants(engine, rules, now=LAST, opening_balances=openings) == []
