"""Two dispatchers at once never take, or send, the same row."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from test_dispatcher_support import OPEN_POLICY, FakeClock, make_settings, seed_simple, statuses

from crm import audit
from crm.db import make_engine, transaction
from notifications import outbox
from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.base import OutgoingMessage, SendResult
from notifications.dispatcher import DispatchSummary, dispatch

LEAD = timedelta(hours=2)
"""The pre-call lead time these tests dispatch with."""


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_skip_locked_claims_are_disjoint_and_do_not_wait(engine: Engine, now: datetime) -> None:
    seed_simple(engine, now, 6)
    with Session(engine) as first, Session(engine) as second:
        first.begin()
        second.begin()
        # If the second claim waited for the first one's locks, fail instead of hanging.
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        a = outbox.claim_due(first, now, 3)
        b = outbox.claim_due(second, now, 3)
        assert len(a) == 3 and len(b) == 3
        assert not {m.id for m in a} & {m.id for m in b}
        got_b = outbox.begin_sending(second, b, "token-b", now)
        second.commit()
        got_a = outbox.begin_sending(first, a, "token-a", now)
        first.commit()
    assert len(got_a) == len(got_b) == 3
    assert set(statuses(engine).values()) == {"sending"}


class MeetingSMS(MockSMSBackend):
    """Mock SMS whose first send waits for the other dispatcher's first send.

    That forces both dispatchers to hold claimed rows at the same moment, so the
    test cannot pass just because one of them finished before the other began.
    """

    def __init__(self, store: MockStore, meet: threading.Barrier) -> None:
        super().__init__(store=store)
        self.meet = meet
        self.met = False

    def send(self, msg: OutgoingMessage) -> SendResult:
        if not self.met:
            self.met = True
            self.meet.wait(timeout=30)
        return super().send(msg)


def test_two_dispatchers_never_send_the_same_row(db_url: str, now: datetime) -> None:
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        ids = seed_simple(engines[0], now, 40)
        # crm.audit creates its chain head on the first append; two *first* appends at
        # once race on that insert (reported to the audit owner). Start with a chain.
        with transaction(engines[0]) as s:
            audit.record(s, audit.SYSTEM, now, "test.setup")
        store = MockStore()
        meet = threading.Barrier(2)
        backends = [MeetingSMS(store, meet), MeetingSMS(store, meet)]
        summaries: list[DispatchSummary] = []
        errors: list[BaseException] = []

        def run(k: int) -> None:
            clock = FakeClock()
            try:
                summaries.append(
                    dispatch(
                        engines[k],
                        make_settings(dispatch_concurrency=2),
                        OPEN_POLICY,
                        now,
                        lead_time=LEAD,
                        backends={"sms": backends[k]},
                        sleep=clock.sleep,
                        clock=clock,
                        chunk_size=4,
                    )
                )
            except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert not meet.broken, "the dispatchers never overlapped"
        sends = Counter(r.message_id for r in store.records())
        assert sends == Counter(dict.fromkeys(ids, 1))  # every row once: none lost, none twice
        assert all(b.sent for b in backends), "both dispatchers did part of the work"
        assert sum(s.sent for s in summaries) == 40
        assert sum(s.lost for s in summaries) == 0
        assert set(statuses(engines[0]).values()) == {"sent"}
        with transaction(engines[0]) as s:
            assert audit.verify(s).ok  # two writers, one unbroken chain
    finally:
        for e in engines:
            e.dispose()
