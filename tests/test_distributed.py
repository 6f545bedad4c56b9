"""Scale-out on Prefect: a real ``prefect server start``, two ``prefect worker start`` processes.

``vipcare deploy`` creates the deployments and the strict send-rate limits; a
sharded care day runs on the workers (the shards as separate flow runs the
workers pick up); the CRM must end exactly as after a single-process run of the
same day on an identical database. Then two dispatch lanes send on the workers
at once, held together to the configured rate by the Prefect global
concurrency limit. Slow (three Prefect processes), but CI runs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import select as sql_select

import seed
from crm.db import make_engine
from crm.models import (
    JobRun,
    OutboundMessage,
)
from crm.schema import upgrade
from flows.daily import DailyCareParams, journeys_to_run, run_part
from notifications.backends.mock import MockStore
from tests.builders import all_day_rules
from tests.conftest import PG_ADMIN_URL
from tests.crm_twins import snapshot
from vipcare.scheduler.schedule import CARE_DAY, Schedule
from vipcare.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAY = date(2026, 11, 23)
POOL = "vipcare-test"
RATE = 8
BATCH = 100
RULES = Path(os.environ.get("TMPDIR", "/tmp")) / f"vipcare-dist-rules-{os.getpid()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output:
    """Everything a child process prints, read by a thread so its pipe never fills up.

    (A Prefect server logging each request into a pipe nobody reads blocks, and
    then stops answering.) :meth:`wait_for` waits on a condition, never sleeps.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            with self._changed:
                self.text += line.decode(errors="replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        with self._changed:
            done = self._changed.wait_for(
                lambda: needle in self.text or not self._thread.is_alive(), timeout
            )
            if not done or needle not in self.text:
                raise AssertionError(f"no {needle!r} within {timeout} s:\n{self.text[-3000:]}")


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Output]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, Output(proc)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def databases() -> Iterator[tuple[str, str, str]]:
    """Fresh PostgreSQL databases: the workers' CRM, the single run's CRM, Prefect's own."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    names = [
        f"vipcare_dist_{worker}_{os.getpid()}_{kind}" for kind in ("workers", "single", "prefect")
    ]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    urls = [f"{base}/{name}" for name in names]
    for url in urls[:2]:
        engine = make_engine(url)
        upgrade(engine)
        seed.generate(engine, 800, seed=21, as_of=DAY - timedelta(days=1))
        with engine.begin() as conn:  # debts, so grace credits and suspensions happen
            conn.execute(text("UPDATE customers SET balance = -8000 WHERE id % 11 = 0"))
            conn.execute(
                text("UPDATE balance_facts SET balance = -8000 WHERE customer_id % 11 = 0")
            )
        engine.dispose()
    yield urls[0], urls[1], urls[2]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _on_time() -> datetime:
    """The real clock both runs are judged against: a minute after the day's instant."""
    at = Schedule.from_settings(Settings(_env_file=None)).fire_instant(CARE_DAY, DAY)  # type: ignore[call-arg]
    return at + timedelta(minutes=1)


