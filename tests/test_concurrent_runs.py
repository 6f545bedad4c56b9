"""Several `vipcare run` for the same day at once: zero duplicates, the same decisions as one run.

Real processes sharing one Prefect API (the test session's). On PostgreSQL three
runs write side by side; on SQLite the database's single writer makes each
transaction wait for the other (BEGIN IMMEDIATE with a busy timeout), and both
finish. Either way every decision, message, task, credit and audit row exists
once: compared with a single run of the same day on an identical database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

import seed
from crm.db import make_engine
from flows.daily import DailyCareParams, journeys_to_run, run_part
from tests.builders import RULES_DIR
from tests.conftest import PG_ADMIN_URL
from tests.crm_twins import snapshot, twin_database

ROOT = Path(__file__).resolve().parent.parent
DAY = date(2026, 11, 23)
AT = "2026-11-23T08:00:00+08:00"


def _seed(engine: Engine) -> None:
    seed.generate(engine, 400, seed=31, as_of=DAY - timedelta(days=1))
    with engine.begin() as conn:  # every ninth customer's fed balance below zero
        conn.execute(text("UPDATE customers SET balance = -3000 WHERE id % 9 = 0"))
        conn.execute(text("UPDATE balance_facts SET balance = -3000 WHERE customer_id % 9 = 0"))


@pytest.mark.slow
def test_concurrent_daily_runs_leave_no_duplicate(
    db_url: str, engine: Engine, prefect_harness: None
) -> None:
    from prefect.settings import PREFECT_API_URL

    _seed(engine)
    runs = 3 if engine.dialect.name == "postgresql" else 2
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIPCARE_DATABASE_URL": db_url,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # one shared Prefect API
    }
    cmd = [  # the command line with its clock a few minutes after the day's instant
        *(sys.executable, "-m", "tests.clocked_cli", "2026-11-23T08:05:00+08:00"),
        *("run", "--date", DAY.isoformat(), "--at", AT, "--json"),
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(runs)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    decided = Counter()
    for result in results:
        for journey in result["journeys"]:
            decided[journey["journey"]] += journey["decided"]

    with twin_database(db_url, PG_ADMIN_URL) as single_url:
        single = make_engine(single_url)
        try:
            _seed(single)
            params = DailyCareParams(
                as_of=DAY,
                at=AT,  # type: ignore[arg-type]
                rules_dir=str(RULES_DIR),
                run_id="single",
            )
            for journey in journeys_to_run(single, params):
                run_part(single, params, "single", journey, 0)
            want = snapshot(single)
        finally:
            single.dispose()
    got = snapshot(engine)
    assert want["occurrences"] and want["ledger"] and want["messages"] and want["tasks"]
    # Every decision was made exactly once, by one of the runs.
    per_journey = Counter(o[0] for o in want["occurrences"])
    assert decided == {j: per_journey.get(j, 0) for j in decided}
    for table in ("customers", "occurrences", "ledger", "graces"):
        assert got[table] == want[table], table
    # Messages and tasks: the same ones, once each (a concurrent run may plan a call
    # into a different free day than a lone run would, so the day is not compared).
    assert sorted(m[:5] for m in got["messages"]) == sorted(m[:5] for m in want["messages"])
    assert sorted(t[:4] for t in got["tasks"]) == sorted(t[:4] for t in want["tasks"])

    # The audit trail has each decision once (no doubled journey, credit or task rows).
    def actions(audit: Counter) -> Counter:  # type: ignore[type-arg]
        out: Counter = Counter()  # type: ignore[type-arg]
        for (action, *_), n in audit.items():
            out[action] += n
        return out

    assert actions(got["audit"]) == actions(want["audit"])
