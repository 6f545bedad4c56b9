"""Leaving vipcare running: ``vipcare scheduler``, ``vipcare status``, ``vipcare deploy``."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any

import typer

from vipcare.cli.common import engine, fail, input_errors, live_rules, now_utc, settings
from vipcare.console import console, print_json, print_table

NEEDS_ATTENTION = 3
"""``vipcare status`` exit status when something needs attention (1 and 2 mean bad input)."""


class Job(StrEnum):
    care_day = "care-day"
    dispatch = "dispatch"
    escalation = "escalation"


def register(app: typer.Typer) -> None:
    app.command("scheduler")(scheduler)
    app.command("status")(status)
    app.command("deploy")(deploy)


def _log_to_stderr() -> None:
    from notifications.logging import install_masking

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_masking(handler, [])
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("apscheduler", "httpx", "prefect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@input_errors
def scheduler(
    job: list[Job] = typer.Option(
        [], "--job", help="Run only this job (repeatable); default: all three."
    ),
) -> None:
    """Run the care day, the dispatcher and the escalation sweep at their times; leave it running.

    Times come from VIPCARE_CARE_RUN_AT, VIPCARE_DISPATCH_EVERY_MINUTES and
    VIPCARE_ESCALATE_AT (operator time, VIPCARE_TIMEZONE). Days missed while it
    was down are run at start, oldest first. One scheduler per database: a
    second one refuses to start. SIGTERM (or Ctrl-C) stops it after the job in
    flight. Logs go to stderr; `vipcare status` shows what it did.
    """
    from vipcare.scheduler import daemon, lease

    eng = engine()
    _log_to_stderr()
    # A refused edit does not stop it: its last good version runs, the log says so and
    # `vipcare status` reports it. Only with no rule set that can run at all: exit 1.
    live = live_rules(eng, warn=False)
    for refused in live.refused:
        logging.getLogger("vipcare.scheduler").warning("%s", refused.summary())
    live.require()
    try:
        daemon.run(settings(), selected=[j.value for j in job] or None, engine=eng)
    except lease.LeaseRefused as exc:
        fail(str(exc))
    except daemon.SchedulerStopped as exc:
        fail(str(exc))


@input_errors
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for monitoring)."),
) -> None:
    """Is vipcare healthy? Last runs, the queue, stuck and expired messages, the scheduler.

    Exits 0 when all is well and 3 when something needs attention (listed first).
    """
    from rules.models import CallbackRule
    from vipcare.health import collect
    from vipcare.scheduler.schedule import Schedule

    eng = engine()
    cfg = settings()
    # Read only; a refused edit is part of the report (exit 3), never a reason not to report.
    live = live_rules(eng, record=False, warn=False)
    rule = live.ruleset.journeys.get("callback") if live.ruleset is not None else None
    escalate_after = rule.trigger.escalate_after_days if isinstance(rule, CallbackRule) else None
    schedule = Schedule.from_settings(cfg)
    health = collect(eng, schedule, now_utc(), escalate_after_days=escalate_after, rules=live)
    if as_json:
        print_json(health.as_dict())
    else:
        _print_health(health.as_dict())
    if not health.healthy:
        raise typer.Exit(NEEDS_ATTENTION)


def _local(value: Any) -> str:
    """A UTC time in the operator's zone, to the minute."""
    from datetime import datetime

    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    return value.astimezone(settings().tz).strftime("%Y-%m-%d %H:%M")


def _print_health(h: dict[str, Any]) -> None:
    zone = settings().timezone
    if h["attention"]:
        console.print("[bold red]needs attention:[/]")
        for item in h["attention"]:
            console.print(f"  [red]•[/] {item}", highlight=False)
    else:
        console.print("[bold green]healthy[/]: nothing needs attention")
    console.print(f"[dim]times in {zone}[/]")
    _print_rules(h.get("rules") or {})
    s = h["scheduler"]
    line = f"scheduler: [bold]{s['state']}[/]"
    if "owner" in s:
        line += f" ({s['owner']}), last heartbeat {_local(s['heartbeat_at'])}"
    console.print(line, highlight=False)
    print_table(
        "jobs",
        ["job", "last run", "care day", "started", "finished", "next run", "error"],
        (
            [
                j["job"],
                j["last_outcome"] or "never",
                j["care_day"] or "",
                _local(j["started_at"]),
                _local(j["finished_at"]),
                _local(j["next_run_at"]),
                j["error"] or "",
            ]
            for j in h["jobs"]
        ),
    )
    print_table(
        "journeys (last care day)",
        ["journey", "care day", "outcome", "shards", "decided", "finished", "error"],
        (
            [
                j["journey"],
                j["care_day"],
                j["outcome"],
                j["shards"],
                j["decided"],
                _local(j["finished_at"]),
                j["error"] or "",
            ]
            for j in h["journeys"]
        ),
        empty="no journey has run yet",
    )
    q = h["queue"]
    print_table("messages by status", ["status", "messages"], q["by_status"].items())
    oldest = q["oldest_due"]
    console.print(
        f"due now: {q['due_now']}"
        + (
            f"; oldest due since {_local(oldest['scheduled_for'])} "
            f"({oldest['waiting_minutes']} min, {oldest['journey']}/{oldest['template']})"
            if oldest
            else ""
        ),
        highlight=False,
    )
    console.print(f"stuck in sending: {h['stuck_sending']['count']}", highlight=False)
    e = h["expired_last_day"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(e["by_reason"].items()))
    console.print(
        f"expired in the last day: {e['count']}" + (f" ({reasons})" if reasons else ""),
        highlight=False,
    )
    o = h["overdue_tasks"]
    if o:
        console.print(
            f"overdue call tasks (planned before {o['planned_before']}): {o['count']}",
            highlight=False,
        )
    inv = h["invariants"]
    if inv.get("checked"):
        verdict = "hold" if inv["ok"] else f"[red]{inv['count']} violation(s)[/]"
        console.print(
            f"money and state invariants: {verdict} (after the {inv['after']} at "
            f"{_local(inv['at'])}, {inv['customers']} customer(s) checked)",
            highlight=False,
        )
        for line in inv["violations"]:
            console.print(f"  [red]•[/] {line}", highlight=False)
    _print_catch_up(h["catch_up"])


