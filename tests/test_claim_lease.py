"""Claims in 'sending' are leases (owner + wall-clock time): a rerun after a crash reclaims them.

Regression for issue 12 defect 3: ``vipcare dispatch --at T`` killed after the
first accept, then the same command again, used to exit 0 with ``claimed 0,
unresolved 0`` and leave the rows in 'sending' (staleness was judged by ``--at``
plus elapsed time, so the rows never looked old).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from test_dispatcher_support import (
    OPEN_POLICY,
    FakeClock,
    add_customer,
    add_message,
    connect,
    make_settings,
    message,
    seed_simple,
    statuses,
)

from crm import process
from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.dispatcher import dispatch
from tests.builders import all_day_rules

LEAD = timedelta(hours=2)
ROOT = Path(__file__).resolve().parent.parent


def _claimed(engine: Engine, now: datetime, owner: str, claimed_at: datetime) -> int:
    with connect(engine) as conn:
        c = add_customer(conn, "L1", 1)
        return add_message(
            conn,
            c,
            now,
            n=1,
            status="sending",
            attempt_id="A1",
            sending_at=now,
            attempts=1,
            claimed_by=owner,
            claimed_at=claimed_at,
        )


def _dispatch(engine: Engine, at: datetime, wall: datetime, **kw: object):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    return dispatch(
        engine,
        make_settings(),
        OPEN_POLICY,
        at,
        lead_time=LEAD,
        backends={"sms": MockSMSBackend(store=MockStore())},
        sleep=clock.sleep,
        clock=clock,
        wall_clock=lambda: wall,
        **kw,  # type: ignore[arg-type]
    )


def test_a_lease_is_judged_by_the_wall_clock_not_by_at(engine: Engine, now: datetime) -> None:
    """Another host's claim: left alone while its lease is fresh, reclaimed once it is old."""
    remote = "elsewhere/4242/99/tok"
    wall = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    mid = _claimed(engine, now, remote, claimed_at=wall - timedelta(minutes=2))
    fresh = _dispatch(engine, now, wall)  # the same --at as the dead run
    assert (fresh.reconciled, message(engine, mid).status) == (0, "sending")
    old = _dispatch(engine, now, wall + timedelta(minutes=4))
    assert (old.reconciled_requeued, old.sent, message(engine, mid).status) == (1, 1, "sent")


def test_a_dead_owner_on_this_host_is_reclaimed_at_once(engine: Engine, now: datetime) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = process.Owner(process.new_owner().host, gone.pid, "1", "tok").ident
    mid = _claimed(engine, now, dead, claimed_at=now)
    summary = _dispatch(engine, now, now)  # no time has passed at all
    assert summary.reconciled_requeued == 1 and message(engine, mid).status == "sent"


def test_a_live_owner_keeps_its_claim(engine: Engine, now: datetime) -> None:
    mine = process.new_owner()  # this very process, still working
    try:
        mid = _claimed(engine, now, mine.ident, claimed_at=now)
        assert _dispatch(engine, now, now + timedelta(minutes=1)).reconciled == 0
        assert message(engine, mid).status == "sending"
    finally:
        process.retire(mine)
    # Its run is over (retired) but the row is still 'sending': abandoned, reclaimed.
    assert _dispatch(engine, now, now + timedelta(minutes=1)).reconciled_requeued == 1


CHILD = textwrap.dedent(
    """
    import sys

    import notifications.backends as backends
    from notifications.backends.mock import MockSMSBackend

    store, marker, block, at = sys.argv[1:5]


    class AcceptThenHang(MockSMSBackend):
        def send(self, msg):
            result = super().send(msg)  # in the provider's store from here on
            with open(marker, "w") as fh:
                fh.write(f"accepted {msg.message_id}\\n")
            with open(block) as fh:  # nobody ever writes: hang here until killed
                fh.read()
            return result


    backends.get_backend = lambda settings, channel, **kw: AcceptThenHang(store_path=store)
    from vipcare.cli import app

    app(["dispatch", "--at", at], standalone_mode=False)
    print("finished without being killed", flush=True)
    """
)


def test_sigkill_then_rerun_with_the_same_at_reclaims(
    db_url: str, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    ids = seed_simple(engine, now, 6)
    store = tmp_path / "provider.jsonl"
    marker, block = tmp_path / "marker.fifo", tmp_path / "block.fifo"
    os.mkfifo(marker)
    os.mkfifo(block)
    marker_fd = os.open(marker, os.O_RDWR | os.O_NONBLOCK)
    rules = all_day_rules(tmp_path / "rules")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIPCARE_DATABASE_URL": db_url,
        "VIPCARE_MOCK_STORE": str(store),
        "VIPCARE_RULES_DIR": str(rules),
        "VIPCARE_DISPATCH_CONCURRENCY": "1",
    }
    at = "2026-11-21T10:00:00+08:00"
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, str(script), str(store), str(marker), str(block), at],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([marker_fd, child.stdout.fileno()], [], [], 120)
        if marker_fd not in ready:
            child.kill()
            out, err = child.communicate(timeout=30)
            raise AssertionError(f"child never reached the kill point: {out!r} {err!r}")
        killed_on = int(os.read(marker_fd, 200).decode().split()[1])
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        os.close(marker_fd)
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()
    left = statuses(engine)
    assert left[killed_on] == "sending"
    in_flight = [i for i in ids if left[i] == "sending"]
    assert len(in_flight) >= 1

    rerun = subprocess.run(
        [sys.executable, "-m", "vipcare", "dispatch", "--at", at, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["reconciled"] == len(in_flight)  # before the fix: 0
    assert summary["reconciled_sent"] == 1  # the one the provider accepted before the kill
    assert summary["unresolved"] == 0
    assert set(statuses(engine).values()) == {"sent"}
    sends = Counter(r.message_id for r in MockStore(store).records())
    assert sends == Counter(dict.fromkeys(ids, 1))  # each exactly once: no duplicate, no loss
