"""The invariants every harness test checks at its end (issue 12), as one reusable checker.

:func:`check_invariants` reads the whole CRM (test-sized databases) and returns every
violation it finds, each named by the invariant it breaks, so a test can assert on
the exact one. :func:`assert_invariants` fails with the whole list.

The money and state invariants are the product's own (:mod:`crm.invariants`, which
vipcare checks after every import and care day): ``ledger_balance``, ``balance_fact``,
``ledger_chain``, ``duplicate_credit``, ``grace_over_cap``, ``grace_ineligible``,
``grace_twice_in_month``, ``grace_two_open`` and ``suspension_without_notice``. This
harness adds what needs the whole database in memory:

- ``duplicate_message`` / ``duplicate_task``: no customer has two messages or tasks
  for the same (journey, occurrence) — stricter than the unique keys, which also name
  the template or kind;
- ``ledger_balance`` for a balance without a feed time: its opening balance plus its
  ledger; ``credit_unaudited`` / ``audit_without_credit``: every credit has exactly its
  audit row and back;
- ``message_to_opted_out``, ``message_outside_window``, ``message_over_cap``,
  ``message_after_valid_until``: nothing the provider accepted broke the contact policy;
- ``message_stuck_sending``, ``message_due_not_final``, ``message_without_reason``:
  every due message ends sent, delivered, failed, suppressed or expired, with a reason
  when it was not sent;
- ``audit_mismatch`` and ``audit_chain``: the audit trail has each decision, credit,
  message outcome and ready task exactly as the tables do, and ``vipcare audit verify``
  (:func:`crm.audit.verify`) passes.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from crm import audit
from crm import invariants as product
from crm.models import (
    AuditLog,
    CallTask,
    CreditLedger,
    Customer,
    GracePeriod,
    JourneyOccurrence,
    OutboundMessage,
)
from flows.journeys.day import grace_limits
from notifications.policy import category_cap, in_window, zone
from rules import RuleSet

INVARIANTS = (
    *product.INVARIANTS,
    "duplicate_message",
    "duplicate_task",
    "credit_unaudited",
    "audit_without_credit",
    "message_to_opted_out",
    "message_outside_window",
    "message_over_cap",
    "message_after_valid_until",
    "message_stuck_sending",
    "message_due_not_final",
    "message_without_reason",
    "audit_mismatch",
    "audit_chain",
)
"""Every name a :class:`Violation` can carry."""
ACCEPTED = ("sent", "delivered", "undelivered")
"""Statuses of a message a provider took: the contact policy must have allowed them."""
FINAL = ("sent", "delivered", "undelivered", "failed", "suppressed", "expired")
NEEDS_REASON = ("undelivered", "failed", "suppressed", "expired")
OUTCOME_ACTION = {
    "failed": "message.failed",
    "suppressed": "message.suppressed",
    "expired": "message.expired",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its name and what broke it."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


def _audit_details(row: Any) -> dict[str, Any]:
    try:
        found = json.loads(row.details)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def check_invariants(
    engine: Engine | Connection,
    ruleset: RuleSet,
    *,
    now: datetime,
    opening_balances: Mapping[str, Decimal] | None = None,
) -> list[Violation]:
    """Every violation of the invariants in the CRM ``engine`` at instant ``now``.

    ``engine`` may be a connection inside a transaction (a test's corruption that
    is rolled back afterwards).

    ``now`` is the last dispatch instant: a message due by then must have reached a
    final status. ``opening_balances`` (customer ref → balance before the run) lets
    the ledger check total every customer's balance; without it the last ledger row
    must match the balance (true while no top-up was imported since).
    """
    with Session(engine) as session:
        data = _Data.load(session)
        chain = audit.verify(session)
        found = product.check(session, grace=grace_limits(ruleset))
    out: list[Violation] = [Violation(v.invariant, v.detail) for v in found.violations]
    out += _duplicates(data)
    out += _ledger(data, opening_balances)
    out += _contact_policy(data, ruleset)
    out += _endings(data, now)
    out += _audit_matches(data)
    if not chain.ok:
        out.append(Violation("audit_chain", f"row {chain.first_bad_seq}: {chain.problem}"))
    return out


def assert_invariants(
    engine: Engine | Connection,
    ruleset: RuleSet,
    *,
    now: datetime,
    opening_balances: Mapping[str, Decimal] | None = None,
) -> None:
    """Fail with every violation found (see :func:`check_invariants`)."""
    found = check_invariants(engine, ruleset, now=now, opening_balances=opening_balances)
    assert not found, f"{len(found)} invariant violation(s):\n" + "\n".join(
        str(v) for v in found[:50]
    )


@dataclass
class _Data:
    customers: dict[int, Any]
    occurrences: list[Any]
    messages: list[Any]
    tasks: list[Any]
    ledger: list[Any]
    graces: list[Any]
    audit: list[Any]

    @classmethod
    def load(cls, session: Session) -> _Data:
        def rows(model: Any, *order: Any) -> list[Any]:
            return list(session.execute(select(model.__table__).order_by(*order)).all())

        return cls(
            customers={c.id: c for c in rows(Customer, Customer.id)},
            occurrences=rows(JourneyOccurrence, JourneyOccurrence.id),
            messages=rows(OutboundMessage, OutboundMessage.id),
            tasks=rows(CallTask, CallTask.id),
            ledger=rows(CreditLedger, CreditLedger.id),
            graces=rows(GracePeriod, GracePeriod.id),
            audit=rows(AuditLog, AuditLog.seq),
        )

    def ref(self, customer_id: int) -> str:
        found = self.customers.get(customer_id)
        return str(found.external_id) if found is not None else f"#{customer_id}"


def _duplicates(data: _Data) -> list[Violation]:
    """Two rows of one table for one (journey, customer, occurrence), whatever template/kind."""
    out: list[Violation] = []
    groups: list[tuple[str, list[Any], str]] = [
        ("duplicate_message", data.messages, "template"),
        ("duplicate_task", data.tasks, "kind"),
    ]
    for name, table, what in groups:
        seen: dict[tuple[str, int, str], list[str]] = defaultdict(list)
        for r in table:
            seen[(r.journey, r.customer_id, r.occurrence)].append(str(getattr(r, what)))
        for (journey, cid, occurrence), found in sorted(seen.items(), key=str):
            if len(found) > 1:
                out.append(
                    Violation(
                        name,
                        f"{data.ref(cid)} has {len(found)} for ({journey}, {occurrence}): "
                        + ", ".join(sorted(found)),
                    )
                )
    return out


def _ledger(data: _Data, openings: Mapping[str, Decimal] | None) -> list[Violation]:
    """A balance without a feed time against its opening; every credit against its audit."""
    out: list[Violation] = []
    by_customer: dict[int, list[Any]] = defaultdict(list)
    for row in data.ledger:
        by_customer[row.customer_id].append(row)
    for cid, customer in sorted(data.customers.items()):
        ref = str(customer.external_id)
        if openings is None or ref not in openings or customer.balance_as_of is not None:
            continue  # a fed balance: the product's ledger_balance derives it from the feed
        expected = openings[ref] + sum((r.amount for r in by_customer.get(cid, [])), Decimal("0"))
        if customer.balance != expected:
            out.append(
                Violation(
                    "ledger_balance", f"{ref}: balance {customer.balance}, ledger says {expected}"
                )
            )
    # Each credit and its audit row, both ways.
    audited: Counter[tuple[int | None, str | None, str, str]] = Counter()
    for a in data.audit:
        if a.action in ("ledger.credit", "ledger.reversal"):
            d = _audit_details(a)
            audited[(a.customer_id, a.entity, str(d.get("kind")), str(d.get("amount")))] += 1
    booked: Counter[tuple[int | None, str | None, str, str]] = Counter(
        (r.customer_id, f"occurrence:{r.journey}:{r.occurrence}", r.kind, str(r.amount))
        for r in data.ledger
    )
    for key, n in sorted((booked - audited).items(), key=str):
        out.append(
            Violation("credit_unaudited", f"{data.ref(key[0] or 0)} {key[1:]}: {n} without audit")
        )
    for key, n in sorted((audited - booked).items(), key=str):
        out.append(
            Violation(
                "audit_without_credit", f"{data.ref(key[0] or 0)} {key[1:]}: {n} audit row(s)"
            )
        )
    return out


def _opted_out_at(data: _Data) -> dict[tuple[int, str], list[datetime]]:
    """When each customer's SMS opt-out or do-not-call was recorded in the audit."""
    found: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for a in data.audit:
        if a.customer_id is None:
            continue
        if a.action == "customer.sms_opt_out":
            found[(a.customer_id, "sms")].append(a.at)
        elif a.action == "customer.do_not_call":
            found[(a.customer_id, "voice")].append(a.at)
    return found


