"""Call tasks: the guarded state machine and what a manager's outcome sets in motion.

``awaiting_notice → ready → done``; ``awaiting_notice | ready → cancelled``. A
manager completes a ``ready`` task with an outcome (and a 1–5 satisfaction
score when the customer was reached); reaching the customer sets
``last_contact_on``; a ``no_answer`` callback comes back after the rule's retry
days, up to its maximum number of tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.errors import CrmError, InvalidTransition, NotFound
from crm.models import TASK_OUTCOMES, CallTask, Customer, Manager

TRANSITIONS: dict[str, dict[str, str | None]] = {
    "awaiting_notice": {
        "ready": None,
        "cancelled": None,
        "done": "the pre-call SMS has not gone out yet (or its lead time has not passed); "
        "wait for the task to be ready",
    },
    "ready": {"done": None, "cancelled": None},
    "done": {},
    "cancelled": {},
}
REACHED = frozenset({"reached", "declined", "plan_changed"})
"""Outcomes in which the customer was actually spoken to."""


def check_transition(task_id: int, current: str, target: str) -> None:
    allowed = TRANSITIONS.get(current, {})
    if target not in allowed:
        reason = (
            f"a {current} task is closed"
            if not allowed
            else f"allowed from {current}: {', '.join(sorted(allowed))}"
        )
        raise InvalidTransition(f"task {task_id}", current, target, reason)
    why = allowed[target]
    if why is not None:
        raise InvalidTransition(f"task {task_id}", current, target, why)


class TaskInputError(CrmError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    """From the callback rule: when and how often a no-answer call comes back."""

    retry_days: int = 2
    max_attempts: int = 3


@dataclass(frozen=True)
class Completion:
    task_id: int
    outcome: str
    last_contact_on: date | None
    retry_task_id: int | None


def complete(
    session: Session,
    task_id: int,
    outcome: str,
    at: datetime,
    today: date,
    actor: Actor,
    satisfaction: int | None = None,
    note: str | None = None,
    retry: RetryPolicy | None = None,
    manager_ref: str | None = None,
) -> Completion:
    """Record a manager's outcome; refuses illegal moves with the reason."""
    if outcome not in TASK_OUTCOMES:
        raise TaskInputError(
            f"unknown outcome {outcome!r}; expected one of {', '.join(TASK_OUTCOMES)}"
        )
    if satisfaction is not None and not 1 <= satisfaction <= 5:
        raise TaskInputError(f"satisfaction must be 1 to 5, got {satisfaction}")
    if satisfaction is not None and outcome not in REACHED:
        raise TaskInputError(f"a satisfaction score needs a reached customer, not {outcome!r}")
    task = session.execute(
        select(CallTask).where(CallTask.id == task_id).with_for_update()
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    customer = session.get(Customer, task.customer_id)
    assert customer is not None
    if manager_ref is not None:
        manager = session.get(Manager, task.manager_id) if task.manager_id else None
        if manager is None or manager.external_id != manager_ref:
            raise TaskInputError(f"task {task_id} belongs to another manager's customer")
    check_transition(task.id, task.status, "done")
    task.status = "done"
    task.outcome = outcome
    task.satisfaction = satisfaction
    task.note = note
    task.completed_at = at
    last_contact = None
    if outcome in REACHED:
        if customer.last_contact_on is None or customer.last_contact_on < today:
            customer.last_contact_on = today
        last_contact = customer.last_contact_on
    entries = [
        AuditEntry(
            action="task.done",
            details={
                "task_id": task.id,
                "kind": task.kind,
                "outcome": outcome,
                "satisfaction": satisfaction,
                "note": note,
                "attempt": task.attempt,
                "last_contact_on": last_contact,
            },
            customer_id=customer.id,
            customer_ref=customer.external_id,
            entity=f"task:{task.id}",
            rule_id=task.journey,
            rule_hash=task.rule_hash,
        )
    ]
    retry_id = None
    policy = retry or RetryPolicy()
    if outcome == "no_answer" and task.kind == "callback" and task.attempt < policy.max_attempts:
        again = today + timedelta(days=policy.retry_days)
        retry_task = CallTask(
            customer_id=task.customer_id,
            manager_id=task.manager_id,
            kind=task.kind,
            journey=task.journey,
            occurrence=f"{task.occurrence.split('#', 1)[0]}#{task.attempt + 1}",
            status="ready",
            priority=task.priority,
            due_on=again,
            scheduled_on=again,
            no_notice=True,
            ready_at=at,
            details={
                **(task.details or {}),
                "retry_of": task.id,
                "notice": "retry of an unanswered call",
            },
            attempt=task.attempt + 1,
            rule_hash=task.rule_hash,
            created_at=at,
        )
        session.add(retry_task)
        session.flush()
        retry_id = retry_task.id
        entries.append(
            AuditEntry(
                action="task.retry_scheduled",
                details={
                    "task_id": retry_id,
                    "retry_of": task.id,
                    "attempt": task.attempt + 1,
                    "due_on": again,
                },
                customer_id=customer.id,
                customer_ref=customer.external_id,
                entity=f"task:{retry_id}",
                rule_id=task.journey,
                rule_hash=task.rule_hash,
            )
        )
    audit.append(session, actor, at, entries)
    return Completion(task.id, outcome, last_contact, retry_id)


def task_view(
    task: CallTask, customer_ref: str, manager_ref: str | None, notice_status: str | None
) -> dict[str, Any]:
    return {
        "id": task.id,
        "customer_id": customer_ref,
        "manager_id": manager_ref,
        "kind": task.kind,
        "status": task.status,
        "priority": task.priority,
        "due_on": task.due_on,
        "scheduled_on": task.scheduled_on,
        "ready_at": task.ready_at,
        "no_notice": task.no_notice,
        "notice_status": notice_status,
        "attempt": task.attempt,
        "details": task.details,
        "outcome": task.outcome,
        "satisfaction": task.satisfaction,
        "completed_at": task.completed_at,
    }


def list_tasks(
    session: Session,
    manager_ref: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    on_or_before: date | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """A manager's work list: most urgent first (day, priority, age)."""
    from sqlalchemy.orm import aliased

    from crm.models import OutboundMessage
    from crm.phones import mask

    notice = aliased(OutboundMessage)
    stmt = (
        select(
            CallTask,
            Customer.external_id,
            Customer.name,
            Customer.phone,
            Customer.tier,
            Manager.external_id,
            notice.status,
        )
        .join(Customer, Customer.id == CallTask.customer_id)
        .outerjoin(Manager, Manager.id == CallTask.manager_id)
        .outerjoin(notice, notice.id == CallTask.notice_message_id)
        .order_by(CallTask.scheduled_on, CallTask.priority.desc(), CallTask.id)
        .limit(limit)
    )
    if manager_ref is not None:
        stmt = stmt.where(Manager.external_id == manager_ref)
    if status is not None:
        stmt = stmt.where(CallTask.status == status)
    if kind is not None:
        stmt = stmt.where(CallTask.kind == kind)
    if on_or_before is not None:
        stmt = stmt.where(CallTask.scheduled_on <= on_or_before)
    out = []
    for task, ref, name, phone, tier, manager_ref_, notice_status in session.execute(stmt):
        view = task_view(task, ref, manager_ref_, notice_status)
        view.update(customer_name=name, customer_phone=mask(phone), tier=tier)
        out.append(view)
    return out


# --- rescheduling -------------------------------------------------------------------------

RESCHEDULE_REASON_MAX = 500
RESCHEDULE_HORIZON_DAYS = 90
"""A call moved further out than this is a new task, not a reschedule."""


def open_statuses() -> tuple[str, ...]:
    """States from which the transition table still leads to ``done``: the open tasks."""
    return tuple(s for s, moves in TRANSITIONS.items() if "done" in moves)


class RescheduleError(TaskInputError):
    """A reschedule refused for a reason the caller can show and act on.

    ``code`` names the reason (``reason``, ``past``, ``too_far``, ``weekend``,
    ``same_day``, ``full``, ``no_capacity``); ``next_free`` is the first working
    day with room, when there is one.
    """

    def __init__(self, code: str, message: str, next_free: date | None = None) -> None:
        self.code = code
        self.next_free = next_free
        hint = f" (the next working day with room is {next_free.isoformat()})" if next_free else ""
        super().__init__(message + hint)


@dataclass(frozen=True)
class Rescheduled:
    task_id: int
    from_day: date
    to_day: date
    reason: str


def reschedule(
    session: Session,
    task_id: int,
    to: date,
    reason: str,
    at: datetime,
    today: date,
    actor: Actor,
    manager_ref: str | None = None,
) -> Rescheduled:
    """Move an open task to another working day that has room in its manager's capacity.

    Audited as ``task.rescheduled`` with the old day, the new day and the reason.
    ``today`` is the manager's calendar day (a call cannot move into the past).
    """
    from crm import capacity

    why = (reason or "").strip()
    if not why:
        raise RescheduleError("reason", "a reschedule needs a reason")
    if len(why) > RESCHEDULE_REASON_MAX:
        raise RescheduleError(
            "reason", f"the reason is {len(why)} characters; at most {RESCHEDULE_REASON_MAX}"
        )
    task = session.execute(
        select(CallTask).where(CallTask.id == task_id).with_for_update()
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    manager = session.get(Manager, task.manager_id) if task.manager_id else None
    if manager_ref is not None and (manager is None or manager.external_id != manager_ref):
        raise TaskInputError(f"task {task_id} belongs to another manager's customer")
    if task.status not in open_statuses():
        raise InvalidTransition(
            f"task {task_id}", task.status, "rescheduled", f"a {task.status} task is closed"
        )

    def next_free() -> date | None:
        if manager is None:
            return capacity.working_day_on_or_after(max(to, today))
        return capacity.next_day_with_room(
            session, manager.id, manager.daily_call_capacity, max(to, today), skip=task.scheduled_on
        )

    if to < today:
        raise RescheduleError("past", f"{to.isoformat()} is in the past (today is {today})")
    if to > today + timedelta(days=RESCHEDULE_HORIZON_DAYS):
        raise RescheduleError(
            "too_far", f"{to.isoformat()} is more than {RESCHEDULE_HORIZON_DAYS} days ahead"
        )
    if to == task.scheduled_on:
        raise RescheduleError("same_day", f"task {task_id} is already on {to.isoformat()}")
    if not capacity.is_working_day(to):
        raise RescheduleError(
            "weekend", f"{to.isoformat()} is not a working day (Monday to Friday)", next_free()
        )
    if manager is not None:
        if manager.daily_call_capacity <= 0:
            raise RescheduleError(
                "no_capacity", f"manager {manager.external_id} has no daily call capacity"
            )
        load = capacity.day_load(session, manager.id, to)
        if load >= manager.daily_call_capacity:
            raise RescheduleError(
                "full",
                f"{to.isoformat()} is full: {load} of {manager.daily_call_capacity} calls",
                next_free(),
            )
    customer = session.get(Customer, task.customer_id)
    assert customer is not None
    before = task.scheduled_on
    task.scheduled_on = to
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action="task.rescheduled",
                details={
                    "task_id": task.id,
                    "kind": task.kind,
                    "from": before,
                    "to": to,
                    "reason": why,
                },
                customer_id=customer.id,
                customer_ref=customer.external_id,
                entity=f"task:{task.id}",
                rule_id=task.journey,
                rule_hash=task.rule_hash,
            )
        ],
    )
    return Rescheduled(task.id, before, to, why)
