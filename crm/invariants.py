"""The money and state invariants the product checks itself, after every import and care day.

Each :class:`Violation` names the invariant it breaks:

- ``ledger_balance``: a customer's balance is the latest balances-feed value plus
  vipcare's postings made after its ``as_of`` (or, for a balance without a feed
  time, the last posting's ``balance_after``), to the cent;
- ``balance_fact``: the balance's feed time is a row of the feed history, and the latest;
- ``ledger_chain``: each posting's ``balance_after`` is the balance it found (the feed
  known when it was posted, plus the postings since) plus its amount;
- ``duplicate_credit``: never two credits, or two reversals, for one (journey,
  customer, occurrence);
- ``grace_over_cap`` / ``grace_ineligible`` / ``grace_twice_in_month`` /
  ``grace_two_open``: a grace advance is at most the operator's cap and the tier's
  amount, to a customer then below the threshold, with its grace period, once a
  month, never two open at once;
- ``suspension_without_notice``: a line suspended at a grace deadline had its
  grace notice reach the customer (:func:`crm.grace.notice_told`) and was suspended
  only after the deadline ended.

:func:`check` is set-based SQL over the customers touched since an instant
(postings, feed rows, graces), so it runs after every import and every care day
at any size; ``since=None`` checks everyone (``vipcare audit verify``).
:func:`record_check` writes the outcome to ``job_runs`` (kind ``invariants``),
where ``vipcare status`` finds it; the customers of a failing check are checked
again next time until they pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, and_, func, select, true, type_coerce, union
from sqlalchemy.orm import Session

from crm import grace as grace_owner
from crm import runs
from crm.db import transaction
from crm.models import (
    BalanceFact,
    CreditLedger,
    Customer,
    GracePeriod,
    JobRun,
)
from crm.types import Money

KIND = "invariants"
"""The ``job_runs.kind`` of a check's record."""
LISTED = 50
"""Violations kept in a check's record (all are counted)."""
BATCH = 2000
INVARIANTS = (
    "ledger_balance",
    "balance_fact",
    "ledger_chain",
    "duplicate_credit",
    "grace_over_cap",
    "grace_ineligible",
    "grace_twice_in_month",
    "grace_two_open",
    "suspension_without_notice",
)


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its name, what broke it, and the customer (internal id)."""

    invariant: str
    detail: str
    customer_id: int | None = None

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass(frozen=True)
class GraceLimits:
    """What a grace advance may be: the operator's cap, the tiers' amounts, the threshold."""

    cap: Decimal
    amount_by_tier: Mapping[str, Decimal]
    threshold: Decimal


@dataclass
class CheckResult:
    """The violations found, and how many customers were looked at."""

    violations: list[Violation] = field(default_factory=list)
    customers: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def touched_since(since: datetime) -> Select[Any]:
    """Customers whose money or grace state changed at or after ``since`` (ids)."""
    return select(
        union(
            select(CreditLedger.customer_id).where(CreditLedger.created_at >= since),
            select(BalanceFact.customer_id).where(BalanceFact.received_at >= since),
            select(GracePeriod.customer_id).where(GracePeriod.granted_at >= since),
            select(GracePeriod.customer_id).where(GracePeriod.closed_on >= since.date()),
        ).subquery()
    )


def check(
    session: Session,
    *,
    since: datetime | None = None,
    also: Iterable[int] = (),
    grace: GraceLimits | None = None,
) -> CheckResult:
    """Every violation among the customers touched since ``since`` and those in ``also``.

    ``since=None`` checks every customer. The grace invariants need the operator's
    ``grace`` limits (from the rules, at the edge); without them they are not checked.
    """
    ids = _scope(session, since, also)
    # A posting's balance_after depends only on what was known when it was posted: a feed
    # row received later never changes it, so only customers posted to since are chained.
    posted = None
    if since is not None:
        posted = set(
            session.scalars(
                select(CreditLedger.customer_id).where(CreditLedger.created_at >= since)
            ).all()
        )
        posted.update(also)
    result = CheckResult()
    for start in range(0, len(ids), BATCH) if ids is not None else [0]:
        chunk = ids[start : start + BATCH] if ids is not None else None
        out = result.violations
        out += _balances(session, chunk)
        chained = chunk if posted is None or chunk is None else [c for c in chunk if c in posted]
        if chained is None or chained:
            out += _chain(session, chained)
        out += _duplicate_credits(session, chunk)
        out += _two_open(session, chunk)
        if grace is not None:
            out += _grace(session, chunk, grace)
        out += _suspensions(session, chunk)
        if ids is None:
            result.customers = int(session.scalar(select(func.count()).select_from(Customer)) or 0)
    if ids is not None:
        result.customers = len(ids)
    return result


def _scope(session: Session, since: datetime | None, also: Iterable[int]) -> list[int] | None:
    if since is None:
        return None
    found = set(session.scalars(touched_since(since)).all())
    found.update(also)
    return sorted(found)


def _where(column: Any, ids: Sequence[int] | None) -> Any:
    return column.in_(ids) if ids is not None else true()


def _sum_after(as_of: Any) -> Any:
    return (
        select(func.coalesce(func.sum(CreditLedger.amount), 0))
        .where(CreditLedger.customer_id == Customer.id, CreditLedger.created_at > as_of)
        .scalar_subquery()
    )


def _balances(session: Session, ids: Sequence[int] | None) -> list[Violation]:
    """``ledger_balance`` and ``balance_fact``, in SQL."""
    out: list[Violation] = []
    expected = type_coerce(BalanceFact.balance, Money(2)) + type_coerce(
        _sum_after(BalanceFact.as_of), Money(2)
    )
    rows = session.execute(
        select(
            Customer.id,
            Customer.external_id,
            Customer.balance,
            type_coerce(expected, Money(2)).label("expected"),
            BalanceFact.as_of,
            BalanceFact.balance.label("fed"),
        )
        .join(
            BalanceFact,
            and_(
                BalanceFact.customer_id == Customer.id, BalanceFact.as_of == Customer.balance_as_of
            ),
        )
        .where(_where(Customer.id, ids), Customer.balance != type_coerce(expected, Money(2)))
    ).all()
    for cid, ref, balance, want, as_of, fed in rows:
        out.append(
            Violation(
                "ledger_balance",
                f"{ref}: balance {balance}, but the feed's {fed} as of "
                f"{as_of:%Y-%m-%d %H:%M:%S}Z plus vipcare's postings since make {want}",
                cid,
            )
        )
    newest = (
        select(func.max(BalanceFact.as_of))
        .where(BalanceFact.customer_id == Customer.id)
        .scalar_subquery()
    )
    stamped = session.execute(
        select(Customer.id, Customer.external_id, Customer.balance_as_of, newest.label("newest"))
        .where(_where(Customer.id, ids), Customer.balance_as_of.is_not(None))
        .where((newest.is_(None)) | (newest != Customer.balance_as_of))
    ).all()
    for cid, ref, stamp, latest in stamped:
        what = "no feed row" if latest is None else f"not the latest ({latest})"
        out.append(Violation("balance_fact", f"{ref}: balance as of {stamp} has {what}", cid))
    return out


def _chain(session: Session, ids: Sequence[int] | None) -> list[Violation]:
    """``ledger_chain`` (and ``ledger_balance`` for untimed balances), a batch at a time."""
    out: list[Violation] = []
    last = 0
    while True:
        stmt = (
            select(CreditLedger.customer_id)
            .where(_where(CreditLedger.customer_id, ids), CreditLedger.customer_id > last)
            .group_by(CreditLedger.customer_id)
            .order_by(CreditLedger.customer_id)
            .limit(BATCH)
        )
        batch = list(session.scalars(stmt).all())
        if not batch:
            return out
        last = batch[-1]
        postings: dict[int, list[Any]] = defaultdict(list)
        for row in session.execute(
            select(
                CreditLedger.id,
                CreditLedger.customer_id,
                CreditLedger.amount,
                CreditLedger.balance_after,
                CreditLedger.created_at,
            )
            .where(CreditLedger.customer_id.in_(batch))
            .order_by(CreditLedger.customer_id, CreditLedger.created_at, CreditLedger.id)
        ):
            postings[row.customer_id].append(row)
        facts: dict[int, list[Any]] = defaultdict(list)
        for fact in session.execute(
            select(
                BalanceFact.customer_id,
                BalanceFact.as_of,
                BalanceFact.balance,
                BalanceFact.received_at,
            ).where(BalanceFact.customer_id.in_(batch))
        ):
            facts[fact.customer_id].append(fact)
        customers = {
            c.id: c
            for c in session.execute(
                select(
                    Customer.id, Customer.external_id, Customer.balance, Customer.balance_as_of
                ).where(Customer.id.in_(batch))
            )
        }
        for cid in batch:
            out += _chain_of(customers[cid], postings[cid], facts[cid])


def _chain_of(customer: Any, postings: list[Any], facts: list[Any]) -> list[Violation]:
    out: list[Violation] = []
    previous: Any = None
    for i, row in enumerate(postings):
        known = [f for f in facts if f.received_at <= row.created_at]
        if known:
            fact = max(known, key=lambda f: f.as_of)
            since = sum(
                (p.amount for p in postings[: i + 1] if p.created_at > fact.as_of), Decimal("0")
            )
            want = fact.balance + since
        elif previous is not None:
            want = previous.balance_after + row.amount
        else:
            want = None  # the first posting on a balance without a feed time: nothing to check
        if want is not None and row.balance_after != want:
            out.append(
                Violation(
                    "ledger_chain",
                    f"{customer.external_id}: posting {row.id} says {row.balance_after} after "
                    f"{row.amount}, the balance it found makes {want}",
                    customer.id,
                )
            )
        previous = row
    if customer.balance_as_of is None and postings and customer.balance != previous.balance_after:
        out.append(
            Violation(
                "ledger_balance",
                f"{customer.external_id}: balance {customer.balance}, the last posting left "
                f"{previous.balance_after}",
                customer.id,
            )
        )
    return out


def _refs(session: Session, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    return dict(
        session.execute(select(Customer.id, Customer.external_id).where(Customer.id.in_(wanted)))
        .tuples()
        .all()
    )


def _duplicate_credits(session: Session, ids: Sequence[int] | None) -> list[Violation]:
    """Two credits (or two reversals) of one decision: a grant and its reversal are a pair."""
    sign = CreditLedger.amount >= 0
    rows = session.execute(
        select(
            CreditLedger.customer_id,
            CreditLedger.journey,
            CreditLedger.occurrence,
            sign.label("credit"),
            func.count(),
        )
        .where(_where(CreditLedger.customer_id, ids))
        .group_by(CreditLedger.customer_id, CreditLedger.journey, CreditLedger.occurrence, sign)
        .having(func.count() > 1)
    ).all()
    refs = _refs(session, (r[0] for r in rows))
    return [
        Violation(
            "duplicate_credit",
            f"{refs.get(cid, cid)}: {n} {'credits' if credit else 'reversals'} for "
            f"({journey}, {occurrence})",
            cid,
        )
        for cid, journey, occurrence, credit, n in rows
    ]


def _two_open(session: Session, ids: Sequence[int] | None) -> list[Violation]:
    rows = session.execute(
        select(GracePeriod.customer_id, func.count())
        .where(_where(GracePeriod.customer_id, ids), GracePeriod.status == grace_owner.OPEN)
        .group_by(GracePeriod.customer_id)
        .having(func.count() > 1)
    ).all()
    refs = _refs(session, (r[0] for r in rows))
    return [
        Violation("grace_two_open", f"{refs.get(cid, cid)}: {n} graces open at once", cid)
        for cid, n in rows
    ]


def _grace(session: Session, ids: Sequence[int] | None, limits: GraceLimits) -> list[Violation]:
    out: list[Violation] = []
    rows = session.execute(
        select(
            CreditLedger.customer_id,
            Customer.external_id,
            Customer.tier,
            CreditLedger.amount,
            CreditLedger.balance_after,
            CreditLedger.occurrence,
            CreditLedger.care_day,
            CreditLedger.created_at,
            GracePeriod.amount.label("period_amount"),
        )
        .join(Customer, Customer.id == CreditLedger.customer_id)
        .outerjoin(
            GracePeriod,
            and_(
                GracePeriod.customer_id == CreditLedger.customer_id,
                GracePeriod.occurrence == CreditLedger.occurrence,
            ),
        )
        .where(
            _where(CreditLedger.customer_id, ids),
            CreditLedger.journey == "grace_credit",
            CreditLedger.kind == "grace_advance",
        )
    ).all()
    months: dict[tuple[int, str, str], int] = defaultdict(int)
    for cid, ref, tier, amount, after, occurrence, care_day, created_at, period_amount in rows:
        months[(cid, ref, (care_day or created_at.date()).strftime("%Y-%m"))] += 1
        if amount > limits.cap:
            out.append(Violation("grace_over_cap", f"{ref}: {amount} > cap {limits.cap}", cid))
        tier_amount = limits.amount_by_tier.get(tier)
        if tier_amount is None:
            out.append(Violation("grace_ineligible", f"{ref}: tier {tier} gets none", cid))
        elif amount > tier_amount:
            out.append(
                Violation("grace_over_cap", f"{ref}: {amount} > {tier_amount} for {tier}", cid)
            )
        if after - amount >= limits.threshold:
            out.append(
                Violation(
                    "grace_ineligible",
                    f"{ref}: balance {after - amount} was not below {limits.threshold}",
                    cid,
                )
            )
        if period_amount is None or period_amount != amount:
            out.append(
                Violation(
                    "grace_ineligible", f"{ref}: credit {occurrence} has no grace period", cid
                )
            )
    for (cid, ref, month), n in sorted(months.items()):
        if n > 1:
            detail = f"{ref}: {n} grace advances in {month}"
            out.append(Violation("grace_twice_in_month", detail, cid))
    return out


def _suspensions(session: Session, ids: Sequence[int] | None) -> list[Violation]:
    """A suspension at a grace deadline had a notice that reached the customer in time."""
    out: list[Violation] = []
    graces = session.execute(
        select(
            GracePeriod.customer_id,
            GracePeriod.occurrence,
            GracePeriod.deadline,
            Customer.external_id,
            Customer.timezone,
            Customer.sms_opt_out,
            Customer.do_not_call,
        )
        .join(Customer, Customer.id == GracePeriod.customer_id)
        .where(_where(GracePeriod.customer_id, ids), GracePeriod.status == "suspended")
    ).all()
    if not graces:
        return out
    cids = sorted({g.customer_id for g in graces})
    notices = grace_owner.notices_of(session, ((g.customer_id, g.occurrence) for g in graces))
    ended: dict[tuple[int, str], datetime] = {}
    for start in range(0, len(cids), BATCH):
        chunk = cids[start : start + BATCH]
        for cid, occurrence, at in session.execute(
            select(
                CreditLedger.customer_id, CreditLedger.occurrence, CreditLedger.created_at
            ).where(
                CreditLedger.journey == "grace_credit",
                CreditLedger.kind == "grace_expired",
                CreditLedger.customer_id.in_(chunk),
            )
        ):
            ended[(cid, occurrence)] = at
    for g in graces:
        month = g.occurrence.split(":", 1)[1]
        sent = notices.get((g.customer_id, g.occurrence))
        told = sent is None or any(
            grace_owner.notice_told(
                status=n.status,
                channel=n.channel,
                sent_at=n.sent_at,
                sms_opt_out=g.sms_opt_out,
                do_not_call=g.do_not_call,
                deadline=g.deadline,
                timezone=g.timezone,
            )
            for n in sent
        )
        if not told:
            out.append(
                Violation(
                    "suspension_without_notice",
                    f"{g.external_id}: suspended at the {g.deadline} deadline of {g.occurrence}, "
                    "but its grace notice never reached the customer in time",
                    g.customer_id,
                )
            )
        suspended_at = ended.get((g.customer_id, f"grace-deadline:{month}"))
        end = grace_owner.deadline_end(g.deadline, g.timezone)
        if suspended_at is not None and suspended_at < end:
            out.append(
                Violation(
                    "suspension_without_notice",
                    f"{g.external_id}: suspended at {suspended_at.isoformat()}, before its "
                    f"deadline {g.deadline} ended ({end.isoformat()})",
                    g.customer_id,
                )
            )
    return out


# -- recording the outcome -------------------------------------------------------------------


def last_failing(engine: Engine) -> list[int]:
    """The customers the newest failing check named (checked again until they pass)."""
    with transaction(engine) as session:
        row = session.execute(
            select(JobRun.status, JobRun.details)
            .where(JobRun.kind == KIND)
            .order_by(JobRun.id.desc())
            .limit(1)
        ).first()
    if row is None or row.status != runs.FAILED:
        return []
    return [int(c) for c in (row.details or {}).get("customer_ids", [])]


def record_check(
    engine: Engine,
    name: str,
    at: datetime,
    *,
    since: datetime | None,
    grace: GraceLimits | None = None,
    owner: str | None = None,
) -> CheckResult:
    """Check (the customers touched since ``since``, and those the last failure named) and
    record the outcome in ``job_runs``: ``succeeded``, or ``failed`` with the violations."""
    again = last_failing(engine)
    with transaction(engine) as session:
        result = check(session, since=since, also=again, grace=grace)
    named = sorted({v.customer_id for v in result.violations if v.customer_id is not None})
    counts: dict[str, int] = defaultdict(int)
    for v in result.violations:
        counts[v.invariant] += 1
    details = {
        "customers": result.customers,
        "since": since,
        "violations": [str(v) for v in result.violations[:LISTED]],
        "count": len(result.violations),
        "by_invariant": dict(sorted(counts.items())),
        "customer_ids": named[:10_000],
    }
    error = None
    if result.violations:
        error = f"{len(result.violations)} invariant violation(s); first: {result.violations[0]}"
    runs.record(
        engine,
        KIND,
        name,
        at,
        runs.FAILED if result.violations else runs.SUCCEEDED,
        details=details,
        error=error,
        owner=owner,
    )
    return result


__all__ = [
    "INVARIANTS",
    "KIND",
    "CheckResult",
    "GraceLimits",
    "Violation",
    "check",
    "last_failing",
    "record_check",
    "touched_since",
]
