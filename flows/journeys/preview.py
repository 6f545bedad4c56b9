"""``rules preview``: who a journey would act on, on a date, and what it would send.

It runs the journey's real decision (:func:`flows.journeys.engine.decisions`)
inside one transaction that is always rolled back, so it shows exactly what a
run would do — the trigger, the plan-fit saving, the rendered texts — and
changes nothing. The headline is how many customers the journey would act on,
beside the audience size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crm.models import Customer
from flows.journeys.actions import common_variables
from flows.journeys.context import RunContext, care_day_instant, scoped
from flows.journeys.engine import decisions
from flows.journeys.intents import Decision, JourneyReport
from flows.journeys.registry import journey_for
from flows.journeys.writer import notice_rule
from rules.compiler import compile_condition
from rules.loader import RuleSet
from rules.models import PrecallNoticeRule, SendSms, SendVoice
from rules.templates import render


@dataclass
class PreviewResult:
    """The preview of one journey on one date."""

    journey: str
    as_of: date
    enabled: bool
    rule_hash: str
    audience_count: int
    candidates: int
    acting_count: int
    limit: int
    skipped: dict[str, int] = field(default_factory=dict)
    customers: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    """Over everyone acted on: messages by template, credits (count, sum), tasks by kind."""
    samples: dict[str, dict[str, str]] = field(default_factory=dict)
    """template -> locale -> one rendered text: every language the audience reads."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "as_of": self.as_of.isoformat(),
            "enabled": self.enabled,
            "rule_hash": self.rule_hash,
            "audience_count": self.audience_count,
            "candidates": self.candidates,
            "acting_count": self.acting_count,
            "skipped": self.skipped,
            "limit": self.limit,
            "customers": self.customers,
            "totals": self.totals,
            "samples": self.samples,
        }

    @property
    def headline(self) -> str:
        return (
            f"would act on {self.acting_count} customer(s) on {self.as_of}"
            f" ({self.audience_count} in the audience)"
        )


def run_preview(
    engine: Engine,
    ruleset: RuleSet,
    journey_id: str,
    as_of: date,
    limit: int = 20,
    operator_tz: str = "Asia/Shanghai",
) -> PreviewResult:
    """Preview in a transaction that is rolled back whatever happens."""
    journey = journey_for(ruleset, journey_id)
    rule = ruleset.journey(journey_id)
    tz = ZoneInfo(operator_tz)
    ctx = RunContext(
        as_of=as_of,
        at=care_day_instant(as_of, tz),
        run_id="preview",
        ruleset=ruleset,
        operator_tz=tz,
        batch_size=2000,
    )
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            audience = compile_condition(rule.audience, as_of, balance_at=ctx.balance_at)
            count = session.scalar(
                scoped(select(func.count()).select_from(Customer).where(audience), ctx)
            )
            report = JourneyReport(journey.id)
            journey.housekeeping(session, ctx, rule, report)  # as a run would, rolled back
            shown: list[dict[str, Any]] = []
            totals = _Totals()
            samples: dict[str, dict[str, str]] = {}
            acting = 0
            precall = notice_rule(ctx)  # once: it is the same for every decision
            for batch in decisions(session, ctx, journey, rule, report):
                acting += len(batch)
                for d in batch:
                    totals.add(d)
                    texts = _texts(ctx, precall, d, samples, needed=len(shown) < limit)
                    if len(shown) < limit:
                        shown.append(_row(precall, d, texts))
            return PreviewResult(
                journey=journey.id,
                as_of=as_of,
                enabled=rule.enabled,
                rule_hash=rule.content_hash,
                audience_count=int(count or 0),
                candidates=report.candidates,
                acting_count=acting,
                limit=limit,
                skipped={
                    k.removeprefix("skipped_"): v
                    for k, v in report.counts.items()
                    if k.startswith("skipped_")
                },
                customers=shown,
                totals=totals.as_dict(),
                samples=samples,
            )
        finally:
            session.close()
            outer.rollback()


@dataclass
class _Totals:
    messages: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)
    credits: int = 0
    credit_total: Decimal = Decimal("0.00")
    suspensions: int = 0

    def add(self, d: Decision) -> None:
        self.messages.update(m.template for m in d.messages)
        self.tasks.update(t.kind for t in d.tasks)
        self.credits += len(d.credits)
        self.credit_total += sum((c.amount for c in d.credits), Decimal("0.00"))
        self.suspensions += d.suspend is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(sorted(self.messages.items())),
            "tasks": dict(sorted(self.tasks.items())),
            "credits": {"count": self.credits, "total": str(self.credit_total)},
            "suspensions": self.suspensions,
        }


def _texts(
    ctx: RunContext,
    precall: PrecallNoticeRule | None,
    d: Decision,
    samples: dict[str, dict[str, str]],
    needed: bool,
) -> dict[str, str] | None:
    """The decision's rendered texts (when ``needed`` or a sample is missing), and the
    first text of each template in each language into ``samples``."""
    c = d.customer
    notice = None
    if precall is not None and d.tasks and not (c.do_not_call or c.sms_opt_out):
        notice = next(a for a in precall.action_list if isinstance(a, SendSms | SendVoice))
    templates = [m.template for m in d.messages] + ([notice.template] if notice else [])
    if not needed and all(c.locale in samples.get(t, {}) for t in templates):
        return None
    texts = {m.template: render(m.rule, m.template, c.locale, m.variables) for m in d.messages}
    if precall is not None and notice is not None:
        variables = {**common_variables(ctx, c), "task_kind": d.tasks[0].kind}
        texts[notice.template] = render(precall, notice.template, c.locale, variables)
    for template, text in texts.items():
        samples.setdefault(template, {}).setdefault(c.locale, text)
    return texts


def _row(
    precall: PrecallNoticeRule | None, d: Decision, texts: dict[str, str] | None
) -> dict[str, Any]:
    c = d.customer
    actions = d.describe()
    for index, _task in enumerate(d.tasks):
        at = next(i for i, a in enumerate(actions) if a.startswith("call task")) + index
        if c.do_not_call:
            actions[at] += " (skipped: do-not-call)"
        elif c.sms_opt_out or precall is None:
            actions[at] += " (no pre-call SMS)"
    return {
        "customer_id": c.external_id,
        "name": c.name,
        "tier": c.tier,
        "locale": c.locale,
        "occurrence": d.occurrence,
        "actions": actions,
        "texts": texts or {},
        "details": d.summary()["details"],
    }
