"""The embedded scheduler: lease, catch-up, firing, no overlap, failures, SIGTERM, refusal.

APScheduler really runs (its SQLAlchemy job store in the test database); time is
injected into the jobs; nothing sleeps. Real processes are started for SIGTERM
and for the second scheduler.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import select as sql_select
from test_dispatcher_support import FakeClock, seed_simple, statuses

from crm import process
from crm.models import JobRun, JourneyOccurrence, SchedulerJob
from notifications.backends.mock import MockSMSBackend, MockStore
from notifications.base import NO_RETRY, OutgoingMessage, SendResult
from tests.builders import Crm, all_day_rules
from vipcare.scheduler import daemon, days, jobs, lease
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule
from vipcare.settings import Settings

pytest_plugins = ["plugins.fake_twilio"]

ROOT = Path(__file__).resolve().parent.parent
TZ = "Asia/Shanghai"


class Clock:
    """An injected wall clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_settings(db_url: str, rules_dir: Path | None = None, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "timezone": TZ,
        "send_rate_per_second": 1000,
        "dispatch_concurrency": 2,
    }
    if rules_dir is not None:
        values["rules_dir"] = rules_dir
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def runtime(
    settings: Settings, engine: Engine, clock: Any, **dispatch_options: Any
) -> jobs.Runtime:
    fake = FakeClock()
    options = {"sleep": fake.sleep, "clock": fake, **dispatch_options}
    return jobs.Runtime(
        settings=settings,
        engine=engine,
        schedule=Schedule.from_settings(settings),
        clock=clock,
        owner=process.new_owner(),
        dispatch_options=options,
    )


def job_runs(engine: Engine, kind: str | None = None) -> list[JobRun]:
    with engine.connect() as conn:
        stmt = sql_select(JobRun).order_by(JobRun.id)
        if kind:
            stmt = stmt.where(JobRun.kind == kind)
        return list(conn.execute(stmt).all())


# -- the lease ------------------------------------------------------------------------


