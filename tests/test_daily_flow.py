"""The daily care flow really run by Prefect (temporary server via the test harness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crm.models import CallTask, CreditLedger, OutboundMessage
from flows.journeys.context import RunContext
from tests.builders import RULES_DIR, Crm, months_before, utc

AS_OF = date(2026, 11, 23)  # a Monday


def _populate(crm: Crm) -> None:
    crm.manager("M1", capacity=40)
    big = crm.plan("BIG", fee="198.00")
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    crm.customer("BDAY", tier="diamond", birthday=date(1980, 11, 23), last_contact_on=AS_OF)
    crm.customer("GRACE", tier="gold", balance=Decimal("-5.00"), last_contact_on=AS_OF)
    pf = crm.customer("PLANFIT", tier="gold", plan_id=big, last_contact_on=AS_OF)
    crm.usage(pf, months_before(AS_OF), voice=10, data=100, sms=1)
    crm.customer("CALLBACK", tier="platinum", last_contact_on=AS_OF - timedelta(days=61))


@pytest.mark.slow
def test_daily_care_flow_runs_the_journeys_and_is_idempotent(engine, db_url, prefect_harness):
    import httpx
    from prefect.settings import PREFECT_API_URL

    from flows.daily import DailyCareParams, care_database, daily_care

    crm = Crm(engine)
    _populate(crm)
    params = DailyCareParams(as_of=AS_OF, at=utc(2026, 11, 23, 2, 0), rules_dir=str(RULES_DIR))
    with care_database(engine):
        result = daily_care(params)
    decided = {j["journey"]: j["decided"] for j in result["journeys"]}
    assert decided == {
        "hygiene": 0,
        "grace_credit": 1,
        "birthday": 1,
        "plan_fit": 1,
        "callback": 1,
        "precall_notice": 3,  # one text per customer with calls today: BDAY, PLANFIT, CALLBACK
    }
    assert "dispatch" not in result  # the run decides; the dispatcher sends
    assert {m.status for m in crm.rows(OutboundMessage) if m.journey == "grace_credit"} == {
        "queued"
    }
    assert len(crm.rows(CreditLedger)) == 2  # grace credit + diamond birthday perk
    tasks = {t.kind for t in crm.rows(CallTask)}
    assert tasks == {"birthday", "plan_fit", "callback"}

    before = crm.counts()
    with care_database(engine):
        again = daily_care(params)
    assert all(j["decided"] == 0 for j in again["journeys"])
    assert crm.counts() == before

    # Prefect 3.8's own artifact readers send nulls FastAPI 0.154 rejects; ask the API directly.
    found = httpx.get(
        f"{PREFECT_API_URL.value()}/artifacts/{result['artifact_id']}", timeout=30
    ).json()
    assert found["key"] == "daily-care-summary" and found["type"] == "markdown"
    assert "| grace_credit |" in found["data"] and "| callback |" in found["data"]


def test_dry_run_decides_but_writes_nothing(engine, db_url):
    """``run_journey(dry_run=True)`` counts decisions and rolls every batch back."""
    from zoneinfo import ZoneInfo

    from flows.journeys.engine import run_journey
    from flows.journeys.grace_credit import GraceCredit
    from tests.builders import default_rules

    crm = Crm(engine)
    _populate(crm)
    before = crm.counts()
    ctx = RunContext(AS_OF, utc(2026, 11, 23, 2), "dry", default_rules(), ZoneInfo("Asia/Shanghai"))
    report = run_journey(engine, ctx, GraceCredit(), dry_run=True)
    assert report.decided == 1
    assert crm.counts() == before


@pytest.mark.slow
def test_vipcare_run_cli_with_prefect(tmp_path: Path, sqlite_template: Path):
    """The real command line: a separate process, a temporary Prefect server, JSON out."""
    db = tmp_path / "cli.db"
    db.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db}"
    from crm.db import make_engine

    engine = make_engine(url)
    _populate(Crm(engine))
    engine.dispose()
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "VIPCARE_DATABASE_URL": url,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PYTHONPATH": root,
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [  # the command line, its clock at 10:05 on the care day
        sys.executable,
        "-m",
        "tests.clocked_cli",
        "2026-11-23T10:05:00+08:00",
        "run",
        "--date",
        AS_OF.isoformat(),
        "--at",
        "2026-11-23T10:00:00+08:00",
        "--json",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {j["journey"]: j["decided"] for j in result["journeys"]}["grace_credit"] == 1
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert all(j["decided"] == 0 for j in json.loads(again.stdout)["journeys"])


def test_vipcare_run_rejects_a_bad_date():
    out = subprocess.run(
        [sys.executable, "-m", "vipcare", "run", "--date", "2026-02-30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "2026-02-30" in out.stderr and "YYYY-MM-DD" in out.stderr
