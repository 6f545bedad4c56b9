"""A simulated week: the scheduler's real jobs over seven days on an injected clock.

Seeded customers live in Asia/Shanghai, Asia/Urumqi, Europe/London and
America/New_York. The jobs fire at the times the schedule's own cron triggers
give (care day 08:00, dispatcher every 5 minutes, escalation 07:30, operator
time); the process is down for 45 hours in the middle and catches up when it
comes back. Balances drop during the week (a balances feed), so grace credits,
deadlines and suspensions happen. At the end:

- every message is sent inside the customer's local send window, or ended
  suppressed or expired with a reason; nothing is left in 'sending';
- a message whose local window on its day was fully served by a running
  scheduler went out that very day;
- no greeting after the customer's local birthday, no grace notice on or after
  its top-up deadline day or after the line was suspended;
- the missed care days ran in order, each as its own date; the greetings the
  downtime made late expired with a reason;
- every pre-call task planned within the week is ready (or closed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from test_dispatcher_support import FakeClock

import seed
from crm import process
from crm.models import AuditLog, CallTask, Customer, GracePeriod, JobRun, OutboundMessage
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from tests.builders import RULES_DIR
from vipcare.scheduler import jobs
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule
from vipcare.settings import Settings

OPERATOR = ZoneInfo("Asia/Shanghai")
ZONES = ("Asia/Shanghai", "Asia/Urumqi", "Europe/London", "America/New_York")
MONDAY = date(2026, 11, 23)
WEEK = [MONDAY + timedelta(days=i) for i in range(7)]
WINDOW = (time(9, 0), time(20, 0))


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=OPERATOR).astimezone(UTC)


START = local(MONDAY, 6, 0)
DOWN = (local(WEEK[2], 13, 0), local(WEEK[4], 10, 0))
"""The scheduler process is down from Wednesday 13:00 to Friday 10:00 (operator time)."""
END = local(MONDAY + timedelta(days=7), 9, 0)
"""Monday 09:00 of the next week: New York's Sunday window has closed."""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def simulate(
    rt: jobs.Runtime,
    clock: Clock,
    start: datetime,
    end: datetime,
    down: tuple[datetime, datetime],
    events: dict[datetime, Callable[[], None]],
) -> list[tuple[datetime, str]]:
    """Fire the real jobs at the schedule's own trigger times; the process is down in ``down``.

    At every start (and restart) each job runs once, as the daemon does. Jobs due
    at the same instant run in schedule order. Returns what fired, when.
    """
    order = [spec.id for spec in rt.schedule.jobs()]
    triggers = {job: rt.schedule.trigger(job) for job in order}
    fired: list[tuple[datetime, str]] = []
    pending = sorted(events.items())

    def at(instant: datetime) -> None:
        while pending and pending[0][0] <= instant:
            clock.now = pending[0][0]
            pending.pop(0)[1]()
        clock.now = instant

    def boot(instant: datetime) -> dict[str, datetime]:
        at(instant)
        for job in order:
            jobs.run_job(rt, job)
            fired.append((instant, job))
        return {
            j: triggers[j].get_next_fire_time(None, instant + timedelta(seconds=1)) for j in order
        }

    nxt = boot(start)
    while True:
        job = min(order, key=lambda j: (nxt[j], order.index(j)))
        when = nxt[job]
        if when > end:
            at(end)
            return fired
        if down[0] <= when < down[1]:
            nxt = boot(down[1])  # the process comes back: start-up runs, then the triggers
            continue
        at(when)
        jobs.run_job(rt, job)
        fired.append((when, job))
        nxt[job] = triggers[job].get_next_fire_time(when, when + timedelta(seconds=1))


