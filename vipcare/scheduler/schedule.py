"""The one schedule: which jobs run when, for the embedded scheduler and the Prefect deployments.

Built from settings (``VIPCARE_CARE_RUN_AT``, ``VIPCARE_DISPATCH_EVERY_MINUTES``,
``VIPCARE_ESCALATE_AT``, ``VIPCARE_TIMEZONE``). Every job is a cron expression
in the operator's time zone: APScheduler's ``CronTrigger`` and Prefect's
``CronSchedule`` read the same text, so ``vipcare scheduler`` and ``vipcare
deploy`` cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from vipcare.settings import Settings

CARE_DAY = "care-day"
DISPATCH = "dispatch"
ESCALATION = "escalation"


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its id, cron expression and how late a fire may still run."""

    id: str
    cron: str
    description: str
    misfire_grace_seconds: int
    daily_at: time | None = None
    """For a once-a-day job, the time of day it runs (operator time)."""


@dataclass(frozen=True)
class Schedule:
    timezone: str
    care_run_at: time
    dispatch_every_minutes: int
    escalate_at: time
    catch_up_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(
            timezone=settings.timezone,
            care_run_at=settings.care_run_at,
            dispatch_every_minutes=settings.dispatch_every_minutes,
            escalate_at=settings.escalate_at,
            catch_up_days=settings.catch_up_days,
        )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def jobs(self) -> list[JobSpec]:
        every = self.dispatch_every_minutes
        return [
            JobSpec(
                CARE_DAY,
                _daily_cron(self.care_run_at),
                "the daily care run: every journey decides (it does not send)",
                # A fire missed by up to 6 h (a suspended host) still runs; older days
                # are caught up by the job itself, from the last completed day.
                misfire_grace_seconds=6 * 3600,
                daily_at=self.care_run_at,
            ),
            JobSpec(
                DISPATCH,
                "* * * * *" if every == 1 else f"*/{every} * * * *",
                f"the dispatcher, every {every} min: sends what is due in each send window",
                misfire_grace_seconds=max(60, every * 60 // 2),
            ),
            JobSpec(
                ESCALATION,
                _daily_cron(self.escalate_at),
                "the escalation sweep: overdue call tasks get a higher priority, once",
                misfire_grace_seconds=6 * 3600,
                daily_at=self.escalate_at,
            ),
        ]

    def job(self, job_id: str) -> JobSpec:
        for spec in self.jobs():
            if spec.id == job_id:
                return spec
        raise KeyError(job_id)

    def trigger(self, job_id: str) -> CronTrigger:
        return CronTrigger.from_crontab(self.job(job_id).cron, timezone=self.tz)

    def fire_instant(self, job_id: str, day: date) -> datetime:
        """When a daily job fires on ``day`` (operator time), as aware UTC."""
        at = self.job(job_id).daily_at
        if at is None:
            raise ValueError(f"{job_id} is not a daily job")
        return datetime.combine(day, at, tzinfo=self.tz).astimezone(UTC)

    def latest_due_day(self, job_id: str, now: datetime) -> date:
        """The newest day whose fire time of ``job_id`` is at or before ``now``."""
        today = now.astimezone(self.tz).date()
        return today if self.fire_instant(job_id, today) <= now else today - timedelta(days=1)


def _daily_cron(at: time) -> str:
    return f"{at.minute} {at.hour} * * *"
