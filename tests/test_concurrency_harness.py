"""Concurrency harness: four daily runs and three dispatchers at once on PostgreSQL, three times.

Each round starts from the same seeded CRM. Seven processes (forked from the
warm forkserver, ``tests/concurrency_driver.py``) start on one barrier: four run
the care day's journeys, three dispatch every hourly round of the day in step
(so all three claim the same due rows at the same instant), the first rounds
while the runs are still deciding. Then:

- zero duplicates: no two decisions, messages, credits or tasks for one
  (journey, customer, occurrence); no message accepted twice by the provider;
  no audit row doubled (a decision, a credit, a message outcome, a task ready);
- the invariants hold;
- every round ends in the same decisions, credits, messages and tasks.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from crm.db import make_engine
from crm.models import AuditLog
from notifications.backends.mock import MockStore
from tests.concurrency_driver import daily_run, dispatcher
from tests.conftest import _truncate_pg
from tests.crash_driver import warm
from tests.crm_twins import snapshot
from tests.harness_day import LAST, balances, plan, seed_day
from tests.invariants import assert_invariants
from tests.test_crash_harness import _forkserver

RUNS = 4
DISPATCHERS = 3
ROUNDS = 3
ONCE = (
    "ledger.credit",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.suppressed",
    "message.expired",
    "task.ready",
    "task.cancelled",
)
"""Audit actions that happen at most once per row (their entity)."""


def _doubled_audit(engine: Engine) -> list[tuple[Any, ...]]:
    """Audit rows that say the same once-only thing twice."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditLog.action, AuditLog.customer_id, AuditLog.entity, AuditLog.details)
        ).all()
    seen: Counter[tuple[Any, ...]] = Counter()
    for action, customer, entity, details in rows:
        if action.startswith("journey.") and (entity or "").startswith("occurrence:"):
            seen[(action, customer, entity)] += 1
        elif action in ONCE:
            kind = json.loads(details).get("kind") if action == "ledger.credit" else None
            seen[(action, customer, entity, kind)] += 1
    return [key for key, n in seen.items() if n > 1]


def _one_round(pg: str, engine: Engine, workdir: Path) -> tuple[dict[str, Any], dict[str, int]]:
    _truncate_pg(engine)
    seed_day(engine)
    openings = balances(engine)
    day = plan(pg, workdir)
    ctx = _forkserver()
    start = ctx.Barrier(RUNS + DISPATCHERS)
    each_round = ctx.Barrier(DISPATCHERS)
    runs_done = ctx.Event()
    runs = [ctx.Process(target=daily_run, args=(day, start, f"run-{i}")) for i in range(RUNS)]
    dispatchers = [
        ctx.Process(target=dispatcher, args=(day, start, each_round, runs_done, i))
        for i in range(DISPATCHERS)
    ]
    for p in runs + dispatchers:
        p.start()
    for p in runs:
        p.join(300)
    runs_done.set()
    for p in dispatchers:
        p.join(300)
    codes = [p.exitcode for p in runs + dispatchers]
    assert codes == [0] * (RUNS + DISPATCHERS), codes

    accepted = Counter(r.message_id for r in MockStore(day.store).records())
    doubled = _doubled_audit(engine)
    provider_duplicates = sum(n - 1 for n in accepted.values() if n > 1)
    assert not doubled, doubled[:10]
    assert provider_duplicates == 0
    assert_invariants(engine, warm(), now=LAST, opening_balances=openings)
    got = snapshot(engine)
    figures = {
        "decisions": len(got["occurrences"]),
        "messages": len(got["messages"]),
        "accepted": sum(accepted.values()),
        "tasks": len(got["tasks"]),
        "credits": len(got["ledger"]),
        "audit_rows": sum(got["audit"].values()),
        "duplicates": len(doubled) + provider_duplicates,
    }
    return got, figures


@pytest.mark.slow
def test_four_runs_and_three_dispatchers_at_once_leave_no_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    started = time.monotonic()
    try:
        results = [_one_round(pg_url, engine, tmp_path / f"round{i}") for i in range(ROUNDS)]
    finally:
        engine.dispose()
    first = results[0][0]
    assert first["occurrences"] and first["messages"] and first["ledger"] and first["tasks"]
    for got, _ in results[1:]:
        for table in ("customers", "occurrences", "ledger", "graces"):
            assert got[table] == first[table], table
        # The same messages and tasks; a concurrent run may plan a call into another
        # free day, and a race decides which dispatcher round sent what.
        assert sorted(m[:5] for m in got["messages"]) == sorted(m[:5] for m in first["messages"])
        assert sorted(t[:3] for t in got["tasks"]) == sorted(t[:3] for t in first["tasks"])
    figures = [f for _, f in results]
    print(
        f"\nconcurrency harness [postgresql]: {ROUNDS} rounds of {RUNS} daily runs + "
        f"{DISPATCHERS} dispatchers; per round {figures[0]['decisions']} decisions, "
        f"{figures[0]['messages']} messages ({figures[0]['accepted']} accepted), "
        f"{figures[0]['tasks']} tasks, {figures[0]['credits']} credits, "
        f"{figures[0]['audit_rows']} audit rows; duplicates found "
        f"{sum(f['duplicates'] for f in figures)}; {time.monotonic() - started:.1f} s"
    )
