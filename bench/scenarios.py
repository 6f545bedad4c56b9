"""The scenarios, one function each: plain JSON-able arguments in, a JSON-able dict out.

Each runs in its own child process (:mod:`bench.worker`) so that its peak RSS is
its own. Wall time is measured here around the work only (imports, seeding of
fixtures and bookkeeping counts are outside the timed part).
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

RULES = Path(__file__).resolve().parent.parent / "rules"
OPERATOR_TZ = "Asia/Shanghai"
WRITTEN_TABLES = (
    "journey_occurrences",
    "credit_ledger",
    "grace_periods",
    "outbound_messages",
    "call_tasks",
    "audit_log",
    "journey_passes",
)
"""The tables a care day inserts into (the floor inserts as many rows into each)."""


def seed(url: str, customers: int, seed: int, as_of: str) -> dict[str, Any]:
    """Migrate an empty database and seed ``customers`` customers reproducibly."""
    from crm.db import make_engine
    from crm.schema import upgrade
    from seed import generate

    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    summary = generate(engine, customers, seed, date.fromisoformat(as_of))
    took = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    rows = summary.customers + summary.usage_rows + summary.club_rows
    return {"seconds": took, "customers": summary.customers, "rows": rows}


def pk_marks(url: str) -> dict[str, int]:
    """The highest primary key of each written table (0 when empty)."""
    from sqlalchemy import func, select

    from crm.db import make_engine
    from crm.models import Base

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            marks = {}
            for name in WRITTEN_TABLES:
                table = Base.metadata.tables[name]
                (pk,) = table.primary_key.columns
                marks[name] = int(conn.execute(select(func.max(pk))).scalar() or 0)
            return marks
    finally:
        engine.dispose()


def care_day(url: str, day: str, run_id: str, batch_size: int) -> dict[str, Any]:
    """One care day without Prefect: hygiene, then every journey (as ``run_day`` does)."""
    from zoneinfo import ZoneInfo

    from crm.db import make_engine
    from flows.journeys.context import RunContext, care_day_instant
    from flows.journeys.day import run_hygiene
    from flows.journeys.engine import run_journey
    from flows.journeys.registry import journeys_for
    from rules import load_rules

    before = pk_marks(url)
    engine = make_engine(url)
    tz = ZoneInfo(OPERATOR_TZ)
    as_of = date.fromisoformat(day)
    started = time.perf_counter()
    ruleset = load_rules(RULES)
    ctx = RunContext(as_of, care_day_instant(as_of, tz), run_id, ruleset, tz, batch_size)
    journeys: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    hygiene = run_hygiene(engine, ctx)
    journeys["hygiene"] = {
        "seconds": time.perf_counter() - t,
        "decided": hygiene.decided,
        "candidates": 0,
    }
    for journey in journeys_for(ruleset):
        t = time.perf_counter()
        report = run_journey(engine, ctx, journey)
        journeys[journey.id] = {
            "seconds": time.perf_counter() - t,
            "decided": report.decided,
            "candidates": report.candidates,
        }
    took = time.perf_counter() - started
    engine.dispose()
    after = pk_marks(url)
    written = {name: after[name] - before[name] for name in WRITTEN_TABLES}
    return {
        "seconds": took,
        "decided": sum(j["decided"] for j in journeys.values()),
        "journeys": journeys,
        "rows_written": written,
        "marks": {name: [before[name], after[name]] for name in WRITTEN_TABLES},
    }


def warm_care_day(url: str, day: str, workdir: str, batch_size: int) -> dict[str, Any]:
    """A care day through the real Prefect flow in a process whose server is already up."""
    os.environ["PREFECT_HOME"] = str(Path(workdir) / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    from vipcare.operations import quiet_prefect, run_care_day
    from vipcare.prefect_server import prefect_api
    from vipcare.settings import Settings

    quiet_prefect()
    import flows.daily  # noqa: F401 - the import is part of what a warm process has paid

    imported = time.perf_counter() - started
    settings = Settings(_env_file=None, database_url=url, rules_dir=RULES, batch_size=batch_size)
    t = time.perf_counter()
    with prefect_api():
        server = time.perf_counter() - t
        # A warm process has run a flow before: one dry run of a cheap journey, not counted.
        t = time.perf_counter()
        run_care_day(settings, date.fromisoformat(day), journeys=["birthday"], dry_run=True)
        warmup = time.perf_counter() - t
        t = time.perf_counter()
        result = run_care_day(settings, date.fromisoformat(day))
        took = time.perf_counter() - t
    decided = sum(int(j.get("decided", 0)) for j in result["journeys"])
    return {
        "seconds": took,
        "decided": decided,
        "import_seconds": imported,
        "server_start_seconds": server,
        "warmup_seconds": warmup,
    }


def previews(url: str, as_of: str) -> dict[str, Any]:
    """``rules preview`` of every journey on ``as_of`` (rolled back, nothing written)."""
    from crm.db import make_engine
    from flows.journeys.preview import run_preview
    from flows.journeys.registry import journeys_for
    from rules import load_rules

    engine = make_engine(url)
    ruleset = load_rules(RULES)
    journeys = {}
    for journey in journeys_for(ruleset):
        t = time.perf_counter()
        result = run_preview(engine, ruleset, journey.id, date.fromisoformat(as_of))
        journeys[journey.id] = {
            "seconds": time.perf_counter() - t,
            "acting": result.acting_count,
            "audience": result.audience_count,
        }
    engine.dispose()
    return {
        "seconds": sum(j["seconds"] for j in journeys.values()),
        "max_seconds": max((j["seconds"] for j in journeys.values()), default=0.0),
        "journeys": journeys,
    }


def my_day(
    url: str, as_of: str, open_tasks: int, done_tasks: int, audit_rows: int, requests: int
) -> dict[str, Any]:
    """The workspace's My day page over ``open_tasks`` open call tasks: p50/p95 in ms."""
    from bench.bench_workspace import measure_pages, seed_audit, seed_tasks
    from crm.db import make_engine

    engine = make_engine(url)
    day = date.fromisoformat(as_of)
    seed_tasks(engine, day, open_tasks, done_tasks)
    seed_audit(engine, day, audit_rows)
    with engine.begin() as conn:  # committed: PostgreSQL keeps the statistics
        conn.exec_driver_sql("ANALYZE")
    pages = measure_pages(engine, url, day, requests=requests, managers=20, only=("day",))
    engine.dispose()
    page = pages["day"]
    return {**page, "open_tasks": open_tasks, "requests": requests}


def dispatch(url: str, messages: int, rate: float | None, workdir: str) -> dict[str, Any]:
    """N queued messages through the real Twilio adapter to the local fake Twilio."""
    try:
        from bench.dispatch_bench import measure_dispatch
    except ImportError as exc:
        return {"available": False, "reason": f"bench.dispatch_bench not available ({exc})"}
    result: dict[str, Any] = measure_dispatch(url, messages, rate, Path(workdir))
    return {"available": True, **result}


def next_day(day: str, days: int = 1) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()