def test_a_second_scheduler_is_refused_and_told_who_holds_the_lease(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    first = "db1.example/4242/77/aaa"
    lease.acquire(engine, first, t0)
    with pytest.raises(lease.LeaseRefused) as refused:
        lease.acquire(engine, "db2.example/99/88/bbb", t0 + timedelta(seconds=30))
    message = str(refused.value)
    assert "another vipcare scheduler (pid 4242 on host db1.example)" in message
    assert "only one scheduler may run per database" in message
    # The holder renews it: still refused past the first expiry.
    assert lease.renew(engine, first, t0 + timedelta(seconds=50))
    with pytest.raises(lease.LeaseRefused):
        lease.acquire(engine, "db2.example/99/88/bbb", t0 + timedelta(seconds=70))
    # It stops renewing: once the lease expires, the next scheduler takes it, and the
    # old holder learns it lost it at its next heartbeat.
    lease.acquire(engine, "db2.example/99/88/bbb", t0 + timedelta(seconds=111))
    assert not lease.renew(engine, first, t0 + timedelta(seconds=112))
    holder = lease.read(engine)
    assert holder is not None and holder.owner == "db2.example/99/88/bbb"


def test_a_released_or_dead_holder_frees_the_lease_at_once(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    lease.acquire(engine, "db1.example/1/1/a", t0)
    lease.release(engine, "db1.example/1/1/a", t0 + timedelta(seconds=1))
    lease.acquire(engine, "db1.example/2/2/b", t0 + timedelta(seconds=2))  # no waiting
    with pytest.raises(lease.LeaseRefused):
        lease.acquire(engine, "db1.example/9/9/z", t0 + timedelta(seconds=3))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = process.Owner(process.new_owner().host, gone.pid, "1", "tok").ident
    # Told that the holder is dead, the next scheduler takes over before the expiry.
    lease.acquire(engine, dead, t0 + timedelta(seconds=3), owner_dead=lambda _: True)
    # A holder on this host whose process is really gone (killed -9): taken over at once.
    lease.acquire(engine, "db1.example/3/3/c", t0 + timedelta(seconds=4))
    assert lease.read(engine).owner == "db1.example/3/3/c"  # type: ignore[union-attr]


# -- which days are due -------------------------------------------------------------------


def test_due_days_catch_up_in_order_within_the_window(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url, catch_up_days=3)
    clock = Clock(datetime(2026, 11, 23, 1, 0, tzinfo=UTC))  # 09:00 Shanghai, after 08:00
    rt = runtime(settings, engine, clock)
    # Never ran: today only (no history to catch up), and only once its time has come.
    assert jobs.due_days(rt, CARE_DAY, every_day=True).days == [date(2026, 11, 23)]
    clock.now = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 07:00 Shanghai on the 23rd
    assert jobs.due_days(rt, CARE_DAY, every_day=True).days == []
    days.mark_completed(engine, CARE_DAY, date(2026, 11, 21), clock.now)
    assert jobs.due_days(rt, CARE_DAY, every_day=True).days == [date(2026, 11, 22)]
    clock.now = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # down for a week
    due = jobs.due_days(rt, CARE_DAY, every_day=True)
    assert due.days == [date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30)]
    assert due.skipped == (date(2026, 11, 22), date(2026, 11, 27))
    # A sweep of today's state covers the days before it: the escalation runs once.
    days.mark_completed(engine, ESCALATION, date(2026, 11, 21), clock.now)
    assert jobs.due_days(rt, ESCALATION, every_day=False).days == [date(2026, 11, 30)]
    # The mark only moves forward.
    days.mark_completed(engine, CARE_DAY, date(2026, 11, 30), clock.now)
    days.mark_completed(engine, CARE_DAY, date(2026, 11, 25), clock.now)
    assert days.last_completed(engine, CARE_DAY) == date(2026, 11, 30)


@pytest.mark.slow
def test_care_days_missed_while_down_run_in_order_each_as_its_own_date(
    engine: Engine, db_url: str, prefect_harness: None
) -> None:
    crm = Crm(engine)
    crm.manager("M1", capacity=20)
    for day in (20, 21, 22, 23):
        crm.customer(
            f"B{day}", tier="gold", birthday=date(1980, 11, day), last_contact_on=date(2026, 11, 1)
        )
    settings = make_settings(db_url, catch_up_days=2)
    clock = Clock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))  # 10:00 Shanghai on the 23rd
    rt = runtime(settings, engine, clock)
    days.mark_completed(engine, CARE_DAY, date(2026, 11, 19), clock.now)  # down since the 20th
    assert jobs.run_job(rt, CARE_DAY)
    care = job_runs(engine, "care_day")
    assert [(r.care_day, r.status) for r in care] == [
        (date(2026, 11, 21), "skipped"),  # the 20th and 21st: beyond VIPCARE_CATCH_UP_DAYS=2
        (date(2026, 11, 22), "succeeded"),
        (date(2026, 11, 23), "succeeded"),
    ]
    assert care[0].error.startswith("2 missed care day(s) 2026-11-20 to 2026-11-21 not run")
    with engine.connect() as conn:
        greeted = conn.execute(
            sql_select(JourneyOccurrence.as_of, JourneyOccurrence.decided_at)
            .where(JourneyOccurrence.journey == "birthday")
            .order_by(JourneyOccurrence.as_of)
        ).all()
    # Each day decided as itself, acting as of its own 08:00 (operator time); the 22nd's
    # greeting could no longer arrive on the 22nd (caught up on the 23rd), so that day sent
    # nothing and said so, and the 23rd greeted its own birthday.
    assert [(g.as_of, g.decided_at) for g in greeted] == [
        (date(2026, 11, 23), datetime(2026, 11, 23, 0, 0, tzinfo=UTC)),
    ]
    birthday_runs = {
        r.care_day: r.details for r in job_runs(engine, "journey") if r.name == "birthday"
    }
    assert birthday_runs[date(2026, 11, 22)]["skipped_too_late"] == 1
    assert birthday_runs[date(2026, 11, 22)]["late"] is True
    assert birthday_runs[date(2026, 11, 23)]["decided"] == 1
    assert days.last_completed(engine, CARE_DAY) == date(2026, 11, 23)
    journeys = {(r.name, r.care_day) for r in job_runs(engine, "journey")}
    assert ("birthday", date(2026, 11, 22)) in journeys and (
        "callback",
        date(2026, 11, 23),
    ) in journeys
    assert jobs.run_job(rt, CARE_DAY)  # nothing left to do: no new run
    assert len(job_runs(engine, "care_day")) == 3


# -- APScheduler really running -----------------------------------------------------


