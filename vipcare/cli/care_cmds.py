"""The care day: ``vipcare run``, ``tasks ...``, ``ledger list`` and ``demo``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer

from crm.models import TASK_KINDS, TASK_OUTCOMES, TASK_STATUSES
from vipcare.cli.common import (
    InputError,
    engine,
    fail,
    input_errors,
    live_rules,
    live_ruleset,
    now_utc,
    parse_date,
    parse_day,
    parse_instant,
    print_shown,
    resolve_manager,
    settings,
    today_local,
)
from vipcare.console import console, err_console, print_care_day, print_json, print_table

if TYPE_CHECKING:
    from rules.loader import RuleSet

tasks_app = typer.Typer(help="Account managers' call tasks.", no_args_is_help=True)
ledger_app = typer.Typer(help="The credit ledger.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(ledger_app, name="ledger")


@input_errors
def run(
    on: str | None = typer.Option(
        None, "--date", help="Care day YYYY-MM-DD (default: today, operator time)."
    ),
    at: str | None = typer.Option(
        None, "--at", help="Act as of this ISO time (default 09:00 of --date, or now)."
    ),
    journey: list[str] = typer.Option([], "--journey", help="Only this journey (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and count, write nothing."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Run a day older than the catch-up window (VIPCARE_CATCH_UP_DAYS) anyway.",
    ),
    shards: int = typer.Option(1, "--shards", min=1, max=64, help="Split customers into N shards."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    show_progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="Live counts per journey on stderr (default: when stderr is a terminal).",
    ),
) -> None:
    """Run the daily care flow: every enabled journey decides and queues its messages.

    Sending is the dispatcher's job (``vipcare dispatch``, or ``vipcare scheduler``
    every few minutes), so each customer's send window is served in their own zone.
    A past day decides on what was known at its instant and does only what can
    still honestly happen now (docs/journeys.md); one older than the catch-up
    window needs --force, and its postings carry today's time and the care day.
    """
    import uuid

    as_of = parse_date(on)  # usage errors (exit 2) first
    instant = parse_instant(at)
    eng = engine()  # no database: one line and exit 1, before anything is created
    # Before Prefect starts: a refused file is warned about (its last good version runs);
    # with no rule set that can run at all, exit 1 with every problem.
    live = live_rules(eng, record=not dry_run)
    live.require()
    for name in journey:
        refusal = live.refusal_of(name)
        if name in live.stopped_journeys and refusal is not None:
            from rich.markup import escape

            fail(f"--journey {name} cannot run: {escape(refusal.describe())}")
    now = now_utc()
    today = now.astimezone(settings().tz).date()
    if as_of is None:
        as_of = instant.astimezone(settings().tz).date() if instant else today
        instant = instant or now
    future = as_of > today or (instant is not None and instant > now)
    if future and not dry_run:
        when = f"--date {as_of}" if as_of > today else f"--at {at}"
        fail(
            f"{when} is in the future (today is {today} in {settings().timezone}); a care day "
            "runs once it has begun. Add --dry-run to see what it would decide"
        )
    window = max(1, settings().catch_up_days)  # the scheduler's: today and the days before it
    age = (today - as_of).days
    if age >= window and not force and not dry_run:
        fail(
            f"--date {as_of} is {age} days ago, older than the catch-up window "
            f"(VIPCARE_CATCH_UP_DAYS={window}); a day that old acts on the facts known then "
            "and posts today. Add --force to run it anyway, or --dry-run to see what it "
            "would decide"
        )
    from vipcare.operations import run_care_day

    run_id = str(uuid.uuid4())
    wanted = _journeys_for_progress(live.require(), journey)
    progress_on = err_console.is_terminal if show_progress is None else show_progress
    try:
        with _care_progress(progress_on and not dry_run, run_id, wanted):
            result = run_care_day(
                settings(),
                as_of,
                instant,
                journey,
                dry_run,
                shards,
                now=now,
                run_id=run_id,
                announce=_announce,
            )
    except (InputError, typer.Exit):
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        from sqlalchemy.exc import SQLAlchemyError

        from crm.errors import CrmError
        from rules.errors import RulesError
        from vipcare.cli.common import outage_line
        from vipcare.errors import describe_error

        if isinstance(exc, CrmError | RulesError | ValueError):
            fail(str(exc))
        if isinstance(exc, SQLAlchemyError | OSError):
            fail(f"the care run for {as_of} failed: {outage_line(exc)}")
        fail(f"the care run for {as_of} failed: {describe_error(exc)}")
    finally:
        eng.dispose()
    if as_json:
        print_json(result)
    else:
        print_care_day(result)


def _announce(text: str) -> None:
    err_console.print(f"[dim]{text}[/]", highlight=False)


def _journeys_for_progress(ruleset: RuleSet, wanted: list[str]) -> list[str]:
    from flows.journeys.registry import journeys_for

    return [
        j.id
        for j in journeys_for(ruleset)
        if ruleset.journeys[j.id].enabled and (not wanted or j.id in wanted)
    ]


def _care_progress(enabled: bool, run_id: str, journeys: list[str]) -> Any:
    from contextlib import nullcontext

    if not enabled:
        return nullcontext()
    from vipcare.progress import care_day_progress

    return care_day_progress(err_console, settings().database_url, run_id, journeys)


@tasks_app.command("list")
@input_errors
def tasks_list(
    manager: str | None = typer.Option(
        None, "--manager", help="Only this manager's tasks (manager_id, case-sensitive)."
    ),
    status: str | None = typer.Option(None, "--status", help=f"One of {', '.join(TASK_STATUSES)}."),
    kind: str | None = typer.Option(None, "--kind", help=f"One of {', '.join(TASK_KINDS)}."),
    due: str | None = typer.Option(
        None, "--until", help="Only tasks scheduled on or before YYYY-MM-DD (or today)."
    ),
    limit: int = typer.Option(500, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List call tasks, most urgent first; says how many more there are."""
    from crm.db import transaction
    from crm.tasks import list_tasks
    from crm.worklist import TaskFilter, count_tasks

    if status is not None and status not in TASK_STATUSES:
        fail(
            f"--status: unknown status {status!r}; expected one of {', '.join(TASK_STATUSES)}",
            code=2,
        )
    if kind is not None and kind not in TASK_KINDS:
        fail(f"--kind: unknown kind {kind!r}; expected one of {', '.join(TASK_KINDS)}", code=2)
    until = parse_day(due, "--until")
    with transaction(engine()) as session:
        manager_key = resolve_manager(session, manager) if manager is not None else None
        rows = list_tasks(session, manager, status, kind, until, limit)
        total = (
            count_tasks(
                session, TaskFilter(manager_id=manager_key, status=status, kind=kind, until=until)
            )
            if len(rows) == limit
            else len(rows)
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        "call tasks",
        [
            "id",
            "scheduled_on",
            "prio",
            "kind",
            "status",
            "customer_id",
            "name",
            "tier",
            "why",
            "pre-call SMS",
        ],
        (
            [
                r["id"],
                r["scheduled_on"],
                r["priority"],
                r["kind"],
                r["status"],
                r["customer_id"],
                r["customer_name"],
                r["tier"],
                _why(r),
                "no notice" if r["no_notice"] else (r["notice_status"] or "-"),
            ]
            for r in rows
        ),
    )
    print_shown(len(rows), total, "tasks", "use --limit, or narrow with --status/--until")


