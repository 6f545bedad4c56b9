"""What every journey shares: the run context, intents, candidate batching and the writer.

A journey *decides*: it selects candidates set-based in SQL, a batch at a time,
and turns each into a :class:`Decision` holding intents (messages, tasks,
credits). :func:`apply_decisions` writes a batch in the caller's transaction:
first the occurrence keys (the idempotence gate), then only for the keys this
writer actually inserted, the outbox rows, call tasks, ledger entries and audit
rows, all as bulk statements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, func, select, true, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.bulk import insert_ignoring_conflicts, table_of
from crm.jsonable import jsonable
from crm.models import (
    CallTask,
    CreditLedger,
    Customer,
    JourneyOccurrence,
    Manager,
    OutboundMessage,
)
from crm.types import Money
from notifications.policy import schedule_in_window
from rules.compiler import compile_condition
from rules.models import (
    BirthdayRule,
    GraceCreditRule,
    JourneyBase,
    PrecallNoticeRule,
    SendSms,
    SendVoice,
)
from rules.templates import render

OPEN_TASK_STATUSES = ("awaiting_notice", "ready")


@dataclass(frozen=True)
class RunContext:
    """Everything a journey may depend on; time is injected here, never read."""

    as_of: date
    at: datetime
    run_id: str
    ruleset: Any
    operator_tz: ZoneInfo
    batch_size: int = 5000
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("RunContext.at must be timezone-aware")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"bad shard {self.shard}: expected (index, count) with 0 <= index < count"
            )

    @property
    def actor(self) -> Actor:
        return Actor("flow", self.run_id)

    @property
    def policy(self) -> Any:
        return self.ruleset.contact_policy

    @property
    def hotline(self) -> str:
        return str(getattr(self.policy, "hotline", "") or "")

    def rule(self, journey: str) -> Any:
        return self.ruleset.journeys[journey]


@dataclass
class CustomerRow:
    """The columns every journey reads about a candidate."""

    id: int
    external_id: str
    name: str
    phone: str
    locale: str
    timezone: str
    tier: str
    status: str
    balance: Decimal
    sms_opt_out: bool
    do_not_call: bool
    manager_id: int | None
    manager_name: str | None
    manager_phone: str | None
    extra: dict[str, Any] = field(default_factory=dict)


CUSTOMER_COLUMNS = (
    Customer.id,
    Customer.external_id,
    Customer.name,
    Customer.phone,
    Customer.locale,
    Customer.timezone,
    Customer.tier,
    Customer.status,
    Customer.balance,
    Customer.sms_opt_out,
    Customer.do_not_call,
    Customer.manager_id,
    Manager.name.label("manager_name"),
    Manager.phone.label("manager_phone"),
)
_BASE_FIELDS = [c.key for c in CUSTOMER_COLUMNS]


def customer_select(*extra: Any) -> Select:
    """SELECT of the common candidate columns (plus ``extra``) with the manager joined."""
    return select(*CUSTOMER_COLUMNS, *extra).outerjoin(Manager, Manager.id == Customer.manager_id)


def iter_candidates(session: Session, stmt: Select, ctx: RunContext) -> Iterator[list[CustomerRow]]:
    """Keyset-paginate ``stmt`` by customer id, restricted to this run's shard."""
    index, count = ctx.shard
    if count > 1:
        stmt = stmt.where(Customer.id % count == index)
    last = 0
    while True:
        rows = session.execute(
            stmt.where(Customer.id > last).order_by(Customer.id).limit(ctx.batch_size)
        ).all()
        if not rows:
            return
        batch = []
        for row in rows:
            mapping = row._mapping
            base = {k: mapping[k] for k in _BASE_FIELDS}
            extra = {k: v for k, v in mapping.items() if k not in base}
            batch.append(CustomerRow(**base, extra=extra))
        yield batch
        last = rows[-1].id


def occurrence_absent(journey: str, occurrence: str | Any) -> Any:
    """NOT EXISTS the (journey, customer, occurrence) key: skip what is already decided."""
    return ~(
        select(JourneyOccurrence.id)
        .where(
            JourneyOccurrence.journey == journey,
            JourneyOccurrence.customer_id == Customer.id,
            JourneyOccurrence.occurrence == occurrence,
        )
        .exists()
    )


def no_open_task(kind: str) -> Any:
    return ~(
        select(CallTask.id)
        .where(
            CallTask.customer_id == Customer.id,
            CallTask.kind == kind,
            CallTask.status.in_(OPEN_TASK_STATUSES),
        )
        .exists()
    )


# --- intents ------------------------------------------------------------------------------


@dataclass
class MessageIntent:
    template: str
    variables: dict[str, str]
    not_before: datetime | None = None


@dataclass
class TaskIntent:
    """A call to make. ``scheduled_on=None`` lets the capacity planner pick the day."""

    kind: str
    due_on: date
    scheduled_on: date | None = None
    priority: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


