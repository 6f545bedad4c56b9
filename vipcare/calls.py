"""Working a call across the owners it touches: used by the workspace and the CLI alike.

Rescheduling moves the task (owner :mod:`crm.tasks`) and, when its pre-call SMS
has not gone out yet, that notice too (owner :mod:`notifications.outbox`), into
the customer's send window on the new day: the customer hears "your manager will
call soon" on the day of the call, not days before it. One transaction, the
caller's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from crm import tasks
from crm.audit import Actor
from crm.models import CallTask, Customer
from notifications import outbox
from notifications.policy import SendWindowLike, schedule_in_window


def reschedule_call(
    session: Session,
    task_id: int,
    to: date,
    reason: str,
    at: datetime,
    today: date,
    actor: Actor,
    window: SendWindowLike,
    manager_ref: str | None = None,
) -> tasks.Rescheduled:
    """:func:`crm.tasks.reschedule`, then a waiting pre-call notice follows the call."""
    moved = tasks.reschedule(session, task_id, to, reason, at, today, actor, manager_ref)
    task = session.get(CallTask, task_id)
    assert task is not None
    if task.status == "awaiting_notice" and task.notice_message_id is not None:
        customer = session.get(Customer, task.customer_id)
        assert customer is not None
        day_start = datetime.combine(to, time(0), ZoneInfo(customer.timezone)).astimezone(UTC)
        until = schedule_in_window(max(at, day_start), customer.timezone, window)
        outbox.move_queued(
            session, task.notice_message_id, until, at, actor, f"call moved to {to.isoformat()}"
        )
    return moved