def _single_process_run(url: str) -> None:
    """The same care day in this process, one shard, no Prefect: the reference."""
    at = Schedule.from_settings(Settings(_env_file=None)).fire_instant(CARE_DAY, DAY)  # type: ignore[call-arg]
    params = DailyCareParams(
        as_of=DAY,
        at=at,
        database_url=url,
        rules_dir=str(RULES),
        run_id="single",
        batch_size=BATCH,  # the workers' VIPCARE_BATCH_SIZE: the same configuration
        now=_on_time(),  # judged as the workers' run is: on time
    )
    for journey in journeys_to_run(params):
        run_part(params, "single", journey, 0)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sharded_care_day_on_two_workers_ends_as_a_single_run(
    databases: tuple[str, str, str], tmp_path: Path
) -> None:
    workers_url, single_url, prefect_url = databases
    all_day_rules(RULES)  # messages are due now, whatever the wall clock's hour
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # the workers say when they have started
        "VIPCARE_DATABASE_URL": workers_url,
        "VIPCARE_TIMEZONE": "Asia/Shanghai",
        "VIPCARE_RULES_DIR": str(RULES),
        "VIPCARE_SEND_RATE_PER_SECOND": str(RATE),
        "VIPCARE_BATCH_SIZE": str(BATCH),  # dispatch chunks of 100: both lanes get work
        "VIPCARE_MOCK_STORE": str(tmp_path / "provider.jsonl"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server, server_out = _start(
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--no-scheduler",
                "--no-late-runs",
            ],
            {
                **env,
                "PREFECT_SERVER_LOGGING_LEVEL": "INFO",  # "Uvicorn running on" says it is up
                # Prefect's own database on PostgreSQL too, as in production.
                "PREFECT_API_DATABASE_CONNECTION_URL": prefect_url.replace(
                    "postgresql+psycopg", "postgresql+asyncpg"
                ),
            },
        )
        procs.append(server)
        server_out.wait_for("Uvicorn running on")
        deployed = subprocess.run(
            [
                sys.executable,
                "-m",
                "vipcare",
                "deploy",
                "--work-pool",
                POOL,
                "--shards",
                "2",
                "--lanes",
                "2",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert deployed.returncode == 0, deployed.stderr
        names = {d["name"] for d in json.loads(deployed.stdout)}
        assert {"vipcare-care-day/care-day", "vipcare-care-shard/care-shard"} <= names
        for name in ("w1", "w2"):
            worker, worker_out = _start(
                [
                    str(BIN / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    POOL,
                    "--type",
                    "process",
                    "--name",
                    name,
                ],
                env,
            )
            procs.append(worker)
            worker_out.wait_for(f"Worker '{name}' started")

        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api}):
            care = run_deployment(
                "vipcare-care-day/care-day",
                parameters={"as_of": DAY.isoformat(), "now": _on_time().isoformat()},
                timeout=300,
                poll_interval=1,
            )
        assert care.state is not None and care.state.is_completed(), care.state

        _single_process_run(single_url)
        distributed, single = make_engine(workers_url), make_engine(single_url)
        try:
            with distributed.connect() as conn:
                shards = sorted(
                    (r.name, r.shard)
                    for r in conn.execute(sql_select(JobRun).where(JobRun.kind == "journey"))
                )
            # Every journey ran in two shards (separate flow runs, customers split by
            # manager); the hygiene sweep once, before them.
            journeys = ("birthday", "callback", "grace_credit", "plan_fit", "precall_notice")
            assert shards == sorted(
                [("hygiene", None)] + [(j, f"{i}/2") for j in journeys for i in range(2)]
            )
            got, want = snapshot(distributed), snapshot(single)
            assert sum(len(v) for v in want.values()) > 1000  # a real day, not an empty one
            assert want["graces"] and want["tasks"] and want["ledger"]
            for table in want:
                assert got[table] == want[table], table

            # Two dispatchers on the workers at once, together held to the send rate.
            with temporary_settings(updates={PREFECT_API_URL: api}):
                sent = run_deployment(
                    "vipcare-dispatch/dispatch",
                    parameters={"lanes": 2},
                    timeout=300,
                    poll_interval=1,
                )
            assert sent.state is not None and sent.state.is_completed(), sent.state
            with distributed.connect() as conn:
                lanes = conn.execute(
                    sql_select(JobRun.owner, JobRun.details).where(JobRun.kind == "dispatch")
                ).all()
                times = sorted(
                    conn.execute(
                        sql_select(OutboundMessage.sent_at).where(
                            OutboundMessage.sent_at.is_not(None)
                        )
                    ).scalars()
                )
                left = conn.execute(
                    sql_select(OutboundMessage.id).where(OutboundMessage.status == "sending")
                ).all()
            assert len(lanes) == 2 and len({owner for owner, _ in lanes}) == 2
            # Both lanes claimed and sent, and at the same time (each chunk is 100 rows,
            # 12.5 s at RATE/s: the second lane starts while the first still sends).
            spans = sorted((d["started_at"], d["finished_at"], d["sent"]) for _, d in lanes)
            assert all(sent > 0 for _, _, sent in spans), spans
            assert spans[1][0] < spans[0][1], spans
            assert left == []
            assert len(times) == sum(details["sent"] for _, details in lanes) >= 60
            sends = Counter(r.message_id for r in MockStore(tmp_path / "provider.jsonl").records())
            assert set(sends.values()) == {1}  # no message twice
            busiest = max(
                sum(1 for t in times if start <= t < start + timedelta(seconds=1))
                for start in times
            )
            # Alone, each lane may send RATE/s; together they stay within RATE/s plus the
            # limit's burst (2 slots) and a little timestamp jitter, well below 2 x RATE.
            print(f"\ntwo lanes: {len(times)} sent, busiest second {busiest} (limit {RATE}/s)")
            assert busiest <= RATE + 3, busiest
        finally:
            distributed.dispose()
            single.dispose()
    finally:
        _stop(list(reversed(procs)))
