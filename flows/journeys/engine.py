"""Running a journey, generic over the protocol: select, refine, interpret, write.

:func:`decisions` is the one way decisions are made — by a run, by ``rules
preview`` and by ``explain`` (which runs it for one customer in a rolled-back
transaction), so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import ColumnElement, Engine, or_, select
from sqlalchemy.orm import Session

from crm.bulk import insert_ignoring_conflicts
from crm.capacity import CapacityPlanner
from crm.db import refresh_statistics, session_factory
from crm.models import Customer, JourneyPass
from flows.journeys.actions import interpret, when_columns
from flows.journeys.context import RunContext, customer_select, iter_candidates
from flows.journeys.intents import Decision, JourneyReport
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip
from flows.journeys.timeliness import TOO_LATE, cannot_arrive
from flows.journeys.writer import apply_decisions
from rules.compiler import compile_condition
from rules.models import JourneyBase

ANALYZE_AFTER = 500
"""Decisions after which PostgreSQL's statistics are refreshed for the journeys that follow."""


def all_predicates(
    session: Session, ctx: RunContext, journey: Journey, rule: JourneyBase
) -> list[Predicate]:
    """The audience, then the journey's own checks: what a candidate must pass in SQL."""
    audience = Predicate(
        f"in the audience ({rule.audience.text()})",
        compile_condition(rule.audience, ctx.as_of, balance_at=ctx.balance_at),
    )
    found = [audience, *journey.predicates(session, ctx, rule)]
    if ctx.now is not None:
        # A status learned after the day's instant was not known then: the day leaves
        # that customer alone (a later day acts on it).
        found.append(
            Predicate(
                "the line's status held at the day's instant",
                or_(Customer.status_since.is_(None), Customer.status_since <= ctx.at),
                Customer.status_since,
            )
        )
    return found


def candidate_batches(
    session: Session, ctx: RunContext, journey: Journey, rule: JourneyBase
) -> Iterator[list[Any]]:
    """Candidate rows (``CustomerRow``), a batch at a time, group by group."""
    tests = [p.test for p in all_predicates(session, ctx, journey, rule)]
    base = customer_select(
        *journey.columns(ctx, rule),
        *when_columns(rule.action_list, ctx.as_of, balance_at=ctx.balance_at),
    )
    groups: list[ColumnElement[bool] | None] = [*journey.groups(ctx, rule)] or [None]
    for group in groups:
        stmt = base.where(*tests) if group is None else base.where(*tests, group)
        yield from iter_candidates(session, stmt, ctx)


def decisions(
    session: Session,
    ctx: RunContext,
    journey: Journey,
    rule: JourneyBase,
    report: JourneyReport,
    skips: list[Skip] | None = None,
) -> Iterator[list[Decision]]:
    """The journey's decisions, a batch at a time; nothing is written here."""
    actions = rule.action_list  # once per run: pydantic builds it anew on each access
    for batch in candidate_batches(session, ctx, journey, rule):
        report.candidates += len(batch)
        out: list[Decision] = []
        for found in journey.refine(session, ctx, rule, batch):
            if isinstance(found, Skip):
                report.counts[f"skipped_{found.code}"] += 1
                if skips is not None:
                    skips.append(found)
                continue
            assert isinstance(found, Candidate)
            decision = interpret(ctx, journey, rule, actions, found)
            late = cannot_arrive(ctx, decision)
            if late is not None:  # a late run never sends what can no longer arrive
                report.counts[f"skipped_{TOO_LATE}"] += 1
                if skips is not None:
                    skips.append(Skip(found.customer, TOO_LATE, late))
                continue
            out.append(decision)
        yield out


def run_journey(
    engine: Engine, ctx: RunContext, journey: Journey, dry_run: bool = False
) -> JourneyReport:
    """Decide and write one journey, a batch per transaction; a rerun is a no-op."""
    report = JourneyReport(journey.id)
    rule = ctx.rule(journey.id)
    if not rule.enabled:
        return report
    with session_factory(engine)() as session:
        period = journey.pass_period(ctx)
        if period is not None and _pass_done(session, ctx, rule, period):
            report.counts["pass_already_done"] = 1
            return report
        journey.housekeeping(session, ctx, rule, report)
        _finish(session, dry_run)
        planner = CapacityPlanner(session, ctx.plan_from)
        for batch in decisions(session, ctx, journey, rule, report):
            apply_decisions(session, ctx, journey, rule, batch, report, planner)
            _finish(session, dry_run)
        if period is not None and not dry_run and not ctx.late:
            # a day run late may not have seen what a later day will (figures that arrived
            # after its instant): only a day run on time closes the period's pass
            _mark_pass(session, ctx, rule, period)
            session.commit()
    if not dry_run and report.decided >= ANALYZE_AFTER:
        refresh_statistics(engine)
    return report


def _pass_key(ctx: RunContext, rule: JourneyBase, period: str) -> dict[str, Any]:
    index, count = ctx.shard
    return {
        "journey": rule.journey,
        "period": period,
        "shard_index": index,
        "shard_count": count,
        "rule_hash": rule.content_hash,
    }


def _pass_done(session: Session, ctx: RunContext, rule: JourneyBase, period: str) -> bool:
    key = _pass_key(ctx, rule, period)
    stmt = select(JourneyPass.id).where(*(getattr(JourneyPass, k) == v for k, v in key.items()))
    return session.execute(stmt).first() is not None


def _mark_pass(session: Session, ctx: RunContext, rule: JourneyBase, period: str) -> None:
    row = {**_pass_key(ctx, rule, period), "run_id": ctx.run_id, "completed_at": ctx.recorded_at}
    insert_ignoring_conflicts(session, JourneyPass, [row], returning="id")


def _finish(session: Session, dry_run: bool) -> None:
    if dry_run:
        session.rollback()
    else:
        session.commit()
