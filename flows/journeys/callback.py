"""Periodic callbacks (定期回访) and the escalation of overdue call tasks.

Each tier has a cadence counted from the last completed contact (or the joined
date when there never was one, or the close of the last callback cycle whose
tries ran out). A due customer gets a ``callback`` task, keyed
``callback:<due date>`` so each cycle is decided once. Tasks are spread over each
manager's daily call capacity, top tiers and the longest-waiting first.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import AuditEntry
from crm.models import TIERS, CallTask, Customer
from flows.journeys.base import (
    OPEN_TASK_STATUSES,
    Decision,
    JourneyReport,
    MessageIntent,
    RunContext,
    TaskIntent,
    action_applies,
    common_variables,
    customer_select,
    iter_candidates,
    no_open_task,
    when_columns,
)
from rules.compiler import compile_condition
from rules.models import CallbackRule, CreateTask, SendSms, SendVoice


def decide(session: Session, ctx: RunContext, rule: CallbackRule) -> Iterator[list[Decision]]:
    cadence = rule.trigger.cadence_days
    actions = rule.action_list
    base = func.coalesce(Customer.last_contact_on, Customer.joined_on)
    # Top tiers first: they get the earliest slots of each manager's capacity.
    for tier in sorted(cadence, key=TIERS.index, reverse=True):
        due_before = ctx.as_of - timedelta(days=cadence[tier])
        stmt = customer_select(
            Customer.last_contact_on.label("last_contact_on"),
            Customer.joined_on.label("joined_on"),
            *when_columns(actions, ctx.as_of),
        ).where(
            compile_condition(rule.audience, ctx.as_of),
            Customer.tier == tier,
            Customer.do_not_call.is_(False),
            (base <= due_before) | (base.is_(None)),
            no_open_task("callback"),
        )
        for batch in iter_candidates(session, stmt, ctx):
            closed = last_closed_cycle(session, [c.id for c in batch])
            decisions = []
            for c in batch:
                anchors = [d for d in (c.extra["last_contact_on"], c.extra["joined_on"]) if d]
                if c.id in closed:
                    anchors.append(closed[c.id])
                anchor = max(anchors) if anchors else None
                due_on = ctx.as_of if anchor is None else anchor + timedelta(days=cadence[tier])
                if due_on > ctx.as_of:
                    continue
                d = Decision(
                    customer=c,
                    occurrence=f"callback:{due_on.isoformat()}",
                    details={"due_on": due_on, "cadence_days": cadence[tier], "anchor": anchor},
                )
                for index, action in enumerate(actions):
                    if not action_applies(c, actions, index):
                        continue
                    if isinstance(action, CreateTask):
                        d.tasks.append(
                            TaskIntent(
                                kind=action.kind,
                                due_on=due_on,
                                priority=action.priority,
                                details={"reason": "periodic callback", "due_on": due_on},
                            )
                        )
                    elif isinstance(action, SendSms | SendVoice):
                        d.messages.append(MessageIntent(action.template, common_variables(ctx, c)))
                decisions.append(d)
            decisions.sort(key=lambda d: (d.details["due_on"], d.customer.id))
            yield decisions


def last_closed_cycle(session: Session, ids: list[int]) -> dict[int, date]:
    """The day each customer's last callback task closed: a cycle whose tries ran out counts."""
    rows = session.execute(
        select(CallTask.customer_id, func.max(CallTask.completed_at))
        .where(
            CallTask.customer_id.in_(ids),
            CallTask.kind == "callback",
            CallTask.status.in_(("done", "cancelled")),
        )
        .group_by(CallTask.customer_id)
    )
    return {cid: at.date() for cid, at in rows if at is not None}


