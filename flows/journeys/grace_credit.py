"""Grace credit before suspension (停机关怀).

Grant: an eligible customer whose balance is below the threshold gets the
tier's grace credit instead of being suspended, at most once per calendar
month (occurrence ``grace:YYYY-MM``), with a ledger entry and a service SMS
naming the amount and the top-up deadline.

Deadline: an open grace closes as ``repaid`` as soon as a balance feed newer
than the grant shows the balance back at or above the threshold, or at the
deadline when the balance is there; otherwise at the deadline the line is
suspended (status change, audited) and the ``on_deadline`` actions run (a
``grace_followup`` call task by default). The deadline step has its own
occurrence, ``grace-deadline:YYYY-MM``, so a rerun never suspends twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm.audit import AuditEntry
from crm.bulk import table_of
from crm.models import Customer, GracePeriod
from flows.journeys.base import (
    CreditIntent,
    Decision,
    JourneyReport,
    MessageIntent,
    RunContext,
    TaskIntent,
    action_applies,
    apply_decisions,
    common_variables,
    customer_select,
    iter_candidates,
    occurrence_absent,
    when_columns,
)
from rules.compiler import compile_condition
from rules.models import CreateTask, GraceCreditRule, GrantCredit, SendSms, SendVoice, Suspend


def month_key(ctx: RunContext) -> str:
    return f"{ctx.as_of.year:04d}-{ctx.as_of.month:02d}"


def decide(session: Session, ctx: RunContext, rule: GraceCreditRule) -> Iterator[list[Decision]]:
    occurrence = f"grace:{month_key(ctx)}"
    trigger = rule.trigger
    actions = rule.action_list
    open_grace = (
        select(GracePeriod.id)
        .where(GracePeriod.customer_id == Customer.id, GracePeriod.status == "open")
        .exists()
    )
    stmt = customer_select(*when_columns(actions, ctx.as_of)).where(
        compile_condition(rule.audience, ctx.as_of),
        Customer.balance < trigger.threshold,
        Customer.tier.in_(list(trigger.amount_by_tier)),
        occurrence_absent(rule.journey, occurrence),
        ~open_grace,
    )
    deadline = ctx.as_of + timedelta(days=trigger.topup_days)
    for batch in iter_candidates(session, stmt, ctx):
        decisions = []
        for c in batch:
            amount = trigger.amount_by_tier[c.tier]  # type: ignore[index]
            d = Decision(
                customer=c,
                occurrence=occurrence,
                details={"balance_before": c.balance, "amount": amount, "deadline": deadline},
            )
            for index, action in enumerate(actions):
                if not action_applies(c, actions, index):
                    continue
                if isinstance(action, GrantCredit):
                    credit = action.amount_for(c.tier, dict(trigger.amount_by_tier))
                    if credit is not None:
                        d.credits.append(CreditIntent(credit, "grace_credit"))
                        d.details["amount"] = credit
                elif isinstance(action, SendSms | SendVoice):
                    variables = {
                        **common_variables(ctx, c),
                        "amount": str(d.details["amount"]),
                        "deadline": deadline.isoformat(),
                    }
                    d.messages.append(MessageIntent(action.template, variables))
            decisions.append(d)
        yield decisions


def grace_rows(ctx: RunContext, rule: GraceCreditRule) -> Any:
    """The hook that records the open grace period next to the credit."""

    def write(session: Session, won: list[Decision]) -> list[AuditEntry]:
        rows = [
            {
                "customer_id": d.customer.id,
                "occurrence": d.occurrence,
                "amount": d.details["amount"],
                "granted_on": ctx.as_of,
                "granted_at": ctx.at,
                "deadline": d.details["deadline"],
                "status": "open",
                "rule_hash": rule.content_hash,
            }
            for d in won
            if d.credits
        ]
        if rows:
            session.execute(table_of(GracePeriod).insert(), rows)
        return []

    return write


def close_graces(
    session: Session, ctx: RunContext, rule: GraceCreditRule, report: JourneyReport
) -> None:
    """Close open graces: repaid on a top-up, suspended past the deadline."""
    threshold = rule.trigger.threshold
    deadline_actions = rule.deadline_action_list
    when_cols = when_columns(deadline_actions, ctx.as_of, prefix="dl")
    stmt = (
        customer_select(
            GracePeriod.id.label("grace_id"),
            GracePeriod.occurrence.label("grace_occurrence"),
            GracePeriod.granted_at.label("granted_at"),
            GracePeriod.deadline.label("deadline"),
            Customer.balance_as_of.label("balance_as_of"),
            *when_cols,
        )
        .join(GracePeriod, GracePeriod.customer_id == Customer.id)
        .where(GracePeriod.status == "open", GracePeriod.granted_on <= ctx.as_of)
    )
    for batch in iter_candidates(session, stmt, ctx):
        repaid, to_suspend = [], []
        for c in batch:
            fed_at = c.extra["balance_as_of"]
            fresh_feed = fed_at is not None and fed_at > c.extra["granted_at"]
            if c.balance >= threshold and (fresh_feed or c.extra["deadline"] <= ctx.as_of):
                repaid.append(c)
            elif c.extra["deadline"] <= ctx.as_of and c.balance < threshold:
                to_suspend.append(c)
        if repaid:
            _close(session, ctx, rule, repaid, "repaid", report)
        if to_suspend:
            _suspend(session, ctx, rule, to_suspend, deadline_actions, report)
        session.flush()


def _close(
    session: Session,
    ctx: RunContext,
    rule: GraceCreditRule,
    rows: list[Any],
    status: str,
    report: JourneyReport,
) -> None:
    from crm import audit

    closed = set(
        session.execute(
            update(GracePeriod)
            .where(
                GracePeriod.id.in_([c.extra["grace_id"] for c in rows]),
                GracePeriod.status == "open",
            )
            .values(status=status, closed_on=ctx.as_of)
            .returning(GracePeriod.id),
            execution_options={"synchronize_session": False},
        ).scalars()
    )
    rows = [c for c in rows if c.extra["grace_id"] in closed]  # a concurrent run got the rest
    audit.append(
        session,
        ctx.actor,
        ctx.at,
        [
            AuditEntry(
                action=f"grace.{status}",
                details={"grace_id": c.extra["grace_id"], "balance": c.balance},
                customer_id=c.id,
                customer_ref=c.external_id,
                entity=f"grace:{c.extra['grace_id']}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for c in rows
        ],
    )
    report.counts[f"graces_{status}"] += len(rows)


def _suspend(
    session: Session,
    ctx: RunContext,
    rule: GraceCreditRule,
    rows: list[Any],
    deadline_actions: list[Any],
    report: JourneyReport,
) -> None:
    decisions = []
    for c in rows:
        d = Decision(
            customer=c,
            occurrence=f"grace-deadline:{c.extra['grace_occurrence'].split(':', 1)[1]}",
            details={"grace_id": c.extra["grace_id"], "balance": c.balance, "suspended": False},
        )
        for index, action in enumerate(deadline_actions):
            if not action_applies(c, deadline_actions, index, prefix="dl"):
                continue
            if isinstance(action, Suspend):
                d.details["suspended"] = c.status == "active"
            elif isinstance(action, CreateTask):
                d.tasks.append(
                    TaskIntent(
                        kind=action.kind,
                        due_on=ctx.as_of,
                        scheduled_on=ctx.as_of,
                        priority=action.priority,
                        details={
                            "reason": "balance still negative after grace",
                            "balance": c.balance,
                        },
                    )
                )
            elif isinstance(action, SendSms | SendVoice):
                variables = {
                    **common_variables(ctx, c),
                    "amount": "",
                    "deadline": c.extra["deadline"].isoformat(),
                }
                d.messages.append(MessageIntent(action.template, variables))
        decisions.append(d)

    def suspend_lines(session: Session, won: list[Decision]) -> list[AuditEntry]:
        ids = [d.customer.id for d in won if d.details["suspended"]]
        if ids:
            session.execute(
                update(Customer)
                .where(Customer.id.in_(ids), Customer.status == "active")
                .values(status="suspended"),
                execution_options={"synchronize_session": False},
            )
        report.counts["suspended"] += len(ids)
        return [
            AuditEntry(
                action="customer.suspended",
                details={
                    "reason": "grace period ended with a negative balance",
                    "balance": d.customer.balance,
                },
                customer_id=d.customer.id,
                customer_ref=d.customer.external_id,
                entity=f"grace:{d.details['grace_id']}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for d in won
            if d.details["suspended"]
        ]

    won = apply_decisions(session, ctx, rule, decisions, report, after_insert=suspend_lines)
    _close(session, ctx, rule, [d.customer for d in won], "suspended", report)
