"""Journeys marketing ops declare in YAML alone (``kind: generic``): no Python per journey.

The rule file gives the audience, a trigger, a once-per period, actions and
texts; this one class runs any of them through the same engine as the built-in
journeys (validation, preview, explain, idempotence, contact policy, audit).

Triggers:

- ``condition``: fires on the first run on which the condition holds, then not
  again within the period (``once_per``): e.g. ``{points: {gte: 5000}}``;
- ``date_field`` + ``offset_days``: every year on the anniversary
  (``once_per: year``), or only on the date itself (``once_per: ever``); a 29
  February date counts on 28 February in common years;
- ``on``: a calendar day, ``"12-24"`` every year or ``"2026-12-24"`` once.

Occurrences: ``<journey>:YYYY``, ``<journey>:YYYY-MM`` or ``<journey>:once``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import ColumnElement, extract, false, true
from sqlalchemy.orm import Session

from crm.models import Customer
from flows.journeys.birthday import birthday_mmdds
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.predicates import not_decided
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from rules.compiler import compile_condition
from rules.models import GenericJourneyRule, JourneyBase


class Generic(Journey):
    """Any ``kind: generic`` rule; one instance per journey id."""

    rule_type = GenericJourneyRule
    credit_kind = "care_credit"

    def __init__(self, journey_id: str) -> None:
        self.id = journey_id

    def _rule(self, rule: JourneyBase) -> GenericJourneyRule:
        assert isinstance(rule, GenericJourneyRule)
        return rule

    def occurrence(self, ctx: RunContext, rule: JourneyBase) -> str:
        r = self._rule(rule)
        period = r.limits.once_per
        if period == "ever":
            return f"{r.journey}:once"
        if period == "month":
            return f"{r.journey}:{ctx.as_of:%Y-%m}"
        day = ctx.as_of - timedelta(days=r.trigger.offset_days)  # the anniversary's own year
        return f"{r.journey}:{day.year:04d}"

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        return [
            self._trigger(ctx, self._rule(rule)),
            not_decided(rule.journey, self.occurrence(ctx, rule)),
        ]

    def _trigger(self, ctx: RunContext, rule: GenericJourneyRule) -> Predicate:
        t = rule.trigger
        if t.condition is not None:
            return Predicate(
                f"the trigger holds ({t.condition.text()})",
                compile_condition(t.condition, ctx.as_of, balance_at=ctx.balance_at),
                Customer.points,
                lambda v: f"points {v}",
            )
        if t.date_field is not None:
            column = getattr(Customer, t.date_field)
            target = ctx.as_of - timedelta(days=t.offset_days)
            offset = f" + {t.offset_days} days" if t.offset_days else ""
            if rule.limits.once_per == "ever":
                test: ColumnElement[bool] = column == target
                name = f"{t.date_field}{offset} is {ctx.as_of}"
            else:
                mmdd = extract("month", column) * 100 + extract("day", column)
                test = mmdd.in_(birthday_mmdds(target))
                name = f"{t.date_field}{offset} falls on {ctx.as_of:%m-%d} (every year)"
            return Predicate(name, test, column, lambda v: "unknown" if v is None else str(v))
        assert t.on_date is not None
        hits = _calendar_hit(t.on_date, ctx.as_of)
        return Predicate(
            f"today is {t.on_date}", true() if hits else false(), None, lambda _v: str(ctx.as_of)
        )

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        occurrence = self.occurrence(ctx, rule)
        for c in batch:
            yield Candidate(
                customer=c,
                occurrence=occurrence,
                details={"trigger": self._rule(rule).trigger.kind},
                variables={"points": str(c.points)},
                task=TaskPlan(due_on=ctx.as_of, earliest=ctx.as_of),
            )


def _calendar_hit(on: str, as_of: date) -> bool:
    """``on`` (MM-DD yearly, YYYY-MM-DD once) names ``as_of``; 02-29 is 02-28 in common years."""
    if len(on) == 10:
        return date.fromisoformat(on) == as_of
    month, day = int(on[:2]), int(on[3:])
    if (month, day) == (2, 29) and not calendar.isleap(as_of.year):
        return (as_of.month, as_of.day) == (2, 28)
    return (as_of.month, as_of.day) == (month, day)
