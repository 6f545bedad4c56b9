"""Racing status reports: two callbacks for a message the dispatcher has not written back yet.

Both name the row by the callback URL's ``message_id`` and ``attempt_id`` (the
provider id is not stored yet). The first locks the row and moves it to
``sent``; the second waits on the lock. Before the fix the second looked the
row up as "still ``sending`` under this attempt" — which, once the first had
committed, it no longer was: PostgreSQL re-checked the condition on the new
row version, found nothing, and the report (a 404 at the webhook) was lost, so
a delivered message stayed ``sent`` forever. The fault matrix found it with
callbacks duplicated and out of order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from test_dispatcher_support import add_customer, add_message, connect, message

from crm.db import make_engine, session_factory, transaction
from crm.errors import NotFound
from notifications import outbox

SID = "SM" + "a" * 32


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    tables = "outbound_messages, call_tasks, customers, audit_log, audit_head"
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


def _in_flight(engine: Engine, now: datetime) -> int:
    with connect(engine) as conn:
        cid = add_customer(conn, "R1", 1)
        return add_message(
            conn, cid, now, n=1, status="sending", attempt_id="A1", sending_at=now, attempts=1
        )


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(found)


def test_a_report_waiting_behind_another_is_still_applied(pg_engine: Engine, now: datetime) -> None:
    mid = _in_flight(pg_engine, now)
    first = session_factory(pg_engine)()
    first.begin()
    outbox.apply_provider_status(
        first, SID, "sent", None, now, message_id=mid, attempt_id="A1", provider="twilio"
    )  # holds the row lock until it commits
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with transaction(pg_engine) as session:
                found = outbox.apply_provider_status(
                    session,
                    SID,
                    "delivered",
                    None,
                    now + timedelta(seconds=1),
                    message_id=mid,
                    attempt_id="A1",
                    provider="twilio",
                )
                outcome["status"] = found.status
        except NotFound as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=second)
    worker.start()
    try:
        waited = threading.Event()
        for _ in range(600):  # until the second report is queued behind the first's lock
            if _waiting_on_a_lock(pg_engine):
                break
            waited.wait(0.05)
        else:
            raise AssertionError("the second report never waited for the first")
    finally:
        first.commit()
        first.close()
        worker.join(30)
    assert "error" not in outcome, outcome
    assert outcome == {"status": "delivered"}
    row = message(pg_engine, mid)
    assert (row.status, row.provider_message_id) == ("delivered", SID)
    with Session(pg_engine) as session:
        actions = session.execute(
            text("SELECT action FROM audit_log WHERE entity = :e ORDER BY seq"),
            {"e": f"message:{mid}"},
        ).scalars()
        assert list(actions) == ["message.sent", "message.delivered"]


def test_a_report_for_another_provider_message_of_the_attempt_is_not_applied(
    engine: Engine, now: datetime
) -> None:
    """Found by attempt, but the row already has a different provider id: not this message."""
    mid = _in_flight(engine, now)
    with transaction(engine) as session:
        outbox.apply_provider_status(
            session, SID, "sent", None, now, message_id=mid, attempt_id="A1"
        )
    other = "SM" + "b" * 32
    with pytest.raises(NotFound), transaction(engine) as session:
        outbox.apply_provider_status(
            session, other, "delivered", None, now, message_id=mid, attempt_id="A1"
        )
    assert (message(engine, mid).status, message(engine, mid).provider_message_id) == ("sent", SID)
