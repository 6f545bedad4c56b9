"""The workspace under concurrent clients on a real socket (issue 16, items 7 and 8), on
SQLite and PostgreSQL.

- Slow CSV readers: 16 downloads of ``/tasks.csv`` that stop reading after the first
  bytes. Before the fix each held one pooled connection, idle in a transaction, for the
  whole stream; with the pool (5 + 10) gone, every other request, sign-in included,
  waited 30 s for a connection and got a 500.
- Parallel reschedules: six managers' tabs move six calls into a day with one free slot
  at the same moment. Before the fix each counted the day's load, saw room, and wrote:
  30 calls against a capacity of 25 on PostgreSQL.

No sleeps: the readers stop after their first bytes arrive, the reschedules start on a
barrier, and on PostgreSQL the test holds the audit chain's head row (which every
reschedule writes last) until all six requests are waiting on a lock, so that all six
have done their checks before any commits.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select, text

from crm.bulk import insert_many, table_of
from crm.db import transaction
from crm.models import CallTask
from tests.served_app import served
from tests.web_support import AS_OF, NAMES, World, csrf_of, local, sign_in
from vipcare.web.serve import server_options

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

COOKIE = "vipcare_session"
READERS = 16
"""One more than the engine's default pool (5 + 10 overflow)."""


def _bulk_tasks(world: World, manager: str, n: int, **values: Any) -> None:
    """``n`` tasks of ``manager``'s customer A (closed calls: history that a CSV exports)."""
    first = world.task("A")
    row = {
        "customer_id": first.customer_id,
        "manager_id": world.crm.manager_id(manager),
        "kind": "callback",
        "journey": "callback",
        "status": "done",
        "priority": 0,
        "due_on": AS_OF - timedelta(days=1),
        "scheduled_on": AS_OF - timedelta(days=1),
        "no_notice": True,
        "ready_at": None,
        "details": {"reason": "an earlier call"},
        "attempt": 1,
        "outcome": "reached",
        "satisfaction": 5,
        "note": "a long note " * 160,  # about 2 KB a row: the export is several megabytes
        "completed_at": local(AS_OF - timedelta(days=1), 10),
        "created_at": local(AS_OF - timedelta(days=1), 9),
        "rule_hash": None,
        "notice_message_id": None,
        "escalated_at": None,
        **values,
    }
    with transaction(world.engine) as s:
        insert_many(
            s, table_of(CallTask), [{**row, "occurrence": f"history:{i}"} for i in range(n)]
        )


def _cookie(base: str, login: str) -> str:
    with httpx.Client(base_url=base) as c:
        assert sign_in(c, login).status_code == 303
        return c.cookies[COOKIE]