def _spans(days: list[Any]) -> str:
    """``[12-01, 12-02, 12-03, 12-07]`` → ``12-01 to 12-03, 12-07``."""
    from datetime import timedelta

    spans: list[list[Any]] = []
    for day in days:
        if spans and day - spans[-1][-1] == timedelta(days=1):
            spans[-1].append(day)
        else:
            spans.append([day])
    return ", ".join(f"{s[0]} to {s[-1]}" if len(s) > 1 else f"{s[0]}" for s in spans)


def _print_catch_up(c: dict[str, Any]) -> None:
    """What the last outage skipped: the days run late and what they did not do, and why."""
    if not (c.get("late_days") or c.get("days_not_run")):
        return
    days = c["late_days"]
    if days:
        console.print(
            f"last catch-up: care days {_spans(days)} run late, at {_local(c['caught_up_at'])}",
            highlight=False,
        )
    reasons = {
        "too_late": "its text could no longer arrive in time",
        "graces_held_not_told": "grace held: its notice never reached the customer in time",
        "graces_topped_up_since": "grace left for a later day: a top-up arrived since",
    }
    rows = [
        [journey, reasons.get(code, code), n]
        for journey, counts in c["skipped"].items()
        for code, n in sorted(counts.items())
    ]
    if rows:
        print_table(
            "not done by the late days (and why)",
            ["journey", "why", "decisions (all late days)"],
            rows,
        )
    for gap in c["days_not_run"]:
        console.print(
            f"care days {gap['from']} to {gap['to']}: never run (older than the catch-up window)",
            highlight=False,
        )


STATE_WORDS = {
    "current": "current",
    "last_good": "last good version",
    "not_running": "NOT RUNNING",
    "default": "defaults",
}


def _print_rules(r: dict[str, Any]) -> None:
    """The rule files: which version of each runs, and every problem of a refused edit."""
    if not r:
        return
    files = r["files"]
    if not r["refused"]:
        console.print(
            f"rules: {len(files)} file(s) in {r['dir']}, all current", highlight=False, markup=False
        )
        return
    print_table(
        f"rule files ({r['dir']})",
        ["rule", "runs", "sha256", "accepted"],
        (
            [
                f["rule_id"],
                STATE_WORDS.get(f["state"], f["state"]),
                (f["sha256"] or "")[:12],
                _local(f["accepted_at"]),
            ]
            for f in files
        ),
    )
    for refused in r["refused"]:
        console.print(
            f"refused: {refused['file']}: {refused['consequence']}", highlight=False, markup=False
        )
        for problem in refused["problems"]:
            console.print(f"  {problem}", highlight=False, markup=False)


@input_errors
def deploy(
    work_pool: str | None = typer.Option(
        None, "--work-pool", help="Process work pool (default VIPCARE_PREFECT_WORK_POOL)."
    ),
    shards: int | None = typer.Option(
        None, "--shards", min=1, max=64, help="Care-day shards (default VIPCARE_CARE_SHARDS)."
    ),
    lanes: int | None = typer.Option(
        None, "--lanes", min=1, max=64, help="Dispatchers per run (default VIPCARE_DISPATCH_LANES)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the deployments as a JSON array."),
) -> None:
    """Create the Prefect deployments (same flows, same schedule) on the server PREFECT_API_URL.

    Workers then run them: `prefect worker start --pool vipcare`, each with the
    VIPCARE_* / TWILIO_* environment (secrets stay on the workers, never in
    flow parameters). Also creates the strict send-rate concurrency limits.
    """
    from vipcare.deploy import DeployError, deploy_all

    cfg = settings()
    try:
        made = deploy_all(
            cfg,
            work_pool=work_pool or cfg.prefect_work_pool,
            shards=shards or cfg.care_shards,
            lanes=lanes or cfg.dispatch_lanes,
        )
    except DeployError as exc:
        fail(str(exc))
    if as_json:
        print_json(made)
        return
    print_table(
        "Prefect deployments",
        ["deployment", "schedule", "work pool", "id"],
        ([d["name"], d["schedule"], d["work_pool"], d["id"]] for d in made),
    )
