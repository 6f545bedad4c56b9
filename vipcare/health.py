"""``vipcare status``: is vipcare healthy, and if not, what needs attention?

Read-only. Collects the last run per journey and per job (``job_runs``), the
queue by status and the oldest due message, claims stuck in ``sending``,
messages expired in the last day, overdue call tasks, and the scheduler's lease
(heartbeat) and next fire times (``scheduler_jobs``), and which version of each rule
file runs (a refused edit, with the file:line of its problems). :func:`collect` returns it
all with a list of ``attention`` items; the CLI exits non-zero when that list
is not empty, so a monitoring check can run ``vipcare status --json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select

from crm import grace, invariants, process, runs
from crm.db import transaction
from crm.models import CallTask, GracePeriod, JobRun, OutboundMessage, SchedulerJob
from vipcare.scheduler import days, lease
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule

if TYPE_CHECKING:
    from rules.live import LiveRules

STUCK_AFTER = timedelta(minutes=5)
"""A claim in ``sending`` whose lease is older than this is stuck (the dispatcher's grace)."""
INTERRUPTED_AFTER = timedelta(hours=6)
"""A run still ``running`` after this long (owner unknown) was cut short."""
JOB_KINDS = {CARE_DAY: "care_day", DISPATCH: "dispatch", ESCALATION: "escalation"}


@dataclass
class Health:
    now: datetime
    journeys: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    queue: dict[str, Any] = field(default_factory=dict)
    stuck_sending: dict[str, Any] = field(default_factory=dict)
    expired_last_day: dict[str, Any] = field(default_factory=dict)
    overdue_tasks: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    invariants: dict[str, Any] = field(default_factory=dict)
    catch_up: dict[str, Any] = field(default_factory=dict)
    attention: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.attention

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "attention": self.attention,
            "now": self.now,
            "journeys": self.journeys,
            "jobs": self.jobs,
            "queue": self.queue,
            "stuck_sending": self.stuck_sending,
            "expired_last_day": self.expired_last_day,
            "overdue_tasks": self.overdue_tasks,
            "scheduler": self.scheduler,
            "rules": self.rules,
            "invariants": self.invariants,
            "catch_up": self.catch_up,
        }


def _interrupted(row: Any, now: datetime) -> bool:
    return bool(
        row.status == runs.RUNNING
        and (process.is_dead(row.owner) or now - row.started_at > INTERRUPTED_AFTER)
    )


def _status_of(row: Any, now: datetime) -> str:
    return "interrupted" if _interrupted(row, now) else str(row.status)


def _journeys(engine: Engine, now: datetime, health: Health) -> None:
    """Per journey, its newest care day: all its shards' runs folded into one outcome."""
    with transaction(engine) as session:
        newest = (
            select(JobRun.name, func.max(JobRun.care_day).label("day"))
            .where(JobRun.kind == "journey")
            .group_by(JobRun.name)
            .subquery()
        )
        rows = session.execute(
            select(JobRun)
            .join(newest, (newest.c.name == JobRun.name) & (newest.c.day == JobRun.care_day))
            .where(JobRun.kind == "journey")
            .order_by(JobRun.name, JobRun.id)
        ).scalars()
        grouped: dict[str, list[JobRun]] = {}
        for row in rows:
            grouped.setdefault(row.name, []).append(row)
    for name, parts in grouped.items():
        latest: dict[str, JobRun] = {}  # the newest run of each shard (a rerun replaces it)
        for row in parts:
            latest[row.shard or "-"] = row
        statuses = [_status_of(r, now) for r in latest.values()]
        outcome = next(
            (s for s in ("failed", "interrupted", "running") if s in statuses), "succeeded"
        )
        errors = [r.error for r in latest.values() if r.error]
        decided = sum(int((r.details or {}).get("decided", 0)) for r in latest.values())
        health.journeys.append(
            {
                "journey": name,
                "care_day": parts[0].care_day,
                "outcome": outcome,
                "shards": len(latest),
                "decided": decided,
                "started_at": min(r.started_at for r in latest.values()),
                "finished_at": max(
                    (r.finished_at for r in latest.values() if r.finished_at), default=None
                ),
                "error": errors[0] if errors else None,
            }
        )
        if outcome in ("failed", "interrupted"):
            health.attention.append(
                f"journey {name} {outcome} on care day {parts[0].care_day}"
                + (f": {errors[0]}" if errors else "")
            )


