"""Messages expire instead of arriving late: the dispatcher side, on both databases."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from sqlalchemy import Engine, select
from test_dispatcher_support import (
    OPEN_POLICY,
    FakeClock,
    add_customer,
    add_message,
    add_task,
    connect,
    make_settings,
    message,
    task,
)

from crm.models import AuditLog, CallTask
from notifications import outbox
from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.base import OutgoingMessage, SendResult
from notifications.dispatcher import DispatchSummary, dispatch
from notifications.outbox import apply_provider_status
from tests.policies import make_policy

pytest_plugins = ["plugins.fake_twilio"]

LEAD = timedelta(hours=2)


def _run(engine: Engine, sms: MockSMSBackend, at: datetime, **kw: object) -> DispatchSummary:
    clock = FakeClock()
    kw.setdefault("sleep", clock.sleep)
    kw.setdefault("clock", clock)
    return dispatch(
        engine,
        make_settings(),
        kw.pop("policy", OPEN_POLICY),  # type: ignore[arg-type]
        at,
        lead_time=LEAD,
        backends={"sms": sms},
        **kw,  # type: ignore[arg-type]
    )


def _audit(engine: Engine, action: str) -> list[AuditLog]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditLog).where(AuditLog.action == action)).all())


def test_past_validity_ends_expired_with_a_reason_and_is_never_sent(
    engine: Engine, now: datetime
) -> None:
    with connect(engine) as conn:
        c = add_customer(conn, "E1", 1)
        late = add_message(
            conn, c, now, n=1, occurrence="late", journey="birthday", valid_until=now
        )
        fine = add_message(
            conn,
            c,
            now,
            n=1,
            occurrence="fine",
            journey="birthday",
            valid_until=now + timedelta(hours=1),
        )
        unbounded = add_message(conn, c, now, n=1, occurrence="open", journey="birthday")
    sms = MockSMSBackend(store=MockStore())
    summary = _run(engine, sms, now)
    assert summary.expired == 1 and summary.expired_reasons == {"valid_until": 1}
    assert {r.message_id for r in sms.sent} == {fine, unbounded}
    row = message(engine, late)
    assert row.status == "expired"
    assert row.status_reason.startswith("valid_until: not sent before it stopped being valid at")
    (entry,) = _audit(engine, "message.expired")
    assert entry.entity == f"message:{late}" and '"from":"queued"' in entry.details


def test_a_retry_waiting_past_its_validity_expires_at_once(engine: Engine, now: datetime) -> None:
    """Not due (its next try is later), but already invalid: the sweep expires it."""
    with connect(engine) as conn:
        c = add_customer(conn, "E2", 2)
        waiting = add_message(
            conn,
            c,
            now,
            n=2,
            journey="grace_credit",
            valid_until=now + timedelta(minutes=30),
            next_attempt_at=now + timedelta(hours=2),
        )
    sms = MockSMSBackend(store=MockStore())
    early = _run(engine, sms, now + timedelta(minutes=10))
    assert (early.expired, message(engine, waiting).status) == (0, "queued")
    later = _run(engine, sms, now + timedelta(minutes=31))
    assert (later.expired, message(engine, waiting).status) == (1, "expired")
    assert sms.calls == 0


def test_a_window_that_opens_after_the_validity_expires_instead_of_deferring(
    engine: Engine, now: datetime
) -> None:
    """now is 10:00 Shanghai; the window opens 09:00 tomorrow, after the greeting's day ends."""
    daytime = make_policy((time(9, 0), time(20, 0)))
    evening = now + timedelta(hours=11)  # 21:00 Shanghai: the window is closed
    with connect(engine) as conn:
        c = add_customer(conn, "E3", 3, tz="Asia/Shanghai")
        greeting = add_message(
            conn,
            c,
            now,
            n=3,
            journey="birthday",
            valid_until=datetime(2026, 11, 21, 16, 0, tzinfo=now.tzinfo),  # 24:00 Shanghai
        )
        other = add_message(conn, c, now, n=3, occurrence="o2", journey="callback")
    summary = _run(engine, MockSMSBackend(store=MockStore()), evening, policy=daytime)
    assert (summary.expired, summary.deferred) == (1, 1)
    assert summary.expired_reasons == {"window_after_validity": 1}
    assert message(engine, greeting).status == "expired"
    assert (
        "next send window opens at 2026-11-22 01:00 UTC" in message(engine, greeting).status_reason
    )
    assert message(engine, other).status == "queued"


def test_a_notice_whose_call_is_off_expires_and_a_waiting_task_is_not_stranded(
    engine: Engine, now: datetime
) -> None:
    with connect(engine) as conn:
        c1 = add_customer(conn, "P1", 11)
        c2 = add_customer(conn, "P2", 12)
        off = add_message(conn, c1, now, n=11, occurrence="off")
        closed_task = add_task(conn, c1, off, now)
        conn.execute(  # the call was cancelled (say, by a manager) while its notice waited
            CallTask.__table__.update()
            .where(CallTask.id == closed_task)
            .values(status="cancelled", completed_at=now)
        )
        expiring = add_message(
            conn, c2, now, n=12, occurrence="exp", valid_until=now - timedelta(minutes=1)
        )
        waiting_task = add_task(conn, c2, expiring, now)
    summary = _run(engine, MockSMSBackend(store=MockStore()), now)
    assert summary.expired == 2
    off_row = message(engine, off)
    assert (off_row.status, off_row.status_reason) == (
        "expired",
        "call_closed: the call it announced is no longer planned",
    )
    # The expired notice does not strand its task: ready now, no notice, with the reason.
    t = task(engine, waiting_task)
    assert (t.status, t.no_notice) == ("ready", True)
    assert t.details["no_notice_reason"].startswith("notice expired: valid_until:")
    assert task(engine, closed_task).status == "cancelled"
    ready = _audit(engine, "task.ready")
    assert [r.entity for r in ready] == [f"task:{waiting_task}"]