@pytest.fixture
def running_scheduler(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[Any]:
    """``daemon.run`` in a thread (signals are the main thread's), stopped after the test."""
    started: dict[str, Any] = {}

    def start(selected: list[str], **options: Any) -> Any:
        ready = threading.Event()
        stop = threading.Event()
        settings = make_settings(db_url, all_day_rules(tmp_path / "rules"))
        failure: list[BaseException] = []

        def target() -> None:
            try:
                daemon.run(
                    settings,
                    selected=selected,
                    engine=engine,
                    install_signals=False,
                    stop=stop,
                    on_ready=lambda s: (started.update(scheduler=s), ready.set()),
                    **options,
                )
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        assert ready.wait(60), "the scheduler did not start"
        if failure:
            raise failure[0]
        started.update(thread=thread, stop=stop)
        return started["scheduler"]

    yield start
    if "stop" in started:
        started["stop"].set()
        started["thread"].join(60)
        assert not started["thread"].is_alive()


def test_the_scheduler_fires_its_jobs_and_stores_them_in_the_crm_database(
    engine: Engine, now: datetime, running_scheduler: Any
) -> None:
    from apscheduler.events import EVENT_JOB_EXECUTED

    ids = seed_simple(engine, now, 5)
    sms = MockSMSBackend(store=MockStore())
    executed: list[str] = []
    done = threading.Event()

    def listen(event: Any) -> None:
        executed.append(event.job_id)
        if event.job_id == "dispatch-startup":
            done.set()

    clock = FakeClock()
    scheduler = running_scheduler(
        [DISPATCH, ESCALATION],
        dispatch_options={"backends": {"sms": sms}, "sleep": clock.sleep, "clock": clock},
    )
    scheduler.add_listener(listen, EVENT_JOB_EXECUTED)
    assert done.wait(60), f"the start-up dispatch never ran; ran: {executed}"
    assert set(statuses(engine).values()) == {"sent"}
    assert sorted(r.message_id for r in sms.sent) == sorted(ids)
    run = job_runs(engine, "dispatch")[0]  # (a 5-minute boundary may add a second one)
    assert run.status == "succeeded" and run.details["sent"] == 5
    with engine.connect() as conn:
        stored = dict(conn.execute(sql_select(SchedulerJob.id, SchedulerJob.next_run_time)).all())
    assert set(stored) == {DISPATCH, ESCALATION}  # the care day was not selected
    nxt = datetime.fromtimestamp(stored[DISPATCH], UTC)
    assert (
        nxt.minute % 5 == 0 and nxt.second == 0 and nxt > datetime.now(UTC) - timedelta(minutes=1)
    )
    esc = datetime.fromtimestamp(stored[ESCALATION], UTC).astimezone(ZoneInfo(TZ))
    assert (esc.hour, esc.minute) == (7, 30)  # VIPCARE_ESCALATE_AT, operator time


class Blocking(MockSMSBackend):
    """Holds every send until released: a dispatch that is still running."""

    def __init__(self) -> None:
        super().__init__(store=MockStore())
        self.entered = threading.Event()
        self.release = threading.Event()

    def _send(self, msg: OutgoingMessage) -> SendResult:
        self.entered.set()
        assert self.release.wait(60)
        return super()._send(msg)


def test_a_job_never_overlaps_itself(engine: Engine, now: datetime, running_scheduler: Any) -> None:
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES

    sms = Blocking()
    clock = FakeClock()
    idle = threading.Event()
    skipped = threading.Event()
    finished = threading.Event()
    scheduler = running_scheduler(
        [DISPATCH],
        dispatch_options={"backends": {"sms": sms}, "sleep": clock.sleep, "clock": clock},
    )

    def executed(event: Any) -> None:
        (idle if event.job_id == "dispatch-startup" else finished).set()

    scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
    scheduler.add_listener(lambda e: skipped.set(), EVENT_JOB_MAX_INSTANCES)
    assert idle.wait(60) or job_runs(engine, "dispatch")  # the start-up run found nothing
    seed_simple(engine, now, 2)
    scheduler.modify_job(DISPATCH, next_run_time=datetime.now(UTC))  # the cron fires now
    assert sms.entered.wait(60)  # ... and is sending (held)
    scheduler.modify_job(DISPATCH, next_run_time=datetime.now(UTC))  # fires again meanwhile
    assert skipped.wait(60)  # APScheduler refused a second instance (max_instances=1)
    # Start-up, retry and cron runs share one lock: a direct call does nothing either.
    assert jobs.run_job(jobs.current(), DISPATCH) is False
    sms.release.set()
    assert finished.wait(60)
    dispatches = job_runs(engine, "dispatch")
    assert [r.details.get("sent") for r in dispatches] == [0, 2]  # never two at once


def test_a_provider_outage_fails_the_job_visibly_and_the_scheduler_goes_on(
    engine: Engine,
    db_url: str,
    now: datetime,
    fake_twilio: Any,
    twilio_settings: Any,
    tmp_path: Path,
) -> None:
    from notifications.backends import get_backend
    from vipcare.health import collect

    seed_simple(engine, now, 3)
    fake_twilio.queue_fault(503, count=100, method="POST")
    clock = FakeClock()
    sms = get_backend(twilio_settings, "sms", sleep=clock.sleep, retry=NO_RETRY)
    settings = make_settings(db_url, all_day_rules(tmp_path / "rules"))
    wall = Clock(now + timedelta(hours=1))
    rt = runtime(settings, engine, wall, backends={"sms": sms})
    assert jobs.run_job(rt, DISPATCH)  # returns: the scheduler is not brought down
    (run,) = job_runs(engine, "dispatch")
    assert run.status == "failed"
    assert run.error == "the provider is failing: 3 message(s) put back for a later try, none sent"
    health = collect(engine, rt.schedule, wall.now, escalate_after_days=7)
    assert any(
        a.startswith("the last dispatch run failed: the provider is failing")
        for a in health.attention
    )
    # Twilio is back: the next run sends, and the job is healthy again.
    fake_twilio.reset()
    wall.now += timedelta(minutes=30)
    assert jobs.run_job(rt, DISPATCH)
    assert job_runs(engine, "dispatch")[-1].status == "succeeded"
    assert set(statuses(engine).values()) == {"sent"}
    health = collect(engine, rt.schedule, wall.now, escalate_after_days=7)
    assert not [a for a in health.attention if "dispatch" in a]


def test_a_locked_database_fails_the_job_visibly_later(
    tmp_path: Path, sqlite_template: Path, now: datetime
) -> None:
    """SQLite locked by another writer: the job fails, the record is written once it frees."""
    from crm.db import make_engine

    db = tmp_path / "locked.db"
    db.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db}"
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _impatient(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=50")  # fail fast instead of waiting 30 s

    seed_simple(engine, now, 2)
    rt = runtime(make_settings(url, all_day_rules(tmp_path / "rules")), engine, Clock(now))
    blocker = make_engine(url)
    with blocker.connect() as conn:
        conn.execute(text("UPDATE customers SET name = name"))  # holds the write lock
        assert jobs.run_job(rt, DISPATCH)  # fails inside, returns: the scheduler goes on
        assert job_runs(create_engine(url)) == []  # nothing could be written (plain read)
        assert len(rt.pending) == 1 and "database is locked" in (rt.pending[0].error or "")
        conn.rollback()
    lease.acquire(engine, rt.owner.ident, now)
    jobs.heartbeat(rt)  # the next heartbeat writes the deferred record
    (run,) = job_runs(engine, "dispatch")
    assert run.status == "failed"
    assert run.error == "could not start: database error: OperationalError: database is locked"
    assert rt.pending == []
    engine.dispose()
    blocker.dispose()


# -- real processes ------------------------------------------------------------------------


def _spawn(db_url: str, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIPCARE_DATABASE_URL": db_url,
        "VIPCARE_RULES_DIR": str(all_day_rules(tmp_path / "rules")),
        "VIPCARE_MOCK_STORE": str(tmp_path / "provider.jsonl"),
        "VIPCARE_TIMEZONE": TZ,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "vipcare", "scheduler", *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(proc: subprocess.Popen[bytes], needle: str, timeout: float = 120) -> str:
    """Read the process's stderr until a line contains ``needle`` (select, no sleeping)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(
                f"no {needle!r} within {timeout} s; stderr so far:\n{seen.decode()}"
            )
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"exited before {needle!r}; stderr:\n{seen.decode()}")
        seen += chunk
    return seen.decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def test_sigterm_lets_the_job_in_flight_finish_then_releases_the_lease(
    db_url: str, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    ids = seed_simple(engine, now, 12)
    proc = _spawn(db_url, tmp_path, "--job", "dispatch", VIPCARE_SEND_RATE_PER_SECOND="4")
    try:
        _wait_for(proc, "dispatch: started")  # 12 messages at 4/s: about 3 s of sending
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    tail = err.decode()
    assert proc.returncode == 0, tail
    assert "finishing the job in flight, then stopping" in tail
    assert "dispatch: done" in tail and "lease released" in tail
    (run,) = job_runs(engine, "dispatch")
    assert (run.status, run.details["sent"], run.details["stopped"]) == ("succeeded", 12, True)
    assert set(statuses(engine).values()) == {"sent"}  # nothing left in 'sending'
    holder = lease.read(engine)
    assert holder is not None and holder.released_at is not None
    sent = [r.message_id for r in MockStore(tmp_path / "provider.jsonl").records()]
    assert sorted(sent) == sorted(ids)


def test_a_second_scheduler_process_refuses_to_run(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    first = _spawn(db_url, tmp_path, "--job", "dispatch")
    try:
        _wait_for(first, "scheduler running")
        second = subprocess.run(
            [sys.executable, "-m", "vipcare", "scheduler", "--job", "dispatch"],
            env={**os.environ, "PYTHONPATH": str(ROOT), "VIPCARE_DATABASE_URL": db_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"another vipcare scheduler (pid {first.pid} on host" in lines[0]
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        assert first.returncode == 0
    finally:
        _stop(first)
    # Released on a clean stop: the next one starts at once.
    third = _spawn(db_url, tmp_path, "--job", "dispatch")
    try:
        _wait_for(third, "scheduler running")
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=120)
        assert third.returncode == 0
    finally:
        _stop(third)


@pytest.mark.slow
def test_the_care_day_job_runs_on_the_one_warm_prefect_server(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A real scheduler process: one temporary server for the process, reused by the job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vipcare", "scheduler", "--job", "care-day"],
        env={
            **env,
            "PYTHONPATH": str(ROOT),
            "VIPCARE_DATABASE_URL": db_url,
            "VIPCARE_CARE_RUN_AT": "00:00",  # today's run is due at once
            "PREFECT_HOME": str(tmp_path / "prefect"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = _wait_for(proc, "care-day: done", timeout=240)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    log = first + err.decode()
    assert proc.returncode == 0, log
    assert log.count("starting a temporary Prefect server") == 1, log  # not one per job
    (run,) = job_runs(engine, "care_day")
    assert run.status == "succeeded" and run.care_day == datetime.now(ZoneInfo(TZ)).date()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_schedulers_prefect_runs_hold_no_database_password(
    db_url: str, tmp_path: Path, prefect_harness: None
) -> None:
    """A scheduler pointed at a Prefect server leaves no CRM password in it (issue 16, #14).

    Anyone who can read the Prefect API reads every flow run's parameters; the care
    day's flow gets its CRM from the scheduler's settings, not from a parameter.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL
    from sqlalchemy.engine import make_url

    password = "S3cretPW-" + os.urandom(6).hex()  # trust auth: PostgreSQL ignores it
    url = make_url(db_url).set(password=password).render_as_string(hide_password=False)
    api = str(PREFECT_API_URL.value())
    proc = _spawn(
        url,
        tmp_path,
        "--job",
        "care-day",
        VIPCARE_CARE_RUN_AT="00:00",  # today's run is due at once
        PREFECT_API_URL=api,
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    try:
        _wait_for(proc, "care-day: done", timeout=240)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err.decode()

    def read(what: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        found = httpx.post(f"{api}/{what}/filter", json={"limit": 200, **body}, timeout=30)
        found.raise_for_status()
        rows: list[dict[str, Any]] = found.json()
        return rows

    today = datetime.now(ZoneInfo(TZ)).date().isoformat()
    runs = [
        r
        for r in read("flow_runs", {"flows": {"name": {"any_": ["daily-care"]}}})
        if r["parameters"].get("params", {}).get("as_of") == today
        # this test's own scheduler (other tests of the session share the server)
        and r["parameters"]["params"].get("rules_dir") == str(tmp_path / "rules")
    ]
    assert len(runs) == 1, runs  # the scheduler's run, its parameters read back
    ids = {"any_": [runs[0]["id"]]}
    stored = {
        "flow run": json.dumps(runs),
        "task runs": json.dumps(read("task_runs", {"flow_runs": {"id": ids}})),
        "logs": json.dumps(read("logs", {"logs": {"flow_run_id": ids}})),
        "artifacts": json.dumps(read("artifacts", {"flow_runs": {"id": ids}})),
    }
    assert '"hygiene' in stored["task runs"] and '"rules_dir"' in stored["flow run"]
    assert [what for what, text in stored.items() if password in text] == []
