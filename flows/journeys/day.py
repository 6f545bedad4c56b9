"""A whole care day without Prefect: the hygiene sweep, then every journey in order.

``flows.daily`` runs the same steps as Prefect tasks; tests, benchmarks and
``explain`` use this directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from crm import invariants
from crm.db import session_factory
from flows.journeys.context import RunContext
from flows.journeys.engine import run_journey
from flows.journeys.hygiene import withdraw_unwanted_care
from flows.journeys.intents import JourneyReport
from flows.journeys.registry import journeys_for
from rules import RuleSet
from rules.models import GraceCreditRule

HYGIENE = "hygiene"


def run_hygiene(engine: Engine, ctx: RunContext, dry_run: bool = False) -> JourneyReport:
    """Withdraw the care that must no longer happen (do-not-call, suspended, closed)."""
    report = JourneyReport(HYGIENE)
    with session_factory(engine)() as session:
        report.counts.update(withdraw_unwanted_care(session, ctx))
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return report


def run_day(
    engine: Engine,
    ctx: RunContext,
    only: Sequence[str] = (),
    dry_run: bool = False,
) -> list[JourneyReport]:
    """The care day ``ctx.as_of``: hygiene, then each enabled journey (or those in ``only``)."""
    reports = [run_hygiene(engine, ctx, dry_run)]
    for journey in journeys_for(ctx.ruleset):
        if only and journey.id not in only:
            continue
        reports.append(run_journey(engine, ctx, journey, dry_run))
    if not dry_run:
        check_day(engine, ctx)
    return reports


def grace_limits(ruleset: RuleSet) -> invariants.GraceLimits | None:
    """What a grace advance may be, from the operator's policy and the grace rule."""
    rule = ruleset.journeys.get("grace_credit")
    if not isinstance(rule, GraceCreditRule):
        return None
    return invariants.GraceLimits(
        cap=ruleset.contact_policy.max_credit_for("grace_credit"),
        amount_by_tier={str(t): a for t, a in rule.trigger.amount_by_tier.items()},
        threshold=rule.trigger.threshold,
    )


def check_day(engine: Engine, ctx: RunContext, owner: str | None = None) -> invariants.CheckResult:
    """The money and state invariants of the customers the day touched, recorded for status."""
    since = min(ctx.at, ctx.now) if ctx.now is not None else ctx.at
    return invariants.record_check(
        engine,
        "care_day",
        ctx.recorded_at,
        since=since,
        grace=grace_limits(ctx.ruleset),
        owner=owner or ctx.run_id,
    )
