"""Shared helpers for the outbox, policy, dispatcher and crash tests (no tests here).

Rows are inserted with Core inserts, so the tests depend on the schema only,
not on the journeys that normally queue messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from crm.models import CallTask, Customer, OutboundMessage
from notifications.config import NotificationConfig
from tests.policies import ALL_DAY, make_policy

OPEN_POLICY = make_policy(ALL_DAY, service=(100, 700), marketing=(100, 700))
"""Open at every instant, caps out of the way: for tests that are not about the policy."""
DAYTIME_POLICY = make_policy((time(9, 0), time(20, 0)))


def phone(n: int) -> str:
    """A valid, distinct Chinese mobile number in E.164."""
    return f"+86138{n:08d}"


def make_settings(**overrides: Any) -> NotificationConfig:
    values: dict[str, Any] = {
        "send_rate_per_second": 1000.0,
        "dispatch_concurrency": 2,
        "batch_size": 100,
        "public_url": "",
    }
    values.update(overrides)
    return NotificationConfig(**values)


class FakeClock:
    """Monotonic nanoseconds that only move when someone sleeps; thread-safe.

    ``sleep(d)`` moves the clock to at least ``now + d`` as the sleeper saw it,
    never backwards, so waiting for a slot lands exactly on it.
    """

    def __init__(self, start_ns: int = 1_000_000_000_000) -> None:
        self._now = start_ns
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0, round(seconds * 1_000_000_000))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += round(seconds * 1_000_000_000)


def add_customer(
    conn: Connection,
    ref: str,
    n: int,
    *,
    tz: str = "Asia/Shanghai",
    locale: str = "zh-CN",
    sms_opt_out: bool = False,
    do_not_call: bool = False,
) -> int:
    return int(
        conn.execute(
            insert(Customer)
            .values(
                external_id=ref,
                name=f"Customer {ref}",
                phone=phone(n),
                locale=locale,
                timezone=tz,
                tier="gold",
                tier_rank=1,
                balance=0,
                credit_limit=0,
                status="active",
                sms_opt_out=sms_opt_out,
                do_not_call=do_not_call,
            )
            .returning(Customer.id)
        ).scalar_one()
    )


def add_message(
    conn: Connection,
    customer_id: int,
    at: datetime,
    *,
    n: int,
    occurrence: str = "o",
    template: str = "notice",
    journey: str = "precall_notice",
    channel: str = "sms",
    category: str = "service",
    body: str = "Your manager will call you soon.",
    locale: str = "en",
    status: str = "queued",
    scheduled_for: datetime | None = None,
    **extra: Any,
) -> int:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "channel": channel,
        "category": category,
        "template": template,
        "journey": journey,
        "occurrence": occurrence,
        "locale": locale,
        "to_phone": phone(n),
        "body": body,
        "scheduled_for": scheduled_for or at,
        "status": status,
        "attempts": 0,
        "rule_hash": "f" * 64,
        "created_at": at,
        "updated_at": at,
    }
    values.update(extra)
    return int(
        conn.execute(
            insert(OutboundMessage).values(**values).returning(OutboundMessage.id)
        ).scalar_one()
    )


def add_task(conn: Connection, customer_id: int, notice_id: int | None, at: datetime) -> int:
    return int(
        conn.execute(
            insert(CallTask)
            .values(
                customer_id=customer_id,
                kind="callback",
                journey="callback",
                occurrence=f"callback:{notice_id}",
                status="awaiting_notice",
                priority=0,
                due_on=at.date(),
                scheduled_on=at.date(),
                no_notice=False,
                notice_message_id=notice_id,
                details={"why": "callback due"},
                attempt=1,
                rule_hash="e" * 64,
                created_at=at,
            )
            .returning(CallTask.id)
        ).scalar_one()
    )


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def seed_simple(engine: Engine, at: datetime, count: int, **message_kw: Any) -> list[int]:
    """``count`` customers with one due SMS each; returns the message ids."""
    ids = []
    with connect(engine) as conn:
        for i in range(count):
            cid = add_customer(conn, f"C{i:04d}", i)
            ids.append(add_message(conn, cid, at, n=i, occurrence=f"o{i}", **message_kw))
    return ids


def message(engine: Engine, message_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(OutboundMessage.__table__).where(OutboundMessage.id == message_id)
        ).one()


def statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {
            r.id: r.status for r in conn.execute(select(OutboundMessage.id, OutboundMessage.status))
        }


def task(engine: Engine, task_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(CallTask.__table__).where(CallTask.id == task_id)).one()


def later(at: datetime, **kw: float) -> datetime:
    return at + timedelta(**kw)
