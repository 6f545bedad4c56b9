"""Call tasks: the one owner of ``call_tasks``, a guarded state machine.

``awaiting_notice → ready → done``; ``awaiting_notice | ready → cancelled``.
Every write to the table goes through this module — the journeys' bulk
creation, the pre-call notice linking, readiness, cancellation, escalation and a
manager's outcome — and each checks :data:`TRANSITIONS` and audits only the
rows it actually changed. A manager completes a ``ready`` task with an outcome
(and a 1–5 satisfaction score when the customer was reached); reaching the
customer sets ``last_contact_on``; a ``no_answer`` callback comes back after the
rule's retry days, up to its maximum number of tries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.bulk import insert_many, table_of
from crm.errors import CrmError, InvalidTransition, NotFound
from crm.jsonable import jsonable
from crm.models import TASK_OUTCOMES, CallTask, Customer, Manager
from crm.statuses import TaskStatus

AWAITING_NOTICE = TaskStatus.AWAITING_NOTICE.value
READY = TaskStatus.READY.value
DONE = TaskStatus.DONE.value
CANCELLED = TaskStatus.CANCELLED.value
OPEN: tuple[str, ...] = (AWAITING_NOTICE, READY)
"""Statuses of a task a manager may still have to call."""

TRANSITIONS: dict[str, dict[str, str | None]] = {
    AWAITING_NOTICE: {
        READY: None,
        CANCELLED: None,
        DONE: "the pre-call SMS has not gone out yet (or its lead time has not passed); "
        "wait for the task to be ready",
    },
    READY: {DONE: None, CANCELLED: None},
    DONE: {},
    CANCELLED: {},
}
"""Every status move of a call task; a reason string means "refused, because …"."""
REACHED = frozenset({"reached", "declined", "plan_changed"})
"""Outcomes in which the customer was actually spoken to."""


def transition_reason(current: str, target: str) -> str | None:
    """Why ``current → target`` is refused, or None when it is allowed."""
    allowed = TRANSITIONS.get(current, {})
    if target not in allowed:
        if not allowed:
            return f"a {current} task is closed"
        return f"allowed from {current}: {', '.join(sorted(allowed))}"
    return allowed[target]


def check_transition(task_id: int | str, current: str, target: str) -> None:
    reason = transition_reason(current, target)
    if reason is not None:
        raise InvalidTransition(f"task {task_id}", current, target, reason)


def _allowed_from(target: str) -> tuple[str, ...]:
    """The statuses from which a bulk move to ``target`` is legal (the guard of its UPDATE)."""
    return tuple(s for s in TRANSITIONS if transition_reason(s, target) is None)


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
        again = _retry_day(session, task.manager_id, today + timedelta(days=policy.retry_days))
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


def lock_capacity(session: Session, manager_id: int | None) -> Manager | None:
    """The manager row, locked until the transaction ends: a capacity check and the write
    that relies on it happen under one per-manager lock.

    Without it, two reschedules into a day with one free slot both counted the day, both
    saw room and both wrote (PostgreSQL runs them side by side; only the task rows were
    locked). Taken after the task's row lock, always in that order, so two writers never
    wait for each other in a cycle. SQLite needs no row lock: ``BEGIN IMMEDIATE``
    (:mod:`crm.db`) already lets one writer in at a time.
    """
    if manager_id is None:
        return None
    return session.execute(
        select(Manager)
        .where(Manager.id == manager_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _retry_day(session: Session, manager_id: int | None, earliest: date) -> date:
    """The first working day from ``earliest`` with room in the manager's capacity."""
    from crm import capacity

    manager = lock_capacity(session, manager_id)
    if manager is not None:
        free = capacity.next_day_with_room(
            session, manager.id, manager.daily_call_capacity, earliest
        )
        if free is not None:
            return free
    return capacity.working_day_on_or_after(earliest)


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


# ---------------------------------------------------------------------------
# Bulk moves: journeys, the dispatcher and provider callbacks
# ---------------------------------------------------------------------------

_TASKS = table_of(CallTask)
_CUSTOMERS = table_of(Customer)


