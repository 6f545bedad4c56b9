"""Reading a manager's work: "My day", task cards and filtered, paginated task lists.

Read-only (writes go through :mod:`crm.tasks`). Every query is bounded: sections
and pages have a ``limit``, totals are ``COUNT`` queries, exports stream in
keyset-paginated batches, and the customer details (clubs, recent usage) of a
page are loaded with one query each for the whole page. Statements run on the
session's connection (Core), not through the ORM: these are plain rows, and the
ORM layer cost more than the queries themselves. Phones come back whole:
the caller decides who may see them (:func:`crm.phones.mask` for everyone else).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from crm.capacity import OPEN_TASK_STATUSES
from crm.models import (
    CallTask,
    Customer,
    CustomerClub,
    GracePeriod,
    Manager,
    MonthlyUsage,
    OutboundMessage,
    Plan,
)

AnySelect = Select[tuple[Any, ...]]
"""A select of any columns (SQLAlchemy 2.0 types a select by its row tuple; pinned below 2.1)."""

USAGE_MONTHS = 4


@dataclass(frozen=True)
class UsageMonth:
    month: date
    voice_minutes: int
    data_mb: int
    sms: int


@dataclass(frozen=True)
class Allowance:
    voice_minutes: int
    data_mb: int
    sms: int
    monthly_fee: Decimal


@dataclass(frozen=True)
class Grace:
    amount: Decimal
    granted_on: date
    deadline: date
    status: str


@dataclass(frozen=True)
class TaskRow:
    """One call task with what its card shows about the customer."""

    id: int
    kind: str
    journey: str
    status: str
    priority: int
    due_on: date
    scheduled_on: date
    attempt: int
    no_notice: bool
    ready_at: datetime | None
    details: dict[str, Any]
    outcome: str | None
    satisfaction: int | None
    note: str | None
    completed_at: datetime | None
    manager_id: int | None
    manager_ref: str | None
    customer_key: int
    customer_ref: str
    customer_name: str
    phone: str
    tier: str
    status_of_customer: str
    balance: Decimal
    balance_as_of: datetime | None
    last_contact_on: date | None
    plan_code: str | None
    plan_name: str | None
    allowance: Allowance | None
    notice_status: str | None
    notice_sent_at: datetime | None
    notice_scheduled_for: datetime | None
    notice_reason: str | None
    customer_manager_id: int | None
    """The customer's manager now (a closed task keeps the manager who worked it)."""
    clubs: list[str] = field(default_factory=list)
    usage: list[UsageMonth] = field(default_factory=list)
    grace: Grace | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TASK_STATUSES

    @property
    def notice_state(self) -> str:
        """``no_notice``, ``waiting`` (queued/sending), or the notice's outbox status."""
        if self.no_notice:
            return "no_notice"
        if self.notice_status in (None, "queued", "sending"):
            return "waiting"
        return self.notice_status


_notice = aliased(OutboundMessage, name="notice")
_TASK_COLUMNS = (
    CallTask.id,
    CallTask.kind,
    CallTask.journey,
    CallTask.status,
    CallTask.priority,
    CallTask.due_on,
    CallTask.scheduled_on,
    CallTask.attempt,
    CallTask.no_notice,
    CallTask.ready_at,
    CallTask.details,
    CallTask.outcome,
    CallTask.satisfaction,
    CallTask.note,
    CallTask.completed_at,
    CallTask.manager_id,
)
"""Plain columns, not the ORM entity: a page of rows without identity-map bookkeeping."""
_N = len(_TASK_COLUMNS)


@lru_cache(maxsize=1)
def _base() -> AnySelect:
    """The task-with-customer select; built once (statements are immutable)."""
    stmt: AnySelect = (
        select(
            *_TASK_COLUMNS,
            Manager.external_id,
            Customer.id,
            Customer.external_id,
            Customer.name,
            Customer.phone,
            Customer.tier,
            Customer.status,
            Customer.balance,
            Customer.balance_as_of,
            Customer.last_contact_on,
            Plan.code,
            Plan.name,
            Plan.voice_minutes,
            Plan.data_mb,
            Plan.sms,
            Plan.monthly_fee,
            _notice.status,
            _notice.sent_at,
            _notice.scheduled_for,
            _notice.status_reason,
            Customer.manager_id,
        )
        .join(Customer, Customer.id == CallTask.customer_id)
        .outerjoin(Manager, Manager.id == CallTask.manager_id)
        .outerjoin(Plan, Plan.id == Customer.plan_id)
        .outerjoin(_notice, _notice.id == CallTask.notice_message_id)
    )
    return stmt


