"""The dispatcher end to end on SQLite and PostgreSQL, with the mock backends.

Time is injected (``now`` fixture, a fake monotonic clock); nothing sleeps.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from test_dispatcher_support import (
    DAYTIME_POLICY,
    OPEN_POLICY,
    FakeClock,
    add_customer,
    add_message,
    add_task,
    connect,
    make_settings,
    message,
    phone,
    seed_simple,
    statuses,
    task,
)

from crm import audit
from crm.db import transaction
from crm.models import AuditLog, Customer
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from notifications.base import OutgoingMessage, SendResult
from notifications.dispatcher import Backoff, DispatchSummary, dispatch
from notifications.errors import ConfigurationError
from tests.policies import ALL_DAY, make_policy


class Harness:
    """One mock provider (shared store for SMS and voice) and a fake clock."""

    def __init__(self, engine: Engine, **settings: Any) -> None:
        self.engine = engine
        self.store = MockStore()
        self.sms = MockSMSBackend(store=self.store)
        self.voice = MockVoiceBackend(store=self.store)
        self.clock = FakeClock()
        self.settings = make_settings(**settings)

    def run(self, at: datetime, policy: Any = OPEN_POLICY, **kw: Any) -> DispatchSummary:
        kw.setdefault("rng", random.Random(7))
        kw.setdefault("lead_time", timedelta(hours=2))
        return dispatch(
            self.engine,
            self.settings,
            policy,
            at,
            backends={"sms": self.sms, "voice": self.voice},
            sleep=self.clock.sleep,
            clock=self.clock,
            **kw,
        )

    def provider_counts(self) -> Counter[int]:
        return Counter(r.message_id for r in self.store.records())


def _audit(engine: Engine, action: str) -> list[AuditLog]:
    with transaction(engine) as s:
        return list(
            s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.seq))
        )


def _verify(engine: Engine) -> None:
    with transaction(engine) as s:
        result = audit.verify(s)
    assert result.ok, result


def test_sends_what_is_due_once(engine: Engine, now: datetime) -> None:
    ids = seed_simple(engine, now, 3)
    with connect(engine) as conn:
        cid = add_customer(conn, "LATER", 50)
        future = add_message(conn, cid, now, n=50, scheduled_for=now + timedelta(hours=1))
    h = Harness(engine)
    summary = h.run(now)
    assert (summary.sent, summary.claimed, summary.failed, summary.suppressed) == (3, 3, 0, 0)
    by_message = {r.message_id: r for r in h.store.records()}
    for mid in ids:
        row = message(engine, mid)
        assert row.status == "sent" and row.attempts == 1
        assert row.provider == "mock"
        assert row.provider_message_id == by_message[mid].sid
        assert row.attempt_id == by_message[mid].attempt_id and row.attempt_id
        assert row.sent_at is not None and row.sent_at >= now
    assert message(engine, future).status == "queued"
    sent = _audit(engine, "message.sent")
    assert sorted(json.loads(a.details)["message_id"] for a in sent) == ids
    assert sent[0].customer_ref == "C0000" and sent[0].rule_hash == "f" * 64
    assert json.loads(sent[0].details)["to"] == "+86138****0000"
    # a second run sends nothing again
    again = h.run(now + timedelta(minutes=1))
    assert (again.sent, again.claimed) == (0, 0)
    assert h.provider_counts() == Counter(dict.fromkeys(ids, 1))
    _verify(engine)


def test_send_window_across_time_zones(engine: Engine, now: datetime) -> None:
    """At 02:00 UTC: 10:00 in Shanghai (send), 21:00 in New York, 02:00 in London (defer)."""
    with connect(engine) as conn:
        ids = {}
        for i, tz in enumerate(("Asia/Shanghai", "America/New_York", "Europe/London")):
            cid = add_customer(conn, f"TZ{i}", i, tz=tz)
            ids[tz] = add_message(conn, cid, now, n=i)
    h = Harness(engine)
    first = h.run(now, DAYTIME_POLICY)
    assert (first.sent, first.deferred) == (1, 2)
    assert message(engine, ids["Asia/Shanghai"]).status == "sent"
    london, new_york = (
        message(engine, ids["Europe/London"]),
        message(engine, ids["America/New_York"]),
    )
    assert (london.status, london.scheduled_for) == (
        "queued",
        datetime(2026, 11, 21, 9, 0, tzinfo=now.tzinfo),
    )
    assert (new_york.status, new_york.scheduled_for) == (
        "queued",
        datetime(2026, 11, 21, 14, 0, tzinfo=now.tzinfo),
    )
    deferred = _audit(engine, "message.deferred")
    assert len(deferred) == 2
    assert "outside the send window 09:00-20:00" in json.loads(deferred[0].details)["reason"]
    # nothing is due in between
    assert h.run(datetime(2026, 11, 21, 8, 59, tzinfo=now.tzinfo), DAYTIME_POLICY).claimed == 0
    nine_london = h.run(datetime(2026, 11, 21, 9, 0, tzinfo=now.tzinfo), DAYTIME_POLICY)
    assert (nine_london.sent, nine_london.deferred) == (1, 0)
    nine_ny = h.run(datetime(2026, 11, 21, 14, 0, tzinfo=now.tzinfo), DAYTIME_POLICY)
    assert nine_ny.sent == 1
    assert set(statuses(engine).values()) == {"sent"}
    _verify(engine)


def test_frequency_caps_suppress_with_reason(engine: Engine, now: datetime) -> None:
    policy = make_policy(ALL_DAY, service=(3, 4))
    with connect(engine) as conn:
        busy = add_customer(conn, "BUSY", 1)
        # two already sent today (Shanghai day), one five days ago
        sent_before = [
            now - timedelta(hours=1),
            now - timedelta(minutes=5),
            now - timedelta(days=5),
        ]
        for k, when in enumerate(sent_before):
            add_message(conn, busy, now, n=1, occurrence=f"old{k}", status="sent", sent_at=when)
        q = [add_message(conn, busy, now, n=1, occurrence=f"new{k}") for k in range(3)]
        fresh = add_customer(conn, "FRESH", 2)
        f = [add_message(conn, fresh, now, n=2, occurrence=f"f{k}") for k in range(4)]
    h = Harness(engine)
    summary = h.run(now, policy)
    # BUSY: 2 today + 1 earlier this week → 1 more today (day cap 3), then the week cap (4) too.
    assert [message(engine, m).status for m in q] == ["sent", "suppressed", "suppressed"]
    assert message(engine, q[1]).status_reason.startswith("cap_day: daily cap reached: 3 service")
    # FRESH: 3 a day
    assert [message(engine, m).status for m in f] == ["sent", "sent", "sent", "suppressed"]
    assert summary.suppressed_reasons == {"cap_day": 3}
    # the week cap: a day later BUSY has 4 in the last 7 days
    with connect(engine) as conn:
        late = add_message(
            conn, busy, now, n=1, occurrence="tomorrow", scheduled_for=now + timedelta(days=1)
        )
    h.run(now + timedelta(days=1), policy)
    assert message(engine, late).status_reason.startswith("cap_week: weekly cap reached: 4 service")
    suppressed = _audit(engine, "message.suppressed")
    assert len(suppressed) == 4 and suppressed[0].customer_ref == "BUSY"
    assert json.loads(suppressed[0].details)["policy_rule_id"] == "contact_policy"


def test_opt_out_after_queuing_suppresses_and_task_goes_without_notice(
    engine: Engine, now: datetime
) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "OPT", 1)
        mid = add_message(conn, cid, now, n=1)
        tid = add_task(conn, cid, mid, now)
        conn.execute(update(Customer).where(Customer.id == cid).values(sms_opt_out=True))
    h = Harness(engine)
    summary = h.run(now)
    assert (summary.suppressed, summary.sent) == (1, 0)
    row = message(engine, mid)
    assert (row.status, row.status_reason) == ("suppressed", "opt_out: customer opted out of SMS")
    t = task(engine, tid)
    assert (t.status, t.no_notice, t.ready_at) == ("ready", True, now)
    assert "opted out" in t.details["no_notice_reason"]
    assert h.store.records() == []


def test_do_not_call_suppresses_voice_only(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "DNC", 1, do_not_call=True)
        voice = add_message(conn, cid, now, n=1, channel="voice", occurrence="v")
        sms = add_message(conn, cid, now, n=1, occurrence="s")
    h = Harness(engine)
    h.run(now)
    assert message(engine, voice).status == "suppressed"
    assert message(engine, voice).status_reason.startswith("do_not_call")
    assert message(engine, sms).status == "sent"
    assert [r.channel for r in h.store.records()] == ["sms"]


def test_transient_failures_retry_with_backoff_then_fail(engine: Engine, now: datetime) -> None:
    (mid,) = seed_simple(engine, now, 1)
    h = Harness(engine)
    h.sms.fail_next(10, "error")
    backoff = Backoff(max_attempts=3, base=timedelta(seconds=60))
    first = h.run(now, backoff=backoff)
    assert (first.retried, first.sent, first.failed) == (1, 0, 0)
    row = message(engine, mid)
    assert row.status == "queued" and row.attempts == 1
    assert now + timedelta(seconds=30) <= row.next_attempt_at <= now + timedelta(seconds=60)
    assert "attempt 1 failed: mock provider error" in row.status_reason
    # not due before next_attempt_at
    assert h.run(now + timedelta(seconds=29), backoff=backoff).claimed == 0
    second = h.run(now + timedelta(seconds=61), backoff=backoff)
    assert second.retried == 1
    row = message(engine, mid)
    # second delay: 60 * 2 = 120 s, jittered into [60, 120]
    base = now + timedelta(seconds=61)
    assert base + timedelta(seconds=60) <= row.next_attempt_at <= base + timedelta(seconds=120)
    third = h.run(now + timedelta(minutes=10), backoff=backoff)
    assert (third.failed, third.retried) == (1, 0)
    row = message(engine, mid)
    assert (row.status, row.attempts, row.error_code) == ("failed", 3, "retries_exhausted")
    assert row.status_reason.startswith("gave up after 3 attempts")
    assert h.sms.calls == 3  # bounded: never a fourth call
    assert len(_audit(engine, "message.retry")) == 2
    # and then it is left alone
    assert h.run(now + timedelta(hours=5), backoff=backoff).claimed == 0
    assert h.sms.calls == 3


def test_retry_after_is_honoured_and_then_sent(engine: Engine, now: datetime) -> None:
    (mid,) = seed_simple(engine, now, 1)
    h = Harness(engine)
    h.sms.fail_next(1, "rate_limited")  # Retry-After: 1 s
    h.run(now, backoff=Backoff(base=timedelta(milliseconds=100)))
    row = message(engine, mid)
    assert row.next_attempt_at >= now + timedelta(seconds=1)
    done = h.run(now + timedelta(seconds=2))
    assert done.sent == 1 and message(engine, mid).attempts == 2
    assert h.provider_counts() == Counter({mid: 1})


def test_permanent_failure_is_failed_with_code_and_reason(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "BAD", 1)
        mid = add_message(conn, cid, now, n=1)
        tid = add_task(conn, cid, mid, now)
    h = Harness(engine)
    h.sms.fail_number(phone(1), "21211")
    summary = h.run(now)
    assert (summary.failed, summary.retried) == (1, 0)
    row = message(engine, mid)
    assert (row.status, row.error_code) == ("failed", "21211")
    assert "invalid 'To' phone number" in row.status_reason
    assert "+86138****0001" in row.status_reason  # masked, never whole
    t = task(engine, tid)
    assert (t.status, t.no_notice) == ("ready", True)
    assert h.sms.calls == 1


def test_provider_opt_out_sets_customer_flag(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "STOPPED", 1)
        first = add_message(conn, cid, now, n=1, occurrence="a")
        later = add_message(
            conn, cid, now, n=1, occurrence="b", scheduled_for=now + timedelta(hours=1)
        )
    h = Harness(engine)
    h.sms.fail_number(phone(1), "21610")
    h.run(now)
    assert (message(engine, first).status, message(engine, first).error_code) == ("failed", "21610")
    with engine.connect() as conn:
        assert conn.execute(select(Customer.sms_opt_out).where(Customer.id == cid)).scalar_one()
    flag = _audit(engine, "customer.sms_opt_out")
    assert len(flag) == 1 and flag[0].customer_ref == "STOPPED"
    h.run(now + timedelta(hours=1))
    assert message(engine, later).status == "suppressed"
    assert h.sms.calls == 1
    _verify(engine)


def test_ambiguous_timeout_is_checked_not_resent(engine: Engine, now: datetime) -> None:
    (mid,) = seed_simple(engine, now, 1)
    h = Harness(engine)
    h.sms.fail_next(1, "accepted_timeout")  # the provider took it, the response was lost
    summary = h.run(now)
    assert (summary.sent, summary.retried) == (1, 0)
    assert h.provider_counts() == Counter({mid: 1})
    row = message(engine, mid)
    assert row.provider_message_id == h.store.records()[0].sid
    assert json.loads(_audit(engine, "message.sent")[0].details)["via"] == "reconcile"


def test_precall_task_ready_after_lead_time(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "CALLME", 1)
        mid = add_message(conn, cid, now, n=1)
        tid = add_task(conn, cid, mid, now)
        orphan = add_task(conn, cid, None, now)  # no notice: not this module's business
    h = Harness(engine)
    h.run(now)
    sent_at = message(engine, mid).sent_at
    t = task(engine, tid)
    assert (t.status, t.ready_at, t.no_notice) == (
        "awaiting_notice",
        sent_at + timedelta(hours=2),
        False,
    )
    assert h.run(sent_at + timedelta(hours=2) - timedelta(seconds=1)).tasks_ready == 0
    assert h.run(sent_at + timedelta(hours=2)).tasks_ready == 1
    assert task(engine, tid).status == "ready"
    assert task(engine, orphan).status == "awaiting_notice"
    ready = _audit(engine, "task.ready")
    assert len(ready) == 1 and ready[0].customer_ref == "CALLME"
    # a custom lead time
    with connect(engine) as conn:
        m2 = add_message(conn, cid, now, n=1, occurrence="x")
        t2 = add_task(conn, cid, m2, now)
    h.run(now + timedelta(hours=3), lead_time=timedelta(minutes=30))
    assert task(engine, t2).ready_at == message(engine, m2).sent_at + timedelta(minutes=30)


def test_limit_and_chunking(engine: Engine, now: datetime) -> None:
    ids = seed_simple(engine, now, 12)
    h = Harness(engine)
    part = h.run(now, limit=5, chunk_size=2)
    assert (part.claimed, part.sent) == (5, 5)
    rest = h.run(now, chunk_size=4)
    assert rest.sent == 7
    assert h.provider_counts() == Counter(dict.fromkeys(ids, 1))


class RacingSMS(MockSMSBackend):
    """The provider's 'delivered' callback lands before the dispatcher writes back."""

    def __init__(self, engine: Engine, at: datetime) -> None:
        super().__init__()
        self.engine, self.at = engine, at
        self.callbacks: list[str | None] = []

    def send(self, msg: OutgoingMessage) -> SendResult:
        from urllib.parse import parse_qs, urlsplit

        from notifications import outbox

        result = super().send(msg)
        self.callbacks.append(msg.status_callback)
        query = parse_qs(urlsplit(msg.status_callback or "").query)
        with transaction(self.engine) as s:  # what the webhook would do
            outbox.apply_provider_status(
                s,
                result.provider_message_id,
                "delivered",
                None,
                self.at,
                message_id=int(query["message_id"][0]),
                attempt_id=query["attempt_id"][0],
            )
        return result