def _jobs(engine: Engine, now: datetime, schedule: Schedule, health: Health) -> None:
    with transaction(engine) as session:
        fires = {
            job_id: when
            for job_id, when in session.execute(select(SchedulerJob.id, SchedulerJob.next_run_time))
        }
    latest = {(r.kind, r.name): r for r in runs.latest(engine, tuple(JOB_KINDS.values()))}
    for job_id, kind in JOB_KINDS.items():
        row = latest.get((kind, job_id))
        next_fire = fires.get(job_id)
        entry: dict[str, Any] = {
            "job": job_id,
            "last_outcome": _status_of(row, now) if row else None,
            "care_day": row.care_day if row else None,
            "started_at": row.started_at if row else None,
            "finished_at": row.finished_at if row else None,
            "error": row.error if row else None,
            "next_run_at": datetime.fromtimestamp(next_fire, UTC) if next_fire else None,
            "last_completed_day": days.last_completed(engine, job_id),
        }
        health.jobs.append(entry)
        if row is not None and entry["last_outcome"] in ("failed", "interrupted"):
            health.attention.append(
                f"the last {job_id} run {entry['last_outcome']}"
                + (f": {row.error}" if row.error else "")
            )
    care = next(j for j in health.jobs if j["job"] == CARE_DAY)
    last_day: date | None = care["last_completed_day"]
    if last_day is not None and care["last_outcome"] != runs.RUNNING:
        due = schedule.latest_due_day(CARE_DAY, now)
        if last_day < due and now - schedule.fire_instant(CARE_DAY, due) > timedelta(hours=1):
            health.attention.append(
                f"care day {due} has not run (last completed: {last_day}); "
                "is the scheduler running?"
            )


