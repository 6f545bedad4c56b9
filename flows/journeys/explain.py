"""``rules explain``: why a journey would or would not act on one customer on a date.

Three parts, none re-implemented:

- the **audience**, node by node, evaluated in SQL (:func:`rules.explain.explain`);
- the journey's **predicates**, each evaluated in SQL for this customer with the
  value that decided it (the same :class:`Predicate` objects a run selects with);
- the **verdict**: the journey's real decision for this one customer, made in a
  transaction that is rolled back — what a run would do, or why it would not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, case, literal, select
from sqlalchemy.orm import Session

from crm.errors import NotFound
from crm.models import Customer
from flows.journeys.context import RunContext, care_day_instant
from flows.journeys.engine import decisions
from flows.journeys.intents import JourneyReport
from flows.journeys.protocol import Skip
from flows.journeys.registry import journey_for
from rules import explain as audience_explain
from rules.explain import Explanation
from rules.loader import RuleSet


@dataclass(frozen=True)
class Check:
    """One journey predicate for one customer: did it pass, and the value that decided it."""

    check: str
    actual: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    journey: str
    customer_id: str
    as_of: date
    enabled: bool
    rule_hash: str
    audience: Explanation
    checks: list[Check]
    would_act: bool
    reason: str
    """Why not (the first failing check, or the journey's own reason), or what it does."""
    decision: list[str] = field(default_factory=list)
    """What the journey would do (from its real decision)."""
    occurrence: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    """Each action of the rule and whether its ``when`` applies to this customer."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "customer_id": self.customer_id,
            "as_of": self.as_of.isoformat(),
            "enabled": self.enabled,
            "rule_hash": self.rule_hash,
            "in_audience": self.audience.passed,
            "audience": self.audience.to_dict(),
            "trigger": [c.to_dict() for c in self.checks],
            "would_act": self.would_act,
            "reason": self.reason,
            "occurrence": self.occurrence,
            "decision": self.decision,
            "actions": self.actions,
        }


def explain(
    engine: Engine,
    ruleset: RuleSet,
    journey_id: str,
    customer_ref: str,
    as_of: date,
    operator_tz: str = "Asia/Shanghai",
) -> Verdict:
    """The audience, the checks and the verdict for ``customer_ref``; changes nothing."""
    journey = journey_for(ruleset, journey_id)
    rule = ruleset.journey(journey_id)
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            customer_id = session.scalar(
                select(Customer.id).where(Customer.external_id == customer_ref)
            )
            if customer_id is None:
                raise NotFound(f"no customer with customer_id {customer_ref!r}")
            tz = ZoneInfo(operator_tz)
            ctx = RunContext(
                as_of=as_of,
                at=care_day_instant(as_of, tz),
                run_id="explain",
                ruleset=ruleset,
                operator_tz=tz,
                only_customer=customer_id,
            )
            report = JourneyReport(journey.id)
            journey.housekeeping(session, ctx, rule, report)  # as a run would, rolled back
            audience = audience_explain.explain(
                session, rule.audience, customer_id, as_of, balance_at=ctx.balance_at
            )
            checks = _checks(session, ctx, journey_id, customer_id)
            skips: list[Skip] = []
            made = [
                d for batch in decisions(session, ctx, journey, rule, report, skips) for d in batch
            ]
            action_checks = _actions(session, ctx, journey_id, customer_id)
        finally:
            session.close()
            outer.rollback()
    verdict = Verdict(
        journey=journey.id,
        customer_id=customer_ref,
        as_of=as_of,
        enabled=rule.enabled,
        rule_hash=rule.content_hash,
        audience=audience,
        checks=checks,
        would_act=bool(made) and rule.enabled,
        reason="",
        actions=action_checks,
    )
    if made:
        verdict.decision = made[0].describe()
        verdict.occurrence = made[0].occurrence
        verdict.reason = "acts: " + "; ".join(verdict.decision) if verdict.decision else "acts"
        if not rule.enabled:
            verdict.reason = "the journey is disabled (enabled: false): it would not run"
    elif not audience.passed:
        verdict.reason = "not in the audience"
    elif failed := [c for c in checks if not c.passed]:
        verdict.reason = f"{failed[0].check}: {failed[0].actual}"
    elif skips:
        verdict.reason = skips[0].reason
    else:
        verdict.reason = "no decision"
    return verdict


def _checks(session: Session, ctx: RunContext, journey_id: str, customer_id: int) -> list[Check]:
    """Each of the journey's own predicates for the customer, with the value it showed."""
    journey = journey_for(ctx.ruleset, journey_id)
    rule = ctx.rule(journey_id)
    predicates = journey.predicates(session, ctx, rule)
    columns: list[Any] = []
    for i, p in enumerate(predicates):
        columns.append(case((p.test, literal(True)), else_=literal(False)).label(f"p{i}"))
        columns.append((p.shows if p.shows is not None else literal(None)).label(f"v{i}"))
    row = session.execute(select(*columns).where(Customer.id == customer_id)).one()._mapping
    return [
        Check(p.name, p.fmt(row[f"v{i}"]), bool(row[f"p{i}"])) for i, p in enumerate(predicates)
    ]


def _actions(
    session: Session, ctx: RunContext, journey_id: str, customer_id: int
) -> list[dict[str, Any]]:
    """Each action of the rule and whether its ``when`` lets it apply to this customer."""
    out: list[dict[str, Any]] = []
    for stage, actions in ctx.rule(journey_id).action_stages():
        for action in actions:
            verdict = (
                None
                if action.when is None
                else audience_explain.explain(session, action.when, customer_id, ctx.as_of)
            )
            out.append(
                {
                    "stage": stage,
                    "action": action.describe(),
                    "applies": verdict is None or verdict.passed,
                    "when": None if verdict is None else verdict.to_dict(),
                }
            )
    return out
