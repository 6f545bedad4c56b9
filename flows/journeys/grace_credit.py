"""Grace credit before suspension (停机关怀): a temporary advance that keeps the line open.

**Grant.** An eligible customer whose balance is below the threshold is not
suspended. Instead the operator advances the tier's grace amount (about 10
yuan; ledger ``grace_advance``, added to the balance) and keeps the line open
until the deadline; a service SMS names the balance, the advance, the deadline
and the top-up the customer needs. At most one grace per customer per calendar
month (occurrence ``grace:YYYY-MM``), never two open at once.

**Close.** The advance is the operator's money, so it is always taken back:

- *repaid*: the balance known at the day's instant (the feed reconciled with the
  ledger, :mod:`crm.balances`) shows that the customer's own money covers the
  threshold, i.e. balance − advance ≥ threshold. Only a real top-up does that;
  the advance clearing a small debt does not. Ledger ``grace_repaid``
  (−advance); a grace notice still queued is withdrawn (it is no longer true).
- *suspended* / *expired*: the day after the deadline with no such top-up, the
  ``on_deadline`` actions run (suspend the line, a ``grace_followup`` call, a
  text) under occurrence ``grace-deadline:YYYY-MM``, so a rerun never suspends
  twice. Ledger ``grace_expired`` (−advance). Never without a real window: the
  grace notice must have reached the customer (accepted by the provider, or the
  customer chose no texts) at least :data:`MIN_TOPUP_WINDOW` before the
  deadline ended; otherwise the grace is *held* open (counted, and ``vipcare
  status`` lists it) until a top-up or the operator closes the line.
- *cancelled*: the operator suspended or closed the line meanwhile (an import):
  the advance is reversed (``grace_cancelled``) and the grace notice, no longer
  true, is withdrawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, type_coerce
from sqlalchemy.orm import Session

from crm import audit, grace, ledger
from crm.audit import AuditEntry
from crm.capacity import CapacityPlanner
from crm.models import CreditLedger, Customer, GracePeriod, OutboundMessage
from crm.statuses import ReasonCode
from crm.types import Money
from flows.journeys.actions import interpret, when_columns
from flows.journeys.context import (
    CustomerRow,
    RunContext,
    customer_select,
    iter_candidates,
)
from flows.journeys.intents import CreditIntent, Decision, JourneyReport
from flows.journeys.predicates import no_open_grace, not_decided
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from flows.journeys.timeliness import TOO_LATE, cannot_arrive, told_on_the_day
from flows.journeys.writer import apply_decisions
from notifications.outbox import queue
from rules.models import GraceCreditRule, JourneyBase

DEADLINE_STAGE = "on_deadline"
MIN_TOPUP_WINDOW = grace.MIN_TOPUP_WINDOW


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
        below = ctx.balance_at.test(lambda balance: balance < trigger.threshold)
        found = [
            Predicate(
                f"balance known at the day's instant below the threshold {trigger.threshold}",
                below,
                ctx.balance_at.value,
            ),
            Predicate(
                f"the tier has a grace amount ({amounts})",
                Customer.tier.in_(list(trigger.amount_by_tier)),
                Customer.tier,
            ),
            no_open_grace(),
            not_decided(rule.journey, f"grace:{month_key(ctx)}"),
        ]
        if ctx.now is not None:
            # Nothing received since says otherwise: never advance money to a customer
            # who, as vipcare knows now, has topped up meanwhile.
            found.append(
                Predicate(
                    f"the balance known now is still below {trigger.threshold}",
                    Customer.balance < trigger.threshold,
                    Customer.balance,
                )
            )
        return found

    def columns(self, ctx: RunContext, rule: JourneyBase) -> list[Any]:
        return [ctx.balance_at.value.label("balance_at")]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        trigger = self._rule(rule).trigger
        deadline = ctx.as_of + timedelta(days=trigger.topup_days)
        for c in batch:
            if not told_on_the_day(ctx, c.timezone, ctx.as_of):
                yield Skip(
                    c,
                    TOO_LATE,
                    f"the grace notice could no longer reach the customer on {ctx.as_of}: "
                    f"they would get less than the {trigger.topup_days} days to top up that "
                    "the grace promises (a later day grants it with the whole window)",
                )
                continue
            amount = trigger.amount_by_tier[c.tier]  # type: ignore[index]
            balance = c.extra["balance_at"]
            topup = trigger.threshold - balance
            yield Candidate(
                customer=c,
                occurrence=f"grace:{month_key(ctx)}",
                details={
                    "balance_before": balance,
                    "amount": amount,
                    "deadline": deadline,
                    "topup_needed": topup,
                },
                variables={
                    "amount": str(amount),
                    "deadline": deadline.isoformat(),
                    "balance": str(balance),
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
                    granted_at=ctx.recorded_at,
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
        minor units, on the balance known at the day's instant); Python sorts them
        into the three endings.
        """
        r = self._rule(rule)
        actions = r.deadline_action_list
        known = ctx.balance_at.value
        # vipcare's own credits since the grant (the advance, a perk): not the customer's money
        ours = (
            select(func.coalesce(func.sum(CreditLedger.amount), 0))
            .where(
                CreditLedger.customer_id == Customer.id,
                CreditLedger.created_at >= GracePeriod.granted_at,
                CreditLedger.created_at <= ctx.at,
            )
            .scalar_subquery()
        )
        own = type_coerce(known - type_coerce(ours, Money(2)), Money(2))
        ours_by_now = (
            select(func.coalesce(func.sum(CreditLedger.amount), 0))
            .where(
                CreditLedger.customer_id == Customer.id,
                CreditLedger.created_at >= GracePeriod.granted_at,
            )
            .scalar_subquery()
        )
        own_now = type_coerce(Customer.balance - type_coerce(ours_by_now, Money(2)), Money(2))
        stmt = (
            customer_select(
                GracePeriod.id.label("grace_id"),
                GracePeriod.occurrence.label("grace_occurrence"),
                GracePeriod.amount.label("advance"),
                GracePeriod.granted_at.label("granted_at"),
                GracePeriod.deadline.label("deadline"),
                known.label("balance_at"),
                own.label("own_money"),
                own_now.label("own_money_now"),
                *when_columns(actions, ctx.as_of, prefix="dl", balance_at=ctx.balance_at),
            )
            .join(GracePeriod, GracePeriod.customer_id == Customer.id)
            .where(
                GracePeriod.status == grace.OPEN,
                GracePeriod.granted_on <= ctx.as_of,
                # only the graces that close today, not every open grace every day
                or_(
                    Customer.status != "active",
                    own >= r.trigger.threshold,
                    GracePeriod.deadline < ctx.as_of,
                ),
            )
        )
        planner = CapacityPlanner(session, ctx.plan_from)
        for batch in iter_candidates(session, stmt, ctx):
            repaid, cancelled, due = [], [], []
            for c in batch:
                own_money = c.extra["own_money"]
                if c.status != "active":
                    cancelled.append(c)
                elif own_money is not None and own_money >= r.trigger.threshold:
                    repaid.append(c)
                elif c.extra["deadline"] < ctx.as_of and (
                    grace.deadline_end(c.extra["deadline"], c.timezone) <= ctx.at
                ):  # the deadline day is over where the customer lives (west: a day later)
                    due.append(c)
            self._close(session, ctx, rule, repaid, "repaid", "grace_repaid", report)
            self._withdraw_notices(
                session,
                ctx,
                repaid,
                f"{ReasonCode.REPAID}: the customer topped up, so the grace has ended",
            )
            self._close(session, ctx, rule, cancelled, "cancelled", "grace_cancelled", report)
            self._withdraw_notices(
                session,
                ctx,
                cancelled,
                f"{ReasonCode.CANCELLED}: the line was suspended or closed, "
                "so the grace no longer holds",
            )
            self._deadline(
                session, ctx, r, self._may_end(session, ctx, r, due, report), planner, report
            )
            session.flush()

    def _may_end(
        self,
        session: Session,
        ctx: RunContext,
        rule: GraceCreditRule,
        rows: list[CustomerRow],
        report: JourneyReport,
    ) -> list[CustomerRow]:
        """The graces past their deadline that may end now; the others are held open.

        A grace ends only when its notice reached the customer (the provider took
        it, or the customer chose no texts) at least :data:`MIN_TOPUP_WINDOW` before
        the deadline ended, and, for a day run late, when nothing received since
        shows a top-up (a later day closes that one as repaid).
        """
        if not rows:
            return []
        by_grace = grace.notices_of(session, ((c.id, c.extra["grace_occurrence"]) for c in rows))
        out: list[CustomerRow] = []
        for c in rows:
            if ctx.now is not None and c.extra["own_money_now"] >= rule.trigger.threshold:
                report.counts["graces_topped_up_since"] += 1
                continue
            sent = by_grace.get((c.id, c.extra["grace_occurrence"]))
            if sent is None or any(_told(c, n, c.extra["deadline"]) for n in sent):
                out.append(c)
            else:
                report.counts["graces_held_not_told"] += 1
        return out

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
        entries, _ = ledger.post(session, postings, ctx.recorded_at, care_day=ctx.as_of)
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
        audit.append(session, ctx.actor, ctx.recorded_at, entries)
        report.counts[f"graces_{status}"] += len(rows)

    def _withdraw_notices(
        self, session: Session, ctx: RunContext, rows: list[CustomerRow], reason: str
    ) -> None:
        """A grace notice still queued is withdrawn once its grace has ended: no longer true."""
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
            ctx.recorded_at,
            ctx.actor,
            reason,
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
        decisions: list[Decision] = []
        deciding: list[CustomerRow] = []
        for c in rows:
            balance = c.extra["balance_at"]
            month = c.extra["grace_occurrence"].split(":", 1)[1]
            found = Candidate(
                customer=c,
                occurrence=f"grace-deadline:{month}",
                details={
                    "stage": DEADLINE_STAGE,
                    "grace_id": c.extra["grace_id"],
                    "balance": balance,
                    "suspend_reason": "the grace period ended without a top-up",
                },
                variables={
                    "amount": str(c.extra["advance"]),
                    "deadline": c.extra["deadline"].isoformat(),
                    "balance": str(balance - c.extra["advance"]),
                    "topup_amount": str(rule.trigger.threshold - balance + c.extra["advance"]),
                },
                task=TaskPlan(
                    due_on=ctx.as_of,
                    earliest=ctx.as_of,
                    details={
                        "reason": "balance still below the threshold after the grace period",
                        "balance": balance - c.extra["advance"],
                    },
                ),
                deadline=ctx.as_of,
            )
            d = interpret(ctx, self, rule, actions, found, prefix="dl")
            if cannot_arrive(ctx, d) is not None:  # its text must reach the customer: later
                report.counts[f"skipped_{TOO_LATE}"] += 1
                continue
            d.credits.append(CreditIntent(-c.extra["advance"], "grace_expired"))
            decisions.append(d)
            deciding.append(c)
        won = apply_decisions(session, ctx, self, rule, decisions, report, planner)
        ended = {d.customer.id for d in won}
        for status in ("suspended", "expired"):
            closing = [
                c
                for c, d in zip(deciding, decisions, strict=True)
                if c.id in ended and (d.suspend is not None) == (status == "suspended")
            ]
            self._close(session, ctx, rule, closing, status, None, report)


def _told(c: CustomerRow, notice: Any, deadline: Any) -> bool:
    """The grace notice reached the customer in time to top up, or they chose no texts."""
    return grace.notice_told(
        status=notice.status,
        channel=notice.channel,
        sent_at=notice.sent_at,
        sms_opt_out=c.sms_opt_out,
        do_not_call=c.do_not_call,
        deadline=deadline,
        timezone=c.timezone,
    )
