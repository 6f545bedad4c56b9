"""An outage and its catch-up, with billing feeds that keep arriving: the crash harness's
outage scenario (no tests here; ``tests/test_crash_harness.py`` runs it).

The embedded scheduler's own jobs run (``vipcare.scheduler.jobs``: the care day
through the Prefect flow, the dispatcher through the mock provider), each at an
instant the scenario sets. Billing is modelled as the customers' own money, which
they spend and top up; every day billing sends a balances file as of the end of
that day: its balance is the customer's own money plus every posting vipcare had
made by then (billing applies vipcare's credits as they happen). Files arrive on
time, late (after newer ones: out of order) or twice, and go through the real
importer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from crm import process
from crm.audit import Actor
from crm.importer import import_csv
from crm.models import BalanceFact, CreditLedger, Customer
from tests.test_dispatcher_support import FakeClock
from vipcare.scheduler import jobs
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, Schedule
from vipcare.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
BILLING = Actor("import", "billing")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """``day`` at ``hour:minute`` in Shanghai, as aware UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI).astimezone(UTC)


def end_of(day: date) -> datetime:
    """What a balances file dated ``day`` means: the end of that day, Shanghai."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=SHANGHAI).astimezone(UTC)


@dataclass
class Feed:
    """One balances file: the balances as of the end of ``day``, and when it arrives."""

    day: date
    rows: dict[str, Decimal]
    arrives: list[datetime]


@dataclass
class Billing:
    """The customers' own money and the files billing sends about it."""

    engine: Engine
    workdir: Path
    rng: random.Random
    own: dict[str, Decimal] = field(default_factory=dict)
    sent: list[tuple[str, Decimal, datetime]] = field(default_factory=list)
    """Every (customer, balance, as_of) billing ever sent, repeats included."""
    pending: list[tuple[datetime, int, Feed]] = field(default_factory=list)
    files: int = 0

    @classmethod
    def opened(cls, engine: Engine, workdir: Path, rng: random.Random) -> Billing:
        """Billing's books from the seeded balances (the seed's feed rows)."""
        billing = cls(engine, workdir, rng)
        with engine.connect() as conn:
            for ref, balance in conn.execute(select(Customer.external_id, Customer.balance)):
                billing.own[str(ref)] = balance
            for ref, balance, as_of in conn.execute(
                select(Customer.external_id, BalanceFact.balance, BalanceFact.as_of).join(
                    Customer, Customer.id == BalanceFact.customer_id
                )
            ):
                billing.sent.append((str(ref), balance, as_of))
        return billing

    def day_passes(self, day: date) -> Feed:
        """Customers spend and top up during ``day``; billing writes the file as of its end.

        Half the customers below zero pay during any day with some chance; a few
        others spend theirs below zero.
        """
        changed: set[str] = set()
        for ref, money in self.own.items():
            roll = self.rng.random()
            if money < 0 and roll < 0.12:
                self.own[ref] = money + Decimal(self.rng.randrange(20, 200))
                changed.add(ref)
            elif money >= 0 and roll < 0.02:
                self.own[ref] = Decimal(-self.rng.randrange(1, 40))
                changed.add(ref)
        others = self.rng.sample(sorted(self.own), k=len(self.own) // 10)
        refs = sorted(changed | set(others))
        posted = self._posted_by(end_of(day), refs)
        rows = {ref: self.own[ref] + posted.get(ref, Decimal("0.00")) for ref in refs}
        on_time = at(day + timedelta(days=1), 7)
        roll = self.rng.random()
        if roll < 0.2:  # late: after the next day's (newer) file
            arrives = [at(day + timedelta(days=self.rng.choice((2, 3))), 7, 30)]
        elif roll < 0.4:  # sent twice
            arrives = [on_time, at(day + timedelta(days=2), 6, 45)]
        else:
            arrives = [on_time]
        feed = Feed(day, rows, arrives)
        for when in arrives:
            self.pending.append((when, self.files, feed))
            self.files += 1
        return feed

    def _posted_by(self, instant: datetime, refs: list[str]) -> dict[str, Decimal]:
        """vipcare's postings made by ``instant`` (billing applies them as they happen)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Customer.external_id, func.sum(CreditLedger.amount))
                .join(Customer, Customer.id == CreditLedger.customer_id)
                .where(CreditLedger.created_at <= instant, Customer.external_id.in_(refs))
                .group_by(Customer.external_id)
            ).all()
        return {str(ref): Decimal(total) for ref, total in rows}

    def deliver(self, until: datetime) -> int:
        """Import every file that has arrived by ``until``, in arrival order; how many."""
        due = sorted(p for p in self.pending if p[0] <= until)
        self.pending = [p for p in self.pending if p[0] > until]
        for when, n, feed in due:
            path = self.workdir / f"balances-{feed.day}-{n}.csv"
            lines = ["customer_id,balance,as_of"]
            lines += [
                f"{ref},{balance},{feed.day.isoformat()}" for ref, balance in feed.rows.items()
            ]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            import_csv(self.engine, "balances", path, BILLING, when, "Asia/Shanghai")
            self.sent += [(ref, balance, end_of(feed.day)) for ref, balance in feed.rows.items()]
        return len(due)

    def expected_balances(self) -> dict[str, Decimal]:
        """The oracle: each customer's latest value billing sent, plus vipcare's postings
        made after its ``as_of``; computed from what was sent, not from vipcare's tables."""
        latest: dict[str, tuple[datetime, Decimal]] = {}
        for ref, balance, as_of in self.sent:
            if ref not in latest or as_of > latest[ref][0]:
                latest[ref] = (as_of, balance)
        with self.engine.connect() as conn:
            postings = conn.execute(
                select(Customer.external_id, CreditLedger.amount, CreditLedger.created_at).join(
                    Customer, Customer.id == CreditLedger.customer_id
                )
            ).all()
        out = {ref: balance for ref, (_, balance) in latest.items()}
        for ref, amount, created in postings:
            if str(ref) in latest and created > latest[str(ref)][0]:
                out[str(ref)] += amount
        return out


@dataclass
class Scheduler:
    """The embedded scheduler's jobs on an injected clock (APScheduler itself is not needed)."""

    runtime: jobs.Runtime
    clock: list[datetime]

    @classmethod
    def on(cls, engine: Engine, db_url: str, store: Path) -> Scheduler:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=db_url,
            timezone="Asia/Shanghai",
            send_rate_per_second=1000,
            mock_store=store,
        )
        clock = [at(date(2026, 11, 23), 0)]
        fake = FakeClock()
        rt = jobs.Runtime(
            settings=settings,
            engine=engine,
            schedule=Schedule.from_settings(settings),
            clock=lambda: clock[0],
            owner=process.new_owner(),
            dispatch_options={"sleep": fake.sleep, "clock": fake},
        )
        return cls(rt, clock)

    def care(self, when: datetime) -> None:
        """The care-day job at ``when``: every due day, oldest first (a catch-up after downtime)."""
        self.clock[0] = when
        assert jobs.run_job(self.runtime, CARE_DAY)

    def dispatch(self, when: datetime) -> Any:
        self.clock[0] = when
        assert jobs.run_job(self.runtime, DISPATCH)
