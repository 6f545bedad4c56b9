"""What a journey may depend on: the run context (time injected) and its candidate rows.

A journey never reads the clock: ``RunContext.at`` is the instant it acts as
of and ``as_of`` the operator's care day; ``now`` is the real clock when the
run started (injected by the CLI or the scheduler), so that a day run late — a
catch-up after an outage, a back-dated ``run --date`` — decides on the facts
known at ``at`` but only does what can still honestly happen ``now``.
Candidates are read set-based, a keyset-paginated batch at a time, restricted
to the run's shard (and, for ``explain``, to one customer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from crm.audit import Actor
from crm.balances import BalanceAt
from crm.models import Customer, Manager
from rules.loader import RuleSet
from rules.models import ContactPolicy, JourneyBase


@dataclass(frozen=True)
class RunContext:
    """Everything a journey may depend on; time is injected here, never read."""

    as_of: date
    at: datetime
    run_id: str
    ruleset: RuleSet
    operator_tz: ZoneInfo
    batch_size: int = 5000
    shard: tuple[int, int] = (0, 1)
    only_customer: int | None = None
    """Restrict every candidate query to this customer (``explain``'s real decision)."""
    now: datetime | None = None
    """The real clock when the run started; None: the run happens at ``at`` (tests,
    preview and explain ask what the day decides, not what can still be done)."""

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("RunContext.at must be timezone-aware")
        if self.now is not None and self.now.tzinfo is None:
            raise ValueError("RunContext.now must be timezone-aware")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"bad shard {self.shard}: expected (index, count) with 0 <= index < count"
            )

    @property
    def actor(self) -> Actor:
        return Actor("flow", self.run_id)

    @property
    def balance_at(self) -> BalanceAt:
        """Customers' balances as known at the day's instant (the feed and the ledger)."""
        return BalanceAt(self.at)

    @property
    def recorded_at(self) -> datetime:
        """When the run's writes really happen: ledger postings and audit rows carry it."""
        return self.now if self.now is not None and self.now > self.at else self.at

    @property
    def late(self) -> bool:
        """The day runs more than :data:`LATE_AFTER` after its own instant (a catch-up)."""
        return self.now is not None and self.now - self.at > LATE_AFTER

    @property
    def real_day(self) -> date:
        """The operator's calendar day at :attr:`recorded_at`."""
        return self.recorded_at.astimezone(self.operator_tz).date()

    @property
    def plan_from(self) -> date:
        """The first day a call may be planned on: never a day that has already passed."""
        return max(self.as_of, self.real_day)

    @property
    def policy(self) -> ContactPolicy:
        return self.ruleset.contact_policy

    @property
    def hotline(self) -> str:
        return self.policy.hotline

    def rule(self, journey: str) -> JourneyBase:
        return self.ruleset.journey(journey)


LATE_AFTER = timedelta(hours=1)
"""A run that starts this long after its care day's instant is a late (catch-up) run."""


def care_day_instant(as_of: date, operator_tz: ZoneInfo, at: time = time(9, 0)) -> datetime:
    """The instant a care day's run acts as of, when none is given: 09:00 operator time."""
    return datetime.combine(as_of, at, tzinfo=operator_tz).astimezone(UTC)


@lru_cache(maxsize=4096)
def local_day_start(day: date, tz_name: str) -> datetime:
    """Midnight starting ``day`` in the customer's zone, as aware UTC."""
    return datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(tz_name)).astimezone(UTC)


def local_day_end(day: date, tz_name: str) -> datetime:
    """The first instant after ``day`` in the customer's zone (exclusive end), as aware UTC."""
    return local_day_start(day + timedelta(days=1), tz_name)


@dataclass
class CustomerRow:
    """The columns every journey reads about a candidate; ``extra`` holds a journey's own."""

    id: int
    external_id: str
    name: str
    phone: str
    locale: str
    timezone: str
    tier: str
    status: str
    balance: Decimal
    points: int
    sms_opt_out: bool
    do_not_call: bool
    manager_id: int | None
    manager_name: str | None
    manager_name_latin: str | None
    manager_phone: str | None
    extra: dict[str, Any] = field(default_factory=dict)


CUSTOMER_COLUMNS = (
    Customer.id,
    Customer.external_id,
    Customer.name,
    Customer.phone,
    Customer.locale,
    Customer.timezone,
    Customer.tier,
    Customer.status,
    Customer.balance,
    Customer.points,
    Customer.sms_opt_out,
    Customer.do_not_call,
    Customer.manager_id,
    Manager.name.label("manager_name"),
    Manager.name_latin.label("manager_name_latin"),
    Manager.phone.label("manager_phone"),
)
_BASE_FIELDS = [c.key for c in CUSTOMER_COLUMNS]


def customer_select(*extra: Any) -> Select[Any]:
    """SELECT of the common candidate columns (plus ``extra``) with the manager joined."""
    columns: list[Any] = [*CUSTOMER_COLUMNS, *extra]
    return select(*columns).outerjoin(Manager, Manager.id == Customer.manager_id)


def scoped(stmt: Select[Any], ctx: RunContext) -> Select[Any]:
    """``stmt`` restricted to the run's shard and, for explain, its one customer.

    Shards split customers **by manager** (customers without one go to shard 0):
    shards running side by side then never plan calls into the same manager's
    day, and each manager's customers are still planned in customer-id order, so
    a sharded run ends exactly as a single run does.
    """
    index, count = ctx.shard
    if count > 1:
        stmt = stmt.where(func.coalesce(Customer.manager_id, 0) % count == index)
    if ctx.only_customer is not None:
        stmt = stmt.where(Customer.id == ctx.only_customer)
    return stmt


def row_of(mapping: Any) -> CustomerRow:
    base = {k: mapping[k] for k in _BASE_FIELDS}
    extra = {k: v for k, v in mapping.items() if k not in base}
    return CustomerRow(**base, extra=extra)


def rows_of(keys: list[str], rows: Any) -> list[CustomerRow]:
    """Candidate rows by position (a ``customer_select``), without a mapping per row."""
    width = len(_BASE_FIELDS)
    if keys[:width] != _BASE_FIELDS:
        return [row_of(dict(zip(keys, row, strict=True))) for row in rows]
    extra_keys = keys[width:]
    if not extra_keys:
        return [CustomerRow(*row) for row in rows]
    out = []
    for row in rows:
        found = CustomerRow(*row[:width])
        found.extra = dict(zip(extra_keys, row[width:], strict=True))
        out.append(found)
    return out


def iter_candidates(
    session: Session, stmt: Select[Any], ctx: RunContext
) -> Iterator[list[CustomerRow]]:
    """Keyset-paginate ``stmt`` by customer id, a batch at a time, within the run's scope."""
    stmt = scoped(stmt, ctx)
    last = 0
    while True:
        result = session.execute(
            stmt.where(Customer.id > last).order_by(Customer.id).limit(ctx.batch_size)
        )
        keys = list(result.keys())
        rows = result.all()
        if not rows:
            return
        yield rows_of(keys, rows)
        last = rows[-1].id