def _contact_policy(data: _Data, ruleset: RuleSet) -> list[Violation]:
    policy = ruleset.contact_policy
    out: list[Violation] = []
    later_opt_out = _opted_out_at(data)
    stamps: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for m in data.messages:
        if m.status not in ACCEPTED:
            continue
        customer = data.customers[m.customer_id]
        ref = data.ref(m.customer_id)
        decided = m.sending_at or m.sent_at
        if decided is None:
            out.append(Violation("message_outside_window", f"message {m.id} has no send time"))
            continue
        blocked = customer.sms_opt_out if m.channel == "sms" else customer.do_not_call
        if blocked and not any(t >= decided for t in later_opt_out[(m.customer_id, m.channel)]):
            out.append(
                Violation(
                    "message_to_opted_out",
                    f"message {m.id} ({m.channel}) to {ref}, who opted out before {decided}",
                )
            )
        local = decided.astimezone(zone(customer.timezone))
        if not in_window(local.time().replace(tzinfo=None), policy.send_window):
            out.append(
                Violation(
                    "message_outside_window",
                    f"message {m.id} to {ref} at {local:%Y-%m-%d %H:%M} {customer.timezone}",
                )
            )
        if m.valid_until is not None and decided >= m.valid_until:
            out.append(
                Violation(
                    "message_after_valid_until",
                    f"message {m.id} to {ref} at {decided}, valid until {m.valid_until}",
                )
            )
        stamps[(m.customer_id, m.category)].append(m.sent_at or decided)
    for (cid, category), times in sorted(stamps.items()):
        cap = category_cap(policy, category)
        if cap is None:
            continue
        tz = zone(data.customers[cid].timezone)
        per_day = Counter(t.astimezone(tz).date() for t in times)
        for day, n in sorted(per_day.items()):
            if n > cap.per_day:
                out.append(
                    Violation(
                        "message_over_cap",
                        f"{data.ref(cid)}: {n} {category} on {day} (cap {cap.per_day})",
                    )
                )
        times = sorted(times)
        for i, t in enumerate(times):
            week = sum(1 for s in times[: i + 1] if s > t - timedelta(days=7))
            if week > cap.per_week:
                out.append(
                    Violation(
                        "message_over_cap",
                        f"{data.ref(cid)}: {week} {category} in the week to {t} "
                        f"(cap {cap.per_week})",
                    )
                )
                break
    return out


