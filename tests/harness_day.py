"""The care day the invariant, crash and concurrency harnesses share (no tests here).

A seeded CRM (every ninth customer below zero, so grace credits happen), the care
day 2026-11-23 decided at 08:00 Shanghai time, and hourly dispatch rounds from
09:00 Shanghai time until every time zone's window has closed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, select, text

import seed
from crm.models import Customer
from tests.crash_driver import DayPlan, rounds

DAY = date(2026, 11, 23)
AT = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
"""08:00 in Asia/Shanghai: when the care day decides."""
INTERVAL = timedelta(hours=1)
"""Between two dispatch rounds (the scheduler's dispatch interval in these tests)."""
ROUNDS = rounds(DAY, 1, 14, INTERVAL)
LAST = ROUNDS[-1]


def seed_day(engine: Engine, customers: int = 300, seed_value: int = 31) -> None:
    """The same CRM every time for the same arguments (so a twin can be compared)."""
    seed.generate(engine, customers, seed=seed_value, as_of=DAY - timedelta(days=1))
    with engine.begin() as conn:  # every ninth customer's fed balance below zero
        conn.execute(text("UPDATE customers SET balance = -3000 WHERE id % 9 = 0"))
        conn.execute(text("UPDATE balance_facts SET balance = -3000 WHERE customer_id % 9 = 0"))


def balances(engine: Engine) -> dict[str, Decimal]:
    """Each customer's balance by external id (the opening balances of the ledger check)."""
    with engine.connect() as conn:
        return {
            str(ref): balance
            for ref, balance in conn.execute(select(Customer.external_id, Customer.balance))
        }


def plan(url: str, workdir: Path, *, batch_size: int = 5, chunk_size: int = 4) -> DayPlan:
    """The day's plan, its provider store and progress file under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return DayPlan(
        url=url,
        day=DAY,
        at=AT,
        rounds=ROUNDS,
        store=str(workdir / "provider.jsonl"),
        progress=str(workdir / "progress.json"),
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
