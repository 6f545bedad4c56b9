"""Scale-out on Prefect: a real ``prefect server start`` with its scheduler on, two workers.

One server and one pair of ``prefect worker start`` processes serve every phase
(starting them is most of the cost):

1. ``vipcare deploy``: the server's scheduler creates the runs of vipcare's cron
   schedules at their fire instants. With SQLAlchemy 2.1 it created none ("Can't
   evaluate bulk DML statement" every loop), which is why ``pyproject.toml``
   pins ``sqlalchemy<2.1``.
2. The schedules are paused, so nothing fires during the manual runs, and the
   workers start, from a shell, in a folder whose ``.env`` is their only
   configuration (Prefect runs each flow in a temporary folder).
3. A sharded care day runs on the workers (the shards as separate flow runs);
   the CRM must end exactly as after a single-process run of the same day on an
   identical database.
4. Two dispatch lanes send on the workers at once, held together to the
   configured rate by the Prefect global concurrency limit.
5. A schedule shortened to a run a few seconds ahead: the server's scheduler
   creates the run and a worker runs it against the CRM, as of its fire time.
6. Nothing Prefect stores (flow-run and deployment parameters, job variables,
   logs, events, artifacts, ...) holds the CRM password or the Twilio token.

Slow (three Prefect processes), but CI runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

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
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule
from vipcare.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAY = date(2026, 11, 23)
POOL = "vipcare-test"
TZ = "Asia/Shanghai"
RATE = 8
BATCH = 100
RULES = Path(os.environ.get("TMPDIR", "/tmp")) / f"vipcare-dist-rules-{os.getpid()}"
TOKEN = "twilio-token-" + secrets.token_hex(8)
SCHEDULED = {
    CARE_DAY: "vipcare-care-day/care-day",
    DISPATCH: "vipcare-dispatch/dispatch",
    ESCALATION: "vipcare-escalation/escalation",
}


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

    def mark(self) -> int:
        with self._changed:
            return len(self.text)

    def wait_for(self, pattern: str, timeout: float = 120, since: int = 0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` printed after ``since``."""
        found: list[re.Match[str]] = []

        def matched() -> bool:
            hit = re.compile(pattern).search(self.text, since)
            if hit:
                found.append(hit)
            return bool(hit) or not self._thread.is_alive()

        with self._changed:
            self._changed.wait_for(matched, timeout)
            if not found:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text[-3000:]}")
        return found[0]


def _start(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], Output]:
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
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


def _with_password(url: str) -> tuple[str, str]:
    """``url`` with a password in it (trust auth ignores it), and that password."""
    parsed = make_url(url)
    password = parsed.password or "S3cretPW-" + secrets.token_hex(6)
    return parsed.set(password=password).render_as_string(hide_password=False), password


def _worker_folder(folder: Path, crm_url: str, mock_store: Path) -> Path:
    """The folder the workers start in: its ``.env`` is all the configuration they get."""
    folder.mkdir()
    (folder / ".env").write_text(
        "\n".join(
            [
                f"VIPCARE_DATABASE_URL={crm_url}",
                f"VIPCARE_TIMEZONE={TZ}",
                f"VIPCARE_RULES_DIR={RULES}",
                f"VIPCARE_SEND_RATE_PER_SECOND={RATE}",
                f"VIPCARE_BATCH_SIZE={BATCH}",  # dispatch chunks of 100: both lanes get work
                f"VIPCARE_MOCK_STORE={mock_store}",
                f"TWILIO_AUTH_TOKEN={TOKEN}",  # read, never used by the mock backends
                "",
            ]
        ),
        encoding="utf-8",
    )
    return folder


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
        rules_dir=str(RULES),
        run_id="single",
        batch_size=BATCH,  # the workers' VIPCARE_BATCH_SIZE: the same configuration
        now=_on_time(),  # judged as the workers' run is: on time
    )
    engine = make_engine(url)
    try:
        for journey in journeys_to_run(engine, params):
            run_part(engine, params, "single", journey, 0)
    finally:
        engine.dispose()


