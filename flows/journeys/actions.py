"""The one action interpreter: a rule's actions, for one candidate, become intents.

Every journey — built-in or declared in YAML — goes through here, so an action
means the same thing everywhere: ``send_sms``/``send_voice`` queue a message on
the customer's local care day, valid as the template says; ``create_task``
plans a call; ``grant_credit`` credits the rule's amount (or the candidate's);
``suspend`` suspends the line. A ``when`` condition is evaluated in SQL, as one
labelled boolean column per action (:func:`when_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, literal

from crm.balances import BalanceAt
from flows.journeys.context import CustomerRow, RunContext, local_day_end, local_day_start
from flows.journeys.intents import (
    CreditIntent,
    Decision,
    MessageIntent,
    SuspendIntent,
    TaskIntent,
)
from flows.journeys.protocol import Candidate, Journey
from notifications.manager_change import manager_name_for as name_in_locale
from rules.compiler import compile_condition
from rules.models import (
    Action,
    CreateTask,
    DaysValidity,
    GrantCredit,
    JourneyBase,
    SendSms,
    SendVoice,
    Suspend,
    Validity,
    text_for,
)

_MESSAGE_ACTIONS = (SendSms, SendVoice)


def when_columns(
    actions: Sequence[Action],
    as_of: date,
    prefix: str = "act",
    *,
    balance_at: BalanceAt | None = None,
) -> list[Any]:
    """One labelled boolean column per action that has a ``when``: evaluated in SQL, per row."""
    cols = []
    for index, action in enumerate(actions):
        if action.when is not None:
            cond = compile_condition(action.when, as_of, balance_at=balance_at)
            cols.append(
                case((cond, literal(True)), else_=literal(False)).label(f"{prefix}_{index}")
            )
    return cols


def applies(c: CustomerRow, actions: Sequence[Action], index: int, prefix: str = "act") -> bool:
    return actions[index].when is None or bool(c.extra.get(f"{prefix}_{index}"))


def manager_name_for(c: CustomerRow) -> str:
    """The manager's name as the customer can read it (:func:`notifications.manager_change.
    manager_name_for`: a re-rendered text must name the manager the same way)."""
    return name_in_locale(c.locale, c.manager_name, c.manager_name_latin)


def common_variables(ctx: RunContext, c: CustomerRow) -> dict[str, str]:
    """The variables every template may use."""
    return {
        "name": c.name,
        "tier": c.tier,
        "manager_name": manager_name_for(c),
        "manager_phone": c.manager_phone or ctx.hotline,
        "hotline": ctx.hotline,
        "date": ctx.as_of.isoformat(),
    }


def valid_until(
    ctx: RunContext, validity: Validity, timezone: str, deadline: date | None
) -> datetime | None:
    """The instant after which a message is never sent (None: while its task is open)."""
    if validity == "end_of_day":
        return local_day_end(ctx.as_of, timezone)
    if isinstance(validity, DaysValidity):
        return local_day_end(ctx.as_of + timedelta(days=validity.days - 1), timezone)
    if validity == "deadline":
        return local_day_end(deadline or ctx.as_of, timezone)
    return None  # while_task_open: the dispatcher checks the task


def message(
    ctx: RunContext,
    journey: Journey,
    rule: JourneyBase,
    c: CustomerRow,
    template: str,
    variables: dict[str, str],
    deadline: date | None = None,
) -> MessageIntent:
    """A message sent on the customer's local care day, valid as its template says."""
    validity = rule.template(template).valid_until or journey.default_validity
    return MessageIntent(
        rule=rule,
        template=template,
        variables=variables,
        not_before=local_day_start(ctx.as_of, c.timezone),
        valid_until=valid_until(ctx, validity, c.timezone, deadline),
    )


def interpret(
    ctx: RunContext,
    journey: Journey,
    rule: JourneyBase,
    actions: Sequence[Action],
    candidate: Candidate,
    prefix: str = "act",
) -> Decision:
    """``actions`` applied to ``candidate``: the intents of one decision."""
    c = candidate.customer
    d = Decision(customer=c, occurrence=candidate.occurrence, details=dict(candidate.details))
    extra = c.extra
    chosen = [a for i, a in enumerate(actions) if a.when is None or extra.get(f"{prefix}_{i}")]
    for action in chosen:
        if isinstance(action, GrantCredit):
            amount = action.amount_for(c.tier) if action.amount or action.amount_by_tier else None
            amount = amount if amount is not None else candidate.credit
            if amount is not None:
                d.credits.append(CreditIntent(amount, journey.credit_kind))
        elif isinstance(action, CreateTask) and candidate.task is not None:
            plan = candidate.task
            details = dict(plan.details)
            if action.reason is not None:
                details["reason"] = text_for(action.reason, c.locale)
                if not isinstance(action.reason, str):  # the workspace shows the reader's
                    details["reason_text"] = dict(action.reason)
            d.tasks.append(
                TaskIntent(
                    kind=action.kind,
                    due_on=plan.due_on,
                    earliest=plan.earliest,
                    priority=action.priority,
                    details=details,
                )
            )
        elif isinstance(action, Suspend):
            d.suspend = SuspendIntent(str(candidate.details.get("suspend_reason", "")))
    variables = {**common_variables(ctx, c), **candidate.variables}
    if "perk_amount" in rule.variables:
        variables["perk_amount"] = str(sum(x.amount for x in d.credits)) if d.credits else ""
    for action in chosen:
        if isinstance(action, _MESSAGE_ACTIONS):
            d.messages.append(
                message(ctx, journey, rule, c, action.template, variables, candidate.deadline)
            )
    return d