def _row(r: Any) -> TaskRow:
    c = r[_N:]
    allowance = None if c[10] is None else Allowance(c[12], c[13], c[14], c[15])
    return TaskRow(
        id=r[0],
        kind=r[1],
        journey=r[2],
        status=r[3],
        priority=r[4],
        due_on=r[5],
        scheduled_on=r[6],
        attempt=r[7],
        no_notice=r[8],
        ready_at=r[9],
        details=dict(r[10] or {}),
        outcome=r[11],
        satisfaction=r[12],
        note=r[13],
        completed_at=r[14],
        manager_id=r[15],
        manager_ref=c[0],
        customer_key=c[1],
        customer_ref=c[2],
        customer_name=c[3],
        phone=c[4],
        tier=c[5],
        status_of_customer=c[6],
        balance=c[7],
        balance_as_of=c[8],
        last_contact_on=c[9],
        plan_code=c[10],
        plan_name=c[11],
        allowance=allowance,
        notice_status=c[16],
        notice_sent_at=c[17],
        notice_scheduled_for=c[18],
        notice_reason=c[19],
        customer_manager_id=c[20],
    )


def _with_customer_details(
    session: Session, rows: list[TaskRow], today: date, usage: bool = True
) -> list[TaskRow]:
    """Clubs, the last months' usage and (for grace follow-ups) the latest grace credit of
    every customer on a page: at most three queries in all."""
    if not rows:
        return rows
    ids = sorted({r.customer_key for r in rows})
    clubs: dict[int, list[str]] = defaultdict(list)
    for cid, club in session.connection().execute(
        select(CustomerClub.customer_id, CustomerClub.club)
        .where(CustomerClub.customer_id.in_(ids))
        .order_by(CustomerClub.customer_id, CustomerClub.club)
    ):
        clubs[cid].append(club)
    months: dict[int, list[UsageMonth]] = defaultdict(list)
    if usage:
        first = _month_start(today, USAGE_MONTHS)
        for u in session.connection().execute(
            select(
                MonthlyUsage.customer_id,
                MonthlyUsage.month,
                MonthlyUsage.voice_minutes,
                MonthlyUsage.data_mb,
                MonthlyUsage.sms,
            )
            .where(MonthlyUsage.customer_id.in_(ids), MonthlyUsage.month >= first)
            .order_by(MonthlyUsage.customer_id, MonthlyUsage.month)
        ):
            months[u[0]].append(UsageMonth(u[1], u[2], u[3], u[4]))
    graces = _latest_graces(session, {r.customer_key for r in rows if r.kind == "grace_followup"})
    return [
        replace(
            r,
            clubs=clubs.get(r.customer_key, []),
            usage=months.get(r.customer_key, []),
            grace=graces.get(r.customer_key),
        )
        for r in rows
    ]


def _latest_graces(session: Session, customer_ids: set[int]) -> dict[int, Grace]:
    out: dict[int, Grace] = {}
    if not customer_ids:
        return out
    for cid, amount, granted_on, deadline, status in session.connection().execute(
        select(
            GracePeriod.customer_id,
            GracePeriod.amount,
            GracePeriod.granted_on,
            GracePeriod.deadline,
            GracePeriod.status,
        )
        .where(GracePeriod.customer_id.in_(sorted(customer_ids)))
        .order_by(GracePeriod.customer_id, GracePeriod.granted_at.desc())
    ):
        out.setdefault(cid, Grace(amount, granted_on, deadline, status))
    return out


def _month_start(today: date, back: int) -> date:
    """The first day of the month ``back`` months before ``today``'s month."""
    index = today.year * 12 + today.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Call:
    """One phone call: a customer and every task of a section to talk about with them.

    A manager calls a customer once however many journeys want a word (capacity counts
    calls, not tasks): the first task is the most urgent and carries the customer card.
    """

    tasks: list[TaskRow]

    @property
    def card(self) -> TaskRow:
        return self.tasks[0]


@dataclass(frozen=True)
class Section:
    calls: list[Call]
    total: int
    """Calls (customers) in the section, of which ``calls`` holds at most the limit."""
    tasks_total: int

    @property
    def rows(self) -> list[TaskRow]:
        """Every task of the calls shown, most urgent call first."""
        return [t for call in self.calls for t in call.tasks]


