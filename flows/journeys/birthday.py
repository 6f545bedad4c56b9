"""Birthday greeting: an SMS on the local birthday, a perk and a call for top tiers.

A 29 February birthday is greeted on 28 February in common years (or 1 March,
if the rule says so). Once per customer per year: occurrence ``birthday:YYYY``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta

from sqlalchemy.orm import Session

from crm.models import Customer
from flows.journeys.base import (
    CreditIntent,
    Decision,
    MessageIntent,
    RunContext,
    TaskIntent,
    action_applies,
    common_variables,
    customer_select,
    iter_candidates,
    occurrence_absent,
    when_columns,
)
from rules.compiler import compile_condition
from rules.models import BirthdayRule, CreateTask, GrantCredit, SendSms, SendVoice


def birthday_mmdds(birthday_on: date, feb29_rule: str = "feb28") -> list[int]:
    """The ``birth_mmdd`` values greeted on ``birthday_on``."""
    mmdd = [birthday_on.month * 100 + birthday_on.day]
    if not calendar.isleap(birthday_on.year):
        if feb29_rule == "feb28" and (birthday_on.month, birthday_on.day) == (2, 28):
            mmdd.append(229)
        if feb29_rule == "mar1" and (birthday_on.month, birthday_on.day) == (3, 1):
            mmdd.append(229)
    return mmdd


def decide(session: Session, ctx: RunContext, rule: BirthdayRule) -> Iterator[list[Decision]]:
    # A positive offset greets after the birthday: today greets birthdays offset days ago.
    birthday_on = ctx.as_of - timedelta(days=rule.trigger.offset_days)
    occurrence = f"birthday:{birthday_on.year}"
    actions = rule.action_list
    stmt = customer_select(*when_columns(actions, ctx.as_of)).where(
        compile_condition(rule.audience, ctx.as_of),
        Customer.birth_mmdd.in_(birthday_mmdds(birthday_on, rule.trigger.feb29_in_common_years)),
        occurrence_absent(rule.journey, occurrence),
    )
    for batch in iter_candidates(session, stmt, ctx):
        decisions = []
        for c in batch:
            d = Decision(customer=c, occurrence=occurrence, details={"birthday_on": birthday_on})
            perk = None
            for index, action in enumerate(actions):
                if not action_applies(c, actions, index):
                    continue
                if isinstance(action, GrantCredit):
                    perk = action.amount_for(c.tier)
                    if perk is not None:
                        d.credits.append(CreditIntent(perk, "birthday_perk"))
                elif isinstance(action, CreateTask):
                    d.tasks.append(
                        TaskIntent(
                            kind=action.kind,
                            due_on=ctx.as_of,
                            scheduled_on=ctx.as_of,
                            priority=action.priority,
                            details={"reason": "birthday", "birthday_on": birthday_on},
                        )
                    )
            variables = {**common_variables(ctx, c), "perk_amount": str(perk or "")}
            for index, action in enumerate(actions):
                if isinstance(action, SendSms | SendVoice) and action_applies(c, actions, index):
                    d.messages.append(MessageIntent(action.template, variables))
            decisions.append(d)
        yield decisions