def test_status_callback_racing_the_write_back(engine: Engine, now: datetime) -> None:
    (mid,) = seed_simple(engine, now, 1)
    sms = RacingSMS(engine, now)
    clock = FakeClock()
    summary = dispatch(
        engine,
        make_settings(public_url="https://vip.example"),
        OPEN_POLICY,
        now,
        lead_time=timedelta(hours=2),
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
    )
    row = message(engine, mid)
    attempt = row.attempt_id.replace(":", "%3A")
    base = "https://vip.example/twilio/status"
    assert sms.callbacks == [f"{base}?message_id={mid}&attempt_id={attempt}"]
    assert (summary.sent, summary.lost) == (1, 0)
    assert (row.status, row.provider_message_id) == ("delivered", sms.sent[0].sid)


def test_misconfigured_backend_fails_loudly_and_changes_nothing(
    engine: Engine, now: datetime
) -> None:
    (mid,) = seed_simple(engine, now, 1)
    settings = make_settings(sms_backend="twilio")  # no credentials
    with pytest.raises(ConfigurationError):
        dispatch(engine, settings, OPEN_POLICY, now, lead_time=timedelta(hours=2))
    row = message(engine, mid)
    assert (row.status, row.attempts, row.attempt_id) == ("queued", 0, None)


class _RevokedCredentials(MockSMSBackend):
    """A provider that rejects our credentials (Twilio 20003) on every send."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls = 0

    def send(self, msg: OutgoingMessage) -> SendResult:
        self.calls += 1
        raise ConfigurationError("Twilio rejected the credentials (20003): check TWILIO_AUTH_TOKEN")


def test_bad_credentials_halt_the_run_without_using_up_tries(engine: Engine, now: datetime) -> None:
    ids = seed_simple(engine, now, 30)
    h = Harness(engine, dispatch_concurrency=1)
    h.sms = _RevokedCredentials(store=h.store)
    summary = h.run(now)
    assert summary.halted is not None and "20003" in summary.halted
    assert h.sms.calls == 1  # stopped at the first rejection, not once per message
    assert summary.sent == summary.failed == 0
    rows = [message(engine, mid) for mid in ids]
    assert {r.status for r in rows} == {"queued"}
    assert {r.attempts for r in rows} == {0}  # the try does not count: nothing reached Twilio
    h.sms = MockSMSBackend(store=h.store)  # credentials fixed
    again = h.run(now + timedelta(minutes=1))
    assert again.halted is None and again.sent == 30