def _why(task: dict[str, Any]) -> str:
    d = task.get("details") or {}
    if task["kind"] == "plan_fit":
        saving = d.get("monthly_saving")
        return f"{d.get('current_plan')} → {d.get('suggested_plan')}, saves {saving}/month"
    if task["kind"] == "callback":
        return f"callback due {d.get('due_on')}" + (
            f" (try {task['attempt']})" if task["attempt"] > 1 else ""
        )
    if task["kind"] == "grace_followup":
        return f"balance {d.get('balance')} after grace"
    if task["kind"] == "birthday":
        return f"birthday {d.get('birthday_on')}"
    return str(d.get("reason", ""))


@tasks_app.command("done")
@input_errors
def tasks_done(
    task_id: int = typer.Argument(..., help="The task id (from tasks list)."),
    outcome: str = typer.Option(..., "--outcome", help=f"One of {', '.join(TASK_OUTCOMES)}."),
    satisfaction: int | None = typer.Option(
        None, "--satisfaction", min=1, max=5, help="1–5, when reached."
    ),
    note: str | None = typer.Option(None, "--note", help="Free text."),
    manager: str | None = typer.Option(
        None, "--manager", help="Refuse unless the task is this manager's."
    ),
) -> None:
    """Complete a call task with its outcome (audited)."""
    from crm.audit import Actor
    from crm.db import transaction
    from crm.tasks import RetryPolicy, complete

    if outcome not in TASK_OUTCOMES:
        fail(
            f"--outcome: unknown outcome {outcome!r}; expected one of {', '.join(TASK_OUTCOMES)}",
            code=2,
        )
    rule = live_ruleset(engine()).journeys.get("callback")
    retry = (
        RetryPolicy(rule.trigger.no_answer_retry_days, rule.trigger.max_attempts)  # type: ignore[attr-defined]
        if rule is not None
        else RetryPolicy()
    )
    actor = (
        Actor("manager", manager) if manager else Actor("cli", os.environ.get("USER", "operator"))
    )
    with transaction(engine()) as session:
        if manager is not None:
            resolve_manager(session, manager)
        result = complete(
            session,
            task_id,
            outcome,
            now_utc(),
            today_local(),
            actor,
            satisfaction,
            note,
            retry,
            manager,
        )
    console.print(f"task {result.task_id} done: [bold]{result.outcome}[/]")
    if result.last_contact_on:
        console.print(f"last contact set to {result.last_contact_on}")
    if result.retry_task_id:
        console.print(f"no answer: retry scheduled as task {result.retry_task_id}")


