"""What a care day run late can still honestly do, judged against the real clock.

A day that runs after its own instant — a catch-up after an outage, a
back-dated ``vipcare run --date`` — decides on the facts known at its instant
(``RunContext.at``), but its writes happen *now* (``RunContext.now``). A decision
whose text could no longer reach the customer within its validity (a birthday
greeting after the birthday, a grace notice after its deadline) is not taken at
all: nothing of it is written and it is counted ``skipped_too_late``. The journeys
add their own conditions (a grace must still be told on its own day, so the
customer keeps the whole top-up window; see :mod:`flows.journeys.grace_credit`).
"""

from __future__ import annotations

from datetime import date, datetime

from flows.journeys.context import RunContext, local_day_end, local_day_start
from flows.journeys.intents import Decision
from notifications.policy import schedule_in_window

TOO_LATE = "too_late"
"""The skip code of a decision a late run can no longer take honestly."""


def first_arrival(ctx: RunContext, timezone: str, not_before: datetime | None) -> datetime:
    """The earliest instant a text queued now can be sent: inside the customer's window."""
    now = ctx.recorded_at
    start = now if not_before is None else max(now, not_before)
    return schedule_in_window(start, timezone, ctx.policy.send_window)


def cannot_arrive(ctx: RunContext, decision: Decision) -> str | None:
    """Why ``decision``'s texts can no longer reach the customer in time (None: they can).

    Only for a run that knows the real clock (``ctx.now``); preview and explain
    say what the day decides, whatever the time.
    """
    if ctx.now is None:
        return None
    for m in decision.messages:
        if m.valid_until is None:
            continue  # valid while its call is open: it can always still go
        first = first_arrival(ctx, decision.customer.timezone, m.not_before)
        if first >= m.valid_until:
            return (
                f"the {m.template} text could no longer arrive: it is valid until "
                f"{m.valid_until.isoformat()} and could go out {first.isoformat()} at the earliest"
            )
    return None


def told_on_the_day(ctx: RunContext, timezone: str, day: date) -> bool:
    """A text queued now can still reach the customer on their local ``day``."""
    if ctx.now is None:
        return True
    return first_arrival(ctx, timezone, local_day_start(day, timezone)) < local_day_end(
        day, timezone
    )