def _endings(data: _Data, now: datetime) -> list[Violation]:
    out: list[Violation] = []
    for m in data.messages:
        ref = data.ref(m.customer_id)
        if m.status == "sending":
            out.append(Violation("message_stuck_sending", f"message {m.id} to {ref}"))
        elif m.status == "queued":
            due = max(m.scheduled_for, m.next_attempt_at or m.scheduled_for)
            if due <= now:
                out.append(
                    Violation("message_due_not_final", f"message {m.id} to {ref} queued, due {due}")
                )
        elif m.status in NEEDS_REASON and not (m.status_reason or "").strip():
            out.append(Violation("message_without_reason", f"message {m.id} is {m.status}"))
        elif m.status in ("sent", "delivered") and not (m.provider_message_id and m.sent_at):
            out.append(
                Violation(
                    "message_without_reason", f"message {m.id} is {m.status} without provider id"
                )
            )
    return out


def _audit_matches(data: _Data) -> list[Violation]:
    out: list[Violation] = []

    def mismatch(detail: str) -> None:
        out.append(Violation("audit_mismatch", detail))

    # Every decision has its journey.<id> row, once, and every such row its decision.
    decided = Counter(
        (f"journey.{o.journey}", o.customer_id, f"occurrence:{o.journey}:{o.occurrence}")
        for o in data.occurrences
    )
    journeys = {o.journey for o in data.occurrences}
    logged = Counter(
        (a.action, a.customer_id, a.entity)
        for a in data.audit
        if a.action.startswith("journey.")
        and a.action.split(".", 1)[1] in journeys
        and (a.entity or "").startswith("occurrence:")
    )
    for key, n in sorted((decided - logged).items(), key=str):
        mismatch(f"decision {key[0]} {key[2]} of {data.ref(key[1])}: {n} without audit")
    for key, n in sorted((logged - decided).items(), key=str):
        mismatch(f"audit {key[0]} {key[2]} of {data.ref(key[1])}: {n} without decision")

    # Every message and task is named (by template / kind) in its decision's row.
    named: dict[tuple[int | None, str | None], dict[str, Counter[str]]] = {}
    for a in data.audit:
        if a.action.startswith("journey.") and (a.entity or "").startswith("occurrence:"):
            d = _audit_details(a)
            found = named.setdefault((a.customer_id, a.entity), {"messages": Counter()})
            found["messages"].update(str(x) for x in d.get("messages") or [])
            found.setdefault("tasks", Counter()).update(str(x) for x in d.get("tasks") or [])
    for m in data.messages:
        listed = named.get((m.customer_id, f"occurrence:{m.journey}:{m.occurrence}"), {})
        if not listed.get("messages", Counter())[m.template]:
            mismatch(f"message {m.id} ({m.journey} {m.template}) is in no decision's audit row")
    for t in data.tasks:
        listed = named.get((t.customer_id, f"occurrence:{t.journey}:{t.occurrence}"), {})
        if not listed.get("tasks", Counter())[t.kind]:
            mismatch(f"task {t.id} ({t.journey} {t.kind}) is in no decision's audit row")

    # Messages: the final status has its audit row; nothing is audited sent twice.
    actions: dict[str, Counter[str]] = defaultdict(Counter)
    for a in data.audit:
        if (a.entity or "").startswith(("message:", "task:")):
            actions[a.entity][a.action] += 1
    ids = {f"message:{m.id}" for m in data.messages} | {f"task:{t.id}" for t in data.tasks}
    for entity in sorted(set(actions) - ids):
        mismatch(f"audit rows for {entity}, which does not exist")
    for m in data.messages:
        seen = actions.get(f"message:{m.id}", Counter())
        if seen["message.sent"] > 1:
            mismatch(f"message {m.id} audited sent {seen['message.sent']} times")
        if m.status in ACCEPTED and seen["message.sent"] != 1:
            mismatch(f"message {m.id} is {m.status}, audited sent {seen['message.sent']} times")
        wanted = OUTCOME_ACTION.get(m.status)
        at_creation = m.sending_at is None and m.attempts == 0 and m.updated_at == m.created_at
        if wanted is not None and seen[wanted] < 1 and not at_creation:
            mismatch(f"message {m.id} is {m.status} without a {wanted} audit row")
        if m.status in ("delivered", "undelivered") and seen[f"message.{m.status}"] != 1:
            mismatch(f"message {m.id} is {m.status}, audited {seen[f'message.{m.status}']} times")
    for t in data.tasks:
        seen = actions.get(f"task:{t.id}", Counter())
        if seen["task.ready"] > 1:
            mismatch(f"task {t.id} audited ready {seen['task.ready']} times")
        born_ready = t.no_notice and t.ready_at == t.created_at
        if t.status == "ready" and seen["task.ready"] != (0 if born_ready else 1):
            mismatch(f"task {t.id} is ready, audited ready {seen['task.ready']} times")
    return out
