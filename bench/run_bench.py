"""Benchmark: the daily care run's journeys over N seeded customers (not a test).

    python bench/run_bench.py --customers 100000 [--database-url URL] [--batch-size N]

Seeds a fresh database (SQLite file in a temp dir by default), then times every
journey of one care day (the first ever: it carries the seeded backlog and the
month's plan-fit pass), a rerun of the same day (which must add nothing) and the
next day (a normal day). Prefect is left out so the numbers are the journeys' own;
the flow adds a few seconds of server start-up and ~10 ms per task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from crm.db import make_engine
from crm.schema import upgrade
from flows.journeys.context import RunContext, care_day_instant
from flows.journeys.day import run_hygiene
from flows.journeys.engine import run_journey
from flows.journeys.registry import journeys_for
from rules import load_rules
from seed import generate

RULES = Path(__file__).resolve().parent.parent / "rules"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--as-of", default="2026-11-23")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='vipcare-bench-')}/bench.db"
    engine = make_engine(url)
    upgrade(engine)
    as_of = date.fromisoformat(args.as_of)
    t0 = time.perf_counter()
    generate(engine, args.customers, 7, as_of)
    print(f"seed {args.customers} customers: {time.perf_counter() - t0:.1f}s")
    tz = ZoneInfo("Asia/Shanghai")
    ruleset = load_rules(RULES)
    days = [("first run", as_of), ("rerun", as_of), ("next day", as_of + timedelta(days=1))]
    for label, day in days:
        ctx = RunContext(
            day,
            care_day_instant(day, tz),
            f"bench-{label}",
            ruleset,
            tz,
            batch_size=args.batch_size,
        )
        total = time.perf_counter()
        run_hygiene(engine, ctx)
        for journey in journeys_for(ruleset):
            t = time.perf_counter()
            report = run_journey(engine, ctx, journey)
            took = time.perf_counter() - t
            print(f"  {label:9} {journey.id:15} {took:6.1f}s  decided={report.decided}")
        print(f"{label}: {time.perf_counter() - total:.1f}s for {args.customers} customers")


if __name__ == "__main__":
    main()
