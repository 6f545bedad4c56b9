"""The scheduler's jobs: the care day (with catch-up), the dispatcher, the escalation sweep.

The job functions are module-level so APScheduler's ``SQLAlchemyJobStore`` can
store them by reference; they act on the process's :class:`Runtime` (settings,
engine, the injected clock), installed by the daemon or a test's simulation.
Every job records its run in ``job_runs`` and never raises into the scheduler:
a failure (a locked database, a provider outage) ends the run ``failed`` with a
one-line reason that ``vipcare status`` shows, and the scheduler keeps going.
A record the database refuses (locked) is kept and written by the next heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from crm import process, runs
from rules import RuleSet
from vipcare import operations
from vipcare.errors import describe_error
from vipcare.scheduler import days, lease
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule
from vipcare.settings import Settings

log = logging.getLogger("vipcare.scheduler")
RETRY_AFTER = timedelta(minutes=15)
"""A failed care day or escalation is tried again this much later (not a day later)."""
KEEP_RUNS = timedelta(days=30)
"""Dispatch run records older than this are pruned daily."""


@dataclass
class _Pending:
    """A run record the database refused (locked, unreachable): written later."""

    kind: str
    name: str
    care_day: date | None
    at: datetime
    status: str
    details: dict[str, Any]
    error: str | None
    run_id: int | None = None


@dataclass
class Runtime:
    """Everything a job needs, injected: settings, engine, clock, the stop flag."""

    settings: Settings
    engine: Engine
    schedule: Schedule
    clock: Callable[[], datetime]
    """The wall clock (aware UTC); a test injects a fake one."""
    owner: process.Owner
    stop: threading.Event = field(default_factory=threading.Event)
    dispatch_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``dispatch`` arguments (tests: backends, fake monotonic clock and sleep)."""
    retry_later: Callable[[str, datetime], None] | None = None
    """Asks the scheduler to run a job once more at that instant (after a failure)."""
    pending: list[_Pending] = field(default_factory=list)
    lost_lease: bool = False
    busy: dict[str, threading.Lock] = field(
        default_factory=lambda: {job: threading.Lock() for job in (CARE_DAY, DISPATCH, ESCALATION)}
    )
    """One lock per job: a retry or start-up run never overlaps the scheduled one."""

    @property
    def actor_owner(self) -> str:
        return self.owner.ident


