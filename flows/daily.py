"""The daily care run as a Prefect flow: a thin flow that only orders small typed tasks.

One task per (journey, shard), never one per customer. Journey tasks do their
own batching and are not retried (a rerun is already a no-op thanks to the
occurrence keys). The run only *decides*: what it queues is sent by the
dispatcher (``vipcare dispatch``, or the scheduler every few minutes), so every
time zone's send window is served the same day.

Shards split customers by their manager (``manager_id % count``): shards running
side by side never plan calls into the same manager's day, and each manager's
customers are still planned in the same order, so a sharded run ends exactly as
a single run does.
On PostgreSQL the shards of a journey run at the same time (threads here,
workers in the Prefect deployment); on SQLite, which has one writer, one after
another.

Each journey task records its run in ``job_runs`` (``crm.runs``) for ``vipcare
status``. This module is the worker's edge, so it reads the wall clock for
those records; the journeys themselves only ever see the injected ``at``.

The CRM is never a flow parameter: Prefect stores parameters where anyone who
can read its API sees them, and a database URL holds a password. The caller
hands the engine over from its own settings (:func:`care_database`).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from crm import runs
from crm.db import is_sqlite
from flows.journeys.context import LATE_AFTER, RunContext, care_day_instant
from flows.journeys.day import HYGIENE, check_day, run_hygiene
from flows.journeys.engine import run_journey
from flows.journeys.intents import JourneyReport
from flows.journeys.registry import journey_for, journeys_for
from rules import RuleSet
from rules.live import LiveRules, load_live_rules


class DailyCareParams(BaseModel):
    """The flow parameter: everything a care day depends on, time included (no secret)."""

    as_of: date
    at: datetime | None = Field(
        default=None, description="the instant to act as of; 09:00 operator time by default"
    )
    now: datetime | None = Field(
        default=None,
        description="the real clock when the run was started (a late day does only what can "
        "still honestly happen then); None: the day runs at its own instant",
    )
    rules_dir: str
    operator_tz: str = "Asia/Shanghai"
    journeys: list[str] = Field(
        default_factory=list, description="empty means every enabled journey"
    )
    dry_run: bool = False
    shards: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=5000, ge=100)
    run_id: str | None = Field(
        default=None, description="names this run in the audit trail; a fresh id by default"
    )


class CareFlowError(RuntimeError):
    """The care flow was started without the CRM it works on."""


_database: ContextVar[Engine | None] = ContextVar("vipcare_care_database", default=None)


@contextmanager
def care_database(engine: Engine) -> Iterator[Engine]:
    """The CRM that :func:`daily_care` started in this block works on.

    Prefect's task threads copy the context, so every task of the run sees it.
    """
    token = _database.set(engine)
    try:
        yield engine
    finally:
        _database.reset(token)


def _current_database() -> Engine:
    engine = _database.get()
    if engine is None:
        raise CareFlowError(
            "daily_care needs its CRM: run it inside `with care_database(engine):` "
            "(the database URL is never a flow parameter)"
        )
    return engine


def live_rules(engine: Engine, params: DailyCareParams) -> LiveRules:
    """The live rule set (:func:`rules.live.load_live_rules`): the one way a care day gets rules.

    A file whose edit does not load runs on its last good version, so one broken
    marketing file never stops the service journeys. Parsed once per process while
    the files and the stored versions stay the same (every task of a care day asks);
    a dry run records nothing.
    """
    return load_live_rules(
        engine,
        Path(params.rules_dir),
        _wall_now(),
        record=not params.dry_run,
    )


def rules_of(engine: Engine, params: DailyCareParams) -> RuleSet:
    """The rule set to run; raises :class:`rules.live.NoLiveRules` when none can."""
    return live_rules(engine, params).require()


def shard_count(ruleset: RuleSet, journey: str, shards: int) -> int:
    """How many shards ``journey`` runs in when the run asks for ``shards`` (all of them)."""
    return shards if journey in ruleset.journeys else 1


def journeys_to_run(engine: Engine, params: DailyCareParams) -> list[str]:
    """The enabled journeys the run covers, in run order; unknown names are refused."""
    live = live_rules(engine, params)
    ruleset = live.require()
    order = [j.id for j in journeys_for(ruleset)]
    for name in params.journeys:
        refusal = live.refusal_of(name)
        if name in live.stopped_journeys and refusal is not None:
            raise ValueError(f"journey {name} cannot run: {refusal.describe()}")
    unknown = sorted(set(params.journeys) - set(order))
    if unknown:
        raise ValueError(f"unknown journey(s): {', '.join(unknown)}; expected {', '.join(order)}")
    return [
        j
        for j in order
        if (not params.journeys or j in params.journeys) and ruleset.journeys[j].enabled
    ]


def _wall_now() -> datetime:
    return datetime.now(UTC)


def _owner() -> str:
    import os

    return f"{socket.gethostname()[:120]}/{os.getpid()}"


def _context(
    engine: Engine, params: DailyCareParams, run_id: str, shard: int, count: int
) -> RunContext:
    tz = ZoneInfo(params.operator_tz)
    return RunContext(
        as_of=params.as_of,
        at=params.at or care_day_instant(params.as_of, tz),
        run_id=run_id,
        ruleset=rules_of(engine, params),
        operator_tz=tz,
        batch_size=params.batch_size,
        shard=(shard, count),
        now=params.now,
    )


def run_part(
    engine: Engine, params: DailyCareParams, run_id: str, journey: str, shard: int
) -> dict[str, Any]:
    """One journey over one shard of customers, its run recorded (not for a dry run)."""
    ruleset = rules_of(engine, params)
    count = shard_count(ruleset, journey, params.shards)
    ctx = _context(engine, params, run_id, shard, count)
    found = journey_for(ctx.ruleset, journey)
    if params.dry_run:
        return run_journey(engine, ctx, found, dry_run=True).as_dict()
    with runs.recorded(
        engine,
        "journey",
        journey,
        _wall_now,
        care_day=params.as_of,
        shard=(shard, count) if count > 1 else None,
        owner=_owner(),
    ) as record:
        report = run_journey(engine, ctx, found).as_dict()
        record.details.update(report, run_id=run_id, late=ctx.late)
    return report


@task(name="hygiene", cache_policy=NO_CACHE)
def hygiene_task(params: DailyCareParams, run_id: str) -> dict[str, Any]:
    """Withdraw care that must no longer happen (do-not-call, suspended, closed) first."""
    return hygiene_part(_current_database(), params, run_id)


def hygiene_part(engine: Engine, params: DailyCareParams, run_id: str) -> dict[str, Any]:
    """The hygiene sweep of a care day, its run recorded (not for a dry run)."""
    ctx = _context(engine, params, run_id, 0, 1)
    if params.dry_run:
        return run_hygiene(engine, ctx, dry_run=True).as_dict()
    with runs.recorded(
        engine, "journey", HYGIENE, _wall_now, care_day=params.as_of, owner=_owner()
    ) as record:
        report = run_hygiene(engine, ctx).as_dict()
        record.details.update(report, run_id=run_id)
    return report


def record_not_running(engine: Engine, params: DailyCareParams, run_id: str) -> list[str]:
    """Record a failed run, with every located problem, for each journey that cannot run.

    A journey whose file is refused and has no good version to fall back on did not
    run this care day: ``vipcare status`` shows it as failed with the file:line of
    each problem (the other journeys ran). Returns the journeys recorded.
    """
    live = live_rules(engine, params)
    wanted = live.stopped_journeys
    if params.journeys:
        wanted = [j for j in wanted if j in params.journeys]
    if params.dry_run:
        return wanted
    for name in wanted:
        refusal = live.refusal_of(name)
        runs.record(
            engine,
            "journey",
            name,
            _wall_now(),
            runs.FAILED,
            care_day=params.as_of,
            details={"run_id": run_id, "not_run": "rule file refused"},
            error=refusal.describe() if refusal is not None else "its rule file does not load",
            owner=_owner(),
        )
    return wanted


def rules_summary(engine: Engine, params: DailyCareParams) -> dict[str, Any]:
    """What the care day ran on, for its result: refused files, stale and stopped journeys."""
    live = live_rules(engine, params)
    return {
        "refused": [r.file for r in live.refused],
        "stale_journeys": live.stale_journeys,
        "stopped_journeys": live.stopped_journeys,
    }


@task(name="invariants", cache_policy=NO_CACHE)
def invariants_task(params: DailyCareParams, run_id: str) -> dict[str, Any]:
    """The money and state invariants of what the day touched (``vipcare status`` shows them)."""
    return invariants_part(_current_database(), params, run_id)


def invariants_part(engine: Engine, params: DailyCareParams, run_id: str) -> dict[str, Any]:
    result = check_day(engine, _context(engine, params, run_id, 0, 1), _owner())
    return {
        "customers": result.customers,
        "violations": len(result.violations),
        "first": str(result.violations[0]) if result.violations else None,
    }


@task(name="journey", cache_policy=NO_CACHE, task_run_name="{journey}[{shard}]")
def journey_task(params: DailyCareParams, run_id: str, journey: str, shard: int) -> dict[str, Any]:
    report = run_part(_current_database(), params, run_id, journey, shard)
    get_run_logger().info("journey %s shard %s: %s", journey, shard, report)
    return report


def flow_run_id() -> str | None:
    """The id of the Prefect flow run we are in, if any."""
    flow_run = getattr(get_run_context(), "flow_run", None)
    found = getattr(flow_run, "id", None)
    return str(found) if found else None


def summary_markdown(params: DailyCareParams, journeys: list[dict[str, Any]]) -> str:
    keys = sorted({k for j in journeys for k in j if k != "journey"})
    lines = [
        f"# vipcare daily care run, {params.as_of.isoformat()}"
        + (" (dry run)" if params.dry_run else ""),
        "",
        "| journey | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for j in journeys:
        lines.append(f"| {j['journey']} | " + " | ".join(str(j.get(k, 0)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


@flow(name="daily-care", log_prints=False)
def daily_care(params: DailyCareParams) -> dict[str, Any]:
    """Run the enabled journeys for ``params.as_of``; they queue, the dispatcher sends.

    Runs inside :func:`care_database`, which names the CRM.
    """
    run_id = params.run_id or flow_run_id() or str(uuid.uuid4())
    engine = _current_database()
    parallel = not is_sqlite(engine)
    ruleset = rules_of(engine, params)
    reports = [hygiene_task(params, run_id)]
    record_not_running(engine, params, run_id)
    for journey in journeys_to_run(engine, params):
        shards = range(shard_count(ruleset, journey, params.shards))
        if parallel and len(shards) > 1:  # PostgreSQL: the shards of a journey side by side
            futures = [journey_task.submit(params, run_id, journey, s) for s in shards]
            parts = [f.result() for f in futures]
        else:  # SQLite has one writer: one shard after another
            parts = [journey_task(params, run_id, journey, s) for s in shards]
        reports.append(JourneyReport.merged(journey, parts))
    checked = None if params.dry_run else invariants_task(params, run_id)
    artifact_id = create_markdown_artifact(
        key="daily-care-summary",
        markdown=summary_markdown(params, reports),
        description=f"vipcare care day {params.as_of.isoformat()}",
    )
    return {
        "run_id": run_id,
        "as_of": params.as_of.isoformat(),
        "journeys": reports,
        "rules": rules_summary(engine, params),
        "invariants": checked,
        "late": params.now is not None
        and params.now - (params.at or care_day_instant(params.as_of, ZoneInfo(params.operator_tz)))
        > LATE_AFTER,
        "artifact_id": str(artifact_id),
    }
