"""The retry budget also bounds tries whose outcome was unknown.

A try that ends "unknown" (the provider may have it, and cannot be asked) stays
``sending``; the next run asks the provider and, when it never got the message,
queues it again. Before the fix that requeue ignored the budget: under a storm
of resets and failed look-ups the fault matrix saw a message claimed a sixth
time with ``Backoff.max_attempts`` 5. Now the requeue that would exceed the
budget ends the message ``failed`` (retries_exhausted), never sent again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import Engine
from test_dispatcher_support import (
    OPEN_POLICY,
    FakeClock,
    add_customer,
    add_message,
    connect,
    make_settings,
    message,
)

from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.dispatcher import Backoff, dispatch


def _run(engine: Engine, sms: MockSMSBackend, at: datetime) -> None:
    clock = FakeClock()
    dispatch(
        engine,
        make_settings(),
        OPEN_POLICY,
        at,
        lead_time=timedelta(hours=2),
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
        reconcile_all=True,
        backoff=Backoff(max_attempts=3),
    )


def test_an_unknown_last_try_that_never_arrived_ends_failed(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        last = add_message(
            conn,
            add_customer(conn, "B1", 1),
            now,
            n=1,
            status="sending",
            attempt_id="A3",
            sending_at=now,
            attempts=3,
        )
        spare = add_message(
            conn,
            add_customer(conn, "B2", 2),
            now,
            n=2,
            status="sending",
            attempt_id="A2",
            sending_at=now,
            attempts=2,
        )
    sms = MockSMSBackend(store=MockStore())
    _run(engine, sms, now + timedelta(minutes=10))
    spent = message(engine, last)
    assert (spent.status, spent.error_code, spent.attempts) == ("failed", "retries_exhausted", 3)
    assert "gave up after 3 attempts" in (spent.status_reason or "")
    again = message(engine, spare)  # budget left: queued again and sent as its third try
    assert (again.status, again.attempts) == ("sent", 3)
    assert Counter(r.message_id for r in sms.sent) == Counter({spare: 1})
