"""The naive way, for comparison: one ORM load and one Prefect task per customer.

Each sampled customer is loaded through the ORM and run through every journey
on its own (the same decision code, restricted to that customer, as
``explain`` does), its writes committed per customer, inside one Prefect task
per customer. It runs on an evenly spaced sample of the customers, and the
time is extrapolated linearly to all of them: the report says so.
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.scenarios import OPERATOR_TZ, RULES


def _sample_ids(url: str, sample: int) -> tuple[list[int], int]:
    from sqlalchemy import select

    from crm.db import make_engine
    from crm.models import Customer

    engine = make_engine(url)
    with engine.connect() as conn:
        ids = list(conn.execute(select(Customer.id).order_by(Customer.id)).scalars())
    engine.dispose()
    step = max(1, len(ids) // max(1, sample))
    return ids[::step][:sample], len(ids)


def measure_naive(url: str, as_of: str, sample: int, workdir: str, prefect: bool) -> dict[str, Any]:
    """Time the naive way over ``sample`` customers and extrapolate to all of them."""
    os.environ["PREFECT_HOME"] = str(Path(workdir) / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    from crm.capacity import CapacityPlanner
    from crm.db import make_engine, session_factory
    from crm.models import Customer
    from flows.journeys.context import RunContext, care_day_instant
    from flows.journeys.day import run_hygiene
    from flows.journeys.engine import decisions
    from flows.journeys.intents import JourneyReport
    from flows.journeys.registry import journeys_for
    from flows.journeys.writer import apply_decisions
    from rules import load_rules

    ids, customers = _sample_ids(url, sample)
    engine = make_engine(url)
    tz = ZoneInfo(OPERATOR_TZ)
    day = date.fromisoformat(as_of)
    ruleset = load_rules(RULES)
    journeys = journeys_for(ruleset)
    base = RunContext(day, care_day_instant(day, tz), "bench-naive", ruleset, tz)
    decided = 0

    started = time.perf_counter()
    run_hygiene(engine, base)
    with session_factory(engine)() as session:
        for journey in journeys:
            journey.housekeeping(session, base, ruleset.journey(journey.id), JourneyReport("x"))
        session.commit()
    once = time.perf_counter() - started

    def one_customer(customer_id: int) -> int:
        made = 0
        with session_factory(engine)() as session:
            customer = session.get(Customer, customer_id)  # the ORM load per customer
            assert customer is not None
            for journey in journeys:
                rule = ruleset.journey(journey.id)
                if not rule.enabled:
                    continue
                ctx = RunContext(day, base.at, base.run_id, ruleset, tz, only_customer=customer.id)
                report = JourneyReport(journey.id)
                planner = CapacityPlanner(session, day)
                for batch in decisions(session, ctx, journey, rule, report):
                    apply_decisions(session, ctx, journey, rule, batch, report, planner)
                made += report.decided
            session.commit()
        return made

    server = 0.0
    if prefect:
        from prefect import flow, task
        from prefect.cache_policies import NO_CACHE

        from vipcare.operations import quiet_prefect
        from vipcare.prefect_server import prefect_api

        quiet_prefect()
        per_customer = task(name="naive-customer", cache_policy=NO_CACHE)(one_customer)

        @flow(name="naive-care-day")
        def naive_day(customer_ids: list[int]) -> int:
            return sum(per_customer(cid) for cid in customer_ids)

        t = time.perf_counter()
        with prefect_api():
            server = time.perf_counter() - t
            t = time.perf_counter()
            decided = naive_day(ids)
            looped = time.perf_counter() - t
    else:
        t = time.perf_counter()
        decided = sum(one_customer(cid) for cid in ids)
        looped = time.perf_counter() - t
    engine.dispose()
    per = looped / max(1, len(ids))
    return {
        "sample": len(ids),
        "customers": customers,
        "prefect": prefect,
        "sample_seconds": looped,
        "per_customer_ms": per * 1000,
        "once_seconds": once,
        "server_start_seconds": server,
        "decided_in_sample": decided,
        "seconds": once + per * customers,
        "extrapolated": True,
    }