@contextmanager
def _stalled_downloads(base: str, cookie: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` downloads of /tasks.csv that read the first bytes and then stop reading."""
    host, port = base.removeprefix("http://").split(":")
    readers = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow phone line
            s.connect((host, int(port)))
            s.sendall(
                f"GET /tasks.csv HTTP/1.1\r\nHost: {host}\r\nCookie: {COOKIE}={cookie}\r\n\r\n"
                .encode()
            )  # fmt: skip
            readers.append(s)
        for s in readers:
            first = s.recv(4096)
            assert first.startswith(b"HTTP/1.1 200"), first[:200]
        yield readers
    finally:
        for s in readers:
            s.close()


def test_slow_csv_readers_leave_the_workspace_usable(world: World) -> None:
    _bulk_tasks(world, "M1", 4000)
    with served(world.app(), **server_options(world.settings)) as base:
        cookie = _cookie(base, "M1")
        with (
            _stalled_downloads(base, cookie, READERS),
            httpx.Client(base_url=base, timeout=120) as other,
        ):
            # 16 downloads are stuck mid-stream; another manager signs in and works
            signed = sign_in(other, "M2")
            assert signed.status_code == 303, signed.text[:500]
            day = other.get("/day")
            assert day.status_code == 200 and NAMES["C"] in day.text
            export = other.get("/tasks.csv")
            assert export.status_code == 200 and NAMES["C"] in export.text


def test_a_full_csv_export_has_every_row_once(world: World) -> None:
    """The export reads in short batches now: still every task once, in list order."""
    _bulk_tasks(world, "M1", 2500, note="short")
    with (
        served(world.app(), **server_options(world.settings)) as base,
        httpx.Client(base_url=base, timeout=120) as c,
    ):
        sign_in(c, "M1")
        export = c.get("/tasks.csv")
    ids = [int(line.split(",", 1)[0]) for line in export.text.splitlines()[1:]]
    with transaction(world.engine) as s:
        mine = s.scalar(
            select(func.count())
            .select_from(CallTask)
            .where(CallTask.manager_id == world.crm.manager_id("M1"))
        )
    assert len(ids) == len(set(ids)) == mine and mine > 2500


# --- rescheduling into the last free slot -------------------------------------------------

TARGET = AS_OF + timedelta(days=2)  # Wednesday
MOVERS = 6


def _fill_day(world: World, manager: str, free: int) -> list[int]:
    """``manager``'s TARGET day one customer short of ``free`` slots, and MOVERS calls of
    other customers on Thursday; returns the Thursday tasks' ids."""
    capacity = 10
    manager_id = world.crm.manager_id(manager)
    on_target = world.crm_load(manager_id, TARGET)
    movers = []
    for n in range(capacity - free - on_target + MOVERS):
        ref = f"R{n:02d}"
        cid = world.crm.customer(ref, tier="gold", manager_id=manager_id)
        day = TARGET if n >= MOVERS else TARGET + timedelta(days=1)
        with transaction(world.engine) as s:
            task = CallTask(
                customer_id=cid,
                manager_id=manager_id,
                kind="callback",
                journey="callback",
                occurrence=f"callback:race:{n}",
                status="ready",
                due_on=day,
                scheduled_on=day,
                no_notice=True,
                details={"reason": "race"},
                created_at=local(AS_OF, 9),
            )
            s.add(task)
            s.flush()
            if day != TARGET:
                movers.append(task.id)
    assert world.crm_load(manager_id, TARGET) == capacity - free
    return movers


def _lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


@contextmanager
def _audit_head_held(engine: Engine) -> Iterator[Any]:
    """Hold the audit chain's head row: every write that audits waits behind it."""
    conn = engine.connect()
    tx = conn.begin()
    conn.execute(text("SELECT last_seq FROM audit_head WHERE id = 1 FOR UPDATE"))
    try:
        yield tx
    finally:
        if tx.is_active:
            tx.commit()
        conn.close()


def test_parallel_reschedules_never_fill_a_day_past_capacity(world: World) -> None:
    movers = _fill_day(world, "M1", free=1)
    postgres = world.engine.dialect.name == "postgresql"
    with served(world.app(), **server_options(world.settings)) as base:
        tabs = []
        for _ in range(MOVERS):  # six tabs, six sessions, each with its own form token
            c = httpx.Client(base_url=base, timeout=120)
            assert sign_in(c, "M1").status_code == 303
            tabs.append(c)
        tokens = [csrf_of(c.get(f"/tasks/{t}").text) for c, t in zip(tabs, movers, strict=True)]
        start = threading.Barrier(MOVERS + 1)
        answers: dict[int, httpx.Response] = {}

        def move(i: int) -> None:
            start.wait()
            answers[i] = tabs[i].post(
                f"/tasks/{movers[i]}/reschedule",
                data={
                    "to": TARGET.isoformat(),
                    "reason": "customer asked",
                    "csrf_token": tokens[i],
                },
            )

        threads = [threading.Thread(target=move, args=(i,)) for i in range(MOVERS)]
        for t in threads:
            t.start()
        if postgres:
            with _audit_head_held(world.engine):
                start.wait()
                waited = threading.Event()
                for _ in range(1200):  # until all six have checked the day and wait to commit
                    if _lock_waiters(world.engine) >= MOVERS:
                        break
                    waited.wait(0.05)
                else:
                    raise AssertionError("the six reschedules never all waited")
        else:
            start.wait()
        for t in threads:
            t.join(120)
        for c in tabs:
            c.close()
    moved = [i for i, r in answers.items() if r.status_code == 303]
    refused = [i for i, r in answers.items() if r.status_code == 400]
    assert len(moved) == 1, {i: r.status_code for i, r in answers.items()}
    assert answers[moved[0]].headers["location"].startswith("/day?msg=rescheduled")
    assert len(refused) == MOVERS - 1
    for i in refused:
        assert re.search(r"已排满|is full", answers[i].text), answers[i].text[:500]
    assert world.crm_load(world.crm.manager_id("M1"), TARGET) == 10


@pytest.fixture(autouse=True)
def _load_helper(world: World) -> None:
    """``world.crm_load(manager_id, day)``: the calls planned that day (capacity's count)."""
    from crm import capacity

    def load(manager_id: int, day: Any) -> int:
        with transaction(world.engine) as s:
            return capacity.day_load(s, manager_id, day)

    world.crm_load = load  # type: ignore[attr-defined]
