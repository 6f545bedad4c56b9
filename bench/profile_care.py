"""Profile the care run's journeys (first day, rerun, next day) on a cached seeded database.

Not a test. Seeds ``--customers`` once into ``--cache`` (SQLite, reused while it
exists), copies it, then runs the three days of ``bench/run_bench.py`` with
per-journey timings and, with ``--profile``, a pyinstrument profile of each day::

    .venv/bin/python bench/profile_care.py --customers 100000 --profile first

PostgreSQL: ``--database-url postgresql+psycopg://postgres@127.0.0.1:5432/NAME``
(a fresh database is created; nothing is cached).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from crm.db import make_engine, session_factory  # noqa: E402
from crm.schema import upgrade  # noqa: E402
from flows.journeys.context import RunContext, care_day_instant  # noqa: E402
from flows.journeys.day import run_hygiene  # noqa: E402
from flows.journeys.engine import run_journey  # noqa: E402
from flows.journeys.registry import journeys_for  # noqa: E402
from rules import load_rules  # noqa: E402
from seed import generate  # noqa: E402


def fresh_postgres(url: str) -> None:
    base, name = url.rsplit("/", 1)
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def watch_sql(engine: Any, stats: dict[str, list[float]]) -> None:
    """Time every statement (execute to cursor close is not seen: SQLite steps lazily)."""

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        key = " ".join(statement.split())[:110]
        entry = stats.setdefault(key, [0.0, 0])
        entry[0] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())
        entry[1] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--cache", default="/tmp/vipcare-profile")
    parser.add_argument("--as-of", default="2026-11-23")
    parser.add_argument("--profile", nargs="*", default=[], help="first, rerun, next")
    parser.add_argument("--verify", action="store_true", help="verify the audit chain after")
    parser.add_argument("--sql", action="store_true", help="print the slowest statements")
    parser.add_argument("--days", type=int, default=3, help="1: the first day only, 2: and rerun")
    parser.add_argument(
        "--cprofile", action="store_true", help="profile CPU time with cProfile, not pyinstrument"
    )
    args = parser.parse_args()
    as_of = date.fromisoformat(args.as_of)
    if args.database_url:
        url = args.database_url
        fresh_postgres(url)
        engine = make_engine(url)
        upgrade(engine)
        t0 = time.perf_counter()
        generate(engine, args.customers, 7, as_of)
        print(f"seed: {time.perf_counter() - t0:.1f}s")
    else:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        seeded = cache / f"seed-{args.customers}.db"
        if not seeded.exists():
            engine = make_engine(f"sqlite:///{seeded}.tmp")
            upgrade(engine)
            generate(engine, args.customers, 7, as_of)
            engine.dispose()
            Path(f"{seeded}.tmp").rename(seeded)
        work = cache / f"work-{args.customers}.db"
        shutil.copy(seeded, work)
        url = f"sqlite:///{work}"
        engine = make_engine(url)
    stats: dict[str, list[float]] = {}
    if args.sql:
        watch_sql(engine, stats)
    tz = ZoneInfo("Asia/Shanghai")
    ruleset = load_rules(ROOT / "rules")
    days = [("first", as_of), ("rerun", as_of), ("next", as_of + timedelta(days=1))]
    for label, day in days[: args.days]:
        ctx = RunContext(day, care_day_instant(day, tz), f"bench-{label}", ruleset, tz)
        profiler: Any = None
        if label in args.profile and args.cprofile:
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        elif label in args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.002)
            profiler.start()
        total = time.perf_counter()
        cpu = time.process_time()
        stats.clear()
        t = time.perf_counter()
        run_hygiene(engine, ctx)
        print(f"  {label:6} {'hygiene':15} {time.perf_counter() - t:6.2f}s")
        decided = 0
        for journey in journeys_for(ruleset):
            t = time.perf_counter()
            report = run_journey(engine, ctx, journey)
            decided += report.decided
            took = time.perf_counter() - t
            print(f"  {label:6} {journey.id:15} {took:6.2f}s  decided={report.decided}")
        print(
            f"{label}: {time.perf_counter() - total:.2f}s wall, "
            f"{time.process_time() - cpu:.2f}s CPU, {decided} decisions"
        )
        for sql, (took, n) in sorted(stats.items(), key=lambda kv: -kv[1][0])[:8]:
            print(f"    {took:6.2f}s {int(n):6d}x  {sql}")
        if profiler is not None and args.cprofile:
            profiler.disable()
            out = Path(args.cache) / f"cprofile-{label}-{args.customers}.txt"
            with out.open("w") as fh:
                report_stats = pstats.Stats(profiler, stream=fh)
                report_stats.sort_stats("cumulative").print_stats(60)
                report_stats.sort_stats("tottime").print_stats(40)
            print(f"profile: {out}")
        elif profiler is not None:
            profiler.stop()
            out = Path(args.cache) / f"profile-{label}-{args.customers}.txt"
            out.write_text(profiler.output_text(unicode=False, show_all=False))
            print(f"profile: {out}")
    if args.verify:
        from crm import audit

        with session_factory(engine)() as session:
            print(audit.verify(session))


if __name__ == "__main__":
    main()