@dataclass
class CreditIntent:
    amount: Decimal
    kind: str


@dataclass
class Decision:
    customer: CustomerRow
    occurrence: str
    details: dict[str, Any] = field(default_factory=dict)
    messages: list[MessageIntent] = field(default_factory=list)
    tasks: list[TaskIntent] = field(default_factory=list)
    credits: list[CreditIntent] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of the decision, for preview and the audit row."""
        return {
            "customer_id": self.customer.external_id,
            "occurrence": self.occurrence,
            "details": self.details,
            "messages": [m.template for m in self.messages],
            "tasks": [t.kind for t in self.tasks],
            "credits": [str(c.amount) for c in self.credits],
        }


@dataclass
class JourneyReport:
    journey: str
    candidates: int = 0
    decided: int = 0
    skipped_existing: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "candidates": self.candidates,
            "decided": self.decided,
            "skipped_existing": self.skipped_existing,
            **dict(sorted(self.counts.items())),
        }


# --- rendering and scheduling -------------------------------------------------------------


def common_variables(ctx: RunContext, c: CustomerRow) -> dict[str, str]:
    return {
        "name": c.name,
        "tier": c.tier,
        "manager_name": c.manager_name or "",
        "manager_phone": c.manager_phone or ctx.hotline,
        "hotline": ctx.hotline,
        "date": ctx.as_of.isoformat(),
    }


def local_day_start(day: date, tz_name: str) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(tz_name)).astimezone(UTC)


def send_time(ctx: RunContext, c: CustomerRow, not_before: datetime | None = None) -> datetime:
    """Inside the customer's local send window, no earlier than the run instant."""
    start = ctx.at if not_before is None else max(ctx.at, not_before)
    return schedule_in_window(start, c.timezone, ctx.policy.send_window)