def create_tasks(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert new call tasks (journeys' bulk writer); each row must start in an open status."""
    for row in rows:
        if row["status"] not in OPEN:
            raise InvalidTransition("new task", "(none)", row["status"], "a new task starts open")
    if rows:
        insert_many(session, _TASKS, rows)
    return len(rows)


def _entry(action: str, row: Any, details: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        action=action,
        details={"task_id": row.id, **details},
        customer_id=row.customer_id,
        customer_ref=row.external_id,
        entity=f"task:{row.id}",
        rule_id=row.journey,
        rule_hash=row.rule_hash,
    )


def link_notice(
    session: Session, task_ids: Sequence[int], message_id: int, ready_at: datetime | None = None
) -> int:
    """Tasks waiting for a pre-call notice now wait for ``message_id`` (one notice per day)."""
    if not task_ids:
        return 0
    values: dict[str, Any] = {"notice_message_id": message_id}
    if ready_at is not None:
        values["ready_at"] = ready_at
    result = session.execute(
        update(_TASKS)
        .where(
            _TASKS.c.id.in_(list(task_ids)),
            _TASKS.c.status == AWAITING_NOTICE,
            _TASKS.c.notice_message_id.is_(None),
        )
        .values(**values)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def link_notices(session: Session, pairs: Sequence[tuple[int, int]]) -> int:
    """Many waiting tasks to their notices in one executemany: ``(task_id, message_id)``."""
    if not pairs:
        return 0
    result = session.execute(
        update(_TASKS)
        .where(
            _TASKS.c.id == bindparam("t_id"),
            _TASKS.c.status == AWAITING_NOTICE,
            _TASKS.c.notice_message_id.is_(None),
        )
        .values(notice_message_id=bindparam("t_notice")),
        [{"t_id": task_id, "t_notice": message_id} for task_id, message_id in pairs],
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def unlink_notice(session: Session, task_id: int) -> bool:
    """A waiting task no longer waits for its notice (its call moved to another day).

    The pre-call notice journey announces it again on its new day. False when the
    task was not waiting for a notice.
    """
    result = session.execute(
        update(_TASKS)
        .where(
            _TASKS.c.id == task_id,
            _TASKS.c.status == AWAITING_NOTICE,
            _TASKS.c.notice_message_id.is_not(None),
        )
        .values(notice_message_id=None, ready_at=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def others_on_notice(session: Session, message_id: int, task_id: int) -> int:
    """How many open tasks besides ``task_id`` wait for the notice ``message_id``."""
    return int(
        session.scalar(
            select(func.count()).where(
                _TASKS.c.notice_message_id == message_id,
                _TASKS.c.status.in_(OPEN),
                _TASKS.c.id != task_id,
            )
        )
        or 0
    )


def schedule_ready(
    session: Session, sent_at_by_message: Mapping[int, datetime], lead_time: timedelta
) -> int:
    """A notice went out: its waiting tasks become ready at ``sent_at + lead_time``.

    The task stays ``awaiting_notice``; :func:`promote_ready` flips it when the
    time comes (an already scheduled task is kept). Returns how many were scheduled.
    """
    if not sent_at_by_message:
        return 0
    waiting = session.execute(
        select(_TASKS.c.id, _TASKS.c.notice_message_id).where(
            _TASKS.c.notice_message_id.in_(sorted(sent_at_by_message)),
            _TASKS.c.status == AWAITING_NOTICE,
            _TASKS.c.ready_at.is_(None),
        )
    ).all()
    if not waiting:
        return 0
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("t_id"), _TASKS.c.ready_at.is_(None))
        .values(ready_at=bindparam("t_ready")),
        [
            {"t_id": t.id, "t_ready": sent_at_by_message[t.notice_message_id] + lead_time}
            for t in waiting
        ],
    )
    return len(waiting)


def ready_without_notice(
    session: Session,
    reason_by_message: Mapping[int, str],
    at: datetime,
    actor: Actor,
    *,
    status_word: str,
) -> int:
    """The notice will never arrive: its waiting tasks become ``ready`` now, ``no_notice``.

    The reason goes into the task's details so the manager knows the call is
    unannounced. Audited as ``task.ready``, only for the rows this call moved.
    """
    if not reason_by_message:
        return 0
    rows = session.execute(
        select(_TASKS.c.id, _TASKS.c.notice_message_id, _TASKS.c.details)
        .where(
            _TASKS.c.notice_message_id.in_(sorted(reason_by_message)),
            _TASKS.c.status == AWAITING_NOTICE,
        )
        .order_by(_TASKS.c.id)
    ).all()
    if not rows:
        return 0
    reasons = {
        t.id: f"notice {status_word}: {reason_by_message[t.notice_message_id]}" for t in rows
    }
    details = {t.id: {**(t.details or {}), "no_notice_reason": reasons[t.id]} for t in rows}
    return _make_ready(session, [t.id for t in rows], at, actor, reasons, details)


def ready_now_without_notice(
    session: Session, task_ids: Sequence[int], reason: str, at: datetime, actor: Actor
) -> int:
    """Waiting tasks that will get no notice at all (customer opted out of SMS): ready now."""
    if not task_ids:
        return 0
    rows = session.execute(
        select(_TASKS.c.id, _TASKS.c.details).where(
            _TASKS.c.id.in_(list(task_ids)), _TASKS.c.status == AWAITING_NOTICE
        )
    ).all()
    details = {t.id: {**(t.details or {}), "no_notice_reason": reason} for t in rows}
    return _make_ready(
        session, [t.id for t in rows], at, actor, dict.fromkeys(details, reason), details
    )


def _make_ready(
    session: Session,
    ids: list[int],
    at: datetime,
    actor: Actor,
    reasons: Mapping[int, str],
    details: Mapping[int, dict[str, Any]],
) -> int:
    check_transition("(bulk)", AWAITING_NOTICE, READY)
    moved: list[int] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        moved += (
            session.execute(
                update(_TASKS)
                .where(_TASKS.c.id.in_(chunk), _TASKS.c.status.in_(_allowed_from(READY)))
                .values(status=READY, no_notice=True, ready_at=at)
                .returning(_TASKS.c.id)
            )
            .scalars()
            .all()
        )
    if not moved:
        return 0
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("t_id"))
        .values(details=bindparam("t_details")),
        [{"t_id": tid, "t_details": jsonable(details[tid])} for tid in moved],
    )
    rows = _audit_rows(session, moved)
    audit.append(
        session,
        actor,
        at,
        [
            _entry(
                "task.ready",
                r,
                {
                    "no_notice": True,
                    "reason": reasons[r.id],
                    "notice_message_id": r.notice_message_id,
                },
            )
            for r in rows
        ],
    )
    return len(moved)


def _audit_rows(session: Session, ids: Sequence[int]) -> list[Any]:
    """What an audit row needs about each task (customer ref, journey, rule hash), in id order."""
    out: list[Any] = []
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        out += session.execute(
            select(
                _TASKS.c.id,
                _TASKS.c.customer_id,
                _TASKS.c.kind,
                _TASKS.c.journey,
                _TASKS.c.rule_hash,
                _TASKS.c.ready_at,
                _TASKS.c.scheduled_on,
                _TASKS.c.notice_message_id,
                _CUSTOMERS.c.external_id,
            )
            .join(_CUSTOMERS, _CUSTOMERS.c.id == _TASKS.c.customer_id)
            .where(_TASKS.c.id.in_(ordered[start : start + 1000]))
            .order_by(_TASKS.c.id)
        ).all()
    return out


def reassign_open(
    session: Session, moves: Mapping[int, int | None], at: datetime, actor: Actor
) -> int:
    """Open tasks follow their customer to a new manager (``customer id -> manager id``).

    A manager sees only their own customers: a task left with the old manager after a
    re-import would show a customer who is no longer theirs, and hide the call from the
    new one. Closed tasks stay with whoever worked them (history). Audited
    ``task.reassigned`` with both managers; the call keeps its day.
    """
    moved = 0
    by_manager: dict[int | None, list[int]] = {}
    for customer_id, manager_id in moves.items():
        by_manager.setdefault(manager_id, []).append(customer_id)
    for manager_id, customers in by_manager.items():
        for start in range(0, len(customers), 1000):
            chunk = customers[start : start + 1000]
            before = dict(
                session.execute(
                    select(_TASKS.c.id, _TASKS.c.manager_id)
                    .where(_TASKS.c.customer_id.in_(chunk), _TASKS.c.status.in_(OPEN))
                    .with_for_update()
                )
                .tuples()
                .all()
            )
            ids = [i for i, old in before.items() if old != manager_id]
            if not ids:
                continue
            session.execute(
                update(_TASKS).where(_TASKS.c.id.in_(ids)).values(manager_id=manager_id)
            )
            involved = {m for m in (*before.values(), manager_id) if m is not None}
            managers: dict[int | None, str | None] = {None: None}
            managers.update(
                session.execute(
                    select(Manager.id, Manager.external_id).where(Manager.id.in_(involved))
                )
                .tuples()
                .all()
            )
            audit.append(
                session,
                actor,
                at,
                [
                    _entry(
                        "task.reassigned",
                        r,
                        {
                            "from_manager": managers.get(before[r.id]),
                            "to_manager": managers.get(manager_id),
                        },
                    )
                    for r in _audit_rows(session, ids)
                ],
            )
            moved += len(ids)
    return moved


def promote_ready(
    session: Session, at: datetime, actor: Actor = audit.SYSTEM, batch: int = 5000
) -> int:
    """``awaiting_notice → ready`` for every task whose ``ready_at <= at``; audited.

    Set-based in batches. Only the rows this call's guarded UPDATE actually
    changed are audited (``RETURNING``), so concurrent dispatchers never write
    two ``task.ready`` rows for one task. Returns how many tasks became ready.
    """
    check_transition("(bulk)", AWAITING_NOTICE, READY)
    total = 0
    last_id = 0
    while True:
        ids = (
            session.execute(
                select(_TASKS.c.id)
                .where(
                    _TASKS.c.status == AWAITING_NOTICE,
                    _TASKS.c.ready_at.is_not(None),
                    _TASKS.c.ready_at <= at,
                    _TASKS.c.id > last_id,
                )
                .order_by(_TASKS.c.id)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not ids:
            return total
        last_id = ids[-1]
        moved = (
            session.execute(
                update(_TASKS)
                .where(_TASKS.c.id.in_(ids), _TASKS.c.status == AWAITING_NOTICE)
                .values(status=READY)
                .returning(_TASKS.c.id)
            )
            .scalars()
            .all()
        )
        rows = _audit_rows(session, moved)
        audit.append(
            session,
            actor,
            at,
            [
                _entry(
                    "task.ready",
                    r,
                    {
                        "no_notice": False,
                        "ready_at": r.ready_at,
                        "notice_message_id": r.notice_message_id,
                    },
                )
                for r in rows
            ],
        )
        total += len(rows)


@dataclass(frozen=True)
class Cancelled:
    """A task :func:`cancel_open` closed, and the notice it was waiting for (if any)."""

    task_id: int
    customer_id: int
    kind: str
    notice_message_id: int | None


def cancel_open(
    session: Session,
    customers: ColumnElement[bool],
    at: datetime,
    actor: Actor,
    *,
    reason: str,
    note: str,
    keep_kinds: Sequence[str] = (),
    details: Mapping[str, Any] | None = None,
) -> list[Cancelled]:
    """Cancel the open tasks of the customers ``customers`` selects; audited ``task.cancelled``.

    ``keep_kinds`` stay open (a suspended line keeps its grace follow-up call).
    The caller decides what happens to the notices (see ``Cancelled``).
    """
    check_transition("(bulk)", READY, CANCELLED)
    where = [
        _TASKS.c.status.in_(_allowed_from(CANCELLED)),
        _TASKS.c.customer_id.in_(select(Customer.id).where(customers)),
    ]
    if keep_kinds:
        where.append(_TASKS.c.kind.not_in(list(keep_kinds)))
    rows = session.execute(
        update(_TASKS)
        .where(*where)
        .values(status=CANCELLED, completed_at=at, note=note)
        .returning(_TASKS.c.id, _TASKS.c.customer_id, _TASKS.c.kind, _TASKS.c.notice_message_id)
    ).all()
    if not rows:
        return []
    cancelled = sorted(
        (Cancelled(r.id, r.customer_id, r.kind, r.notice_message_id) for r in rows),
        key=lambda c: c.task_id,
    )
    audited = _audit_rows(session, [c.task_id for c in cancelled])
    audit.append(
        session,
        actor,
        at,
        [
            _entry("task.cancelled", r, {"kind": r.kind, "reason": reason, **(details or {})})
            for r in audited
        ],
    )
    return cancelled


def open_tasks_on_notices(session: Session, message_ids: Iterable[int]) -> set[int]:
    """Of ``message_ids``, the notices some open task still waits for (keep those)."""
    ids = sorted(set(message_ids))
    if not ids:
        return set()
    return set(
        session.execute(
            select(_TASKS.c.notice_message_id).where(
                _TASKS.c.notice_message_id.in_(ids), _TASKS.c.status.in_(OPEN)
            )
        ).scalars()
    )


def escalate_overdue(
    session: Session,
    planned_before: date,
    at: datetime,
    actor: Actor,
    *,
    rule_id: str,
    rule_hash: str,
    as_of: date,
) -> int:
    """Raise the priority of open tasks planned before ``planned_before``, once each; audited.

    Guarded by ``escalated_at IS NULL`` with ``RETURNING``: of two concurrent
    runs, each task is escalated (and audited) by exactly one.
    """
    ids = (
        session.execute(
            select(_TASKS.c.id).where(
                _TASKS.c.status.in_(OPEN),
                _TASKS.c.scheduled_on < planned_before,
                _TASKS.c.escalated_at.is_(None),
            )
        )
        .scalars()
        .all()
    )
    won: list[int] = []
    for start in range(0, len(ids), 1000):
        won += (
            session.execute(
                update(_TASKS)
                .where(
                    _TASKS.c.id.in_(ids[start : start + 1000]),
                    _TASKS.c.escalated_at.is_(None),
                    _TASKS.c.status.in_(OPEN),
                )
                .values(priority=_TASKS.c.priority + 1, escalated_at=at)
                .returning(_TASKS.c.id)
            )
            .scalars()
            .all()
        )
    rows = _audit_rows(session, won)
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action="task.escalated",
                details={
                    "task_id": r.id,
                    "kind": r.kind,
                    "scheduled_on": r.scheduled_on,
                    "overdue_days": (as_of - r.scheduled_on).days,
                },
                customer_id=r.customer_id,
                customer_ref=r.external_id,
                entity=f"task:{r.id}",
                rule_id=rule_id,
                rule_hash=rule_hash,
            )
            for r in rows
        ],
    )
    return len(rows)


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
    manager = lock_capacity(session, task.manager_id)
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