class ExpiresWhileQueuedForSending(MockSMSBackend):
    """The first send takes 20 minutes (a slow provider): the second message's time runs out."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(store=MockStore())
        self.clock = clock

    def _send(self, msg: OutgoingMessage) -> SendResult:
        result = super()._send(msg)
        self.clock.advance(20 * 60)
        return result


def test_validity_running_out_between_claim_and_send_expires_from_sending(
    engine: Engine, now: datetime
) -> None:
    with connect(engine) as conn:
        c = add_customer(conn, "S1", 21)
        first = add_message(conn, c, now, n=21, occurrence="a", journey="callback")
        second = add_message(
            conn,
            c,
            now,
            n=21,
            occurrence="b",
            journey="birthday",
            valid_until=now + timedelta(minutes=10),
        )
    clock = FakeClock()
    sms = ExpiresWhileQueuedForSending(clock)
    summary = dispatch(
        engine,
        make_settings(dispatch_concurrency=1),
        OPEN_POLICY,
        now,
        lead_time=LEAD,
        backends={"sms": sms},
        clock=clock,
        sleep=clock.sleep,
    )
    assert (summary.sent, summary.expired) == (1, 1)
    assert [r.message_id for r in sms.sent] == [first]
    assert message(engine, second).status == "expired"
    (entry,) = _audit(engine, "message.expired")
    assert '"from":"sending"' in entry.details


def test_the_time_left_goes_to_the_provider(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        c = add_customer(conn, "V1", 31)
        add_message(
            conn, c, now, n=31, journey="birthday", valid_until=now + timedelta(seconds=90.5)
        )
        add_message(conn, c, now, n=31, occurrence="o2", journey="callback")
    seen: list[int | None] = []

    class Recording(MockSMSBackend):
        def _send(self, msg: OutgoingMessage) -> SendResult:
            seen.append(msg.valid_for)
            return super()._send(msg)

    _run(engine, Recording(store=MockStore()), now)
    assert sorted(seen, key=lambda v: v or 0) == [None, 90]


@pytest.mark.parametrize("code, status", [("30036", "expired"), ("30003", "undelivered")])
def test_provider_error_30036_means_expired(
    engine: Engine, now: datetime, code: str, status: str
) -> None:
    from crm.db import transaction

    with connect(engine) as conn:
        c = add_customer(conn, "X1", 41)
        mid = add_message(conn, c, now, n=41, status="sent", provider_message_id="SM1", sent_at=now)
        t = add_task(conn, c, mid, now)
    with transaction(engine) as session:
        apply_provider_status(session, "SM1", "undelivered", code, now + timedelta(hours=1))
    row = message(engine, mid)
    assert (row.status, row.error_code) == (status, code)
    assert task(engine, t).status == "ready"  # either way, the call goes ahead unannounced
    assert task(engine, t).details["no_notice_reason"].startswith(f"notice {status}:")


def test_expired_is_final(engine: Engine, now: datetime) -> None:
    assert (
        outbox.transition_reason("expired", "queued")
        == "expired is final; a message never leaves it"
    )
    assert outbox.transition_reason("queued", "expired") is None
    assert outbox.transition_reason("sending", "expired") is None


def test_twilio_gets_the_time_left_as_validity_period_capped_at_ten_hours(
    engine: Engine, now: datetime, fake_twilio, twilio_settings
) -> None:
    """The real twilio client against the fake: ValidityPeriod is what is left, at most 36,000 s."""
    from notifications.backends import get_backend

    with connect(engine) as conn:
        c = add_customer(conn, "T1", 51)
        add_message(
            conn,
            c,
            now,
            n=51,
            occurrence="2h",
            journey="birthday",
            valid_until=now + timedelta(hours=2),
        )
        add_message(
            conn,
            c,
            now,
            n=51,
            occurrence="20h",
            journey="birthday",
            body="Happy birthday!",
            valid_until=now + timedelta(hours=20),
        )
        add_message(conn, c, now, n=51, occurrence="none", journey="callback", body="Hello")
    clock = FakeClock()
    sms = get_backend(twilio_settings, "sms", sleep=clock.sleep)
    summary = dispatch(
        engine,
        twilio_settings,
        OPEN_POLICY,
        now,
        lead_time=LEAD,
        backends={"sms": sms},
        clock=clock,
        sleep=clock.sleep,
    )
    assert summary.sent == 3
    posted = fake_twilio.api_requests("POST", "Messages.json")
    periods = {r.value("Body"): r.value("ValidityPeriod") for r in posted}
    assert periods == {
        "Your manager will call you soon.": "7200",
        "Happy birthday!": "36000",
        "Hello": None,
    }
