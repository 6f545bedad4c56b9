"""Birthday greeting: an SMS on the customer's local birthday, a perk and a call for top tiers.

A 29 February birthday is greeted on 28 February in common years (or 1 March,
if the rule says so). Once per customer per year: occurrence ``birthday:YYYY``.
The greeting is valid until the end of the customer's local birthday.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy.orm import Session

from crm.models import Customer
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.predicates import not_decided
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from rules.models import BirthdayRule, JourneyBase


def birthday_mmdds(birthday_on: date, feb29_rule: str = "feb28") -> list[int]:
    """The ``birth_mmdd`` values greeted on ``birthday_on``."""
    mmdd = [birthday_on.month * 100 + birthday_on.day]
    if not calendar.isleap(birthday_on.year):
        if feb29_rule == "feb28" and (birthday_on.month, birthday_on.day) == (2, 28):
            mmdd.append(229)
        if feb29_rule == "mar1" and (birthday_on.month, birthday_on.day) == (3, 1):
            mmdd.append(229)
    return mmdd


class Birthday(Journey):
    id = "birthday"
    rule_type = BirthdayRule
    credit_kind = "birthday_perk"

    def _rule(self, rule: JourneyBase) -> BirthdayRule:
        assert isinstance(rule, BirthdayRule)
        return rule

    def birthday_on(self, ctx: RunContext, rule: JourneyBase) -> date:
        """The birthday greeted today (a positive offset greets after the birthday)."""
        return ctx.as_of - timedelta(days=self._rule(rule).trigger.offset_days)

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        trigger = self._rule(rule).trigger
        day = self.birthday_on(ctx, rule)
        return [
            Predicate(
                f"birthday greeted on {ctx.as_of} (born on {day:%m-%d})",
                Customer.birth_mmdd.in_(birthday_mmdds(day, trigger.feb29_in_common_years)),
                Customer.birthday,
                lambda v: "unknown" if v is None else f"{v:%m-%d}",
            ),
            not_decided(rule.journey, f"birthday:{day.year}"),
        ]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        day = self.birthday_on(ctx, rule)
        for c in batch:
            yield Candidate(
                customer=c,
                occurrence=f"birthday:{day.year}",
                details={"birthday_on": day},
                task=TaskPlan(
                    due_on=ctx.as_of,
                    earliest=ctx.as_of,
                    details={"reason": "birthday", "birthday_on": day},
                ),
            )