def working_day_on_or_after(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class CapacityPlanner:
    """Spreads new call tasks over each manager's daily call capacity (working days only).

    Loads the current load (open tasks per manager per day from ``as_of``) once,
    with one grouped query, then assigns in memory.
    """

    def __init__(self, session: Session, as_of: date, horizon_days: int = 366) -> None:
        self.as_of = as_of
        self.horizon = horizon_days
        self.capacity = {
            mid: cap
            for mid, cap in session.execute(select(Manager.id, Manager.daily_call_capacity))
        }
        self.load: Counter[tuple[int, date]] = Counter()
        rows = session.execute(
            select(CallTask.manager_id, CallTask.scheduled_on, func.count())
            .where(
                CallTask.status.in_(OPEN_TASK_STATUSES),
                CallTask.scheduled_on >= as_of,
                CallTask.manager_id.is_not(None),
            )
            .group_by(CallTask.manager_id, CallTask.scheduled_on)
        )
        for manager_id, day, count in rows:
            if manager_id is not None:
                self.load[(manager_id, day)] = count
        self._cursor: dict[int, date] = {}

    def assign(self, manager_id: int | None) -> date:
        start = working_day_on_or_after(self.as_of)
        if manager_id is None:
            return start
        capacity = self.capacity.get(manager_id, 0)
        day = max(start, self._cursor.get(manager_id, start))
        last = self.as_of + timedelta(days=self.horizon)
        while capacity > 0 and self.load[(manager_id, day)] >= capacity and day < last:
            day = working_day_on_or_after(day + timedelta(days=1))
        if capacity <= 0:
            day = start
        self.load[(manager_id, day)] += 1
        self._cursor[manager_id] = day
        return day

    def book(self, manager_id: int | None, day: date) -> None:
        """Count a task placed on a fixed day (a birthday call) against the capacity."""
        if manager_id is not None:
            self.load[(manager_id, day)] += 1


# --- the writer ---------------------------------------------------------------------------


def apply_decisions(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    decisions: Sequence[Decision],
    report: JourneyReport,
    after_insert: Callable[[Session, list[Decision]], list[AuditEntry]] | None = None,
    planner: CapacityPlanner | None = None,
) -> list[Decision]:
    """Write a batch of decisions; returns those this writer won (the rest already existed)."""
    if not decisions:
        return []
    journey = rule.journey
    occ_rows = [
        {
            "journey": journey,
            "customer_id": d.customer.id,
            "occurrence": d.occurrence,
            "decided_at": ctx.at,
            "as_of": ctx.as_of,
            "rule_id": rule.rule_id,
            "rule_hash": rule.content_hash,
            "run_id": ctx.run_id,
            "details": jsonable(d.summary()),
        }
        for d in decisions
    ]
    won_ids = insert_ignoring_conflicts(
        session, JourneyOccurrence, occ_rows, returning="customer_id"
    )
    won = [d for d in decisions if d.customer.id in won_ids]
    report.decided += len(won)
    report.skipped_existing += len(decisions) - len(won)
    if not won:
        return []

    entries: list[AuditEntry] = []
    _write_credits(session, ctx, rule, won, report, entries)
    _write_messages(session, ctx, rule, won, report)
    _write_tasks(session, ctx, rule, won, report, planner or CapacityPlanner(session, ctx.as_of))
    if after_insert is not None:
        entries.extend(after_insert(session, won))
    for d in won:
        entries.append(
            AuditEntry(
                action=f"journey.{journey}",
                details=jsonable(d.summary()),
                customer_id=d.customer.id,
                customer_ref=d.customer.external_id,
                entity=f"occurrence:{journey}:{d.occurrence}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
        )
    audit.append(session, ctx.actor, ctx.at, entries)
    return won


def _write_credits(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
    entries: list[AuditEntry],
) -> None:
    rows = []
    updates = []
    for d in won:
        balance = d.customer.balance
        for credit in d.credits:
            balance = balance + credit.amount
            rows.append(
                {
                    "customer_id": d.customer.id,
                    "amount": credit.amount,
                    "balance_after": balance,
                    "kind": credit.kind,
                    "journey": rule.journey,
                    "occurrence": d.occurrence,
                    "rule_hash": rule.content_hash,
                    "created_at": ctx.at,
                }
            )
            updates.append({"cid": d.customer.id, "amt": credit.amount})
            entries.append(
                AuditEntry(
                    action="ledger.credit",
                    details={
                        "amount": credit.amount,
                        "kind": credit.kind,
                        "balance_after": balance,
                    },
                    customer_id=d.customer.id,
                    customer_ref=d.customer.external_id,
                    entity=f"occurrence:{rule.journey}:{d.occurrence}",
                    rule_id=rule.rule_id,
                    rule_hash=rule.content_hash,
                )
            )
            report.counts["credits"] += 1
        d.customer.balance = balance
    if not rows:
        return
    session.execute(table_of(CreditLedger).insert(), rows)
    customers = table_of(Customer)
    stmt = (
        update(customers)
        .where(customers.c.id == bindparam("cid"))
        .values(balance=customers.c.balance + bindparam("amt", type_=Money(2)))
    )
    session.execute(stmt, updates, execution_options={"synchronize_session": False})


def interim_valid_until(
    ctx: RunContext, rule: JourneyBase, c: CustomerRow, occurrence: str
) -> datetime | None:
    """Until when a message may be sent (interim, until the rule files set it per kind).

    A birthday greeting: until the end of the customer's local greeting day. A
    grace notice: until its top-up deadline day starts in the operator's zone,
    so it can never arrive after the care run of that day suspended the line.
    Anything else (a pre-call notice is valid while its task is open): no limit.
    """
    if isinstance(rule, BirthdayRule):
        return local_day_start(ctx.as_of + timedelta(days=1), c.timezone)
    if isinstance(rule, GraceCreditRule) and occurrence.startswith("grace:"):
        deadline = ctx.as_of + timedelta(days=rule.trigger.topup_days)
        return local_day_start(deadline, ctx.operator_tz.key)
    return None


def message_row(
    ctx: RunContext,
    rule: JourneyBase,
    c: CustomerRow,
    occurrence: str,
    template_name: str,
    variables: dict[str, str],
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """One outbox row, rendered, scheduled in the window, or suppressed up front."""
    template = rule.template(template_name)
    body = render(rule, template_name, c.locale, variables)
    status, reason = "queued", None
    if template.channel == "sms" and c.sms_opt_out:
        status, reason = "suppressed", "customer opted out of SMS"
    elif template.channel == "voice" and c.do_not_call:
        status, reason = "suppressed", "customer is on the do-not-call list"
    return {
        "customer_id": c.id,
        "channel": template.channel,
        "category": template.category,
        "template": template_name,
        "journey": rule.journey,
        "occurrence": occurrence,
        "locale": c.locale,
        "to_phone": c.phone,
        "body": body,
        "scheduled_for": send_time(ctx, c, not_before),
        "valid_until": interim_valid_until(ctx, rule, c, occurrence),
        "status": status,
        "status_reason": reason,
        "attempts": 0,
        "rule_hash": rule.content_hash,
        "created_at": ctx.at,
        "updated_at": ctx.at,
    }


def _write_messages(
    session: Session, ctx: RunContext, rule: JourneyBase, won: list[Decision], report: JourneyReport
) -> None:
    rows = []
    for d in won:
        for m in d.messages:
            row = message_row(
                ctx, rule, d.customer, d.occurrence, m.template, m.variables, m.not_before
            )
            rows.append(row)
            report.counts[f"messages_{row['status']}"] += 1
    if rows:
        session.execute(table_of(OutboundMessage).insert(), rows)


def _write_tasks(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
    planner: CapacityPlanner,
) -> None:
    """Create call tasks, each preceded by its pre-call notice (journey ``precall_notice``)."""
    pending = [(d, t) for d in won for t in d.tasks]
    if not pending:
        return
    precall: PrecallNoticeRule | None = ctx.ruleset.journeys.get("precall_notice")
    if precall is not None and not precall.enabled:
        precall = None
    notice_rows: list[dict[str, Any]] = []
    notice_index: list[int] = []
    task_rows: list[dict[str, Any]] = []
    for d, t in pending:
        c = d.customer
        if c.do_not_call:  # never a call task, whatever the journey
            report.counts["tasks_skipped_do_not_call"] += 1
            continue
        if t.scheduled_on is None:
            t.scheduled_on = planner.assign(c.manager_id)
        else:
            planner.book(c.manager_id, t.scheduled_on)
        row = {
            "customer_id": c.id,
            "manager_id": c.manager_id,
            "kind": t.kind,
            "journey": rule.journey,
            "occurrence": d.occurrence,
            "priority": t.priority,
            "due_on": t.due_on,
            "scheduled_on": t.scheduled_on,
            "details": jsonable(t.details),
            "attempt": t.attempt,
            "rule_hash": rule.content_hash,
            "created_at": ctx.at,
            "status": "awaiting_notice",
            "no_notice": False,
            "ready_at": None,
            "notice_message_id": None,
        }
        notice_reason = None
        if c.sms_opt_out:
            notice_reason = "customer opted out of SMS"
        elif precall is None:
            notice_reason = "pre-call notice journey disabled"
        elif not notice_actions(precall):
            notice_reason = "pre-call notice has no message action"
        if notice_reason is not None:
            row.update(status="ready", no_notice=True, ready_at=ctx.at)
            row["details"] = {**row["details"], "notice": notice_reason}
            report.counts["tasks_no_notice"] += 1
        else:
            assert precall is not None
            action = notice_actions(precall)[0]
            variables = {**common_variables(ctx, c), "task_kind": t.kind}
            not_before = local_day_start(t.scheduled_on, c.timezone)  # the notice goes out that day
            notice_rows.append(
                message_row(
                    ctx,
                    precall,
                    c,
                    f"{rule.journey}:{d.occurrence}:{t.kind}",
                    action.template,
                    variables,
                    not_before,
                )
            )
            notice_index.append(len(task_rows))
        task_rows.append(row)
        report.counts[f"tasks_{t.kind}"] += 1
    ids = insert_notices(session, notice_rows)
    for task_pos, message_id in zip(notice_index, ids, strict=True):
        task_rows[task_pos]["notice_message_id"] = message_id
    report.counts["precall_notices"] += len(ids)
    if task_rows:
        session.execute(table_of(CallTask).insert(), task_rows)


def insert_notices(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Bulk-insert pre-call notices and return their ids in order.

    A plain executemany, then one lookup by the outbox's natural key
    (journey, customer, occurrence, template): RETURNING with ordered rows makes
    SQLite fall back to one statement per row.
    """
    if not rows:
        return []
    session.execute(table_of(OutboundMessage).insert(), rows)
    found: dict[tuple[int, str], int] = {}
    customer_ids = sorted({r["customer_id"] for r in rows})
    occurrences = sorted({r["occurrence"] for r in rows})
    journey = rows[0]["journey"]
    for start in range(0, len(customer_ids), 1000):
        chunk = customer_ids[start : start + 1000]
        stmt = select(
            OutboundMessage.id, OutboundMessage.customer_id, OutboundMessage.occurrence
        ).where(
            OutboundMessage.journey == journey,
            OutboundMessage.customer_id.in_(chunk),
            OutboundMessage.occurrence.in_(occurrences) if len(occurrences) <= 500 else true(),
        )
        for message_id, customer_id, occurrence in session.execute(stmt):
            found[(customer_id, occurrence)] = message_id
    return [found[(r["customer_id"], r["occurrence"])] for r in rows]


def notice_actions(rule: JourneyBase) -> list[Any]:
    return [a for a in rule.action_list if isinstance(a, SendSms | SendVoice)]


def when_columns(actions: Sequence[Any], as_of: date, prefix: str = "act") -> list[Any]:
    """One labelled boolean column per action that has a ``when``: evaluated in SQL, per row."""
    from sqlalchemy import case, literal

    cols = []
    for index, action in enumerate(actions):
        if action.when is not None:
            cond = compile_condition(action.when, as_of)
            cols.append(
                case((cond, literal(True)), else_=literal(False)).label(f"{prefix}_{index}")
            )
    return cols


def action_applies(c: CustomerRow, actions: Sequence[Any], index: int, prefix: str = "act") -> bool:
    return actions[index].when is None or bool(c.extra.get(f"{prefix}_{index}"))