@dataclass(frozen=True)
class MyDay:
    today: date
    ready: Section
    waiting: Section
    overdue: Section


def _urgent_first(stmt: AnySelect) -> AnySelect:
    return stmt.order_by(CallTask.priority.desc(), CallTask.due_on, CallTask.id)


def _section(
    session: Session, where: list[ColumnElement[bool]], limit: int, order_overdue: bool = False
) -> tuple[list[list[TaskRow]], int, int]:
    """At most ``limit`` customers' tasks, grouped per customer in call order, with the
    totals of customers and tasks: two queries, three when the limit is reached."""
    who = CallTask.customer_id
    order: tuple[ColumnElement[Any], ...]
    if order_overdue:
        order = (func.min(CallTask.scheduled_on), func.max(CallTask.priority).desc())
    else:
        order = (func.max(CallTask.priority).desc(), func.min(CallTask.due_on))
    conn = session.connection()
    customers = list(
        conn.scalars(
            select(who)
            .where(*where)
            .group_by(who)
            .order_by(*order, func.min(CallTask.id))
            .limit(limit)
        )
    )
    grouped: dict[int, list[TaskRow]] = {c: [] for c in customers}
    if customers:
        stmt = _urgent_first(_base().where(*where, who.in_(customers)))
        for r in conn.execute(stmt):
            row = _row(r)
            grouped[row.customer_key].append(row)
    calls = list(grouped.values())
    n_calls, n_tasks = len(calls), sum(len(c) for c in calls)
    if n_calls == limit:
        totals = conn.execute(
            select(func.count(func.distinct(who)), func.count()).select_from(CallTask).where(*where)
        ).one()
        n_calls, n_tasks = int(totals[0]), int(totals[1])
    return calls, n_calls, n_tasks


def my_day(session: Session, manager_id: int, today: date, limit: int = 50) -> MyDay:
    """Today's ready calls (priority, then due date), those still waiting for their
    pre-call SMS, and the overdue ones (open, planned before today): each at most
    ``limit`` calls (customers, with all their tasks of the section) plus its totals."""
    mine = CallTask.manager_id == manager_id
    sections = [
        _section(
            session, [mine, CallTask.status == "ready", CallTask.scheduled_on == today], limit
        ),
        _section(
            session,
            [mine, CallTask.status == "awaiting_notice", CallTask.scheduled_on == today],
            limit,
        ),
        _section(
            session,
            [mine, CallTask.status.in_(OPEN_TASK_STATUSES), CallTask.scheduled_on < today],
            limit,
            order_overdue=True,
        ),
    ]
    every = [row for calls, _, _ in sections for call in calls for row in call]
    by_id = {r.id: r for r in _with_customer_details(session, every, today)}
    ready, waiting, overdue = (
        Section([Call([by_id[r.id] for r in call]) for call in calls], n_calls, n_tasks)
        for calls, n_calls, n_tasks in sections
    )
    return MyDay(today, ready, waiting, overdue)


def same_call(session: Session, task: TaskRow) -> list[TaskRow]:
    """The customer's other open tasks with the same manager: what else to raise on
    this call (the task page lists them, so one call settles them all)."""
    stmt = _urgent_first(
        _base().where(
            CallTask.customer_id == task.customer_key,
            CallTask.manager_id == task.manager_id
            if task.manager_id is not None
            else CallTask.manager_id.is_(None),
            CallTask.status.in_(OPEN_TASK_STATUSES),
            CallTask.id != task.id,
        )
    )
    return [_row(r) for r in session.connection().execute(stmt.limit(20))]


def task_card(
    session: Session, task_id: int, today: date, manager_id: int | None = None
) -> TaskRow | None:
    """One task with its customer card; None when it does not exist or, given
    ``manager_id``, is not that manager's (the caller cannot tell which)."""
    stmt = _base().where(CallTask.id == task_id)
    if manager_id is not None:
        # Their call, about a customer who is still theirs (a closed call of a customer
        # since moved to another manager stays in the lists, but its card is not theirs).
        stmt = stmt.where(CallTask.manager_id == manager_id, Customer.manager_id == manager_id)
    found = session.connection().execute(stmt).first()
    if found is None:
        return None
    (row,) = _with_customer_details(session, [_row(found)], today)
    if row.grace is None:
        row = replace(row, grace=_latest_graces(session, {row.customer_key}).get(row.customer_key))
    return row


