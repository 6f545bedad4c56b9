"""``vipcare scheduler``: one long-running process that runs the jobs at their cron times.

APScheduler 3 with its jobs in a ``SQLAlchemyJobStore`` in the CRM database
(table ``scheduler_jobs``, where ``vipcare status`` reads the next fire times),
cron triggers in the operator's time zone, ``coalesce``, ``max_instances=1``
and a misfire grace per job. At start every job runs once: the care day catches
up the days missed while the process was down, in order, each as its own date.

One scheduler per database: the process first takes the database lease
(:mod:`.lease`) and refuses to run, saying who holds it, when another has it.
SIGTERM or SIGINT stops it gracefully: no new job starts, the dispatcher
finishes the chunk in flight and returns, a running care day finishes, then
the lease is released. (A job cut short by a harder kill is safe to resume:
occurrence keys make the care day a no-op where it already decided, and the
next dispatcher reclaims the dead run's claims at once.)
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from crm import process
from crm.db import make_engine
from vipcare.scheduler import jobs, lease
from vipcare.scheduler.schedule import CARE_DAY, Schedule
from vipcare.settings import Settings

log = logging.getLogger("vipcare.scheduler")
JOB_TABLE = "scheduler_jobs"


class SchedulerStopped(Exception):
    """The scheduler had to stop (its lease was taken over)."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


def build(rt: jobs.Runtime, selected: Collection[str]) -> BackgroundScheduler:
    """The APScheduler instance for ``rt``: persistent jobs, heartbeat, retries (not started)."""
    scheduler = BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(engine=rt.engine, tablename=JOB_TABLE),
            "internal": MemoryJobStore(),
        },
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=rt.schedule.tz,
    )
    for spec in rt.schedule.jobs():
        if spec.id not in selected:
            continue
        scheduler.add_job(
            f"vipcare.scheduler.jobs:{jobs.ENTRY_POINTS[spec.id].__name__}",
            trigger=rt.schedule.trigger(spec.id),
            id=spec.id,
            name=spec.description,
            replace_existing=True,
            misfire_grace_time=spec.misfire_grace_seconds,
        )
    scheduler.add_job(
        jobs.heartbeat_job,
        "interval",
        seconds=lease.HEARTBEAT.total_seconds(),
        id="heartbeat",
        jobstore="internal",
    )

    def retry_later(job_id: str, when: datetime) -> None:
        run_once(scheduler, job_id, when, "retry")

    rt.retry_later = retry_later

    def skipped(event: JobExecutionEvent) -> None:
        log.warning("%s is still running; this fire is skipped (max_instances=1)", event.job_id)

    scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
    return scheduler


def forget_unselected(scheduler: BackgroundScheduler, selected: Collection[str]) -> None:
    """Jobs stored by an earlier run with other ``--job`` choices no longer fire."""
    for job in scheduler.get_jobs(jobstore="default"):
        if job.id not in selected:
            scheduler.remove_job(job.id, jobstore="default")


def run_once(scheduler: BackgroundScheduler, job_id: str, when: datetime, why: str) -> None:
    """One extra run of a job at ``when`` (in memory: it shares the job's lock, not its id)."""
    scheduler.add_job(
        jobs.ENTRY_POINTS[job_id],
        "date",
        run_date=when,
        id=f"{job_id}-{why}",
        jobstore="internal",
        replace_existing=True,
        misfire_grace_time=3600,
    )


def start_jobs_now(scheduler: BackgroundScheduler, selected: Collection[str]) -> None:
    """Run every selected job once at start: catch-up after downtime, first dispatch."""
    now = datetime.now(UTC)
    for job_id in selected:
        run_once(scheduler, job_id, now, "startup")


def next_fire_times(scheduler: BackgroundScheduler) -> dict[str, datetime | None]:
    return {job.id: job.next_run_time for job in scheduler.get_jobs(jobstore="default")}


@contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.strsignal(signum)
        log.info("received %s: finishing the job in flight, then stopping", name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(
    settings: Settings,
    *,
    selected: Collection[str] | None = None,
    clock: Callable[[], datetime] = wall_clock,
    engine: Engine | None = None,
    dispatch_options: dict[str, Any] | None = None,
    on_ready: Callable[[BackgroundScheduler], None] | None = None,
    install_signals: bool = True,
    stop: threading.Event | None = None,
) -> None:
    """Run the scheduler until SIGTERM/SIGINT (or ``stop``); raises ``lease.LeaseRefused``."""
    schedule = Schedule.from_settings(settings)
    wanted = list(selected) if selected else [spec.id for spec in schedule.jobs()]
    eng = engine if engine is not None else make_engine(settings.database_url)
    owner = process.new_owner()
    lease.acquire(eng, owner.ident, clock())
    rt = jobs.Runtime(
        settings=settings,
        engine=eng,
        schedule=schedule,
        clock=clock,
        owner=owner,
        stop=stop or threading.Event(),
        dispatch_options=dict(dispatch_options or {}),
    )
    try:
        signals = _signals(rt.stop) if install_signals else nullcontext()
        # Signals first: a SIGTERM while the Prefect server starts still stops cleanly.
        with signals, _prefect_if(CARE_DAY in wanted):
            jobs.install(rt)
            scheduler = build(rt, wanted)
            scheduler.start()
            forget_unselected(scheduler, wanted)
            start_jobs_now(scheduler, wanted)
            for job_id, when in sorted(next_fire_times(scheduler).items()):
                log.info("%s: next run at %s", job_id, when.isoformat() if when else "-")
            log.info("scheduler running (%s); stop it with SIGTERM or Ctrl-C", owner.ident)
            if on_ready is not None:
                on_ready(scheduler)
            while not rt.stop.wait(1.0):
                pass
            log.info("stopping: waiting for the running job(s) to finish")
            scheduler.shutdown(wait=True)
            jobs.flush_pending(rt)
    finally:
        jobs.install(None)
        lease.release(eng, owner.ident, clock())
        process.retire(owner)
        log.info("scheduler stopped; lease released")
    if rt.lost_lease:
        raise SchedulerStopped(
            "another scheduler took over this database's lease (this one stopped renewing it)"
        )


def _prefect_if(needed: bool) -> AbstractContextManager[Any]:
    """One warm Prefect API for the whole process, when a job runs flows."""
    if not needed:
        return nullcontext()
    from vipcare.operations import quiet_prefect
    from vipcare.prefect_server import prefect_api

    quiet_prefect()
    return prefect_api(announce=log.info)
