"""The daily care run as a Prefect flow: a thin flow that only orders small typed tasks.

One task per (journey, shard), never one per customer. Journey tasks do their
own batching and are not retried (a rerun is already a no-op thanks to the
occurrence keys). The run only *decides*: what it queues is sent by the
dispatcher (``vipcare dispatch``, or the scheduler every few minutes), so every
time zone's send window is served the same day.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from crm.db import make_engine
from flows.journeys.context import RunContext, care_day_instant
from flows.journeys.day import run_hygiene
from flows.journeys.engine import run_journey
from flows.journeys.intents import JourneyReport
from flows.journeys.registry import journey_for, journeys_for
from rules import load_rules


class DailyCareParams(BaseModel):
    """The flow parameter: everything a care day depends on, time included."""

    as_of: date
    at: datetime | None = Field(
        default=None, description="the instant to act as of; 09:00 operator time by default"
    )
    database_url: str
    rules_dir: str
    operator_tz: str = "Asia/Shanghai"
    journeys: list[str] = Field(
        default_factory=list, description="empty means every enabled journey"
    )
    dry_run: bool = False
    shards: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=5000, ge=100)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return make_engine(url)


def _context(params: DailyCareParams, run_id: str, shard: int) -> RunContext:
    tz = ZoneInfo(params.operator_tz)
    return RunContext(
        as_of=params.as_of,
        at=params.at or care_day_instant(params.as_of, tz),
        run_id=run_id,
        ruleset=load_rules(Path(params.rules_dir)),
        operator_tz=tz,
        batch_size=params.batch_size,
        shard=(shard, params.shards),
    )


@task(name="hygiene", cache_policy=NO_CACHE)
def hygiene_task(params: DailyCareParams, run_id: str) -> dict[str, Any]:
    """Withdraw care that must no longer happen (do-not-call, suspended, closed) first."""
    report = run_hygiene(_engine(params.database_url), _context(params, run_id, 0), params.dry_run)
    return report.as_dict()


@task(name="journey", cache_policy=NO_CACHE, task_run_name="{journey}[{shard}]")
def journey_task(params: DailyCareParams, run_id: str, journey: str, shard: int) -> dict[str, Any]:
    ctx = _context(params, run_id, shard)
    found = journey_for(ctx.ruleset, journey)
    report = run_journey(_engine(params.database_url), ctx, found, dry_run=params.dry_run)
    get_run_logger().info("journey %s shard %s: %s", journey, shard, report.as_dict())
    return report.as_dict()


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
    """Run the enabled journeys for ``params.as_of``; they queue, the dispatcher sends."""
    run_ctx = get_run_context()
    run_id = str(getattr(getattr(run_ctx, "flow_run", None), "id", None) or uuid.uuid4())
    ruleset = load_rules(Path(params.rules_dir))
    order = [j.id for j in journeys_for(ruleset)]
    unknown = sorted(set(params.journeys) - set(order))
    if unknown:
        raise ValueError(f"unknown journey(s): {', '.join(unknown)}; expected {', '.join(order)}")
    reports = [hygiene_task(params, run_id)]
    for journey in order:
        if (params.journeys and journey not in params.journeys) or not ruleset.journeys[
            journey
        ].enabled:
            continue
        # Shards of one journey run one after another here: SQLite has one writer, and on
        # PostgreSQL the Prefect deployment runs shards on separate workers.
        parts = [journey_task(params, run_id, journey, shard) for shard in range(params.shards)]
        reports.append(JourneyReport.merged(journey, parts))
    artifact_id = create_markdown_artifact(
        key="daily-care-summary",
        markdown=summary_markdown(params, reports),
        description=f"vipcare care day {params.as_of.isoformat()}",
    )
    return {
        "run_id": run_id,
        "as_of": params.as_of.isoformat(),
        "journeys": reports,
        "artifact_id": str(artifact_id),
    }