def _read_all(api: str, what: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object of a Prefect ``/{what}/filter`` endpoint, page by page."""
    found: list[dict[str, Any]] = []
    while True:
        page = httpx.post(
            f"{api}/{what}/filter",
            json={**(body or {}), "limit": 200, "offset": len(found)},
            timeout=30,
        )
        page.raise_for_status()
        rows = page.json()
        found += rows
        if len(rows) < 200:
            return found


def _deployment_ids(api: str) -> dict[str, str]:
    """Deployment id by ``flow/deployment`` name."""
    flows = {f["id"]: f["name"] for f in _read_all(api, "flows")}
    return {f"{flows[d['flow_id']]}/{d['name']}": d["id"] for d in _read_all(api, "deployments")}


def _scheduled_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    return _read_all(
        api,
        "flow_runs",
        {
            "sort": "EXPECTED_START_TIME_ASC",
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        },
    )


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _fire_times(schedule: Schedule, job: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants of ``job`` after ``after``, by vipcare's own trigger."""
    trigger, fires = schedule.trigger(job), []
    while len(fires) < count:
        fire = trigger.get_next_fire_time(None, after)
        assert fire is not None
        fires.append(fire.astimezone(UTC))
        after = fire + timedelta(seconds=1)
    return fires


def _until_scheduled(
    server_out: Output, ready: Callable[[], bool], what: str, loops: int = 20
) -> None:
    """Wait, loop by loop of the server's scheduler (its log line), until ``ready()``."""
    for _ in range(loops):
        mark = server_out.mark()
        if ready():
            return
        server_out.wait_for(r"Scheduled \d+ runs", timeout=90, since=mark)
    tail = server_out.text[-3000:]
    assert ready(), f"{what}: not scheduled after {loops} loops of the scheduler:\n{tail}"


def _check_cron_runs_scheduled(
    api: str, server_out: Output, schedule: Schedule, deployed_at: datetime
) -> dict[str, str]:
    """Phase 1: the server's scheduler made each cron deployment's next runs, on its cron."""
    ids = _deployment_ids(api)
    runs: dict[str, list[dict[str, Any]]] = {}

    def all_scheduled() -> bool:
        runs.update({name: _scheduled_runs(api, ids[name]) for name in SCHEDULED.values()})
        return all(len(found) >= 3 for found in runs.values())

    _until_scheduled(server_out, all_scheduled, "the cron deployments")
    for job, name in SCHEDULED.items():
        assert all(r["auto_scheduled"] for r in runs[name]), (name, runs[name][:3])
        got = [_instant(r["expected_start_time"]) for r in runs[name][:3]]
        fires = _fire_times(schedule, job, deployed_at, 4)
        # The first fire may have passed while the scheduler ran: then it starts one later.
        assert got in (fires[:3], fires[1:4]), (name, got, fires)
    print("\nscheduled by the server: " + ", ".join(f"{n} {len(r)}" for n, r in runs.items()))
    return ids


def _pause_schedules(api: str, ids: dict[str, str]) -> None:
    """Phase 2: nothing fires during the manual runs (and no run is left waiting)."""
    for name in SCHEDULED.values():
        paused = httpx.post(f"{api}/deployments/{ids[name]}/pause_deployment", timeout=30)
        paused.raise_for_status()
        for run in _scheduled_runs(api, ids[name]):  # one whose time came before the pause
            httpx.delete(f"{api}/flow_runs/{run['id']}", timeout=30).raise_for_status()
        assert _scheduled_runs(api, ids[name]) == []


def _check_a_scheduled_run_is_run_by_a_worker(
    api: str, server_out: Output, deployment_id: str, crm_url: str
) -> None:
    """Phase 5: the escalation, scheduled a few seconds ahead, fires and runs on a worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.flow_runs import wait_for_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    anchor = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        c.create_deployment_schedules(
            deployment_id,  # type: ignore[arg-type]
            [(IntervalSchedule(interval=timedelta(hours=1), anchor_date=anchor), True)],
        )
        c.resume_deployment(deployment_id)
    found: list[dict[str, Any]] = []

    def made() -> bool:
        runs = _scheduled_runs(api, deployment_id)
        found[:] = [r for r in runs if _instant(r["expected_start_time"]) == anchor]
        return bool(found)

    _until_scheduled(server_out, made, "the escalation 3 s ahead")
    (run,) = found
    assert run["auto_scheduled"] and run["parameters"] == {}
    with temporary_settings(updates={PREFECT_API_URL: api}):
        finished = asyncio.run(wait_for_flow_run(UUID(run["id"]), timeout=180))
    assert finished.state is not None and finished.state.is_completed(), finished.state
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        c.pause_deployment(deployment_id)
    engine = make_engine(crm_url)
    try:
        with engine.connect() as conn:
            escalations = conn.execute(
                sql_select(JobRun.care_day, JobRun.status, JobRun.owner).where(
                    JobRun.kind == "escalation"
                )
            ).all()
    finally:
        engine.dispose()
    # It wrote to the CRM its .env names, as of its own fire time (the day in the operator's zone).
    assert [(d, s) for d, s, _ in escalations] == [
        (anchor.astimezone(ZoneInfo(TZ)).date(), "succeeded")
    ], escalations


def _check_no_secret_in_prefect(api: str, needles: list[str]) -> int:
    """Phase 6: everything Prefect keeps, read back through its API, holds no secret."""
    dumps = {
        what: json.dumps(_read_all(api, what))
        for what in (
            "flow_runs",
            "deployments",
            "task_runs",
            "logs",
            "artifacts",
            "variables",
            "block_documents",
            "work_pools",
        )
    }
    events = httpx.post(
        f"{api}/events/filter",
        json={"filter": {"occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50},
        timeout=30,
    )
    events.raise_for_status()
    pages = [events.json()]
    while pages[-1].get("next_page"):
        more = httpx.get(pages[-1]["next_page"], timeout=30)
        more.raise_for_status()
        pages.append(more.json())
    dumps["events"] = json.dumps(pages)
    # The grep sees what it must: the runs' parameters and the deployments' job variables.
    assert '"as_of": "2026-11-23"' in dumps["flow_runs"] and '"lanes": 2' in dumps["flow_runs"]
    assert '"job_variables"' in dumps["deployments"] and '"parameters"' in dumps["deployments"]
    assert '"vipcare-care-shard"' in dumps["events"] or "care-shard" in dumps["events"]
    leaks = [(what, needle) for what, text in dumps.items() for needle in needles if needle in text]
    assert leaks == []
    return sum(len(t) for t in dumps.values())


@pytest.mark.slow
@pytest.mark.postgres
def test_deployments_fire_on_schedule_and_scale_out_on_two_workers_without_secrets_in_prefect(
    databases: tuple[str, str, str], tmp_path: Path
) -> None:
    plain_url, single_url, prefect_url = databases
    workers_url, password = _with_password(plain_url)
    all_day_rules(RULES)  # messages are due now, whatever the wall clock's hour
    folder = _worker_folder(tmp_path / "worker", workers_url, tmp_path / "provider.jsonl")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIPCARE_")},
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # the workers say when they have started
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
                "--no-late-runs",
            ],
            {
                **env,
                "PREFECT_SERVER_LOGGING_LEVEL": "INFO",  # "Uvicorn running on", "Scheduled N runs"
                # The scheduler looks at new and changed deployments every second, at
                # all of them every 5 s (Prefect's defaults: 5 s and 60 s).
                "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                # Prefect's own database on PostgreSQL too, as in production.
                "PREFECT_API_DATABASE_CONNECTION_URL": prefect_url.replace(
                    "postgresql+psycopg", "postgresql+asyncpg"
                ),
            },
        )
        procs.append(server)
        server_out.wait_for("Uvicorn running on")

        # 1. Deployed from the folder whose .env the workers read; the scheduler fires.
        deployed_at = datetime.now(UTC)
        deployed = subprocess.run(
            [
                *(sys.executable, "-m", "vipcare", "deploy", "--work-pool", POOL),
                *("--shards", "2", "--lanes", "2", "--json"),
            ],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert deployed.returncode == 0, deployed.stderr
        names = {d["name"] for d in json.loads(deployed.stdout)}
        assert {"vipcare-care-day/care-day", "vipcare-care-shard/care-shard"} <= names
        settings = Settings(_env_file=folder / ".env")  # type: ignore[call-arg]
        ids = _check_cron_runs_scheduled(
            api, server_out, Schedule.from_settings(settings), deployed_at
        )

        # 2. Paused while the manual runs go on; the workers start from a shell in `folder`.
        _pause_schedules(api, ids)
        for name in ("w1", "w2"):
            worker, worker_out = _start(
                [
                    "bash",
                    "-c",
                    'cd "$1" && exec "$2" worker start --pool "$3" --type process --name "$4"',
                    "worker-shell",
                    str(folder),
                    str(BIN / "prefect"),
                    POOL,
                    name,
                ],
                env,
            )
            procs.append(worker)
            worker_out.wait_for(f"Worker '{name}' started")

        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # 3. A sharded care day on the workers ends as a single run does.
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

            # 4. Two dispatchers on the workers at once, together held to the send rate.
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

        # 5. A run the server's scheduler creates, run by a worker as of its fire time.
        _check_a_scheduled_run_is_run_by_a_worker(
            api, server_out, ids[SCHEDULED[ESCALATION]], workers_url
        )
        assert "InvalidRequestError" not in server_out.text
        assert "Error scheduling deployment" not in server_out.text

        # 6. Read back through the API, Prefect holds neither the password nor the token.
        read = _check_no_secret_in_prefect(api, [password, TOKEN])
        print(f"secret grep: {read} characters of Prefect's API read, 0 secrets")
    finally:
        _stop(list(reversed(procs)))
