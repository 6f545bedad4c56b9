"""Periodic callbacks (定期回访) and the escalation of overdue call tasks.

Each tier has a cadence counted from the last completed contact (or the joined
date when there never was one, or the close of the last callback cycle whose
tries ran out). A due customer gets a ``callback`` task, keyed
``callback:<due date>`` so each cycle is decided once. Tasks are spread over each
manager's daily call capacity, top tiers and the longest-waiting first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session

from crm import tasks
from crm.models import TIERS, CallTask, Customer
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.intents import JourneyReport
from flows.journeys.predicates import callable_customer, no_open_task
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from rules.models import CallbackRule, JourneyBase

ANCHOR = func.coalesce(Customer.last_contact_on, Customer.joined_on)
"""The last contact, or the joined date: what a cadence counts from (in SQL)."""


def last_closed_cycle(session: Session, ids: list[int]) -> dict[int, date]:
    """The day each customer's last callback task closed: a cycle whose tries ran out counts."""
    rows = session.execute(
        select(CallTask.customer_id, func.max(CallTask.completed_at))
        .where(
            CallTask.customer_id.in_(ids),
            CallTask.kind == "callback",
            CallTask.status.in_((tasks.DONE, tasks.CANCELLED)),
        )
        .group_by(CallTask.customer_id)
    )
    return {cid: at.date() for cid, at in rows if at is not None}


class Callback(Journey):
    id = "callback"
    rule_type = CallbackRule

    def _rule(self, rule: JourneyBase) -> CallbackRule:
        assert isinstance(rule, CallbackRule)
        return rule

    def _ordered(self, rule: JourneyBase) -> list[tuple[str, int]]:
        """(tier, cadence), top tiers first: they get the earliest slots of each manager."""
        cadence = self._rule(rule).trigger.cadence_days
        return [(t, cadence[t]) for t in sorted(cadence, key=TIERS.index, reverse=True)]

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        tiers = self._ordered(rule)
        due: list[ColumnElement[bool]] = [
            and_(
                Customer.tier == tier,
                or_(ctx.as_of - timedelta(days=days) >= ANCHOR, ANCHOR.is_(None)),
            )
            for tier, days in tiers
        ]
        cadence = ", ".join(f"{t} {d}" for t, d in tiers)
        return [
            Predicate(
                f"the tier has a callback cadence ({cadence} days)",
                Customer.tier.in_([t for t, _ in tiers]),
                Customer.tier,
            ),
            callable_customer(),
            Predicate(
                "a callback is due (cadence from the last contact or joining)",
                or_(*due) if due else false(),
                ANCHOR,
                lambda v: "never contacted, no join date" if v is None else f"counted from {v}",
            ),
            no_open_task("callback"),
        ]

    def groups(self, ctx: RunContext, rule: JourneyBase) -> list[ColumnElement[bool]]:
        return [Customer.tier == tier for tier, _ in self._ordered(rule)]

    def columns(self, ctx: RunContext, rule: JourneyBase) -> list[Any]:
        return [
            Customer.last_contact_on.label("last_contact_on"),
            Customer.joined_on.label("joined_on"),
        ]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        cadence = dict(self._ordered(rule))
        closed = last_closed_cycle(session, [c.id for c in batch])
        found: list[Candidate | Skip] = []
        for c in batch:
            anchors = [d for d in (c.extra["last_contact_on"], c.extra["joined_on"]) if d]
            if c.id in closed:
                anchors.append(closed[c.id])
            anchor = max(anchors) if anchors else None
            days = cadence[c.tier]
            due_on = ctx.as_of if anchor is None else anchor + timedelta(days=days)
            if due_on > ctx.as_of:
                found.append(
                    Skip(c, "not_due", f"the last callback cycle closed {anchor}: due {due_on}")
                )
                continue
            found.append(
                Candidate(
                    customer=c,
                    occurrence=f"callback:{due_on.isoformat()}",
                    details={"due_on": due_on, "cadence_days": days, "anchor": anchor},
                    task=TaskPlan(
                        due_on=due_on,
                        earliest=ctx.as_of,
                        details={"reason": "periodic callback", "due_on": due_on},
                    ),
                )
            )
        # the longest-waiting first within a batch: they get the earlier slots
        found.sort(
            key=lambda f: (
                (f.details["due_on"], f.customer.id) if isinstance(f, Candidate) else (date.max, 0)
            )
        )
        return found

    def housekeeping(
        self, session: Session, ctx: RunContext, rule: JourneyBase, report: JourneyReport
    ) -> None:
        """Escalate open calls still open ``escalate_after_days`` after the day they were planned.

        Overdue counts from ``scheduled_on`` (the day planned for the manager), so a
        backlog spread over capacity is not escalated on creation.
        """
        limit = ctx.as_of - timedelta(days=self._rule(rule).trigger.escalate_after_days)
        report.counts["tasks_escalated"] += tasks.escalate_overdue(
            session,
            limit,
            ctx.recorded_at,
            ctx.actor,
            rule_id=rule.rule_id,
            rule_hash=rule.content_hash,
            as_of=ctx.as_of,
        )