def escalate_overdue(
    session: Session, ctx: RunContext, rule: CallbackRule, report: JourneyReport
) -> int:
    """Raise the priority of open tasks overdue by more than ``escalate_after_days``, once.

    Overdue counts from the day the task was planned for its manager
    (``scheduled_on``), so a backlog spread over capacity is not escalated on creation.
    """
    limit = ctx.as_of - timedelta(days=rule.trigger.escalate_after_days)
    rows = session.execute(
        select(
            CallTask.id,
            CallTask.customer_id,
            CallTask.kind,
            CallTask.scheduled_on,
            Customer.external_id,
        )
        .join(Customer, Customer.id == CallTask.customer_id)
        .where(
            CallTask.status.in_(OPEN_TASK_STATUSES),
            CallTask.scheduled_on < limit,
            CallTask.escalated_at.is_(None),
        )
    ).all()
    if not rows:
        return 0
    ids = [r.id for r in rows]
    won: set[int] = set()  # a concurrent run may have escalated some first: audit only ours
    for start in range(0, len(ids), 1000):
        won.update(
            session.execute(
                update(CallTask)
                .where(CallTask.id.in_(ids[start : start + 1000]), CallTask.escalated_at.is_(None))
                .values(priority=CallTask.priority + 1, escalated_at=ctx.at)
                .returning(CallTask.id),
                execution_options={"synchronize_session": False},
            ).scalars()
        )
    rows = [r for r in rows if r.id in won]
    audit.append(
        session,
        ctx.actor,
        ctx.at,
        [
            AuditEntry(
                action="task.escalated",
                details={
                    "task_id": r.id,
                    "kind": r.kind,
                    "scheduled_on": r.scheduled_on,
                    "overdue_days": (ctx.as_of - r.scheduled_on).days,
                },
                customer_id=r.customer_id,
                customer_ref=r.external_id,
                entity=f"task:{r.id}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for r in rows
        ],
    )
    report.counts["tasks_escalated"] += len(rows)
    return len(rows)


CANCEL_REASONS: dict[str, tuple[Any, str]] = {
    "do_not_call": (Customer.do_not_call.is_(True), "customer is on the do-not-call list"),
    "closed": (Customer.status == "closed", "the customer's account is closed"),
}


def cancel_calls_no_longer_wanted(session: Session, ctx: RunContext, report: JourneyReport) -> int:
    """Calls that must no longer happen: the customer joined do-not-call or closed the account.

    Their open call tasks are cancelled and the pre-call SMS still waiting for
    them is suppressed ("your manager will call soon" would now be untrue), audited.
    """
    return sum(
        _cancel_calls(session, ctx, report, code, where, note)
        for code, (where, note) in CANCEL_REASONS.items()
    )


def _cancel_calls(
    session: Session, ctx: RunContext, report: JourneyReport, code: str, where: Any, note: str
) -> int:
    from crm.models import OutboundMessage

    rows = session.execute(
        update(CallTask)
        .where(
            CallTask.status.in_(OPEN_TASK_STATUSES),
            CallTask.customer_id.in_(select(Customer.id).where(where)),
        )
        .values(status="cancelled", completed_at=ctx.at, note=note)
        .returning(CallTask.id, CallTask.customer_id, CallTask.kind, CallTask.notice_message_id),
        execution_options={"synchronize_session": False},
    ).all()
    if not rows:
        return 0
    notices = [r.notice_message_id for r in rows if r.notice_message_id is not None]
    suppressed: set[int] = set()
    for start in range(0, len(notices), 1000):
        suppressed.update(
            session.execute(
                update(OutboundMessage)
                .where(
                    OutboundMessage.id.in_(notices[start : start + 1000]),
                    OutboundMessage.status == "queued",
                )
                .values(
                    status="suppressed",
                    status_reason=f"{code}: the call was cancelled",
                    updated_at=ctx.at,
                )
                .returning(OutboundMessage.id),
                execution_options={"synchronize_session": False},
            ).scalars()
        )
    refs = dict(
        session.execute(
            select(Customer.id, Customer.external_id).where(
                Customer.id.in_({r.customer_id for r in rows})
            )
        ).all()
    )
    audit.append(
        session,
        ctx.actor,
        ctx.at,
        [
            AuditEntry(
                action="task.cancelled",
                details={
                    "task_id": r.id,
                    "kind": r.kind,
                    "reason": code,
                    "notice_suppressed": r.notice_message_id in suppressed,
                },
                customer_id=r.customer_id,
                customer_ref=refs.get(r.customer_id),
                entity=f"task:{r.id}",
            )
            for r in rows
        ],
    )
    report.counts[f"tasks_cancelled_{code}"] += len(rows)
    return len(rows)
