"""``vipcare dispatch`` and ``vipcare messages list``: drain and inspect the outbox."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

import typer

from vipcare.cli.common import (
    engine,
    fail,
    input_errors,
    live_ruleset,
    now_utc,
    parse_instant,
    print_shown,
    settings,
)
from vipcare.console import console, err_console, print_json, print_table

messages_app = typer.Typer(help="The outbox: SMS and voice notices.", no_args_is_help=True)
AT_TOLERANCE = timedelta(minutes=1)
"""``dispatch --at`` this little ahead of the clock is taken as now (a clock a little behind)."""


class Status(StrEnum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    undelivered = "undelivered"
    failed = "failed"
    suppressed = "suppressed"
    expired = "expired"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("dispatch")(dispatch)
    app.add_typer(messages_app, name="messages")


@input_errors
def dispatch(
    at: str | None = typer.Option(
        None,
        "--at",
        help="Send only what was due by this ISO time (naive = operator time zone); never a "
        "future time. Sending itself always happens now, in each customer's real window.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Claim at most this many rows."),
    reconcile_all: bool = typer.Option(
        False,
        "--reconcile-all",
        help="Reconcile every row stuck in 'sending', not only those older than 5 minutes. "
        "Only when no other dispatcher is running.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    show_progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="Live counts and send rate on stderr (default: when stderr is a terminal).",
    ),
) -> None:
    """Send what is due through the contact policy, the rate limit and the channel backend.

    Reconciles rows a crashed run left in 'sending' first; safe to run while
    another dispatcher runs. Messages past their validity end 'expired'. The send
    window, the caps and the validity are judged on the real clock, and each
    message is recorded sent when it really was: --at only narrows what is taken.
    """
    from contextlib import nullcontext
    from typing import Any

    from crm.audit import Actor
    from crm.db import transaction
    from notifications.outbox import count_due
    from vipcare.operations import dispatch_due

    eng = engine()
    now = now_utc()
    due_by = parse_instant(at)
    if due_by is not None and due_by > now + AT_TOLERANCE:
        fail(
            f"--at {at} is in the future (now is "
            f"{now.astimezone(settings().tz).isoformat(timespec='seconds')} in "
            f"{settings().timezone}); dispatch sends now and never ahead of time: run it then"
        )
    when = now
    ruleset = live_ruleset(eng)  # a refused edit is warned about; its last good version runs
    progress_on = err_console.is_terminal if show_progress is None else show_progress
    display: Any = nullcontext()
    if progress_on:
        from vipcare.progress import DispatchProgress

        with transaction(eng) as session:
            display = DispatchProgress(err_console, count_due(session, min(when, due_by or when)))
    with display:
        summary = dispatch_due(
            settings(),
            when,
            ruleset=ruleset,
            engine=eng,
            limit=limit,
            reconcile_all=reconcile_all,
            actor=Actor("cli", "dispatch"),
            wall_clock=now_utc,
            progress=display if progress_on else None,
            due_by=due_by if due_by is not None and due_by < when else None,
        )
    data = summary.as_dict()
    if as_json:
        print_json(data)
        if summary.halted:
            fail(f"dispatch stopped early: {summary.halted}")
        return
    console.print(
        f"[bold]dispatch[/] at {when.isoformat().replace('+00:00', 'Z')}"
        + (f", due by {due_by.isoformat().replace('+00:00', 'Z')}" if due_by else "")
    )
    rows = [
        (key, data[key])
        for key in (
            "sent",
            "failed",
            "suppressed",
            "deferred",
            "expired",
            "retried",
            "reconciled",
            "unresolved",
            "tasks_ready",
        )
    ]
    rows += [(f"  suppressed: {code}", n) for code, n in sorted(summary.suppressed_reasons.items())]
    print_table("dispatch summary", ["outcome", "messages"], rows)
    if summary.unresolved:
        console.print(
            f"[yellow]{summary.unresolved} message(s) left in 'sending': the provider could not "
            "say whether it has them; the next dispatch reconciles them.[/]"
        )
    if summary.halted:
        fail(f"dispatch stopped early, nothing more was sent: {summary.halted}")


@messages_app.command("list")
@input_errors
def list_(
    customer: str | None = typer.Option(None, "--customer", help="Customer id (external)."),
    status: Status | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(200, "--limit", min=1, help="Newest N messages."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List outbox messages with their text, newest first. Phone numbers are masked."""
    from crm.db import transaction
    from notifications.outbox import count_messages, list_messages

    wanted = status.value if status else None
    with transaction(engine()) as session:
        rows = [
            m.as_dict()
            for m in list_messages(session, customer_ref=customer, status=wanted, limit=limit)
        ]
        total = count_messages(session, customer, wanted) if len(rows) == limit else len(rows)
    if as_json:
        print_json(rows)
        return
    print_table(
        "messages",
        [
            "id",
            "customer_id",
            "channel",
            "template",
            "status",
            "scheduled_for",
            "sent_at",
            "to",
            "reason",
            "text",
        ],
        (
            (
                r["id"],
                r["customer_id"],
                r["channel"],
                r["template"],
                r["status"],
                r["scheduled_for"],
                r["sent_at"],
                r["to"],
                r["status_reason"] or r["error_code"] or "",
                r["body"],
            )
            for r in rows
        ),
        empty="no messages",
    )
    print_shown(len(rows), total, "messages")