_CURRENT: Runtime | None = None
_LOCK = threading.Lock()


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` the one the job functions act on (None uninstalls)."""
    global _CURRENT
    with _LOCK:
        _CURRENT = runtime


def current() -> Runtime:
    if _CURRENT is None:
        raise RuntimeError("no scheduler runtime installed")
    return _CURRENT


# -- recording ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What a job's work says about itself (a run can end failed without raising)."""

    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_recorded(
    rt: Runtime,
    kind: str,
    name: str,
    work: Callable[[Outcome], None],
    *,
    care_day: date | None = None,
) -> bool:
    """Run ``work`` with its run recorded; True when it succeeded."""
    started = rt.clock()
    try:
        run_id: int | None = runs.start(
            rt.engine, kind, name, started, care_day=care_day, owner=rt.owner.ident
        )
    except SQLAlchemyError as exc:
        error = f"could not start: {describe_error(exc)}"
        log.error("%s %s: %s", kind, name, error)
        rt.pending.append(_Pending(kind, name, care_day, started, runs.FAILED, {}, error))
        return False
    log.info("%s: started", name)
    outcome = Outcome()
    try:
        work(outcome)
    except Exception as exc:  # noqa: BLE001 - the scheduler must keep running
        outcome.error = describe_error(exc)
        log.error("%s failed: %s", name, outcome.error)
    else:
        if outcome.error:
            log.error("%s failed: %s", name, outcome.error)
        else:
            log.info("%s: done (%s)", name, _short(outcome.details))
    status = runs.FAILED if outcome.error else runs.SUCCEEDED
    finished = rt.clock()
    try:
        assert run_id is not None
        runs.finish(
            rt.engine, run_id, finished, status, details=outcome.details, error=outcome.error
        )
    except SQLAlchemyError as exc:
        log.error("%s %s: could not record the outcome: %s", kind, name, describe_error(exc))
        rt.pending.append(
            _Pending(kind, name, care_day, finished, status, outcome.details, outcome.error, run_id)
        )
    return status == runs.SUCCEEDED


def _short(details: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in details.items() if isinstance(v, int) and v)


def flush_pending(rt: Runtime) -> None:
    """Write the run records the database refused earlier (oldest first)."""
    while rt.pending:
        p = rt.pending[0]
        try:
            if p.run_id is None:
                runs.record(
                    rt.engine,
                    p.kind,
                    p.name,
                    p.at,
                    p.status,
                    care_day=p.care_day,
                    details=p.details,
                    error=p.error,
                    owner=rt.owner.ident,
                )
            else:
                runs.finish(rt.engine, p.run_id, p.at, p.status, details=p.details, error=p.error)
        except SQLAlchemyError:
            return
        rt.pending.pop(0)


def _retry(rt: Runtime, job_id: str) -> None:
    if rt.retry_later is not None and not rt.stop.is_set():
        when = rt.clock() + RETRY_AFTER
        log.info("%s will be tried again at %s", job_id, when.isoformat())
        rt.retry_later(job_id, when)


# -- which days are due --------------------------------------------------------------


@dataclass(frozen=True)
class DueDays:
    days: list[date]
    skipped: tuple[date, date] | None = None
    """Missed days older than the catch-up window (first, last): not run."""


def due_days(rt: Runtime, job_id: str, *, every_day: bool) -> DueDays:
    """The days ``job_id`` still has to run, oldest first, after the last completed one.

    A job that never completed a day starts with today (once its time has come):
    there is no history to catch up. ``every_day`` runs each missed day as its
    own date (the care day); otherwise only the latest due day runs (a sweep of
    today's state covers the days before it).
    """
    now = rt.clock()
    latest = rt.schedule.latest_due_day(job_id, now)
    last = days.last_completed(rt.engine, job_id)
    if last is None:
        today = now.astimezone(rt.schedule.tz).date()
        return DueDays([today] if latest == today else [])
    if last >= latest:
        return DueDays([])
    if not every_day:
        return DueDays([latest])
    window = max(1, rt.schedule.catch_up_days)
    first = max(last + timedelta(days=1), latest - timedelta(days=window - 1))
    skipped = None
    if first > last + timedelta(days=1):
        skipped = (last + timedelta(days=1), first - timedelta(days=1))
    count = (latest - first).days + 1
    return DueDays([first + timedelta(days=i) for i in range(count)], skipped)


# -- the jobs -----------------------------------------------------------------------


def _rules(rt: Runtime, outcome: Outcome) -> RuleSet:
    """The live rule set (a refused file runs on its last good version), noted in the run."""
    live = operations.live_rules(rt.settings, rt.engine, rt.clock())
    if live.refused:
        outcome.details["rules_refused"] = [r.file for r in live.refused]
    return live.require()


def run_care_days(rt: Runtime) -> None:
    """Run every due care day in order, each as its own date; stop at the first failure."""
    while not rt.stop.is_set():
        due = due_days(rt, CARE_DAY, every_day=True)
        if due.skipped is not None:
            first, last = due.skipped
            message = (
                f"{(last - first).days + 1} missed care day(s) {first} to {last} not run: "
                f"more than VIPCARE_CATCH_UP_DAYS={rt.schedule.catch_up_days} days ago"
            )
            log.warning(message)
            runs.record(
                rt.engine,
                "care_day",
                CARE_DAY,
                rt.clock(),
                runs.SKIPPED,
                care_day=last,
                details={"from": first, "to": last},
                error=message,
                owner=rt.owner.ident,
            )
            days.mark_completed(rt.engine, CARE_DAY, last, rt.clock())
        if not due.days:
            return
        day = due.days[0]
        at = rt.schedule.fire_instant(CARE_DAY, day)

        def work(outcome: Outcome, day: date = day, at: datetime = at) -> None:
            result = operations.run_care_day(
                rt.settings,
                day,
                at,
                shards=rt.settings.care_shards,
                now=rt.clock(),
                announce=log.info,
                engine=rt.engine,
            )
            outcome.details.update(run_id=result.get("run_id"), journeys=result["journeys"])
            if result.get("rules", {}).get("refused"):
                outcome.details["rules"] = result["rules"]

        log.info("care day %s: starting (acts as of %s)", day, at.isoformat())
        if not run_recorded(rt, "care_day", CARE_DAY, work, care_day=day):
            _retry(rt, CARE_DAY)
            return
        days.mark_completed(rt.engine, CARE_DAY, day, rt.clock())


def run_dispatch(rt: Runtime) -> None:
    """Send what is due now; a provider outage or an early halt ends the run failed."""

    def work(outcome: Outcome) -> None:
        now = rt.clock()
        summary = operations.dispatch_due(
            rt.settings,
            now,
            ruleset=_rules(rt, outcome),
            engine=rt.engine,
            wall_clock=rt.clock,
            should_stop=rt.stop.is_set,
            actor=operations.SCHEDULER,
            **rt.dispatch_options,
        )
        outcome.details.update(summary.as_dict())
        if summary.halted:
            outcome.error = f"dispatch stopped early: {summary.halted}"
        elif summary.retried and not summary.sent:
            outcome.error = (
                f"the provider is failing: {summary.retried} message(s) put back for a later "
                "try, none sent"
            )
        elif summary.unresolved:
            outcome.error = (
                f"{summary.unresolved} message(s) left in 'sending': the provider cannot say "
                "whether it has them"
            )

    run_recorded(rt, "dispatch", DISPATCH, work)


def run_escalation(rt: Runtime) -> None:
    """Escalate overdue call tasks once a day; prune old dispatch records."""
    due = due_days(rt, ESCALATION, every_day=False)
    if not due.days:
        return
    day = due.days[-1]

    def work(outcome: Outcome) -> None:
        result = operations.escalate_overdue(
            rt.settings,
            day,
            rt.clock(),
            ruleset=_rules(rt, outcome),
            engine=rt.engine,
        )
        outcome.details.update(result.as_dict())
        outcome.details["pruned_runs"] = runs.prune(
            rt.engine, ("dispatch",), rt.clock() - KEEP_RUNS
        )

    if run_recorded(rt, "escalation", ESCALATION, work, care_day=day):
        days.mark_completed(rt.engine, ESCALATION, day, rt.clock())
    else:
        _retry(rt, ESCALATION)


def heartbeat(rt: Runtime) -> None:
    """Renew the scheduler's lease and write deferred run records; stop if the lease is lost."""
    try:
        if not lease.renew(rt.engine, rt.owner.ident, rt.clock()):
            log.error("the scheduler lease was taken over by another process; stopping")
            rt.lost_lease = True
            rt.stop.set()
            return
    except SQLAlchemyError as exc:
        log.warning("could not renew the scheduler lease: %s", describe_error(exc))
        return
    flush_pending(rt)


JOBS: dict[str, Callable[[Runtime], None]] = {
    CARE_DAY: run_care_days,
    DISPATCH: run_dispatch,
    ESCALATION: run_escalation,
}
KINDS: dict[str, str] = {CARE_DAY: "care_day", DISPATCH: "dispatch", ESCALATION: "escalation"}
"""The ``job_runs.kind`` each job records."""


def run_job(rt: Runtime, job_id: str) -> bool:
    """Run one job unless it is already running; whatever goes wrong is logged, never raised.

    Returns False when the job was already running (this call did nothing).
    """
    lock = rt.busy[job_id]
    if not lock.acquire(blocking=False):
        log.warning("%s is already running; not starting it twice", job_id)
        return False
    try:
        JOBS[job_id](rt)
    except Exception as exc:  # noqa: BLE001 - the scheduler must keep running
        error = describe_error(exc)
        log.error("%s failed: %s", job_id, error)
        rt.pending.append(_Pending(KINDS[job_id], job_id, None, rt.clock(), runs.FAILED, {}, error))
        flush_pending(rt)
        if job_id != DISPATCH:  # the dispatcher comes again in a few minutes anyway
            _retry(rt, job_id)
    finally:
        lock.release()
    return True


# Module-level entry points: what the job store keeps a reference to.
def care_day_job() -> None:
    run_job(current(), CARE_DAY)


def dispatch_job() -> None:
    run_job(current(), DISPATCH)


def escalation_job() -> None:
    run_job(current(), ESCALATION)


def heartbeat_job() -> None:
    heartbeat(current())


ENTRY_POINTS: dict[str, Callable[[], None]] = {
    CARE_DAY: care_day_job,
    DISPATCH: dispatch_job,
    ESCALATION: escalation_job,
}
