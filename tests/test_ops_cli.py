"""Operating vipcare from the command line: clear one-line failures, status, run guards.

Real processes, as a cron job or an operator would start them.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert
from test_dispatcher_support import add_customer, add_message, add_task, connect, seed_simple

from crm import runs
from crm.models import JobRun
from tests.builders import all_day_rules

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

NEEDS_SCHEMA = [
    ["run"],
    ["run", "--date", "2026-11-20", "--json"],
    ["dispatch"],
    ["status"],
    ["status", "--json"],
    ["scheduler"],
    ["tasks", "list"],
    ["tasks", "done", "1", "--outcome", "reached"],
    ["ledger", "list"],
    ["messages", "list"],
    ["customers", "list"],
    ["plans", "list"],
    ["managers", "list"],
    ["seed", "--customers", "5"],
    ["import", "customers", str(DATA / "good_customers.csv")],
    ["audit", "list"],
    ["audit", "verify"],
    ["rules", "preview", "birthday"],
    ["rules", "explain", "birthday", "C1"],
    ["webhooks"],
]


def _vipcare(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
    full = {k: v for k, v in os.environ.items() if not k.startswith("VIPCARE_")}
    full.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "vipcare", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("args", NEEDS_SCHEMA, ids=lambda a: " ".join(a[:2]))
def test_every_command_that_needs_the_schema_says_so_in_one_line_and_creates_nothing(
    args: list[str], tmp_path: Path
) -> None:
    """A cron job started from $HOME: no database there. One line, exit 1, no file left."""
    out = _vipcare(
        args,
        tmp_path,
        {"TWILIO_AUTH_TOKEN": "x", "VIPCARE_PUBLIC_URL": "https://care.example.com"},
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: no vipcare database at {tmp_path / 'vipcare.db'}; run `vipcare init`"]
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_not_a_vipcare_database(tmp_path: Path) -> None:
    (tmp_path / "vipcare.db").write_bytes(b"")
    out = _vipcare(["status"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"error: no vipcare database at {tmp_path / 'vipcare.db'} (no vipcare schema in it); "
        "run `vipcare init`"
    )


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    out = _vipcare(["status"], tmp_path, {"VIPCARE_DISPATCH_EVERY_MINUTES": "7"})
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: bad configuration: VIPCARE_DISPATCH_EVERY_MINUTES: ")
    assert "7 does not divide an hour" in line


@pytest.fixture
def db_file(tmp_path: Path, sqlite_template: Path) -> Path:
    db = tmp_path / "ops.db"
    db.write_bytes(sqlite_template.read_bytes())
    return db


def test_run_refuses_a_future_day_unless_dry_run(db_file: Path, tmp_path: Path) -> None:
    env = {"VIPCARE_DATABASE_URL": f"sqlite:///{db_file}"}
    future = (datetime.now(UTC) + timedelta(days=3)).date()
    out = _vipcare(["run", "--date", future.isoformat()], tmp_path, env)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: --date {future} is in the future (today is ")
    assert "Add --dry-run to see what it would decide" in line
    ahead = (datetime.now(UTC) + timedelta(hours=30)).isoformat()
    assert _vipcare(["run", "--at", ahead], tmp_path, env).returncode == 1


@pytest.mark.slow
def test_a_dry_run_of_a_future_day_runs_and_json_stays_clean(db_file: Path, tmp_path: Path) -> None:
    env = {"VIPCARE_DATABASE_URL": f"sqlite:///{db_file}", "PREFECT_HOME": str(tmp_path / "p")}
    future = (datetime.now(UTC) + timedelta(days=3)).date()
    out = _vipcare(
        ["run", "--date", future.isoformat(), "--dry-run", "--json", "--progress"],
        tmp_path,
        env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["as_of"] == future.isoformat()  # stdout is only the JSON
    assert "temporary Prefect server" in out.stderr


def test_dispatch_json_stays_clean_with_progress(
    db_file: Path, engine_for: Engine, tmp_path: Path
) -> None:
    seed_simple(engine_for, datetime(2026, 11, 21, 2, tzinfo=UTC), 30)
    env = {
        "VIPCARE_DATABASE_URL": f"sqlite:///{db_file}",
        "VIPCARE_RULES_DIR": str(all_day_rules(tmp_path / "rules")),
        "VIPCARE_SEND_RATE_PER_SECOND": "1000",
    }
    out = _vipcare(["dispatch", "--json", "--progress"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sent"] == 30
    assert "dispatch" in out.stderr and "sent 30" in out.stderr  # the progress line, on stderr


@pytest.fixture
def engine_for(db_file: Path):  # type: ignore[no-untyped-def]
    from crm.db import make_engine

    eng = make_engine(f"sqlite:///{db_file}")
    yield eng
    eng.dispose()


def test_status_is_healthy_then_names_what_needs_attention(
    db_file: Path, engine_for: Engine, tmp_path: Path
) -> None:
    env = {"VIPCARE_DATABASE_URL": f"sqlite:///{db_file}"}
    healthy = _vipcare(["status", "--json"], tmp_path, env)
    assert healthy.returncode == 0, healthy.stderr
    report = json.loads(healthy.stdout)
    assert report["healthy"] is True and report["attention"] == []
    assert report["scheduler"] == {"state": "never started"}

    now = datetime.now(UTC)
    seed_simple(engine_for, now - timedelta(hours=2), 3)  # due for two hours, not sent
    with connect(engine_for) as conn:
        c = add_customer(conn, "S1", 77)
        add_message(  # claimed by a dispatcher on another host that stopped renewing
            conn,
            c,
            now,
            n=77,
            status="sending",
            attempt_id="A",
            sending_at=now,
            claimed_by="h/1/1/x",
            claimed_at=now - timedelta(minutes=30),
        )
    runs.record(
        engine_for,
        "journey",
        "birthday",
        now,
        runs.FAILED,
        care_day=date.today(),
        error="database error: OperationalError: database is locked",
    )
    with engine_for.begin() as conn:  # a scheduler that died without a clean stop
        from crm.models import SchedulerLease

        conn.execute(
            insert(SchedulerLease).values(
                name="scheduler",
                owner="otherhost/4242/1/t",
                acquired_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(minutes=10),
                expires_at=now - timedelta(minutes=9),
            )
        )
    sick = _vipcare(["status", "--json"], tmp_path, env)
    assert sick.returncode == 3, sick.stderr
    report = json.loads(sick.stdout)
    attention = "\n".join(report["attention"])
    assert "journey birthday failed on care day" in attention and "database is locked" in attention
    assert "message(s) are due and not sent; the oldest has waited 1" in attention
    assert "1 message(s) stuck in 'sending'" in attention
    assert (
        "the scheduler (pid 4242 on host otherhost) stopped without a clean shutdown" in attention
    )
    assert report["queue"]["by_status"] == {"queued": 3, "sending": 1}
    assert report["scheduler"]["state"] == "dead"
    table = _vipcare(["status"], tmp_path, {**env, "COLUMNS": "200"})
    assert table.returncode == 3
    assert table.stdout.startswith("needs attention:")
    assert "stuck in sending: 1" in table.stdout


def test_status_counts_expired_messages_and_overdue_tasks(
    db_file: Path, engine_for: Engine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    seed_simple(
        engine_for,
        now,
        2,
        status="expired",
        status_reason="valid_until: too late",
        updated_at=now - timedelta(hours=2),
    )
    with connect(engine_for) as conn:
        c = add_customer(conn, "T1", 99)
        add_task(conn, c, None, now - timedelta(days=12))
    out = _vipcare(["status", "--json"], tmp_path, {"VIPCARE_DATABASE_URL": f"sqlite:///{db_file}"})
    report = json.loads(out.stdout)
    assert report["expired_last_day"] == {"count": 2, "by_reason": {"valid_until": 2}}
    assert (
        report["overdue_tasks"]["count"] == 1
        and report["overdue_tasks"]["escalate_after_days"] == 7
    )
    assert out.returncode == 0  # shown, but not an alarm: managers' work, escalated by the sweep
    with engine_for.begin() as conn:  # status only reads
        assert conn.execute(JobRun.__table__.select()).all() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_killing_run_never_leaves_its_temporary_prefect_server_behind(
    sig: signal.Signals, db_file: Path, tmp_path: Path
) -> None:
    """Issue 12 defect 9: the temporary server (~200 MB) used to outlive a killed `vipcare run`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIPCARE_", "PREFECT_API"))}
    env.update(
        PYTHONPATH=str(ROOT),
        VIPCARE_DATABASE_URL=f"sqlite:///{db_file}",
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "vipcare", "run", "--dry-run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lock = sqlite3.connect(db_file, isolation_level=None, timeout=60)
    try:
        _read_until(run, "starting a temporary Prefect server")
        lock.execute("BEGIN IMMEDIATE")  # the run will wait for it: it cannot finish first
        seen = _read_until(run, "(pid ")  # "temporary Prefect server ready at … (pid N)"
        server = int(seen.split("(pid ")[1].split(")")[0])
        pidfd = os.pidfd_open(server)
        os.kill(run.pid, sig)
        assert run.wait(timeout=60) != 0  # killed, not finished
        gone, _, _ = select.select([pidfd], [], [], 60)  # readable once the server has exited
        os.close(pidfd)
        assert gone, f"the temporary Prefect server (pid {server}) outlived `vipcare run`"
        lock.execute("ROLLBACK")
    finally:
        lock.close()
        if run.poll() is None:
            run.kill()
            run.wait(30)
        if run.stderr:
            run.stderr.close()


def _read_until(proc: subprocess.Popen[bytes], needle: str) -> str:
    """Read stderr until ``needle`` (select on the pipe, no sleeping)."""
    assert proc.stderr is not None
    seen = b""
    while needle.encode() not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
        assert chunk, f"never saw {needle!r}: {seen.decode()}"
        seen += chunk
    return seen.decode()
