"""Preview a journey on a date: who it would hit and what it would send, changing nothing.

Everything runs inside one transaction that is always rolled back, so even a
journey preview that writes scratch rows leaves the database as it was. Counting
and the first N customers are done in SQL; customers are never all loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crm.models import Customer, Manager
from rules.compiler import compile_condition
from rules.evaluate import CustomerFacts, evaluate, load_facts
from rules.loader import RuleSet
from rules.models import (
    SAMPLE_VARIABLES,
    CreateTask,
    GraceCreditRule,
    GrantCredit,
    JourneyBase,
    SendSms,
    SendVoice,
    Suspend,
)
from rules.templates import render_text

REGISTRY_MODULE = "flows.journeys.registry"


@dataclass
class PreviewResult:
    """The preview of one journey on one date."""

    journey: str
    as_of: date
    enabled: bool
    rule_hash: str
    count: int
    limit: int
    mode: str
    """``journey`` (the journey's own preview) or ``audience`` (audience only, no trigger)."""
    customers: list[dict[str, Any]] = field(default_factory=list)
    texts: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "as_of": self.as_of.isoformat(),
            "enabled": self.enabled,
            "rule_hash": self.rule_hash,
            "mode": self.mode,
            "audience_count": self.count,
            "limit": self.limit,
            "customers": self.customers,
            "texts": self.texts,
            "note": self.note,
        }


def run_preview(
    engine: Engine, ruleset: RuleSet, journey_id: str, as_of: date, limit: int
) -> PreviewResult:
    """Preview in a transaction that is rolled back whatever happens.

    Uses ``flows.journeys.registry.preview`` when that module exists (the real
    journey logic, trigger included); otherwise previews the audience only.
    """
    rule = ruleset.journey(journey_id)
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            result = audience_preview(session, ruleset, rule, as_of, limit)
            hook = _registry_preview(journey_id)
            rows = None if hook is None else hook(session, ruleset, journey_id, as_of, limit)
            if rows is not None:
                result.mode = "journey"
                result.customers = [dict(r) for r in rows]
                result.note = (
                    f"audience_count is everyone in the audience; the journey acts on the"
                    f" customers listed (trigger applied) as of {as_of}"
                )
            return result
        finally:
            session.close()
            outer.rollback()


def _registry_preview(journey_id: str) -> Any:
    """The journeys' own preview function, or None (module missing, or journey not covered)."""
    module = sys.modules.get(REGISTRY_MODULE)
    if module is None:
        try:
            spec = importlib.util.find_spec(REGISTRY_MODULE)
        except ModuleNotFoundError:
            return None
        if spec is None:
            return None
        module = importlib.import_module(REGISTRY_MODULE)
    covered = getattr(module, "DECIDERS", None)
    if isinstance(covered, dict) and journey_id not in covered:
        return None
    return getattr(module, "preview", None)


def audience_preview(
    session: Session, ruleset: RuleSet, rule: JourneyBase, as_of: date, limit: int
) -> PreviewResult:
    """Count and first ``limit`` customers of the audience, with their actions and sample texts."""
    where = compile_condition(rule.audience, as_of)
    count = int(session.scalar(select(func.count()).select_from(Customer).where(where)) or 0)
    ids = list(session.scalars(select(Customer.id).where(where).order_by(Customer.id).limit(limit)))
    facts = load_facts(session, ids)
    managers = _managers(session, ids)
    customers = []
    for cid in ids:
        f = facts[cid]
        customers.append(
            {
                "customer_id": f.customer_id,
                "name": f.name,
                "tier": f.tier,
                "locale": f.locale,
                "actions": planned_actions(rule, f, as_of),
            }
        )
    first = facts[ids[0]] if ids else None
    variables = sample_variables(rule, ruleset, as_of, first, managers.get(ids[0]) if ids else None)
    texts = {
        name: {loc: render_text(text, variables) for loc, text in template.text.items()}
        for name, template in rule.templates.items()
    }
    return PreviewResult(
        journey=rule.journey,
        as_of=as_of,
        enabled=rule.enabled,
        rule_hash=rule.content_hash,
        count=count,
        limit=limit,
        mode="audience",
        customers=customers,
        texts=texts,
        note=(
            "audience only: the trigger (birthday date, balance threshold, usage, cadence)"
            " is applied by the journey itself, which is not installed"
        ),
    )


def _managers(session: Session, ids: list[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = session.execute(
        select(Customer.id, Manager.name, Manager.phone)
        .join(Manager, Manager.id == Customer.manager_id)
        .where(Customer.id.in_(ids))
    )
    return {r.id: (r.name, r.phone) for r in rows}


def planned_actions(rule: JourneyBase, facts: CustomerFacts, as_of: date) -> list[str]:
    """The actions whose ``when`` this customer passes, as short text."""
    out: list[str] = []
    deadline = rule.deadline_action_list if isinstance(rule, GraceCreditRule) else []
    for prefix, actions in (("", rule.action_list), ("on deadline: ", deadline)):
        for action in actions:
            if action.when is not None and not evaluate(action.when, facts, as_of):
                continue
            out.append(prefix + describe_action(rule, action, facts.tier))
    return out


def describe_action(rule: JourneyBase, action: Any, tier: str | None = None) -> str:
    if isinstance(action, SendSms | SendVoice):
        return f"{action.type} {action.template}"
    if isinstance(action, CreateTask):
        return f"create_task {action.kind}"
    if isinstance(action, GrantCredit):
        trigger = rule.trigger.amount_by_tier if isinstance(rule, GraceCreditRule) else None
        amount = action.amount_for(tier, trigger) if tier else action.amount
        return f"grant_credit {amount}" if amount is not None else "grant_credit (none for tier)"
    if isinstance(action, Suspend):
        return "suspend"
    return str(getattr(action, "type", action))


def sample_variables(
    rule: JourneyBase,
    ruleset: RuleSet,
    as_of: date,
    facts: CustomerFacts | None,
    manager: tuple[str, str] | None,
) -> dict[str, str]:
    """Template variables for a sample text: the first customer's where known."""
    values = {k: v for k, v in SAMPLE_VARIABLES.items() if k in rule.variables}
    values["date"] = as_of.isoformat()
    if ruleset.contact_policy.hotline:
        values["hotline"] = ruleset.contact_policy.hotline
    if facts is not None:
        values["name"] = facts.name or facts.customer_id
        values["tier"] = facts.tier
    if manager is not None:
        values["manager_name"], values["manager_phone"] = manager
    tier = facts.tier if facts is not None else "diamond"
    if isinstance(rule, GraceCreditRule):
        amount = {str(k): v for k, v in rule.trigger.amount_by_tier.items()}.get(tier)
        values["amount"] = str(amount if amount is not None else Decimal("0.00"))
        values["deadline"] = (as_of + timedelta(days=rule.trigger.topup_days)).isoformat()
    for credit in rule.actions_of(GrantCredit):
        perk = credit.amount_for(tier)
        if perk is not None and "perk_amount" in values:
            values["perk_amount"] = str(perk)
    return {k: v for k, v in values.items() if k in rule.variables}