@tasks_app.command("show")
@input_errors
def tasks_show(
    task_id: int = typer.Argument(..., help="The task id (from tasks list)."),
    manager: str | None = typer.Option(
        None,
        "--manager",
        help="The task's manager: shows the whole phone number (refused for another's task).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """One task's customer card: why to call, the number, plan, balance, the pre-call SMS
    and the customer's latest timeline entries."""
    from crm.db import transaction
    from crm.errors import NotFound
    from crm.phones import mask
    from crm.timeline import timeline
    from crm.worklist import task_card

    today = today_local()
    with transaction(engine()) as session:
        manager_key = resolve_manager(session, manager) if manager is not None else None
        row = task_card(session, task_id, today, manager_key)
        if row is None:
            if manager_key is not None and task_card(session, task_id, today) is not None:
                raise InputError(f"task {task_id} belongs to another manager's customer")
            raise NotFound(f"no task with id {task_id}")
        recent = timeline(session, row.customer_key, row.customer_ref, limit=5)
    phone = row.phone if manager_key is not None else mask(row.phone)
    data: dict[str, Any] = {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "priority": row.priority,
        "due_on": row.due_on,
        "scheduled_on": row.scheduled_on,
        "attempt": row.attempt,
        "customer_id": row.customer_ref,
        "customer_name": row.customer_name,
        "phone": phone,
        "tier": row.tier,
        "clubs": row.clubs,
        "plan_code": row.plan_code,
        "balance": row.balance,
        "last_contact_on": row.last_contact_on,
        "manager_id": row.manager_ref,
        "why": _why(_as_list_row(row)),
        "pre_call_sms": row.notice_state,
        "details": row.details,
        "grace": None
        if row.grace is None
        else {
            "amount": row.grace.amount,
            "deadline": row.grace.deadline,
            "status": row.grace.status,
        },
        "outcome": row.outcome,
        "satisfaction": row.satisfaction,
        "note": row.note,
        "recent": [
            {"at": e.at, "what": e.kind, "status": e.status, "text": e.text} for e in recent
        ],
    }
    if as_json:
        print_json(data)
        return
    tz = settings().tz
    print_table(
        f"task {row.id}: {row.kind}, {row.status}",
        ["field", "value"],
        [
            [k, data[k]]
            for k in (
                "customer_id",
                "customer_name",
                "phone",
                "tier",
                "clubs",
                "plan_code",
                "balance",
                "last_contact_on",
                "why",
                "pre_call_sms",
                "scheduled_on",
                "due_on",
                "priority",
                "manager_id",
                "outcome",
                "satisfaction",
                "note",
            )
            if data[k] not in (None, [], "")
        ],
    )
    if manager_key is None:
        console.print("[dim]phone masked: pass --manager OWNER_ID to see the whole number[/]")
    print_table(
        "latest on the timeline",
        ["when", "what", "text"],
        ([e.at.astimezone(tz).strftime("%Y-%m-%d %H:%M"), _what(e), e.text or ""] for e in recent),
        empty="nothing yet",
    )


def _as_list_row(row: Any) -> dict[str, Any]:
    return {"kind": row.kind, "details": row.details, "attempt": row.attempt}


def _what(entry: Any) -> str:
    if entry.kind == "message":
        return f"{entry.channel} {entry.template}: {entry.status}"
    return str(entry.kind)


@tasks_app.command("reschedule")
@input_errors
def tasks_reschedule(
    task_id: int = typer.Argument(..., help="The task id (from tasks list)."),
    to: str = typer.Option(..., "--to", help="The new day, YYYY-MM-DD (or tomorrow)."),
    reason: str = typer.Option(..., "--reason", help="Why the call moves (audited)."),
    manager: str | None = typer.Option(
        None, "--manager", help="Refuse unless the task is this manager's."
    ),
) -> None:
    """Move an open task to another working day within the manager's daily capacity."""
    from crm.audit import Actor
    from crm.db import transaction
    from vipcare.calls import reschedule_call

    window = live_ruleset(engine()).contact_policy.send_window
    day = parse_day(to, "--to")
    assert day is not None
    actor = (
        Actor("manager", manager) if manager else Actor("cli", os.environ.get("USER", "operator"))
    )
    with transaction(engine()) as session:
        if manager is not None:
            resolve_manager(session, manager)
        moved = reschedule_call(
            session, task_id, day, reason, now_utc(), today_local(), actor, window, manager
        )
    console.print(f"task {moved.task_id} moved from {moved.from_day} to [bold]{moved.to_day}[/]")


@ledger_app.command("list")
@input_errors
def ledger_list(
    customer: str | None = typer.Option(None, "--customer", help="Customer id (external)."),
    limit: int = typer.Option(500, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List credits vipcare granted (grace credits, birthday perks)."""
    from crm.db import transaction
    from crm.ledger import list_entries

    with transaction(engine()) as session:
        rows = list_entries(session, customer, limit)
    if as_json:
        print_json(rows)
        return
    print_table(
        "credit ledger",
        [
            "id",
            "posted_at",
            "care_day",
            "customer_id",
            "kind",
            "amount",
            "balance_after",
            "occurrence",
        ],
        (
            [
                r["id"],
                r["created_at"],
                r["care_day"] or "",
                r["customer_id"],
                r["kind"],
                r["amount"],
                r["balance_after"],
                r["occurrence"],
            ]
            for r in rows
        ),
    )


@input_errors
def demo(
    customers: int = typer.Option(
        3000, "--customers", min=50, help="How many demo customers to seed."
    ),
    seed_value: int = typer.Option(
        7, "--seed", help="Random seed: the same seed gives the same data."
    ),
    on: str | None = typer.Option(None, "--date", help="Care day (default: today, operator time)."),
    reset: bool = typer.Option(False, "--reset", help="Delete the SQLite database first."),
) -> None:
    """Init, seed demo customers and run a care day on mock SMS/voice; print what happened."""
    from vipcare.demo import run_demo

    if settings().sms_backend != "mock" or settings().voice_backend != "mock":
        raise InputError(
            "the demo only runs on the mock SMS/voice backends (VIPCARE_SMS_BACKEND=mock)"
        )
    as_of = parse_date(on) or today_local()
    run_demo(settings(), as_of, customers, seed_value, reset)
