"""Reproducible demo and benchmark CRM data, generated in chunks and bulk-written.

Every chunk of :data:`CHUNK` customers draws from its own ``random.Random`` seeded
with ``(seed, first index of the chunk)``, so the data depends only on the seed,
the as-of date, the count and where numbering starts, never on timing or memory.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, func, insert, inspect, select

from crm import audit, balances
from crm.db import transaction
from crm.models import TIERS, Customer, Manager, Plan, PlanTier
from seed.catalogue import PLANS, plans_for_tier
from seed.errors import SeedError
from seed.people import (
    NamePools,
    cn_mobile,
    manager_name,
    manager_phone,
    name_pools,
    uk_mobile,
    us_mobile,
)
from seed.writer import Chunk, Row, writer_for

CHUNK = 10_000
"""Customers per generated chunk; part of the reproducibility contract, do not tune."""
CUSTOMERS_PER_MANAGER = 400
MIN_MANAGERS = 3
CLUBS: tuple[str, ...] = ("music", "games", "film", "health", "travel")
CADENCE_DAYS: dict[str, int] = {"silver": 180, "gold": 90, "platinum": 60, "diamond": 30}
CREDIT_LIMIT_MINOR: tuple[int, ...] = (0, 5_000, 10_000, 30_000)  # by tier rank
TIER_CUMULATIVE: tuple[float, ...] = (0.55, 0.83, 0.96)  # silver 55%, gold 28%, platinum 13%
SEED_ACTOR = audit.Actor("system", "seed")

ProgressCallback = Callable[[int, int], None]
"""Called after each written chunk with (customers written so far, customers to write)."""


@dataclass(frozen=True)
class SeedSummary:
    """What one seeding run wrote."""

    seed: int
    as_of: date
    months: list[date]
    customers: int
    first_customer_id: str
    last_customer_id: str
    plans_created: int
    managers_created: int
    managers_total: int
    usage_rows: int
    club_rows: int
    audit_seq: int


@dataclass(frozen=True)
class _Context:
    seed: int
    as_of: date
    months: tuple[date, ...]
    balance_as_of: datetime  # naive UTC, storage form
    pools: NamePools
    tier_plans: tuple[
        tuple[tuple[int, Any], ...], ...
    ]  # per tier rank: (plan id, spec), cheapest first
    manager_ids: tuple[int, ...]
    phone_offset: int


def usage_months(as_of: date, months: int) -> list[date]:
    """The ``months`` full calendar months before the as-of month, oldest first."""
    first = as_of.replace(day=1)
    out = []
    for back in range(months, 0, -1):
        y, m = divmod(first.year * 12 + first.month - 1 - back, 12)
        out.append(date(y, m + 1, 1))
    return out


def generate(
    engine: Engine,
    customers: int,
    seed: int,
    as_of: date,
    months: int = 4,
    progress: ProgressCallback | None = None,
    *,
    append: bool = False,
    operator_tz: str = "Asia/Shanghai",
    at: datetime | None = None,
) -> SeedSummary:
    """Seed ``customers`` demo customers with plans, managers, clubs and usage.

    Refuses a database that already has customers unless ``append`` is true; then
    the new customers are numbered after the highest seeded id (``C000000001``…)
    and managers are topped up to one per 400 customers. ``at`` is the audit
    time (defaults to the start of ``as_of`` in UTC, so no clock is read here).
    """
    if customers < 1:
        raise SeedError(f"--customers must be at least 1, got {customers}")
    if not 1 <= months <= 36:
        raise SeedError(f"--months must be between 1 and 36, got {months}")
    try:
        tz = ZoneInfo(operator_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SeedError(f"unknown operator time zone {operator_tz!r}") from exc
    if not inspect(engine).has_table("customers"):
        raise SeedError("the database has no vipcare schema yet; run `vipcare init` first")
    at = at or datetime.combine(as_of, time(0), tzinfo=UTC)

    with transaction(engine) as session:
        existing = session.scalar(select(func.count()).select_from(Customer)) or 0
        if existing and not append:
            raise SeedError(
                f"the database already has {existing} customers; seeding refuses to mix "
                "demo data into it. Use --append to add more, or seed an empty database."
            )
        start = _next_seed_index(session) if existing else 0
        plans_created, plan_ids = _ensure_plans(session)
        managers_created, manager_ids = _ensure_managers(session, seed, existing + customers)
        first_id = (session.scalar(select(func.max(Customer.id))) or 0) + 1

    balance_as_of = datetime.combine(as_of, time(0), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
    ctx = _Context(
        seed=seed,
        as_of=as_of,
        months=tuple(usage_months(as_of, months)),
        balance_as_of=balance_as_of,
        pools=name_pools(seed),
        tier_plans=tuple(
            tuple((plan_ids[p.code], p) for p in plans_for_tier(tier)) for tier in TIERS
        ),
        manager_ids=tuple(manager_ids),
        phone_offset=(seed * 7919) % 10**6,
    )

    writer = writer_for(engine)
    usage_rows = club_rows = 0
    done = 0
    while done < customers:
        count = min(CHUNK, customers - done)
        chunk = make_chunk(ctx, start + done, count, first_id + done)
        writer.write(chunk)
        usage_rows += len(chunk.usage)
        club_rows += len(chunk.clubs)
        done += count
        if progress is not None:
            progress(done, customers)
    writer.finish()

    summary_details = {
        "seed": seed,
        "as_of": as_of,
        "months": months,
        "customers": customers,
        "append": append,
        "first_customer_id": customer_ref(start),
        "last_customer_id": customer_ref(start + customers - 1),
        "plans_created": plans_created,
        "managers_created": managers_created,
        "usage_rows": usage_rows,
        "club_rows": club_rows,
    }
    with transaction(engine) as session:
        balances.adopt_bulk_loaded(session)
        seq = audit.record(session, SEED_ACTOR, at, "seed", summary_details, entity="customers")
    return SeedSummary(
        seed=seed,
        as_of=as_of,
        months=list(ctx.months),
        customers=customers,
        first_customer_id=customer_ref(start),
        last_customer_id=customer_ref(start + customers - 1),
        plans_created=plans_created,
        managers_created=managers_created,
        managers_total=len(manager_ids),
        usage_rows=usage_rows,
        club_rows=club_rows,
        audit_seq=seq,
    )


def customer_ref(index: int) -> str:
    """The external id of the seeded customer number ``index`` (0-based)."""
    return f"C{index + 1:09d}"


def _next_seed_index(session: Any) -> int:
    """After the highest seeded-looking id; imported ids of other shapes are ignored."""
    ids = session.scalars(
        select(Customer.external_id)
        .where(Customer.external_id.like("C%"), func.length(Customer.external_id) == 10)
        .order_by(Customer.external_id.desc())
        .limit(50)
    ).all()
    for ext in ids:
        if ext[1:].isdigit():
            return int(ext[1:])
    return 0


def _ensure_plans(session: Any) -> tuple[int, dict[str, int]]:
    """Insert the catalogue plans that are missing; existing plans are left untouched."""
    have = {code: pid for code, pid in session.execute(select(Plan.code, Plan.id))}
    missing = [p for p in PLANS if p.code not in have]
    if missing:
        session.execute(
            insert(Plan),
            [
                {
                    "code": p.code,
                    "name": p.name,
                    "monthly_fee": p.monthly_fee,
                    "voice_minutes": p.voice_minutes,
                    "data_mb": p.data_mb,
                    "sms": p.sms,
                    "voice_overage_per_min": p.voice_overage_per_min,
                    "data_overage_per_mb": p.data_overage_per_mb,
                    "sms_overage": p.sms_overage,
                }
                for p in missing
            ],
        )
        have = {code: pid for code, pid in session.execute(select(Plan.code, Plan.id))}
        session.execute(
            insert(PlanTier),
            [{"plan_id": have[p.code], "tier": t} for p in missing for t in p.tiers],
        )
    return len(missing), {p.code: have[p.code] for p in PLANS}


def manager_ref(index: int) -> str:
    return f"M{index + 1:05d}"


def _manager_ids(session: Any, refs: list[str]) -> dict[str, int]:
    have: dict[str, int] = {}
    for start in range(0, len(refs), 5000):
        stmt = select(Manager.external_id, Manager.id).where(
            Manager.external_id.in_(refs[start : start + 5000])
        )
        have.update((ext, mid) for ext, mid in session.execute(stmt))
    return have


def _ensure_managers(session: Any, seed: int, total_customers: int) -> tuple[int, list[int]]:
    """Top the seeded managers (M00001…) up to one per 400 customers, at least 3."""
    wanted = max(MIN_MANAGERS, math.ceil(total_customers / CUSTOMERS_PER_MANAGER))
    refs = [manager_ref(i) for i in range(wanted)]
    have = _manager_ids(session, refs)
    missing = [i for i, ref in enumerate(refs) if ref not in have]
    if missing:
        rows = []
        for i in missing:
            rng = random.Random(f"vipcare-seed:{seed}:manager:{i}")
            name, latin = manager_name(rng)
            rows.append(
                {
                    "external_id": manager_ref(i),
                    "name": name,
                    "name_latin": latin,
                    "phone": manager_phone(i),
                    "email": f"am{i + 1:05d}@vip.example.com",
                    "daily_call_capacity": rng.randint(20, 60),
                }
            )
        session.execute(insert(Manager), rows)
        have = _manager_ids(session, refs)
    return len(missing), [have[ref] for ref in refs]


def _birthday(rng: random.Random, as_of: date) -> date | None:
    """About 1% on the as-of day, 1% in the week after, 0.3% on 29 February, 2% unknown."""
    u = rng.random()
    year = as_of.year - 18 - rng.randrange(63)
    if u < 0.02:
        return None
    if u < 0.03:
        return _on_day(year, as_of.month, as_of.day)
    if u < 0.04:
        soon = as_of + timedelta(days=1 + rng.randrange(7))
        return _on_day(year, soon.month, soon.day)
    if u < 0.043:
        return _on_day(year, 2, 29)
    return date.fromordinal(date(year, 1, 1).toordinal() + rng.randrange(365))


def _on_day(year: int, month: int, day: int) -> date:
    """That month and day in ``year``, or the nearest earlier leap year for 29 February."""
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            year -= 1


def make_chunk(ctx: _Context, first_index: int, count: int, first_id: int) -> Chunk:
    """Generate ``count`` customers (and their clubs and usage) in storage form."""
    rng = random.Random(f"vipcare-seed:{ctx.seed}:{first_index}")
    rnd = rng.random
    randrange = rng.randrange
    pools = ctx.pools
    as_of = ctx.as_of
    as_of_ord = as_of.toordinal()
    months = ctx.months
    recent_days = max(1, len(months) * 30)
    n_managers = len(ctx.manager_ids)
    offset = ctx.phone_offset
    chunk = Chunk()
    customers = chunk.customers
    clubs = chunk.clubs
    usage = chunk.usage

    for k in range(count):
        index = first_index + k
        cid = first_id + k
        u = rnd()
        rank = (
            0
            if u < TIER_CUMULATIVE[0]
            else 1
            if u < TIER_CUMULATIVE[1]
            else 2
            if u < TIER_CUMULATIVE[2]
            else 3
        )
        tier = TIERS[rank]

        u = rnd()
        if u < 0.88:
            locale = "zh-CN"
            name = pools.zh(rng)
            u = rnd()
            tz = "Asia/Shanghai" if u < 0.9 else "Asia/Urumqi" if u < 0.95 else "Asia/Hong_Kong"
            phone = cn_mobile(index, offset, rng)
        else:
            name = pools.en(rng)
            u = rnd()
            if u < 0.35:
                locale, tz, phone = "en-US", "America/New_York", us_mobile(index, offset, rng)
            elif u < 0.65:
                locale, tz, phone = "en-GB", "Europe/London", uk_mobile(index, offset, rng)
            else:  # expatriates on a home-country number
                locale = "en"
                tz = "Asia/Shanghai" if u < 0.9 else "Asia/Hong_Kong"
                phone = us_mobile(index, offset, rng) if u < 0.8 else uk_mobile(index, offset, rng)

        birthday = _birthday(rng, as_of)
        mmdd = None if birthday is None else birthday.month * 100 + birthday.day

        # Plan and usage profile: about one customer in eight misfits their plan on purpose
        # (so plan-fit has work, as in a real base); the rest use most of their allowance.
        plans = ctx.tier_plans[rank]
        u = rnd()
        if u < 0.05:  # heavy user on the cheapest plan: big overage
            plan_id, spec = plans[0]
            factor, jitter = 2.2 + 2.0 * rnd(), 0.4
        elif u < 0.09:  # light user on the most expensive plan: overpaying
            plan_id, spec = plans[-1]
            factor, jitter = 0.03 + 0.15 * rnd(), 0.4
        elif u < 0.13:  # a little over the allowance
            plan_id, spec = plans[randrange(len(plans))]
            factor, jitter = 1.0 + 0.4 * rnd(), 0.4
        else:  # a plan that fits: most of the allowance used
            plan_id, spec = plans[randrange(len(plans))]
            factor, jitter = 0.8 + 0.2 * rnd(), 0.1
        voice_base = spec.voice_minutes * factor * (1 - jitter + 2 * jitter * rnd())
        data_base = spec.data_mb * factor * (1 - jitter + 2 * jitter * rnd())
        sms_base = spec.sms * factor * (0.2 + 0.8 * rnd())

        manager_id = None if rnd() < 0.005 else ctx.manager_ids[randrange(n_managers)]

        if rnd() < (0.03 if rank == 0 else 0.07):
            balance = -1 - randrange(8_000)
        else:
            balance = (1_000 + randrange(29_000)) * (1 + rank)
        u = rnd()
        status = "active" if u >= 0.02 else "suspended" if u < 0.015 else "closed"
        sms_opt_out = rnd() < 0.04
        do_not_call = rnd() < 0.02

        if rnd() < 0.03:
            joined_ord = as_of_ord - 1 - randrange(recent_days)
        else:
            joined_ord = as_of_ord - (recent_days + 31) - randrange(3650)
        joined_on = date.fromordinal(joined_ord)
        if rnd() < 0.03:
            last_contact = None
        else:  # most are within their cadence; about one in twelve is overdue
            ago = 1 + int(rnd() * CADENCE_DAYS[tier] * 1.08)
            last_contact = date.fromordinal(max(joined_ord, as_of_ord - ago))

        if rnd() >= 0.45:
            for club in rng.sample(CLUBS, 1 + randrange(3)):
                clubs.append((cid, club))

        for month in months:
            if month >= joined_on:
                usage.append(
                    (
                        cid,
                        month,
                        int(voice_base * (0.85 + 0.3 * rnd())),
                        int(data_base * (0.85 + 0.3 * rnd())),
                        int(sms_base * (0.85 + 0.3 * rnd())),
                    )
                )

        row: Row = (
            cid,
            customer_ref(index),
            name,
            phone,
            locale,
            tz,
            birthday,
            mmdd,
            tier,
            rank,
            plan_id,
            manager_id,
            balance,
            ctx.balance_as_of,
            CREDIT_LIMIT_MINOR[rank],
            status,
            sms_opt_out,
            do_not_call,
            joined_on,
            last_contact,
            loyalty_points(index, rank),
        )
        customers.append(row)
    return chunk


def loyalty_points(index: int, rank: int) -> int:
    """A customer's points: spread 0..~30k, more for higher tiers, about 1 in 4 over 5,000.

    A multiplicative hash of the index rather than a draw from the chunk's
    random stream, so adding points left every other seeded value unchanged.
    """
    spread = (index * 2_654_435_761) % 4_294_967_291 % 10_000
    return spread * (1 + rank) * 3 // 4
