"""The flows Prefect workers run (created as deployments by ``vipcare deploy``).

Configuration is built here, at the worker's edge, from the worker's own
environment: ``VIPCARE_*`` and ``TWILIO_*`` variables and a ``.env`` file, as
the CLI reads them (:class:`Settings`). Prefect runs each flow in a throwaway
folder, so the ``.env`` is the one named by ``VIPCARE_ENV_FILE``, else the one
in the folder the worker was started from (``$PWD``, passed down by the shell
that started it). Flow parameters carry only what varies per run and is not
secret (the care day, a shard); the database URL and the Twilio credentials
never pass through the Prefect API or its database. ``flows/`` stays free of
``vipcare``: these flows wrap its building blocks.

- ``vipcare-care-day``: the care day. The hygiene sweep runs here, then the
  journeys fan out to ``shards`` runs of ``vipcare-care-shard`` that workers pick
  up in parallel; customers are split by manager, so no two shards plan into the
  same manager's day and the day ends exactly as a single run does.
- ``vipcare-dispatch``: the dispatcher; with ``lanes`` > 1 it fans out to that
  many ``vipcare-dispatch-lane`` runs, together held to the send rate by the
  strict Prefect global concurrency limits (:mod:`vipcare.send_limits`).
- ``vipcare-escalation``: the daily escalation sweep.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from crm import runs
from crm.audit import Actor
from crm.db import make_engine, transaction
from crm.models import JobRun
from flows.daily import (
    DailyCareParams,
    flow_run_id,
    hygiene_part,
    invariants_part,
    journeys_to_run,
    record_not_running,
    rules_of,
    rules_summary,
    run_part,
    shard_count,
)
from flows.journeys.intents import JourneyReport
from rules import RuleSet
from vipcare import operations
from vipcare.scheduler import days
from vipcare.scheduler.schedule import CARE_DAY, ESCALATION, Schedule
from vipcare.settings import Settings, SettingsError, env_file

CARE_DAY_FLOW = "vipcare-care-day"
CARE_SHARD_FLOW = "vipcare-care-shard"
DISPATCH_FLOW = "vipcare-dispatch"
DISPATCH_LANE_FLOW = "vipcare-dispatch-lane"
ESCALATION_FLOW = "vipcare-escalation"
WORKER = Actor("system", "prefect-worker")
POLL_SECONDS = 1.0


def worker_settings() -> Settings:
    """The worker's configuration, from its environment (never from flow parameters).

    Refuses a SQLite file named relative to the working directory (the default):
    here that is Prefect's temporary folder, so it would be a new, empty database.
    """
    start = os.environ.get("PWD")
    source = env_file(Path(start) if start else None)
    cfg = Settings(_env_file=source)
    url = make_url(cfg.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_absolute():
        raise SettingsError(
            f"this worker has no CRM database: VIPCARE_DATABASE_URL is {cfg.database_url!r}, "
            f"relative to Prefect's temporary folder {Path.cwd()}; set it in the worker's "
            "environment, in a .env in the folder the worker is started from, or in the file "
            f"VIPCARE_ENV_FILE names (read: {source or 'no .env file'})"
        )
    return cfg


@lru_cache(maxsize=2)
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def _engine(cfg: Settings) -> Engine:
    """One engine per worker process (a flow run's tasks share its pool)."""
    return _engine_for(cfg.database_url)


def _now() -> datetime:
    """The worker is an edge: it reads the wall clock here, and only here."""
    return datetime.now(UTC)


def _owner() -> str:
    return f"{socket.gethostname()[:120]}/{os.getpid()}"


def _scheduled_at() -> datetime:
    """When this flow run was meant to start (its schedule's fire time), as aware UTC."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    if when is None:
        return _now()
    return datetime.fromtimestamp(when.timestamp(), UTC)


def _care_instant(cfg: Settings, as_of: date | None) -> tuple[date, datetime]:
    """The care day and the instant it acts as of: a scheduled run's own fire time."""
    at = _scheduled_at()
    if as_of is None:
        return at.astimezone(cfg.tz).date(), at
    return as_of, min(at, Schedule.from_settings(cfg).fire_instant(CARE_DAY, as_of))


def _params(
    cfg: Settings,
    as_of: date,
    at: datetime,
    shards: int,
    journeys: list[str],
    run_id: str,
    now: datetime | None = None,
) -> DailyCareParams:
    return DailyCareParams(
        as_of=as_of,
        at=at,
        now=now,
        rules_dir=str(cfg.rules_dir),
        operator_tz=cfg.timezone,
        journeys=journeys,
        shards=shards,
        batch_size=cfg.batch_size,
        run_id=run_id,
    )


@task(name="journey", cache_policy=NO_CACHE, task_run_name="{journey}[{shard}/{shards}]")
def journey_part(
    as_of: date,
    at: datetime,
    journey: str,
    shard: int,
    shards: int,
    run_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One journey over one shard; its parameters hold no secret (settings are read here)."""
    cfg = worker_settings()
    params = _params(cfg, as_of, at, shards, [journey], run_id, now)
    return run_part(_engine(cfg), params, run_id, journey, shard)


def _groups(ruleset: RuleSet, plan: list[str], shards: int) -> list[tuple[bool, list[str]]]:
    """Consecutive journeys that shard (True) or not, in run order."""
    out: list[tuple[bool, list[str]]] = []
    for journey in plan:
        sharded = shard_count(ruleset, journey, shards) > 1
        if out and out[-1][0] == sharded:
            out[-1][1].append(journey)
        else:
            out.append((sharded, [journey]))
    return out


async def _fan_out(deployment: str, parameters: list[dict[str, Any]]) -> list[Any]:
    from prefect.deployments.flow_runs import arun_deployment

    return list(
        await asyncio.gather(
            *(
                arun_deployment(deployment, parameters=p, timeout=None, poll_interval=POLL_SECONDS)
                for p in parameters
            )
        )
    )


def fan_out(deployment: str, parameters: list[dict[str, Any]]) -> None:
    """Start one run of ``deployment`` per parameter set, wait for all; raise if any failed."""
    finished = asyncio.run(_fan_out(deployment, parameters))
    failed = [r for r in finished if r.state is None or not r.state.is_completed()]
    if failed:
        names = ", ".join(f"{r.name} ({r.state.name if r.state else 'no state'})" for r in failed)
        raise RuntimeError(f"{len(failed)} of {len(finished)} runs of {deployment} failed: {names}")


def _reports(engine: Engine, run_id: str, journeys: list[str]) -> list[dict[str, Any]]:
    """The shards' reports, as they recorded them (results are not passed through Prefect)."""
    with transaction(engine) as session:
        rows = session.execute(
            select(JobRun.name, JobRun.details).where(
                JobRun.kind == "journey", JobRun.name.in_(journeys)
            )
        ).all()
    parts: dict[str, list[dict[str, Any]]] = {j: [] for j in journeys}
    for name, details in rows:
        if (details or {}).get("run_id") == run_id:
            parts[name].append({k: v for k, v in details.items() if k != "run_id"})
    return [JourneyReport.merged(j, parts[j]) for j in journeys]


@flow(name=CARE_DAY_FLOW, log_prints=False)
def care_day(
    as_of: date | None = None,
    shards: int | None = None,
    journeys: list[str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The care day on workers: hygiene here, then the journeys in parallel shards.

    ``now`` is the real clock the day is judged against (a day run late does only what
    can still honestly happen then); the worker's own clock when not given.
    """
    cfg = worker_settings()
    day, at = _care_instant(cfg, as_of)
    count = shards or cfg.care_shards
    run_id = flow_run_id() or f"care-{day}"
    engine = _engine(cfg)
    now = now or _now()  # the real clock: a day run late does only what can still happen now
    params = _params(cfg, day, at, count, journeys or [], run_id, now)
    reports: list[dict[str, Any]] = []
    with runs.recorded(engine, "care_day", CARE_DAY, _now, care_day=day, owner=_owner()) as rec:
        # the live set: a refused file runs on its last good version
        ruleset = rules_of(engine, params)
        reports.append(hygiene_part(engine, params, run_id))
        record_not_running(engine, params, run_id)
        for sharded, group in _groups(ruleset, journeys_to_run(engine, params), count):
            if sharded:
                base = {
                    "as_of": day.isoformat(),
                    "at": at.isoformat(),
                    "shards": count,
                    "now": now.isoformat(),
                }
                fan_out(
                    f"{CARE_SHARD_FLOW}/care-shard",
                    [
                        {**base, "shard": s, "journeys": group, "run_id": run_id}
                        for s in range(count)
                    ],
                )
                reports += _reports(engine, run_id, group)
            else:
                for journey in group:
                    reports.append(
                        JourneyReport.merged(
                            journey, [journey_part(day, at, journey, 0, 1, run_id, now)]
                        )
                    )
        checked = invariants_part(engine, params, run_id)
        rec.details.update(run_id=run_id, journeys=reports, shards=count, invariants=checked)
        summary = rules_summary(engine, params)
        if summary["refused"]:
            rec.details["rules"] = summary
    days.mark_completed(engine, CARE_DAY, day, _now())
    get_run_logger().info("care day %s: %s", day, reports)
    return {"run_id": run_id, "as_of": day.isoformat(), "journeys": reports}


@flow(name=CARE_SHARD_FLOW, log_prints=False)
def care_shard(
    as_of: date,
    at: datetime,
    shard: int,
    shards: int,
    journeys: list[str],
    run_id: str,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One shard of the journeys, in run order (picked up by any worker)."""
    return [journey_part(as_of, at, journey, shard, shards, run_id, now) for journey in journeys]


def _dispatch_here(cfg: Settings) -> dict[str, Any]:
    from vipcare.send_limits import SharedSendLimits, check_limits

    engine = _engine(cfg)
    with runs.recorded(engine, "dispatch", "dispatch", _now, owner=_owner()) as rec:
        check_limits()  # strict: no shared limit, no sending
        summary = operations.dispatch_due(
            cfg,
            _now(),
            engine=engine,
            wall_clock=_now,
            limits=SharedSendLimits(cfg.send_rate_per_second),
            actor=WORKER,
        )
        rec.details.update(summary.as_dict())
        if summary.halted:
            rec.fail(f"dispatch stopped early: {summary.halted}")
    return summary.as_dict()


@flow(name=DISPATCH_FLOW, log_prints=False)
def dispatch(lanes: int | None = None) -> dict[str, Any]:
    """Send what is due; with ``lanes`` > 1, that many dispatchers on the workers at once."""
    cfg = worker_settings()
    count = lanes or cfg.dispatch_lanes
    if count <= 1:
        return _dispatch_here(cfg)
    fan_out(f"{DISPATCH_LANE_FLOW}/dispatch-lane", [{} for _ in range(count)])
    return {"lanes": count}


@flow(name=DISPATCH_LANE_FLOW, log_prints=False)
def dispatch_lane() -> dict[str, Any]:
    """One of several dispatchers running side by side (``SKIP LOCKED`` keeps them apart)."""
    return _dispatch_here(worker_settings())


@flow(name=ESCALATION_FLOW, log_prints=False)
def escalation(as_of: date | None = None) -> dict[str, Any]:
    """The daily escalation sweep of overdue call tasks."""
    cfg = worker_settings()
    at = _scheduled_at()
    day = as_of or at.astimezone(cfg.tz).date()
    engine = _engine(cfg)
    with runs.recorded(engine, "escalation", ESCALATION, _now, care_day=day, owner=_owner()) as rec:
        result = operations.escalate_overdue(cfg, day, _now(), engine=engine, actor=WORKER)
        rec.details.update(result.as_dict())
    days.mark_completed(engine, ESCALATION, day, _now())
    return result.as_dict()