def _prepare(engine: Engine) -> dict[str, Any]:
    """600 seeded customers spread over the four zones, with birthdays and debts in the week."""
    seed.generate(engine, 600, seed=11, as_of=MONDAY - timedelta(days=1))
    with engine.begin() as conn:
        ids = list(conn.execute(select(Customer.id).order_by(Customer.id)).scalars())
        for i, cid in enumerate(ids):
            values: dict[str, Any] = {"timezone": ZONES[i % 4], "status": "active"}
            if i % 5 == 0:  # a birthday on every day of the week, in every zone
                born = date(1985, 11, 23) + timedelta(days=(i // 5) % 7)
                values.update(birthday=born, birth_mmdd=born.month * 100 + born.day)
            elif i % 5 == 1:
                values.update(birthday=date(1985, 6, 1), birth_mmdd=601)
            if i % 23 == 0:
                values["balance"] = -5  # Monday's grace: the credit covers it (repaid)
            elif i % 23 == 1:
                values["balance"] = -80  # Monday's grace, still negative at the deadline
            elif values.get("balance") is None:
                values["balance"] = 100
            conn.execute(update(Customer).where(Customer.id == cid).values(**values))
    return {"ids": ids}


def _drop_balances(engine: Engine, ids: list[int], which: int) -> Callable[[], None]:
    """A balances feed: some lines go negative (a grace the next care run grants)."""

    def feed() -> None:
        with engine.begin() as conn:
            conn.execute(
                update(Customer)
                .where(Customer.id.in_([c for i, c in enumerate(ids) if i % 23 == which]))
                .values(balance=-60)
            )

    return feed


def _in_window(when: datetime, tz: str) -> bool:
    t = when.astimezone(ZoneInfo(tz)).time()
    return WINDOW[0] <= t <= WINDOW[1]


def _window_fully_served(day: date, tz: str) -> bool:
    """The customer's window on ``day`` lies wholly while the scheduler ran."""
    zone = ZoneInfo(tz)
    opens = datetime.combine(day, WINDOW[0], tzinfo=zone)
    closes = datetime.combine(day, WINDOW[1], tzinfo=zone)
    return (closes <= DOWN[0] or opens >= DOWN[1]) and opens >= START and closes <= END


@pytest.mark.slow
def test_a_week_left_to_the_scheduler(engine: Engine, db_url: str, prefect_harness: None) -> None:
    info = _prepare(engine)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=db_url,
        timezone="Asia/Shanghai",
        rules_dir=RULES_DIR,
        send_rate_per_second=1000,
        catch_up_days=7,
    )
    clock = Clock(START)
    fake = FakeClock()
    sms, voice = MockSMSBackend(store=MockStore()), MockVoiceBackend(store=MockStore())
    rt = jobs.Runtime(
        settings=settings,
        engine=engine,
        schedule=Schedule.from_settings(settings),
        clock=clock,
        owner=process.new_owner(),
        dispatch_options={
            "backends": {"sms": sms, "voice": voice},
            "sleep": fake.sleep,
            "clock": fake,
        },
    )
    days_mark = {CARE_DAY: MONDAY - timedelta(days=1), ESCALATION: MONDAY - timedelta(days=1)}
    from vipcare.scheduler import days

    for job, day in days_mark.items():
        days.mark_completed(engine, job, day, START)  # it ran last week
    events = {
        local(WEEK[1], 7, 0): _drop_balances(engine, info["ids"], 2),  # Tuesday's grace
        local(WEEK[2], 7, 0): _drop_balances(engine, info["ids"], 3),  # Wednesday's
        local(WEEK[3], 7, 0): _drop_balances(engine, info["ids"], 4),  # Thursday: while down
    }
    fired = simulate(rt, clock, START, END, DOWN, events)
    assert sum(1 for _, j in fired if j == DISPATCH) > 1000  # every 5 minutes, except down

    with Session(engine) as session:
        messages = session.execute(
            select(OutboundMessage, Customer.timezone).join(
                Customer, Customer.id == OutboundMessage.customer_id
            )
        ).all()
    with engine.connect() as conn:
        deferred_from = {}
        for row in conn.execute(
            select(AuditLog.entity, AuditLog.details)
            .where(AuditLog.action == "message.deferred")
            .order_by(AuditLog.seq)
        ):
            deferred_from.setdefault(row.entity, json.loads(row.details)["was"])
        suspended_at = {
            r.customer_id: r.at
            for r in conn.execute(
                select(AuditLog.customer_id, AuditLog.at).where(
                    AuditLog.action == "customer.suspended"
                )
            )
        }
        graces = conn.execute(select(GracePeriod)).all()
        tasks = conn.execute(select(CallTask)).all()
        care_runs = conn.execute(
            select(JobRun.care_day, JobRun.status)
            .where(JobRun.kind == "care_day")
            .order_by(JobRun.id)
        ).all()

    # The missed care days ran at restart, in order, each as its own date; each day once.
    assert [(r.care_day, r.status) for r in care_runs] == [(d, "succeeded") for d in WEEK] + [
        (MONDAY + timedelta(days=7), "succeeded")
    ]
    assert graces and any(g.status == "suspended" for g in graces)

    counts: dict[str, int] = {}
    late_but_valid = 0
    for m, tz in messages:
        counts[m.status] = counts.get(m.status, 0) + 1
        assert m.status not in ("sending", "failed"), (m.id, m.status, m.status_reason)
        if m.status in ("suppressed", "expired"):
            assert m.status_reason, m.id
            continue
        if m.status == "queued":  # next week's work: not yet due
            assert m.scheduled_for > END or m.next_attempt_at, (m.id, m.scheduled_for)
            continue
        assert m.sent_at is not None and _in_window(m.sent_at, tz), (m.id, m.sent_at, tz)
        first = m.scheduled_for
        if f"message:{m.id}" in deferred_from:
            first = datetime.fromisoformat(deferred_from[f"message:{m.id}"])
        due_day = first.astimezone(ZoneInfo(tz)).date()
        sent_day = m.sent_at.astimezone(ZoneInfo(tz)).date()
        if _window_fully_served(due_day, tz):
            assert sent_day == due_day, (m.id, m.journey, first, m.sent_at, tz)
        else:
            late_but_valid += sent_day != due_day
        if m.valid_until is not None:
            assert m.sent_at < m.valid_until, (m.id, m.sent_at, m.valid_until)
        if m.journey == "grace_credit" and m.occurrence.startswith("grace:"):
            deadline = next(
                g.deadline
                for g in graces
                if g.customer_id == m.customer_id and g.occurrence == m.occurrence
            )
            # never after the end of the deadline day (the customer's own day) ...
            end_of_deadline = datetime.combine(
                deadline + timedelta(days=1), time(0), tzinfo=ZoneInfo(tz)
            )
            assert m.sent_at < end_of_deadline, (m.id, m.sent_at, deadline, tz)
            # ... and never after the line was suspended
            if m.customer_id in suspended_at:
                assert m.sent_at < suspended_at[m.customer_id]

    # The downtime made some greetings too late: they expired, with the reason.
    with engine.connect() as conn:
        expired = conn.execute(
            select(OutboundMessage.journey, OutboundMessage.status_reason).where(
                OutboundMessage.status == "expired"
            )
        ).all()
    assert any(e.journey == "birthday" for e in expired), counts
    codes = {e.status_reason.split(":")[0] for e in expired}
    # the dispatcher's own expiries, and what a suspension or closure withdrew
    assert codes <= {
        "valid_until",
        "window_after_validity",
        "call_closed",
        "suspended",
        "closed",
        "do_not_call",
        "cancelled",
    }, codes
    # Greetings: one per birthday in the week; sent on the local birthday or expired.
    with engine.connect() as conn:
        greetings = conn.execute(
            select(
                OutboundMessage.status,
                OutboundMessage.sent_at,
                Customer.birthday,
                Customer.timezone,
            )
            .join(Customer, Customer.id == OutboundMessage.customer_id)
            .where(OutboundMessage.journey == "birthday")
        ).all()
    for g in greetings:
        if g.sent_at is not None:
            local_day = g.sent_at.astimezone(ZoneInfo(g.timezone)).date()
            assert (local_day.month, local_day.day) <= (g.birthday.month, g.birthday.day)

    # Every pre-call task planned within the week became ready (or was closed).
    planned = [t for t in tasks if t.scheduled_on <= WEEK[-1]]
    assert planned
    stuck = [(t.id, t.kind, t.scheduled_on) for t in planned if t.status == "awaiting_notice"]
    assert stuck == []
    assert any(t.notice_message_id and not t.no_notice for t in planned)
    print(f"\nsimulated week: {len(messages)} messages {counts}; late but valid {late_but_valid}")
