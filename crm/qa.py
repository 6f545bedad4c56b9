"""Call QA: a reproducible sample of each day's completed calls, and supervisors' reviews.

Owner of ``qa_samples`` and ``qa_reviews``. The sample of a day is the calls
completed that (operator-local) day with a sampled outcome, ranked by
``sha256(seed:day:task id)``; the first ``ceil(share × calls)`` are drawn. The
same calls, seed and share always give the same sample, and drawing again is a
no-op (a call that completes later on the same day can join a later draw;
nothing drawn is ever taken out).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.bulk import insert_ignoring_conflicts
from crm.errors import CrmError, NotFound
from crm.models import QA_CRITERIA, CallTask, Customer, Manager, QaReview, QaSample

AnySelect = Select[tuple[Any, ...]]
"""A select of any columns (SQLAlchemy 2.0 types a select by its row tuple; pinned below 2.1)."""

SCORE_RANGE = range(1, 6)


class QaError(CrmError):
    """A review or a draw the QA module refuses."""


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants where the local ``day`` starts and the next one starts."""
    start = datetime.combine(day, time(0), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    return start, end


def sample_key(seed: str, day: date, task_id: int) -> str:
    return hashlib.sha256(f"{seed}:{day.isoformat()}:{task_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Draw:
    day: date
    calls: int
    target: int
    drawn: int
    """New samples written by this draw (0 on a rerun)."""
    sampled: int
    """Samples of the day in total after this draw."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "calls": self.calls,
            "target": self.target,
            "drawn": self.drawn,
            "sampled": self.sampled,
        }


def draw_sample(
    session: Session,
    day: date,
    *,
    share: Decimal,
    seed: str,
    outcomes: tuple[str, ...],
    tz: ZoneInfo,
    at: datetime,
    actor: Actor,
    rule_hash: str | None = None,
) -> Draw:
    """Draw the QA sample of ``day`` (idempotent; the scheduler may call it every night)."""
    if not Decimal(0) < share <= Decimal(1):
        raise QaError(f"the QA share must be above 0 and at most 1, got {share}")
    start, end = day_bounds(day, tz)
    calls = session.execute(
        select(CallTask.id, CallTask.manager_id).where(
            CallTask.completed_at >= start,
            CallTask.completed_at < end,
            CallTask.status == "done",
            CallTask.outcome.in_(outcomes),
        )
    ).all()
    target = math.ceil(share * len(calls)) if calls else 0
    ranked = sorted(calls, key=lambda row: sample_key(seed, day, row[0]))[:target]
    won = insert_ignoring_conflicts(
        session,
        QaSample,
        [
            {
                "task_id": task_id,
                "manager_id": manager_id,
                "day": day,
                "drawn_at": at,
                "rule_hash": rule_hash,
            }
            for task_id, manager_id in ranked
        ],
        "task_id",
    )
    if won:
        audit.append(
            session,
            actor,
            at,
            [
                AuditEntry(
                    action="qa.sample_drawn",
                    details={
                        "day": day,
                        "calls": len(calls),
                        "share": share,
                        "task_ids": sorted(won),
                    },
                    entity=f"qa:{day.isoformat()}",
                    rule_id="call_qa",
                    rule_hash=rule_hash,
                )
            ],
        )
    total = session.scalar(select(func.count()).where(QaSample.day == day)) or 0
    return Draw(day, len(calls), target, len(won), int(total))


@dataclass(frozen=True)
class Review:
    sample_id: int
    task_id: int
    scores: dict[str, int]
    note: str | None


def review(
    session: Session,
    sample_id: int,
    reviewer_id: int,
    scores: dict[str, int],
    note: str | None,
    at: datetime,
    actor: Actor,
) -> Review:
    """Record a supervisor's 1–5 score per criterion and a note; each sample once."""
    missing = [c for c in QA_CRITERIA if c not in scores]
    if missing:
        raise QaError(f"missing score for {', '.join(missing)}")
    unknown = sorted(set(scores) - set(QA_CRITERIA))
    if unknown:
        raise QaError(f"unknown criteria {', '.join(unknown)}; expected {', '.join(QA_CRITERIA)}")
    for name, value in scores.items():
        if value not in SCORE_RANGE:
            raise QaError(f"{name} must be 1 to 5, got {value}")
    text = (note or "").strip() or None
    sample = session.get(QaSample, sample_id, with_for_update=True)
    if sample is None:
        raise NotFound(f"no QA sample with id {sample_id}")
    if session.get(QaReview, sample_id) is not None:
        raise QaError(f"QA sample {sample_id} has already been reviewed")
    task = session.get(CallTask, sample.task_id)
    assert task is not None
    customer = session.get(Customer, task.customer_id)
    assert customer is not None
    session.add(
        QaReview(
            sample_id=sample_id,
            reviewer_id=reviewer_id,
            note=text,
            reviewed_at=at,
            **{c: scores[c] for c in QA_CRITERIA},
        )
    )
    manager = session.get(Manager, task.manager_id) if task.manager_id else None
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action="qa.reviewed",
                details={
                    "sample_id": sample_id,
                    "task_id": task.id,
                    "manager": manager.external_id if manager else None,
                    "scores": {c: scores[c] for c in QA_CRITERIA},
                    "note": text,
                },
                customer_id=customer.id,
                customer_ref=customer.external_id,
                entity=f"task:{task.id}",
                rule_id="call_qa",
            )
        ],
    )
    return Review(sample_id, task.id, {c: scores[c] for c in QA_CRITERIA}, text)


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRow:
    sample_id: int
    day: date
    task_id: int
    kind: str
    outcome: str | None
    satisfaction: int | None
    note: str | None
    completed_at: datetime | None
    customer_ref: str
    customer_name: str
    tier: str
    manager_ref: str | None
    manager_name: str | None
    reviewed_at: datetime | None
    reviewer_ref: str | None
    scores: dict[str, int] | None
    review_note: str | None

    @property
    def average(self) -> Decimal | None:
        if not self.scores:
            return None
        return (Decimal(sum(self.scores.values())) / len(self.scores)).quantize(Decimal("0.1"))


