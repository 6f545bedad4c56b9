"""Pre-call SMS notice (外呼预告): one text per customer per day before their manager calls.

Runs after every journey that creates call tasks. A customer with calls planned
for today (or earlier) that still wait for their notice gets **one** text naming
the manager once, whatever number of calls it covers (occurrence
``precall:YYYY-MM-DD``); every such task is linked to it and becomes ready its
lead time after the text is sent. A task planned after today's notice was
decided joins that notice. The notice is valid while a task it announces is open.

Fixed behaviour: a customer who opted out of SMS gets their tasks ready at once,
marked "no notice"; a do-not-call customer never gets a call task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm import tasks
from crm.audit import AuditEntry
from crm.models import CallTask, Customer, OutboundMessage
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.intents import Decision, JourneyReport
from flows.journeys.predicates import not_decided
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip
from notifications.outbox import ACCEPTED, QUEUED, SENDING
from rules.models import JourneyBase, PrecallNoticeRule

JOURNEY = "precall_notice"


def occurrence(ctx: RunContext) -> str:
    return f"precall:{ctx.as_of.isoformat()}"


def _waiting(ctx: RunContext) -> list[Any]:
    """Open tasks planned up to today that still wait for a notice."""
    return [
        CallTask.status == tasks.AWAITING_NOTICE,
        CallTask.notice_message_id.is_(None),
        CallTask.scheduled_on <= ctx.as_of,
    ]


class PrecallNotice(Journey):
    id = JOURNEY
    rule_type = PrecallNoticeRule
    default_validity = "while_task_open"
    links_messages = True

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        waiting = _waiting(ctx)
        count = (
            select(func.count())
            .select_from(CallTask)
            .where(*waiting, CallTask.customer_id == Customer.id)
            .scalar_subquery()
        )
        return [
            Predicate(
                f"a call planned on or before {ctx.as_of} waits for its notice",
                # an uncorrelated IN (a semi-join evaluated once), not a correlated EXISTS:
                # SQLite would otherwise walk every waiting task for every customer
                Customer.id.in_(select(CallTask.customer_id).where(*waiting)),
                count,
                lambda v: f"{v} call(s) waiting",
            ),
            not_decided(rule.journey, occurrence(ctx)),
        ]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        kinds = _waiting_kinds(session, ctx, [c.id for c in batch])
        for c in batch:
            found = kinds.get(c.id, [])
            yield Candidate(
                customer=c,
                occurrence=occurrence(ctx),
                details={"tasks": [task_id for task_id, _ in found]},
                variables={"task_kind": ", ".join(sorted({kind for _, kind in found}))},
            )

    def after_write(
        self, session: Session, ctx: RunContext, rule: JourneyBase, won: list[Decision]
    ) -> list[AuditEntry]:
        """Link each customer's waiting calls to the notice just queued for them."""
        suppressed: dict[int, str] = {}
        tasks.link_notices(
            session,
            [
                (task_id, d.message_ids[0])
                for d in won
                if d.message_ids
                for task_id in d.details["tasks"]
            ],
        )
        if won:
            rows = session.execute(
                select(OutboundMessage.id, OutboundMessage.status_reason).where(
                    OutboundMessage.id.in_([d.message_ids[0] for d in won if d.message_ids]),
                    OutboundMessage.status == "suppressed",
                )
            ).all()
            suppressed = {r.id: r.status_reason or "suppressed" for r in rows}
        tasks.ready_without_notice(
            session, suppressed, ctx.recorded_at, ctx.actor, status_word="suppressed"
        )
        return []

    def housekeeping(
        self, session: Session, ctx: RunContext, rule: JourneyBase, report: JourneyReport
    ) -> None:
        """Calls planned after today's notice was decided join it (one text a day)."""
        report.counts["tasks_joined_notice"] += join_todays_notice(session, ctx, rule)


def _waiting_kinds(
    session: Session, ctx: RunContext, customer_ids: list[int]
) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for task_id, customer_id, kind in session.execute(
        select(CallTask.id, CallTask.customer_id, CallTask.kind)
        .where(CallTask.customer_id.in_(customer_ids), *_waiting(ctx))
        .order_by(CallTask.id)
    ):
        out[customer_id].append((task_id, kind))
    return out


def join_todays_notice(session: Session, ctx: RunContext, rule: JourneyBase) -> int:
    """Waiting calls of customers who already have today's notice: link them to it.

    A notice already sent makes them ready ``lead_time`` after it was sent; one
    that will never arrive (suppressed, failed, expired) makes them ready now,
    without notice.
    """
    notices = session.execute(
        select(
            OutboundMessage.id,
            OutboundMessage.customer_id,
            OutboundMessage.status,
            OutboundMessage.sent_at,
            OutboundMessage.status_reason,
        ).where(
            OutboundMessage.journey == rule.journey,
            OutboundMessage.occurrence == occurrence(ctx),
            OutboundMessage.customer_id.in_(
                select(CallTask.customer_id).where(
                    CallTask.status == tasks.AWAITING_NOTICE,
                    CallTask.notice_message_id.is_(None),
                    CallTask.scheduled_on <= ctx.as_of,
                )
            ),
        )
    ).all()
    if not notices:
        return 0
    waiting = _waiting_kinds(session, ctx, [n.customer_id for n in notices])
    lead = ctx.ruleset.precall_lead_time
    joined = 0
    never: dict[int, str] = {}
    for n in notices:
        ids = [task_id for task_id, _ in waiting.get(n.customer_id, [])]
        if not ids:
            continue
        if n.status in (QUEUED, SENDING):
            joined += tasks.link_notice(session, ids, n.id)
        elif n.status in ACCEPTED:
            ready_at = (n.sent_at or ctx.recorded_at) + lead
            joined += tasks.link_notice(session, ids, n.id, ready_at=ready_at)
        else:
            joined += tasks.link_notice(session, ids, n.id)
            never[n.id] = f"{n.status} ({n.status_reason or 'no reason given'})"
    tasks.ready_without_notice(session, never, ctx.recorded_at, ctx.actor, status_word="ended")
    return joined