# --- filtered lists, pages and exports -----------------------------------------------------


@dataclass(frozen=True)
class TaskFilter:
    """The filters of the task list page, the CSV export and ``vipcare tasks list``."""

    manager_id: int | None = None
    status: str | None = None
    kind: str | None = None
    since: date | None = None
    until: date | None = None
    open_only: bool = False

    def where(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.manager_id is not None:
            out.append(CallTask.manager_id == self.manager_id)
        if self.status is not None:
            out.append(CallTask.status == self.status)
        elif self.open_only:
            out.append(CallTask.status.in_(OPEN_TASK_STATUSES))
        if self.kind is not None:
            out.append(CallTask.kind == self.kind)
        if self.since is not None:
            out.append(CallTask.scheduled_on >= self.since)
        if self.until is not None:
            out.append(CallTask.scheduled_on <= self.until)
        return out


def _list_order(stmt: AnySelect) -> AnySelect:
    return stmt.order_by(CallTask.scheduled_on, CallTask.priority.desc(), CallTask.id)


def count_tasks(session: Session, flt: TaskFilter) -> int:
    return int(
        session.connection().scalar(select(func.count()).select_from(CallTask).where(*flt.where()))
        or 0
    )


def task_page(
    session: Session, flt: TaskFilter, today: date, limit: int = 50, offset: int = 0
) -> tuple[list[TaskRow], int]:
    """One page of the task list (day, priority, id) and the total for the filters."""
    stmt = _list_order(_base().where(*flt.where())).limit(limit).offset(offset)
    rows = [_row(r) for r in session.connection().execute(stmt)]
    return _with_customer_details(session, rows, today, usage=False), count_tasks(session, flt)


TaskCursor = tuple[date, int, int]
"""Where a task export stopped: the last row's (scheduled_on, priority, id)."""


def task_batch(
    session: Session, flt: TaskFilter, after: TaskCursor | None, batch: int = 1000
) -> tuple[list[TaskRow], TaskCursor | None]:
    """The next ``batch`` tasks matching ``flt`` in list order after ``after``, and the
    cursor to pass next (None: that was the last batch).

    Keyset pagination on (scheduled_on, -priority, id): a deep export never re-reads
    the rows it already passed, and each batch can be read in its own short
    transaction, so a slow download holds no connection between batches.
    """
    stmt = _base().where(*flt.where())
    if after is not None:
        day, prio, task_id = after
        stmt = stmt.where(
            or_(
                CallTask.scheduled_on > day,
                and_(CallTask.scheduled_on == day, CallTask.priority < prio),
                and_(
                    CallTask.scheduled_on == day,
                    CallTask.priority == prio,
                    CallTask.id > task_id,
                ),
            )
        )
    rows = [_row(r) for r in session.connection().execute(_list_order(stmt).limit(batch))]
    if not rows:
        return [], None
    rows = _with_customer_details(session, rows, rows[0].scheduled_on, usage=False)
    tail = rows[-1]
    return rows, (tail.scheduled_on, tail.priority, tail.id) if len(rows) == batch else None


def iter_tasks(session: Session, flt: TaskFilter, batch: int = 1000) -> Iterator[TaskRow]:
    """Every task matching ``flt`` in list order, ``batch`` rows per query (bounded memory),
    in the caller's session (see :func:`task_batch` for one transaction per batch)."""
    after: TaskCursor | None = None
    while True:
        rows, after = task_batch(session, flt, after, batch)
        yield from rows
        if after is None:
            return


def customer_tasks(
    session: Session, customer_key: int, limit: int = 20
) -> list[tuple[int, str, str, date, str | None]]:
    """A customer's recent tasks: (id, kind, status, scheduled_on, outcome), latest day first.

    Ordered by day, not id: ``ORDER BY id DESC LIMIT`` invites PostgreSQL to walk the
    primary key backwards through every task instead of using the customer's index."""
    return [
        (r[0], r[1], r[2], r[3], r[4])
        for r in session.connection().execute(
            select(
                CallTask.id, CallTask.kind, CallTask.status, CallTask.scheduled_on, CallTask.outcome
            )
            .where(CallTask.customer_id == customer_key)
            .order_by(CallTask.scheduled_on.desc(), CallTask.id.desc())
            .limit(limit)
        )
    ]
