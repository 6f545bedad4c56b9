"""The operations every entry point runs (CLI, demo, scheduler), wired from settings.

Configuration is built here, at the edge: the settings become the typed
notification config, the rules give the contact policy and the pre-call lead
time, and the packages below receive plain typed values.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine

from crm.db import make_engine
from notifications.dispatcher import DispatchSummary
from rules import RuleSet, load_rules
from vipcare.settings import Settings


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

    rules = ruleset if ruleset is not None else load_rules(settings.rules_dir)
    return dispatch(
        engine if engine is not None else make_engine(settings.database_url),
        settings.notifications(),
        rules.contact_policy,
        at,
        lead_time=rules.precall_lead_time,
        **options,
    )


def _quiet_prefect() -> None:
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
) -> dict[str, Any]:
    """Run the Prefect flow ``daily_care`` (imports Prefect only now: it is slow to import)."""
    _quiet_prefect()
    from flows.daily import DailyCareParams, daily_care

    params = DailyCareParams(
        as_of=as_of,
        at=at,
        database_url=settings.database_url,
        rules_dir=str(settings.rules_dir),
        operator_tz=settings.timezone,
        journeys=journeys or [],
        dry_run=dry_run,
        shards=shards,
        batch_size=settings.batch_size,
    )
    result: dict[str, Any] = daily_care(params)
    return result
