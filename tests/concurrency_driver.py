"""The processes of the concurrency harness: a daily run, and a dispatcher that runs every round.

Both are started by a forkserver child (``tests/crash_zygote.py`` warmed it), and
wait on one barrier so that they really start together. Dispatchers also meet
at every round, so three claim the same due rows at the same instant; from the
third round on they wait until the daily runs are done, so that what the runs
queued late is still sent that day.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from crm.db import make_engine
from flows.journeys.context import RunContext
from flows.journeys.day import run_day
from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.dispatcher import dispatch
from tests.crash_driver import DayPlan, _FakeClock, settings, warm

JOIN_AFTER_ROUND = 2
"""Dispatchers wait for the daily runs before this round."""


def daily_run(plan: DayPlan, start: Any, run_id: str) -> None:
    """One ``vipcare run`` of the day (its journeys, without Prefect)."""
    rules = warm()
    engine = make_engine(plan.url)
    ctx = RunContext(
        as_of=plan.day,
        at=plan.at,
        run_id=run_id,
        ruleset=rules,
        operator_tz=ZoneInfo("Asia/Shanghai"),
        batch_size=plan.batch_size,
    )
    start.wait()
    run_day(engine, ctx)
    engine.dispose()


def dispatcher(plan: DayPlan, start: Any, each_round: Any, runs_done: Any, index: int) -> None:
    """Every round of the day, in step with the other dispatchers."""
    rules = warm()
    engine = make_engine(plan.url)
    backend = MockSMSBackend(store=MockStore(plan.store))
    start.wait()
    for n, at in enumerate(plan.rounds):
        if n == JOIN_AFTER_ROUND:
            runs_done.wait()
        each_round.wait()
        clock = _FakeClock()
        dispatch(
            engine,
            settings().with_changes(dispatch_concurrency=2),
            rules.contact_policy,
            at,
            lead_time=rules.precall_lead_time,
            backends={"sms": backend},
            sleep=clock.sleep,
            clock=clock,
            rng=random.Random(index * 1000 + n),
            chunk_size=plan.chunk_size,
            wall_clock=lambda: datetime.now(UTC),
        )
    engine.dispose()