def _samples_stmt() -> AnySelect:
    reviewer = Manager.__table__.alias("reviewer")
    stmt: AnySelect = (
        select(
            QaSample.id,
            QaSample.day,
            CallTask.id,
            CallTask.kind,
            CallTask.outcome,
            CallTask.satisfaction,
            CallTask.note,
            CallTask.completed_at,
            Customer.external_id,
            Customer.name,
            Customer.tier,
            Manager.external_id,
            Manager.name,
            QaReview.reviewed_at,
            reviewer.c.external_id,
            QaReview.accuracy,
            QaReview.courtesy,
            QaReview.proactive_offer,
            QaReview.note,
        )
        .join(CallTask, CallTask.id == QaSample.task_id)
        .join(Customer, Customer.id == CallTask.customer_id)
        .outerjoin(Manager, Manager.id == QaSample.manager_id)
        .outerjoin(QaReview, QaReview.sample_id == QaSample.id)
        .outerjoin(reviewer, reviewer.c.id == QaReview.reviewer_id)
    )
    return stmt


def _sample_row(r: Any) -> SampleRow:
    reviewed = r[13] is not None
    return SampleRow(
        sample_id=r[0],
        day=r[1],
        task_id=r[2],
        kind=r[3],
        outcome=r[4],
        satisfaction=r[5],
        note=r[6],
        completed_at=r[7],
        customer_ref=r[8],
        customer_name=r[9],
        tier=r[10],
        manager_ref=r[11],
        manager_name=r[12],
        reviewed_at=r[13],
        reviewer_ref=r[14],
        scores=dict(zip(QA_CRITERIA, (r[15], r[16], r[17]), strict=True)) if reviewed else None,
        review_note=r[18],
    )


def _filtered(
    stmt: AnySelect,
    first: date | None,
    last: date | None,
    manager_id: int | None,
    reviewed: bool | None,
) -> AnySelect:
    if first is not None:
        stmt = stmt.where(QaSample.day >= first)
    if last is not None:
        stmt = stmt.where(QaSample.day <= last)
    if manager_id is not None:
        stmt = stmt.where(QaSample.manager_id == manager_id)
    if reviewed is True:
        stmt = stmt.where(QaReview.sample_id.is_not(None))
    elif reviewed is False:
        stmt = stmt.where(QaReview.sample_id.is_(None))
    return stmt


def list_samples(
    session: Session,
    *,
    first: date | None = None,
    last: date | None = None,
    manager_id: int | None = None,
    reviewed: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[SampleRow], int]:
    """One page of samples (newest day first, unreviewed first) and the total count."""
    stmt = _filtered(_samples_stmt(), first, last, manager_id, reviewed)
    rows = session.execute(
        stmt.order_by(QaSample.day.desc(), QaReview.sample_id.is_not(None), QaSample.id)
        .limit(limit)
        .offset(offset)
    ).all()
    count_stmt = _filtered(
        select(func.count())
        .select_from(QaSample)
        .outerjoin(QaReview, QaReview.sample_id == QaSample.id),
        first,
        last,
        manager_id,
        reviewed,
    )
    return [_sample_row(r) for r in rows], int(session.scalar(count_stmt) or 0)


def get_sample(session: Session, sample_id: int) -> SampleRow | None:
    row = session.execute(_samples_stmt().where(QaSample.id == sample_id)).first()
    return None if row is None else _sample_row(row)


@dataclass(frozen=True)
class ManagerQa:
    manager_ref: str
    manager_name: str
    sampled: int
    reviewed: int
    averages: dict[str, Decimal | None]

    @property
    def overall(self) -> Decimal | None:
        values = [v for v in self.averages.values() if v is not None]
        if not values:
            return None
        return (sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.1"))


def per_manager(session: Session, first: date, last: date) -> list[ManagerQa]:
    """QA results per manager over ``[first, last]`` (days the calls were completed)."""
    rows = session.execute(
        select(
            Manager.external_id,
            Manager.name,
            func.count(QaSample.id),
            func.count(QaReview.sample_id),
            func.avg(QaReview.accuracy),
            func.avg(QaReview.courtesy),
            func.avg(QaReview.proactive_offer),
        )
        .join(Manager, Manager.id == QaSample.manager_id)
        .outerjoin(QaReview, QaReview.sample_id == QaSample.id)
        .where(QaSample.day >= first, QaSample.day <= last)
        .group_by(Manager.external_id, Manager.name)
        .order_by(Manager.external_id)
    ).all()
    out = []
    for ref, name, sampled, reviewed, *avgs in rows:
        averages = {
            c: None if v is None else Decimal(str(v)).quantize(Decimal("0.1"))
            for c, v in zip(QA_CRITERIA, avgs, strict=True)
        }
        out.append(ManagerQa(ref, name, int(sampled), int(reviewed), averages))
    return out
