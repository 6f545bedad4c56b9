"""Crash safety: rows left in 'sending' are reconciled with the provider, never sent twice.

The last test kills a real dispatcher process with SIGKILL in the middle of a
chunk (right after the provider accepted a message, before the outcome was
written back) and restarts: no duplicate, no loss.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from test_dispatcher_support import (
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

from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.base import OutgoingMessage, SendResult
from notifications.dispatcher import DispatchSummary, dispatch
from notifications.errors import TransientSendError

LEAD = timedelta(hours=2)
"""The pre-call lead time these tests dispatch with."""


def _stuck(engine: Engine, now: datetime) -> tuple[int, int, int]:
    """Two rows a dead dispatcher left in 'sending' (attempts A1, A2) and a task on the first."""
    with connect(engine) as conn:
        c1 = add_customer(conn, "S1", 1)
        c2 = add_customer(conn, "S2", 2)
        m1 = add_message(
            conn, c1, now, n=1, status="sending", attempt_id="A1", sending_at=now, attempts=1
        )
        m2 = add_message(
            conn, c2, now, n=2, status="sending", attempt_id="A2", sending_at=now, attempts=1
        )
        t1 = add_task(conn, c1, m1, now)
    return m1, m2, t1


def _run(engine: Engine, sms: MockSMSBackend, at: datetime, **kw: object) -> DispatchSummary:
    clock = FakeClock()
    return dispatch(
        engine,
        make_settings(),
        OPEN_POLICY,
        at,
        lead_time=LEAD,
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def test_reconcile_marks_accepted_sent_and_resends_the_rest(engine: Engine, now: datetime) -> None:
    m1, m2, t1 = _stuck(engine, now)
    sms = MockSMSBackend(store=MockStore())
    # The dead process got as far as the provider with A1, not with A2.
    accepted = sms.send(OutgoingMessage(m1, "sms", phone(1), "hi", "en", "A1"))
    summary = _run(engine, sms, now + timedelta(minutes=10))
    assert (summary.reconciled, summary.reconciled_sent, summary.reconciled_requeued) == (2, 1, 1)
    assert summary.sent == 1  # A2's message, sent again in the same run
    one, two = message(engine, m1), message(engine, m2)
    assert (one.status, one.provider_message_id, one.sent_at) == (
        "sent",
        accepted.provider_message_id,
        now,
    )
    assert one.attempts == 1  # not sent again
    assert two.status == "sent" and two.attempts == 2 and two.attempt_id != "A2"
    assert Counter(r.message_id for r in sms.sent) == Counter({m1: 1, m2: 1})
    assert task(engine, t1).ready_at == now + timedelta(hours=2)


def test_rows_younger_than_the_grace_period_are_left_to_their_dispatcher(
    engine: Engine, now: datetime
) -> None:
    m1, m2, _ = _stuck(engine, now)
    sms = MockSMSBackend(store=MockStore())
    early = _run(engine, sms, now + timedelta(minutes=1))
    assert (early.reconciled, early.claimed) == (0, 0)
    assert statuses(engine) == {m1: "sending", m2: "sending"}
    assert sms.calls == 0
    forced = _run(engine, sms, now + timedelta(minutes=1), reconcile_all=True)
    assert (forced.reconciled_requeued, forced.sent) == (2, 2)


class Unreachable(MockSMSBackend):
    def _find_previous(self, msg: OutgoingMessage, since: datetime | None) -> SendResult | None:
        raise TransientSendError("provider API down")


def test_provider_unreachable_leaves_rows_in_sending(engine: Engine, now: datetime) -> None:
    m1, m2, _ = _stuck(engine, now)
    sms = Unreachable(store=MockStore())
    summary = _run(engine, sms, now + timedelta(minutes=10))
    assert (summary.unresolved, summary.reconciled, summary.sent) == (2, 0, 0)
    assert statuses(engine) == {m1: "sending", m2: "sending"}
    assert sms.calls == 0  # unknown outcome: never guess by sending again


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta

    from crm.db import make_engine
    from notifications.backends.mock import MockSMSBackend
    from notifications.dispatcher import dispatch
    from notifications.config import NotificationConfig
    from tests.policies import ALL_DAY, make_policy

    url, store, marker, block, stop_after, at = sys.argv[1:7]


    class AcceptThenHang(MockSMSBackend):
        def __init__(self):
            super().__init__(store_path=store)
            self.accepted = 0

        def send(self, msg):
            result = super().send(msg)  # in the provider's store from here on
            self.accepted += 1
            if self.accepted == int(stop_after):
                with open(marker, "w") as fh:
                    fh.write(f"accepted {msg.message_id}\\n")
                with open(block) as fh:  # nobody ever writes: hang here until killed
                    fh.read()
            return result


    policy = make_policy(ALL_DAY, service=(99, 99))
    settings = NotificationConfig(
        send_rate_per_second=1000, dispatch_concurrency=1, batch_size=100
    )
    dispatch(
        make_engine(url), settings, policy, datetime.fromisoformat(at),
        lead_time=timedelta(hours=2), backends={"sms": AcceptThenHang()}, chunk_size=4,
    )
    print("finished without being killed", flush=True)
    """
)


def test_sigkill_mid_dispatch_then_restart(
    db_url: str, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    ids = seed_simple(engine, now, 10)
    store_path = tmp_path / "provider.jsonl"
    marker, block = tmp_path / "marker.fifo", tmp_path / "block.fifo"
    os.mkfifo(marker)
    os.mkfifo(block)
    # O_RDWR: the test's end never sees EOF, so select() waits for the child's line.
    marker_fd = os.open(marker, os.O_RDWR | os.O_NONBLOCK)
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            db_url,
            str(store_path),
            str(marker),
            str(block),
            "6",
            now.isoformat(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([marker_fd, child.stdout.fileno()], [], [], 120)
        if marker_fd not in ready:
            child.kill()
            out, err = child.communicate(timeout=30)
            raise AssertionError(
                f"child never reached the kill point: {out!r} {err.decode()[-2000:]}"
            )
        line = os.read(marker_fd, 200).decode()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        os.close(marker_fd)
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()

    killed_on = int(line.split()[1])
    provider = MockStore(store_path)
    before = Counter(r.message_id for r in provider.records())
    assert before == Counter(dict.fromkeys(ids[:6], 1)) and killed_on == ids[5]
    state = statuses(engine)
    assert [state[i] for i in ids[:4]] == ["sent"] * 4  # first chunk written back
    assert [state[i] for i in ids[4:8]] == ["sending"] * 4  # second chunk: in flight
    assert [state[i] for i in ids[8:]] == ["queued"] * 2

    restarted = _run(engine, MockSMSBackend(store=provider), now + timedelta(minutes=10))
    assert (restarted.reconciled_sent, restarted.reconciled_requeued) == (2, 2)
    assert restarted.sent == 4  # the two requeued and the two never claimed
    after = Counter(r.message_id for r in MockStore(store_path).records())
    assert after == Counter(dict.fromkeys(ids, 1))  # no duplicate, no loss
    assert set(statuses(engine).values()) == {"sent"}
    sids = {r.message_id: r.sid for r in MockStore(store_path).records()}
    assert all(message(engine, i).provider_message_id == sids[i] for i in ids)
