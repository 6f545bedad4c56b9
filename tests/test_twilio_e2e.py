"""Issue 5 end to end, on SQLite and PostgreSQL, through the real pieces.

Outbox rows → ``notifications.dispatcher.dispatch`` → the Twilio adapter from
``get_backend`` (the unmodified ``twilio`` client) → the fake Twilio over HTTP →
signed status callbacks posted by the fake → the webhook app served by uvicorn on
a real socket → ``outbox.apply_provider_status``. Time is injected everywhere
(the dispatcher's and the adapter's sleeps advance a fake clock); the only waits
are thread joins on the fake's callback workers.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from plugins.fake_twilio import twilio_config
from sqlalchemy import Engine, select
from test_dispatcher_support import (
    OPEN_POLICY,
    FakeClock,
    add_customer,
    add_message,
    add_task,
    connect,
    message,
    phone,
    statuses,
    task,
)

from crm import audit
from crm.db import transaction
from crm.models import AuditLog, Customer
from notifications.backends import get_backend
from notifications.base import ChannelBackend
from notifications.dispatcher import Backoff, DispatchSummary, dispatch
from notifications.fake_twilio import FakeTwilio
from notifications.fake_twilio.server import CallbackResult
from notifications.webhooks import create_app
from tests.served_app import LazyApp, served

LEAD = timedelta(hours=2)


class Provider:
    """The fake Twilio, the served webhooks and a dispatcher wired to both."""

    def __init__(self, engine: Engine, fake: FakeTwilio, public_url: str, now: datetime) -> None:
        self.engine = engine
        self.fake = fake
        self.now = now
        self.clock = FakeClock()
        self.settings = twilio_config(
            fake, public_url, send_rate_per_second=1000.0, dispatch_concurrency=2, batch_size=100
        )

    def backend(self) -> ChannelBackend:
        """The production factory; only the sleep (fake clock) and jitter seed are injected."""
        return get_backend(self.settings, "sms", sleep=self.clock.sleep, rng=random.Random(3))

    def dispatch(self, at: datetime, **kw: Any) -> DispatchSummary:
        kw.setdefault("rng", random.Random(11))
        summary = dispatch(
            self.engine,
            self.settings,
            OPEN_POLICY,
            at,
            backends={"sms": self.backend()},
            lead_time=LEAD,
            sleep=self.clock.sleep,
            clock=self.clock,
            **kw,
        )
        assert self.fake.join_callbacks(timeout=10), "the fake's callbacks did not finish"
        return summary

    def creates_by_number(self) -> Counter[str]:
        """Create requests the fake received (answered or faulted), per destination."""
        return Counter(r.value("To") or "" for r in self.fake.api_requests("POST", "Messages.json"))

    def accepted_by_number(self) -> Counter[str]:
        """Messages the fake actually accepted, per destination: a duplicate shows as 2."""
        return Counter(m["to"] for m in self.fake.messages)


@contextmanager
def provider(engine: Engine, now: datetime, fake: FakeTwilio) -> Iterator[Provider]:
    lazy = LazyApp()
    with fake, served(lazy) as public_url:
        wired = Provider(engine, fake, public_url, now)
        lazy.app = create_app(
            engine, wired.settings, clock=lambda: now + timedelta(seconds=30), lead_time=LEAD
        )
        yield wired


@pytest.fixture
def twilio(engine: Engine, now: datetime) -> Iterator[Provider]:
    """A fake Twilio that reports every accepted message back (sent, then delivered or not)."""
    with provider(engine, now, FakeTwilio(clock=lambda: now, auto_deliver=True)) as wired:
        yield wired


def queue(engine: Engine, now: datetime, count: int) -> list[int]:
    """``count`` customers with one due SMS each (customer i has ``phone(i)``)."""
    with connect(engine) as conn:
        return [
            add_message(conn, add_customer(conn, f"C{i:03d}", i), now, n=i, occurrence=f"o{i}")
            for i in range(count)
        ]


def opted_out(engine: Engine) -> set[str]:
    with transaction(engine) as session:
        return set(
            session.scalars(select(Customer.external_id).where(Customer.sms_opt_out.is_(True)))
        )


def audit_actions(engine: Engine, message_id: int) -> list[str]:
    with transaction(engine) as session:
        return list(
            session.scalars(
                select(AuditLog.action)
                .where(AuditLog.entity == f"message:{message_id}")
                .order_by(AuditLog.seq)
            )
        )


def assert_audit_chain_ok(engine: Engine) -> None:
    with transaction(engine) as session:
        result = audit.verify(session)
    assert result.ok, result


def answered(callbacks: list[CallbackResult]) -> Counter[int]:
    return Counter(c.status for c in callbacks)


def test_outcomes_through_twilio_and_signed_callbacks(
    engine: Engine, now: datetime, twilio: Provider
) -> None:
    ids = queue(engine, now, 6)
    fake = twilio.fake
    fake.undeliverable(phone(1), 30003)
    fake.undeliverable(phone(2), 30008)
    fake.fail_number(phone(3), 21211)
    fake.fail_number(phone(4), 21610)
    customer = message(engine, ids[5]).customer_id
    with connect(engine) as conn:
        tid = add_task(conn, customer, ids[5], now)

    summary = twilio.dispatch(now)

    assert (summary.sent, summary.failed, summary.retried, summary.lost) == (4, 2, 0, 0)
    assert (summary.unresolved, summary.claimed) == (0, 6)
    rows = {mid: message(engine, mid) for mid in ids}
    assert [(r.status, r.error_code) for r in rows.values()] == [
        ("delivered", None),
        ("undelivered", "30003"),
        ("failed", "30008"),
        ("failed", "21211"),
        ("failed", "21610"),
        ("delivered", None),
    ]
    assert "unreachable handset" in (rows[ids[1]].status_reason or "")
    assert "unknown delivery error" in (rows[ids[2]].status_reason or "")
    assert "invalid 'To' phone number" in (rows[ids[3]].status_reason or "")
    assert opted_out(engine) == {"C004"}
    # Every accepted message was created once and carries our provider id and attempt.
    accepted = {m["to"]: m for m in fake.messages}
    assert sorted(accepted) == [phone(i) for i in (0, 1, 2, 5)]
    for i in (0, 1, 2, 5):
        row = rows[ids[i]]
        sid = accepted[phone(i)]["sid"]
        assert (row.provider, row.provider_message_id) == ("twilio", sid)
        query = urlencode({"message_id": row.id, "attempt_id": row.attempt_id})
        assert fake.message(sid)["_status_callback"] == (
            f"{twilio.settings.public_url}/twilio/status?{query}"
        )
        assert audit_actions(engine, row.id).count("message.sent") == 1
    assert twilio.creates_by_number() == {phone(i): 1 for i in range(6)}
    # The webhooks took every signed callback (sent + final, for four messages).
    assert answered(fake.callbacks) == {200: 8}
    # The pre-call task waits the lead time after its notice went out.
    notice, waiting = rows[ids[5]], task(engine, tid)
    assert (waiting.status, waiting.no_notice) == ("awaiting_notice", False)
    assert waiting.ready_at == notice.sent_at + LEAD
    assert_audit_chain_ok(engine)


class _CallbackFirst(FakeTwilio):
    """Holds each create response until its delivery callbacks were answered by the webhooks."""

    release: threading.Event

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> CallbackResult:
        result = super().post(url, params, headers)
        if params.get("MessageStatus") == "delivered":
            self.release.set()
        return result


def test_callbacks_that_beat_the_write_back_are_applied_and_not_lost(
    engine: Engine, now: datetime
) -> None:
    (mid,) = queue(engine, now, 1)
    customer = message(engine, mid).customer_id
    with connect(engine) as conn:
        tid = add_task(conn, customer, mid, now)
    fake = _CallbackFirst(clock=lambda: now, auto_deliver=True)
    with provider(engine, now, fake) as twilio:
        fake.release = fake.hold_next(max_wait=10, method="POST", path_contains="Messages.json")
        summary = twilio.dispatch(now)
        callbacks = fake.callbacks

    # 'sent' and 'delivered' were applied while the dispatcher still waited for Twilio.
    assert [(c.params["MessageStatus"], c.status) for c in callbacks] == [
        ("sent", 200),
        ("delivered", 200),
    ]
    assert (summary.sent, summary.lost, summary.unresolved) == (1, 0, 0)
    row = message(engine, mid)
    [accepted] = fake.messages
    assert (row.status, row.provider, row.provider_message_id) == (
        "delivered",
        "twilio",
        accepted["sid"],
    )
    # Recorded by the callback (webhook clock: now + 30 s), not overwritten by the write-back.
    assert row.sent_at == now + timedelta(seconds=30)
    assert audit_actions(engine, mid) == ["message.sent", "message.delivered"]
    assert task(engine, tid).ready_at == row.sent_at + LEAD
    assert_audit_chain_ok(engine)


def test_a_429_burst_is_retried_in_call_then_by_the_dispatcher(
    engine: Engine, now: datetime, twilio: Provider
) -> None:
    twilio.settings = twilio.settings.with_changes(dispatch_concurrency=1)
    ids = queue(engine, now, 3)
    # The adapter tries 3 times per send: the first message sees three 429s, the second one.
    twilio.fake.queue_fault(429, count=4, retry_after=2, path_contains="Messages.json")

    first = twilio.dispatch(now)

    assert (first.sent, first.retried, first.failed) == (2, 1, 0)
    assert twilio.creates_by_number() == {phone(0): 3, phone(1): 2, phone(2): 1}
    held = message(engine, ids[0])
    assert (held.status, held.attempts) == ("queued", 1)
    assert "429" in (held.status_reason or "")
    assert held.next_attempt_at >= now + timedelta(seconds=30)  # dispatcher backoff, [30, 60] s
    # The adapter waited Retry-After (plus jitter) on the injected clock, never for real.
    assert sum(1 for s in twilio.clock.sleeps if 2 <= s < 2.5) >= 3

    second = twilio.dispatch(held.next_attempt_at)

    assert (second.sent, second.claimed) == (1, 1)
    assert set(statuses(engine).values()) == {"delivered"}
    assert twilio.accepted_by_number() == {phone(i): 1 for i in range(3)}
    assert twilio.creates_by_number() == {phone(0): 4, phone(1): 2, phone(2): 1}


def test_persistent_429_gives_up_after_bounded_attempts(
    engine: Engine, now: datetime, twilio: Provider
) -> None:
    (mid,) = queue(engine, now, 1)
    twilio.fake.queue_fault(429, count=100, retry_after=1, path_contains="Messages.json")
    backoff = Backoff(max_attempts=2)

    twilio.dispatch(now, backoff=backoff)
    retry_at = message(engine, mid).next_attempt_at
    last = twilio.dispatch(retry_at, backoff=backoff)
    twilio.dispatch(retry_at + timedelta(hours=2), backoff=backoff)  # nothing left to try

    row = message(engine, mid)
    assert (row.status, row.error_code, row.attempts) == ("failed", "retries_exhausted", 2)
    assert last.failed == 1
    # 2 dispatcher attempts × 3 in-call tries, and not one request more.
    assert twilio.creates_by_number() == {phone(0): 6}
    assert twilio.fake.messages == []


def test_create_outage_requeues_with_backoff_and_loses_nothing(
    engine: Engine, now: datetime, twilio: Provider
) -> None:
    ids = queue(engine, now, 4)
    # Every create fails with 500 for the whole first run (4 messages × 3 in-call tries);
    # listing still works, so the adapter can tell nothing was accepted.
    twilio.fake.queue_fault(500, count=12, method="POST", path_contains="Messages.json")

    first = twilio.dispatch(now)

    assert (first.sent, first.retried, first.unresolved, first.lost) == (0, 4, 0, 0)
    rows = [message(engine, mid) for mid in ids]
    assert {(r.status, r.attempts) for r in rows} == {("queued", 1)}
    assert all(now + timedelta(seconds=30) <= r.next_attempt_at for r in rows)
    elapsed = timedelta(seconds=sum(twilio.clock.sleeps) + 1)  # the run's own (fake) time
    assert all(r.next_attempt_at <= now + timedelta(seconds=60) + elapsed for r in rows)
    assert twilio.fake.messages == []
    assert twilio.creates_by_number() == {phone(i): 3 for i in range(4)}
    # A run before the backoff is over sends nothing.
    assert twilio.dispatch(now + timedelta(seconds=29)).claimed == 0

    second = twilio.dispatch(max(r.next_attempt_at for r in rows))

    assert (second.sent, second.lost) == (4, 0)
    assert set(statuses(engine).values()) == {"delivered"}
    assert twilio.accepted_by_number() == {phone(i): 1 for i in range(4)}
    assert twilio.creates_by_number() == {phone(i): 4 for i in range(4)}
    assert_audit_chain_ok(engine)


def test_total_outage_leaves_rows_sending_until_the_provider_can_answer(
    engine: Engine, now: datetime, twilio: Provider
) -> None:
    ids = queue(engine, now, 3)
    # Everything answers 500, lists included: per message the create, the adapter's
    # own check and the dispatcher's check. A 500 on a create is ambiguous, so
    # without an answer to "do you have it?" nothing may be re-sent or requeued.
    twilio.fake.queue_fault(500, count=9)

    first = twilio.dispatch(now)

    assert (first.sent, first.retried, first.unresolved, first.failed) == (0, 0, 3, 0)
    assert set(statuses(engine).values()) == {"sending"}
    assert twilio.fake.messages == []
    # The next run, past the grace period, asks again, learns "not accepted", sends once.
    second = twilio.dispatch(now + timedelta(minutes=10))

    assert (second.reconciled_requeued, second.sent, second.lost) == (3, 3, 0)
    assert set(statuses(engine).values()) == {"delivered"}
    assert twilio.accepted_by_number() == {phone(i): 1 for i in range(3)}
    assert twilio.creates_by_number() == {phone(i): 2 for i in range(3)}
    for mid in ids:
        assert audit_actions(engine, mid).count("message.sent") == 1
