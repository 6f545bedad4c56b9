"""Working a call across the owners it touches: used by the workspace and the CLI alike.

Rescheduling moves the task (owner :mod:`crm.tasks`). Its pre-call SMS follows:

- a notice that still waits to go out and announces only this call moves with it,
  into the customer's send window on the new day (owner :mod:`notifications.outbox`):
  the customer hears "your manager will call soon" on the day of the call;
- a notice shared with the customer's other calls of the old day stays with them,
  and this call is announced again on its new day (one text a day covers it);
- a notice already sent stays sent: the customer has been told.

One transaction, the caller's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from crm import tasks
from crm.audit import Actor
from crm.models import CallTask, Customer
from notifications import outbox
from notifications.policy import schedule_in_window
from rules.models import SendWindow


def reschedule_call(
    session: Session,
    task_id: int,
    to: date,
    reason: str,
    at: datetime,
    today: date,
    actor: Actor,
    window: SendWindow,
    manager_ref: str | None = None,
) -> tasks.Rescheduled:
    """:func:`crm.tasks.reschedule`, then the waiting pre-call notice as described above."""
    moved = tasks.reschedule(session, task_id, to, reason, at, today, actor, manager_ref)
    task = session.get(CallTask, task_id)
    assert task is not None
    notice = task.notice_message_id
    if task.status != tasks.AWAITING_NOTICE or notice is None:
        return moved
    if tasks.others_on_notice(session, notice, task_id):
        tasks.unlink_notice(session, task_id)
        return moved
    customer = session.get(Customer, task.customer_id)
    assert customer is not None
    day_start = datetime.combine(to, time(0), ZoneInfo(customer.timezone)).astimezone(UTC)
    until = schedule_in_window(max(at, day_start), customer.timezone, window)
    outbox.move_queued(session, notice, until, at, actor, f"call moved to {to.isoformat()}")
    return moved
