"""Grace credit before suspension (停机关怀): a temporary advance that keeps the line open.

**Grant.** An eligible customer whose balance is below the threshold is not
suspended. Instead the operator advances the tier's grace amount (about 10
yuan; ledger ``grace_advance``, added to the balance) and keeps the line open
until the deadline; a service SMS names the balance, the advance, the deadline
and the top-up the customer needs. At most one grace per customer per calendar
month (occurrence ``grace:YYYY-MM``), never two open at once.

**Close.** The advance is the operator's money, so it is always taken back:

- *repaid*: a balances feed newer than the grant shows that the customer's own
  money covers the threshold, i.e. balance − advance ≥ threshold. Only a real
  top-up does that; the advance clearing a small debt does not. Ledger
  ``grace_repaid`` (−advance).
- *suspended* / *expired*: the day after the deadline with no such top-up, the
  ``on_deadline`` actions run (suspend the line, a ``grace_followup`` call, a
  text) under occurrence ``grace-deadline:YYYY-MM``, so a rerun never suspends
  twice. Ledger ``grace_expired`` (−advance).
- *cancelled*: the operator suspended or closed the line meanwhile (an import):
  the advance is reversed (``grace_cancelled``) and the grace notice, no longer
  true, is withdrawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import and_, or_, select, type_coerce
from sqlalchemy.orm import Session

from crm import audit, grace, ledger
from crm.audit import AuditEntry
from crm.capacity import CapacityPlanner
from crm.models import Customer, GracePeriod, OutboundMessage
from crm.statuses import ReasonCode
from crm.types import Money
from flows.journeys.actions import interpret, when_columns
from flows.journeys.context import CustomerRow, RunContext, customer_select, iter_candidates
from flows.journeys.intents import CreditIntent, Decision, JourneyReport
from flows.journeys.predicates import no_open_grace, not_decided
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from flows.journeys.writer import apply_decisions
from notifications.outbox import queue
from rules.models import GraceCreditRule, JourneyBase

DEADLINE_STAGE = "on_deadline"


def month_key(ctx: RunContext) -> str:
    return f"{ctx.as_of.year:04d}-{ctx.as_of.month:02d}"


class GraceCredit(Journey):
    id = "grace_credit"
    rule_type = GraceCreditRule
    credit_kind = "grace_advance"
    default_validity = "deadline"

    def _rule(self, rule: JourneyBase) -> GraceCreditRule:
        assert isinstance(rule, GraceCreditRule)
        return rule

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        trigger = self._rule(rule).trigger
        amounts = ", ".join(f"{t} {a}" for t, a in trigger.amount_by_tier.items())
        return [
            Predicate(
                f"balance below the threshold {trigger.threshold}",
                Customer.balance < trigger.threshold,
                Customer.balance,
            ),
            Predicate(
                f"the tier has a grace amount ({amounts})",
                Customer.tier.in_(list(trigger.amount_by_tier)),
                Customer.tier,
            ),
            no_open_grace(),
            not_decided(rule.journey, f"grace:{month_key(ctx)}"),
        ]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        trigger = self._rule(rule).trigger
        deadline = ctx.as_of + timedelta(days=trigger.topup_days)
        for c in batch:
            amount = trigger.amount_by_tier[c.tier]  # type: ignore[index]
            topup = trigger.threshold - c.balance
            yield Candidate(
                customer=c,
                occurrence=f"grace:{month_key(ctx)}",
                details={
                    "balance_before": c.balance,
                    "amount": amount,
                    "deadline": deadline,
                    "topup_needed": topup,
                },
                variables={
                    "amount": str(amount),
                    "deadline": deadline.isoformat(),
                    "balance": str(c.balance),
                    "topup_amount": str(topup),
                },
                credit=amount,
                deadline=deadline,
            )

    def after_write(
        self, session: Session, ctx: RunContext, rule: JourneyBase, won: list[Decision]
    ) -> list[AuditEntry]:
        """Open a grace next to each advance just granted (deadline decisions have none)."""
        grace.open_graces(
            session,
            [
                grace.NewGrace(
                    customer_id=d.customer.id,
                    occurrence=d.occurrence,
                    amount=sum((c.amount for c in d.credits), Decimal("0.00")),
                    granted_on=ctx.as_of,
                    granted_at=ctx.at,
                    deadline=d.details["deadline"],
                    rule_hash=rule.content_hash,
                )
                for d in won
                if d.details.get("stage") != DEADLINE_STAGE and d.credits
            ],
        )
        return []

    def housekeeping(
        self, session: Session, ctx: RunContext, rule: JourneyBase, report: JourneyReport
    ) -> None:
        """Close open graces: repaid on a real top-up, cancelled, or past the deadline.

        SQL reads only the graces that close today (the same three tests, exact in
        minor units); Python sorts them into the three endings.
        """
        r = self._rule(rule)
        actions = r.deadline_action_list
        stmt = (
            customer_select(
                GracePeriod.id.label("grace_id"),
                GracePeriod.occurrence.label("grace_occurrence"),
                GracePeriod.amount.label("advance"),
                GracePeriod.granted_at.label("granted_at"),
                GracePeriod.deadline.label("deadline"),
                Customer.balance_as_of.label("balance_as_of"),
                *when_columns(actions, ctx.as_of, prefix="dl"),
            )
            .join(GracePeriod, GracePeriod.customer_id == Customer.id)
            .where(
                GracePeriod.status == grace.OPEN,
                GracePeriod.granted_on <= ctx.as_of,
                # only the graces that close today, not every open grace every day
                or_(
                    Customer.status != "active",
                    and_(
                        Customer.balance_as_of > GracePeriod.granted_at,
                        type_coerce(Customer.balance - GracePeriod.amount, Money(2))
                        >= r.trigger.threshold,
                    ),
                    GracePeriod.deadline < ctx.as_of,
                ),
            )
        )
        planner = CapacityPlanner(session, ctx.as_of)
        for batch in iter_candidates(session, stmt, ctx):
            repaid, cancelled, due = [], [], []
            for c in batch:
                own_money = c.balance - c.extra["advance"]
                fed_at = c.extra["balance_as_of"]
                fresh = fed_at is not None and fed_at > c.extra["granted_at"]
                if c.status != "active":
                    cancelled.append(c)
                elif fresh and own_money >= r.trigger.threshold:
                    repaid.append(c)
                elif c.extra["deadline"] < ctx.as_of:
                    due.append(c)
            self._close(session, ctx, rule, repaid, "repaid", "grace_repaid", report)
            self._close(session, ctx, rule, cancelled, "cancelled", "grace_cancelled", report)
            self._withdraw_notices(session, ctx, cancelled)
            self._deadline(session, ctx, r, due, planner, report)
            session.flush()

    def _close(
        self,
        session: Session,
        ctx: RunContext,
        rule: JourneyBase,
        rows: list[CustomerRow],
        status: str,
        kind: str | None,
        report: JourneyReport,
    ) -> None:
        """Close graces and (with a ledger ``kind``) take the advance back, audited."""
        closed = grace.close(session, [c.extra["grace_id"] for c in rows], status, ctx.as_of)
        rows = [c for c in rows if c.extra["grace_id"] in closed]  # a concurrent run got the rest
        if not rows:
            return
        balances = {c.id: c.balance for c in rows}
        postings = [
            ledger.Posting(
                customer_id=c.id,
                customer_ref=c.external_id,
                amount=-c.extra["advance"],
                kind=kind,
                journey=rule.journey,
                occurrence=c.extra["grace_occurrence"],
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for c in rows
            if kind is not None
        ]
        entries = ledger.post(session, postings, balances, ctx.at)
        entries += [
            AuditEntry(
                action=f"grace.{status}",
                details={
                    "grace_id": c.extra["grace_id"],
                    "balance": c.balance,
                    "advance": c.extra["advance"],
                    "line": c.status,
                },
                customer_id=c.id,
                customer_ref=c.external_id,
                entity=f"grace:{c.extra['grace_id']}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for c in rows
        ]
        audit.append(session, ctx.actor, ctx.at, entries)
        report.counts[f"graces_{status}"] += len(rows)

    def _withdraw_notices(self, session: Session, ctx: RunContext, rows: list[CustomerRow]) -> None:
        """A grace notice promises an open line: withdraw it when the line was closed anyway."""
        if not rows:
            return
        wanted = {(c.id, c.extra["grace_occurrence"]) for c in rows}
        found = session.execute(
            select(
                OutboundMessage.id, OutboundMessage.customer_id, OutboundMessage.occurrence
            ).where(
                OutboundMessage.journey == self.id,
                OutboundMessage.status == "queued",
                OutboundMessage.customer_id.in_(sorted({cid for cid, _ in wanted})),
            )
        ).all()
        queue.withdraw(
            session,
            [m.id for m in found if (m.customer_id, m.occurrence) in wanted],
            ctx.at,
            ctx.actor,
            f"{ReasonCode.CANCELLED}: the line was suspended or closed, "
            "so the grace no longer holds",
        )

    def _deadline(
        self,
        session: Session,
        ctx: RunContext,
        rule: GraceCreditRule,
        rows: list[CustomerRow],
        planner: CapacityPlanner,
        report: JourneyReport,
    ) -> None:
        """Past the deadline without a top-up: the rule's ``on_deadline`` actions, then close."""
        if not rows:
            return
        actions = rule.deadline_action_list
        decisions = []
        for c in rows:
            month = c.extra["grace_occurrence"].split(":", 1)[1]
            found = Candidate(
                customer=c,
                occurrence=f"grace-deadline:{month}",
                details={
                    "stage": DEADLINE_STAGE,
                    "grace_id": c.extra["grace_id"],
                    "balance": c.balance,
                    "suspend_reason": "the grace period ended without a top-up",
                },
                variables={
                    "amount": str(c.extra["advance"]),
                    "deadline": c.extra["deadline"].isoformat(),
                    "balance": str(c.balance - c.extra["advance"]),
                    "topup_amount": str(rule.trigger.threshold - c.balance + c.extra["advance"]),
                },
                task=TaskPlan(
                    due_on=ctx.as_of,
                    earliest=ctx.as_of,
                    details={
                        "reason": "balance still below the threshold after the grace period",
                        "balance": c.balance - c.extra["advance"],
                    },
                ),
                deadline=ctx.as_of,
            )
            d = interpret(ctx, self, rule, actions, found, prefix="dl")
            d.credits.append(CreditIntent(-c.extra["advance"], "grace_expired"))
            decisions.append(d)
        won = apply_decisions(session, ctx, self, rule, decisions, report, planner)
        ended = {d.customer.id for d in won}
        for status in ("suspended", "expired"):
            closing = [
                c
                for c, d in zip(rows, decisions, strict=True)
                if c.id in ended and (d.suspend is not None) == (status == "suspended")
            ]
            self._close(session, ctx, rule, closing, status, None, report)
