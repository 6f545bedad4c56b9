"""The operations every entry point runs (CLI, demo, scheduler), wired from settings.

Configuration is built here, at the edge: the settings become the typed
notification config, the rules give the contact policy and the pre-call lead
time, and the packages below receive plain typed values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from crm.audit import Actor
from crm.db import make_engine, transaction
from notifications.dispatcher import DispatchSummary
from rules import RuleSet
from rules.live import LiveRules, load_live_rules
from rules.models import CallbackRule
from vipcare.settings import Settings

SCHEDULER = Actor("system", "scheduler")


def live_rules(
    settings: Settings, engine: Engine, now: datetime, *, record: bool = True
) -> LiveRules:
    """The live rule set of the configured folder on this database (:mod:`rules.live`).

    The one way every entry point gets the rules it runs: a file whose edit does not
    load runs on its last good version, and the refusal is recorded and reported.
    """
    return load_live_rules(engine, settings.rules_dir, now, record=record)


def dispatch_due(
    settings: Settings,
    at: datetime,
    *,
    ruleset: RuleSet | None = None,
    engine: Engine | None = None,
    **options: Any,
) -> DispatchSummary:
    """Send what is due at ``at`` through the contact policy and the configured channels."""
    from notifications.dispatcher import dispatch

    eng = engine if engine is not None else make_engine(settings.database_url)
    rules = ruleset if ruleset is not None else live_rules(settings, eng, at).require()
    return dispatch(
        eng,
        settings.notifications(),
        rules.contact_policy,
        at,
        lead_time=rules.precall_lead_time,
        **options,
    )


def quiet_prefect() -> None:
    """Prefect's defaults for a vipcare process: no analytics, warnings only, room to start."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # The temporary server needs ~6 s on an idle machine; give a busy one room.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_care_day(
    settings: Settings,
    as_of: date,
    at: datetime | None = None,
    journeys: list[str] | None = None,
    dry_run: bool = False,
    shards: int = 1,
    *,
    now: datetime | None = None,
    run_id: str | None = None,
    announce: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Run the Prefect flow ``daily_care`` (imports Prefect only now: it is slow to import).

    ``now`` is the real clock (the caller's edge reads it): a day run after its
    instant decides on what was known then and does only what can still happen now.

    Uses the configured Prefect API, or one temporary server (``announce`` is
    told when one starts); inside the scheduler the process's warm one. The flow
    works on ``engine`` (or one made from the settings): the database URL is not
    a flow parameter, because Prefect's API shows parameters to all its readers.
    """
    quiet_prefect()
    from flows.daily import DailyCareParams, care_database, daily_care
    from vipcare.prefect_server import prefect_api

    params = DailyCareParams(
        as_of=as_of,
        at=at,
        rules_dir=str(settings.rules_dir),
        operator_tz=settings.timezone,
        journeys=journeys or [],
        dry_run=dry_run,
        shards=shards,
        batch_size=settings.batch_size,
        run_id=run_id,
        now=now,
    )
    # A failing flow is reported by the caller in one line; Prefect would print its traceback.
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    crm = engine if engine is not None else make_engine(settings.database_url)
    try:
        with prefect_api(announce), care_database(crm):
            result: dict[str, Any] = daily_care(params)
    finally:
        if engine is None:
            crm.dispose()
    return result


@dataclass(frozen=True)
class EscalationResult:
    """What one escalation sweep did."""

    escalated: int
    planned_before: date | None
    """Open tasks planned before this day were overdue; None: no enabled callback rule."""

    def as_dict(self) -> dict[str, Any]:
        return {"escalated": self.escalated, "planned_before": self.planned_before}


def escalate_overdue(
    settings: Settings,
    as_of: date,
    at: datetime,
    *,
    ruleset: RuleSet | None = None,
    engine: Engine | None = None,
    actor: Actor = SCHEDULER,
) -> EscalationResult:
    """Raise the priority of call tasks overdue by the callback rule's ``escalate_after_days``.

    Once per task (guarded, audited ``task.escalated``); a rerun escalates nothing twice.
    """
    from crm import tasks

    eng = engine if engine is not None else make_engine(settings.database_url)
    rules = ruleset if ruleset is not None else live_rules(settings, eng, at).require()
    rule = rules.journeys.get("callback")
    if not isinstance(rule, CallbackRule) or not rule.enabled:
        return EscalationResult(0, None)
    planned_before = as_of - timedelta(days=rule.trigger.escalate_after_days)
    with transaction(eng) as session:
        escalated = tasks.escalate_overdue(
            session,
            planned_before,
            at,
            actor,
            rule_id=rule.rule_id,
            rule_hash=rule.content_hash,
            as_of=as_of,
        )
    return EscalationResult(escalated, planned_before)
