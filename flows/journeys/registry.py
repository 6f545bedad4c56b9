"""Run or preview a journey by id: the one entry point flows, the CLI and preview use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crm.bulk import insert_ignoring_conflicts
from crm.db import session_factory
from crm.models import JourneyPass
from flows.journeys import birthday, callback, grace_credit, plan_fit
from flows.journeys.base import (
    CapacityPlanner,
    Decision,
    JourneyReport,
    RunContext,
    apply_decisions,
    common_variables,
    notice_actions,
)
from rules.templates import render

Decide = Callable[[Session, RunContext, Any], Iterator[list[Decision]]]

DECIDERS: dict[str, Decide] = {
    "grace_credit": grace_credit.decide,
    "birthday": birthday.decide,
    "plan_fit": plan_fit.decide,
    "callback": callback.decide,
}
PASS_PERIOD: dict[str, Callable[[RunContext], str]] = {
    "plan_fit": lambda ctx: f"{ctx.as_of.year:04d}-{ctx.as_of.month:02d}",
}
"""Journeys whose inputs only change per period: one full pass per period is enough."""

RUN_ORDER: tuple[str, ...] = ("grace_credit", "birthday", "plan_fit", "callback", "precall_notice")
"""Grace first (money and suspension are urgent), callbacks last (they fill what capacity is left).
``precall_notice`` has no audience of its own: it runs inside every task-creating journey."""


def run_journey(
    engine: Engine, ctx: RunContext, journey: str, dry_run: bool = False
) -> JourneyReport:
    """Decide and write one journey, a batch per transaction; a rerun is a no-op."""
    report = JourneyReport(journey)
    rule = ctx.rule(journey)
    if not rule.enabled or journey not in DECIDERS:
        return report
    make_session = session_factory(engine)
    with make_session() as session:
        period = PASS_PERIOD[journey](ctx) if journey in PASS_PERIOD else None
        if period is not None and _pass_done(session, ctx, rule, period):
            report.counts["pass_already_done"] = 1
            return report
        if journey == "grace_credit":
            grace_credit.close_graces(session, ctx, rule, report)
            _finish(session, dry_run)
        if journey == "callback":
            callback.cancel_calls_no_longer_wanted(session, ctx, report)
            callback.escalate_overdue(session, ctx, rule, report)
            _finish(session, dry_run)
        planner = CapacityPlanner(session, ctx.as_of)
        after = grace_credit.grace_rows(ctx, rule) if journey == "grace_credit" else None
        for decisions in DECIDERS[journey](session, ctx, rule):
            report.candidates += len(decisions)
            apply_decisions(
                session, ctx, rule, decisions, report, after_insert=after, planner=planner
            )
            _finish(session, dry_run)
        if period is not None and not dry_run:
            _mark_pass(session, ctx, rule, period)
            session.commit()
    return report


def _pass_key(ctx: RunContext, rule: Any, period: str) -> dict[str, Any]:
    index, count = ctx.shard
    return {
        "journey": rule.journey,
        "period": period,
        "shard_index": index,
        "shard_count": count,
        "rule_hash": rule.content_hash,
    }


def _pass_done(session: Session, ctx: RunContext, rule: Any, period: str) -> bool:
    key = _pass_key(ctx, rule, period)
    stmt = select(JourneyPass.id).where(*(getattr(JourneyPass, k) == v for k, v in key.items()))
    return session.execute(stmt).first() is not None


def _mark_pass(session: Session, ctx: RunContext, rule: Any, period: str) -> None:
    row = {**_pass_key(ctx, rule, period), "run_id": ctx.run_id, "completed_at": ctx.at}
    insert_ignoring_conflicts(session, JourneyPass, [row], returning="id")


def _task_reason(details: dict[str, Any]) -> str:
    if "suggested_plan" in details:
        return (
            f" ({details['current_plan']} → {details['suggested_plan']},"
            f" saves {details['monthly_saving']}/month)"
        )
    if "due_on" in details:
        return f" (due {details['due_on']})"
    return ""


def _finish(session: Session, dry_run: bool) -> None:
    if dry_run:
        session.rollback()
    else:
        session.commit()


def care_day_instant(as_of: date, operator_tz: ZoneInfo, at: time = time(9, 0)) -> datetime:
    """The instant a care day's run acts as of, when none is given: 09:00 operator time."""
    return datetime.combine(as_of, at, tzinfo=operator_tz).astimezone(UTC)


def preview(
    session: Session,
    ruleset: Any,
    journey_id: str,
    as_of: date,
    limit: int = 20,
    operator_tz: str = "Asia/Shanghai",
) -> list[dict[str, Any]]:
    """Who the journey would hit on ``as_of`` and what it would do; writes nothing."""
    rule = ruleset.journeys[journey_id]
    if journey_id not in DECIDERS:
        return []
    tz = ZoneInfo(operator_tz)
    ctx = RunContext(
        as_of=as_of,
        at=care_day_instant(as_of, tz),
        run_id="preview",
        ruleset=ruleset,
        operator_tz=tz,
        batch_size=max(limit, 2000),
    )
    out: list[dict[str, Any]] = []
    precall = ruleset.journeys.get("precall_notice")
    for decisions in DECIDERS[journey_id](session, ctx, rule):
        for d in decisions:
            c = d.customer
            texts = {
                m.template: render(rule, m.template, c.locale, m.variables) for m in d.messages
            }
            actions = [f"send {m.template}" for m in d.messages]
            actions += [f"grant credit {credit.amount}" for credit in d.credits]
            for t in d.tasks:
                actions.append(f"call task {t.kind}" + _task_reason(t.details))
                if c.do_not_call:
                    actions[-1] += " (skipped: do-not-call)"
                elif precall is not None and precall.enabled and not c.sms_opt_out:
                    notice = notice_actions(precall)
                    if notice:
                        variables = {**common_variables(ctx, c), "task_kind": t.kind}
                        texts[notice[0].template] = render(
                            precall, notice[0].template, c.locale, variables
                        )
            out.append(
                {
                    "customer_id": c.external_id,
                    "name": c.name,
                    "tier": c.tier,
                    "locale": c.locale,
                    "occurrence": d.occurrence,
                    "actions": actions,
                    "texts": texts,
                    "details": d.summary()["details"],
                }
            )
            if len(out) >= limit:
                return out
    return out
    return out
