"""Care that must no longer happen: calls to a do-not-call, suspended or closed customer.

Run before the journeys every day (customers change status and consent through
imports and inbound texts), and at once for the lines a journey suspends.

- **do-not-call**: every open call task is cancelled, with the pre-call notice
  that announced it (a notice still covering another open call stays).
- **suspended**: every open call task but the grace follow-up is cancelled, and
  queued marketing texts are withdrawn; service notices about the suspension
  itself and the follow-up's pre-call notice stay.
- **closed**: every open call task is cancelled and every queued message withdrawn.

Cancelled tasks are audited ``task.cancelled``; withdrawn messages end
``expired`` with the reason, audited ``message.expired``.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from crm import tasks
from crm.models import Customer
from flows.journeys.context import RunContext
from notifications.outbox import queue

Why = Literal["do_not_call", "suspended", "closed"]

WHO: dict[Why, ColumnElement[bool]] = {
    "do_not_call": Customer.do_not_call.is_(True),
    "suspended": Customer.status == "suspended",
    "closed": Customer.status == "closed",
}
NOTES: dict[Why, str] = {
    "do_not_call": "customer is on the do-not-call list",
    "suspended": "the customer's line is suspended",
    "closed": "the customer's account is closed",
}
KEEP_KINDS: dict[Why, tuple[str, ...]] = {"suspended": ("grace_followup",)}


def withdraw_unwanted_care(session: Session, ctx: RunContext) -> Counter[str]:
    """The daily sweep over every customer (see the module docstring)."""
    counts: Counter[str] = Counter()
    for why, who in WHO.items():
        counts.update(withdraw_care(session, ctx, who, why))
    return counts


def withdraw_care(
    session: Session, ctx: RunContext, customers: ColumnElement[bool], why: Why
) -> Counter[str]:
    """Withdraw the calls and texts ``customers`` must no longer get, for reason ``why``."""
    counts: Counter[str] = Counter()
    cancelled = tasks.cancel_open(
        session,
        customers,
        ctx.recorded_at,
        ctx.actor,
        reason=why,
        note=NOTES[why],
        keep_kinds=KEEP_KINDS.get(why, ()),
    )
    counts[f"tasks_cancelled_{why}"] += len(cancelled)
    notices = {c.notice_message_id for c in cancelled if c.notice_message_id is not None}
    still_needed = tasks.open_tasks_on_notices(session, notices)
    counts["notices_withdrawn"] += len(
        queue.withdraw(
            session,
            notices - still_needed,
            ctx.recorded_at,
            ctx.actor,
            f"{why}: the call it announced was cancelled",
        )
    )
    if why != "do_not_call":
        withdrawn = queue.withdraw_for_customers(
            session,
            customers,
            ctx.recorded_at,
            ctx.actor,
            f"{why}: {NOTES[why]}",
            categories=("marketing",) if why == "suspended" else None,
        )
        counts["messages_withdrawn"] += len(withdrawn)
    return +counts