def _queue(engine: Engine, now: datetime, schedule: Schedule, health: Health) -> None:
    m = OutboundMessage
    with transaction(engine) as session:
        by_status = dict(
            session.execute(select(m.status, func.count()).group_by(m.status)).tuples().all()
        )
        due_filter = (
            (m.status == "queued")
            & (m.scheduled_for <= now)
            & (m.next_attempt_at.is_(None) | (m.next_attempt_at <= now))
        )
        due = session.execute(select(func.count()).where(due_filter)).scalar_one()
        oldest = session.execute(
            select(m.id, m.scheduled_for, m.journey, m.template)
            .where(due_filter)
            .order_by(m.scheduled_for, m.id)
            .limit(1)
        ).first()
        stuck_filter = (m.status == "sending") & (
            (m.claimed_at.is_not(None) & (m.claimed_at <= now - STUCK_AFTER))
            | (m.claimed_at.is_(None) & (m.sending_at <= now - STUCK_AFTER))
        )
        stuck = session.execute(
            select(func.count(), func.min(func.coalesce(m.claimed_at, m.sending_at))).where(
                stuck_filter
            )
        ).one()
        expired_rows = session.execute(
            select(m.status_reason).where(
                m.status == "expired", m.updated_at >= now - timedelta(days=1)
            )
        ).scalars()
        expired: dict[str, int] = {}
        for reason in expired_rows:
            code = (reason or "unknown").split(":", 1)[0]
            expired[code] = expired.get(code, 0) + 1
    health.queue = {
        "by_status": dict(sorted(by_status.items())),
        "due_now": due,
        "oldest_due": (
            {
                "message_id": oldest.id,
                "scheduled_for": oldest.scheduled_for,
                "waiting_minutes": int((now - oldest.scheduled_for).total_seconds() // 60),
                "journey": oldest.journey,
                "template": oldest.template,
            }
            if oldest
            else None
        ),
    }
    late_after = max(timedelta(minutes=15), timedelta(minutes=3 * schedule.dispatch_every_minutes))
    if oldest is not None and now - oldest.scheduled_for > late_after:
        health.attention.append(
            f"{due} message(s) are due and not sent; the oldest has waited "
            f"{health.queue['oldest_due']['waiting_minutes']} min: is the dispatcher running?"
        )
    since = stuck[1]
    if isinstance(since, str):  # coalesce() loses the column type on SQLite
        since = datetime.fromisoformat(since)
    health.stuck_sending = {"count": stuck[0], "since": since}
    if stuck[0]:
        health.attention.append(
            f"{stuck[0]} message(s) stuck in 'sending' (their dispatcher stopped): the next "
            "dispatch reconciles them with the provider"
        )
    health.expired_last_day = {"count": sum(expired.values()), "by_reason": expired}


def _overdue(engine: Engine, today: date, escalate_after: int, health: Health) -> None:
    before = today - timedelta(days=escalate_after)
    with transaction(engine) as session:
        count, oldest = session.execute(
            select(func.count(), func.min(CallTask.scheduled_on)).where(
                CallTask.status.in_(("awaiting_notice", "ready")), CallTask.scheduled_on < before
            )
        ).one()
    health.overdue_tasks = {
        "count": count,
        "planned_before": before,
        "oldest_planned_on": oldest,
        "escalate_after_days": escalate_after,
    }


def _scheduler(engine: Engine, now: datetime, health: Health) -> None:
    holder = lease.read(engine)
    if holder is None:
        health.scheduler = {"state": "never started"}
        return
    if holder.released_at is not None:
        state = "stopped"
    elif holder.expires_at > now and not process.is_dead(holder.owner):
        state = "running"
    else:
        state = "dead"
    health.scheduler = {
        "state": state,
        "owner": holder.describe(),
        "heartbeat_at": holder.heartbeat_at,
        "heartbeat_seconds_ago": int((now - holder.heartbeat_at).total_seconds()),
        "lease_expires_at": holder.expires_at,
        "next_run_at": {j["job"]: j["next_run_at"] for j in health.jobs if j["next_run_at"]},
    }
    if state == "dead":
        health.attention.append(
            f"the scheduler ({holder.describe()}) stopped without a clean shutdown: "
            f"last heartbeat {health.scheduler['heartbeat_seconds_ago']} s ago"
        )


def collect(
    engine: Engine,
    schedule: Schedule,
    now: datetime,
    *,
    escalate_after_days: int | None,
    rules: LiveRules | None = None,
) -> Health:
    """Everything ``vipcare status`` shows, as of ``now`` (aware UTC).

    ``rules`` is the live rule set (:func:`rules.live.load_live_rules`, read only):
    each refused file needs attention, with the file:line of its problems and which
    journeys run on their last good version.
    """
    health = Health(now=now)
    if rules is not None:
        health.rules = rules.as_dict()
        health.attention += rules.attention()
    _journeys(engine, now, health)
    _jobs(engine, now, schedule, health)
    _queue(engine, now, schedule, health)
    if escalate_after_days is not None:
        _overdue(engine, now.astimezone(schedule.tz).date(), escalate_after_days, health)
    _scheduler(engine, now, health)
    _invariants(engine, health)
    _catch_up(engine, now, schedule, health)
    return health


def _invariants(engine: Engine, health: Health) -> None:
    """The newest money and state check (after an import, a care day, or ``audit verify``)."""
    with transaction(engine) as session:
        row = session.execute(
            select(JobRun).where(JobRun.kind == invariants.KIND).order_by(JobRun.id.desc()).limit(1)
        ).scalar()
    if row is None:
        health.invariants = {"checked": False}
        return
    details = row.details or {}
    health.invariants = {
        "checked": True,
        "after": row.name,
        "at": row.started_at,
        "ok": row.status == runs.SUCCEEDED,
        "customers": details.get("customers", 0),
        "count": details.get("count", 0),
        "by_invariant": details.get("by_invariant", {}),
        "violations": details.get("violations", [])[:10],
    }
    if row.status != runs.SUCCEEDED:
        kinds = ", ".join(f"{k} {v}" for k, v in details.get("by_invariant", {}).items())
        first = (details.get("violations") or [""])[0]
        health.attention.append(
            f"{details.get('count', 0)} money/state invariant violation(s) found after the "
            f"{row.name} ({kinds}): {first}; `vipcare audit verify` lists them all"
        )


def _day(value: Any) -> date | None:
    """A day kept in a run's JSON details (ISO text) as a date."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


SKIP_COUNTS = ("skipped_too_late", "graces_held_not_told", "graces_topped_up_since")
"""What a late care day counts as not done (and why): ``vipcare status`` shows them."""
OUTAGE_LOOKBACK = timedelta(days=30)


def _catch_up(engine: Engine, now: datetime, schedule: Schedule, health: Health) -> None:
    """What the last outage skipped: days never run, and what the late days did not do."""
    since = now - OUTAGE_LOOKBACK
    with transaction(engine) as session:
        late_runs = [
            r
            for r in session.execute(
                select(JobRun).where(JobRun.kind == "journey", JobRun.started_at >= since)
            ).scalars()
            if (r.details or {}).get("late")
        ]
        not_run = (
            session.execute(
                select(JobRun)
                .where(
                    JobRun.kind == "care_day",
                    JobRun.status == runs.SKIPPED,
                    JobRun.started_at >= since,
                )
                .order_by(JobRun.id)
            )
            .scalars()
            .all()
        )
        today = now.astimezone(schedule.tz).date()
        held = session.execute(
            select(func.count(), func.min(GracePeriod.deadline)).where(
                GracePeriod.status == grace.OPEN, GracePeriod.deadline < today - timedelta(days=1)
            )
        ).one()
    skipped: dict[str, dict[str, int]] = {}
    caught_up_at = max((r.started_at for r in late_runs), default=None)
    batch = [
        r for r in late_runs if caught_up_at and r.started_at >= caught_up_at - timedelta(days=1)
    ]
    for r in batch:
        counts = skipped.setdefault(r.name, {})
        for key in SKIP_COUNTS:
            n = int((r.details or {}).get(key, 0))
            if n:
                counts[key.removeprefix("skipped_")] = (
                    counts.get(key.removeprefix("skipped_"), 0) + n
                )
    days_late = sorted({r.care_day for r in batch if r.care_day is not None})
    gaps: list[dict[str, Any]] = [
        {
            "from": _day((r.details or {}).get("from")),
            "to": _day((r.details or {}).get("to")),
            "at": r.started_at,
        }
        for r in not_run
    ]
    health.catch_up = {
        "late_days": days_late,
        "caught_up_at": caught_up_at,
        "skipped": {k: v for k, v in sorted(skipped.items()) if v},
        "days_not_run": gaps,
        "graces_held": {"count": held[0], "oldest_deadline": held[1]},
    }
    if held[0]:
        health.attention.append(
            f"{held[0]} grace(s) past their deadline are held open (oldest deadline {held[1]}): "
            "the customer was never told in time, so the line was not suspended; a top-up "
            "repays them, or close the line through the customers import"
        )
    recent = [g for g in gaps if g["at"] is not None and g["at"] >= now - timedelta(days=7)]
    for g in recent:
        health.attention.append(
            f"care days {g['from']} to {g['to']} were never run: the scheduler came back more "
            f"than VIPCARE_CATCH_UP_DAYS={schedule.catch_up_days} days after them"
        )
