"""Queued texts follow a customer to their new manager.

A pre-call SMS says "your account manager NAME will call you soon from NUMBER". When
an import moves the customer to another manager, their open calls move with them
(:func:`crm.tasks.reassign_open`), and a text still waiting to go out must not name the
manager who will no longer call. Each queued text whose template uses the manager's
name or number is rendered again from its own template and the variables it was first
rendered with, the manager's taken from the customer's manager now; the outbox writes
it (:func:`notifications.outbox.queue.rewrite_queued`, audited ``message.rerendered``).

A text already handed to the provider (``sending`` or later) cannot be taken back and
is left alone. A text that cannot be rendered again — queued before vipcare kept its
variables, or whose rule or template is gone from the rule files — keeps its wording
and is counted in :attr:`Followed.kept`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.audit import Actor
from crm.models import Customer, Manager, OutboundMessage
from notifications.outbox import queue
from notifications.outbox.states import QUEUED
from rules.errors import RulesError
from rules.loader import RuleSet
from rules.templates import RENDER_ERRORS, render, variables_used

MANAGER_VARIABLES = frozenset({"manager_name", "manager_phone"})
REASON = "the customer moved to another manager"


def manager_name_for(locale: str, name: str | None, name_latin: str | None) -> str:
    """The manager's name as the customer can read it: Chinese texts get the name as
    written, texts in other languages its Latin spelling when the CRM knows one."""
    if locale.lower().startswith("zh") or not name_latin:
        return name or ""
    return name_latin


@dataclass(frozen=True)
class Followed:
    rerendered: int
    kept: int
    """Queued texts naming the manager that could not be rendered again."""


def follow_new_manager(
    session: Session,
    ruleset: RuleSet,
    customer_ids: Iterable[int],
    at: datetime,
    actor: Actor,
) -> Followed:
    """Render again the queued texts of ``customer_ids`` that name their manager."""
    ids = sorted(set(customer_ids))
    texts: list[queue.NewText] = []
    kept = 0
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(
                OutboundMessage.id,
                OutboundMessage.journey,
                OutboundMessage.template,
                OutboundMessage.locale,
                OutboundMessage.body,
                OutboundMessage.variables,
                Manager.external_id,
                Manager.name,
                Manager.name_latin,
                Manager.phone,
            )
            .join(Customer, Customer.id == OutboundMessage.customer_id)
            .outerjoin(Manager, Manager.id == Customer.manager_id)
            .where(
                OutboundMessage.customer_id.in_(ids[start : start + 1000]),
                OutboundMessage.status == QUEUED,
            )
            .order_by(OutboundMessage.id)
            .with_for_update(of=OutboundMessage)
        ).all()
        for r in rows:
            found, stuck = _new_text(ruleset, r)
            kept += stuck
            if found is not None:
                texts.append(found)
    done = queue.rewrite_queued(session, texts, at, actor, REASON)
    return Followed(len(done), kept)


def _new_text(ruleset: RuleSet, r: Any) -> tuple[queue.NewText | None, bool]:
    """(the text's new wording or None, whether it names the manager but cannot be
    rendered again). None and False: it does not name the manager, or reads the same."""
    rule = ruleset.journeys.get(r.journey)
    template = rule.templates.get(r.template) if rule is not None else None
    if rule is None or template is None:
        return None, True  # cannot tell what it uses: kept as it is
    try:
        used = variables_used(template.text_for(r.locale)[1])
    except RENDER_ERRORS:
        return None, True
    if not used & MANAGER_VARIABLES:
        return None, False
    if not isinstance(r.variables, dict):
        return None, True
    variables = {
        **r.variables,
        "manager_name": manager_name_for(r.locale, r.name, r.name_latin),
        "manager_phone": r.phone or ruleset.contact_policy.hotline,
    }
    try:
        body = render(rule, r.template, r.locale, variables)
    except RulesError:
        return None, True
    except RENDER_ERRORS:
        return None, True
    if body == r.body:
        return None, False
    return queue.NewText(r.id, body, variables, {"to_manager": r.external_id}), False
