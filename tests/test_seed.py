"""Demo data: reproducible, realistic in shape, valid, and safe to run against a live database."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from crm.audit import Actor
from crm.db import make_engine, transaction
from crm.importer import import_csv
from crm.models import (
    TIERS,
    AuditLog,
    Customer,
    CustomerClub,
    Manager,
    MonthlyUsage,
    Plan,
)
from crm.phones import to_e164
from seed import SeedError, digest, generate
from seed.catalogue import PLANS
from seed.generator import CADENCE_DAYS, CLUBS
from seed.people import (
    CN_MOBILE_PREFIXES,
    UK_MOBILE_RANGES,
    US_AREA_CODES,
    cn_mobile,
    manager_phone,
    uk_mobile,
    us_mobile,
)
from vipcare.cli import app
from vipcare.settings import get_settings

AS_OF = date(2026, 11, 21)
N = 2_000


@pytest.fixture
def fresh_sqlite(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """A second, independent migrated SQLite database."""
    target = tmp_path / "reference.db"
    shutil.copyfile(sqlite_template, target)
    eng = make_engine(f"sqlite:///{target}")
    yield eng
    eng.dispose()


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    generate(engine, N, seed=7, as_of=AS_OF)
    return engine


def test_same_seed_same_data_on_every_backend_and_different_seed_differs(engine, fresh_sqlite):
    calls: list[tuple[int, int]] = []
    summary = generate(
        engine, 600, seed=11, as_of=AS_OF, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (600, 600)
    generate(fresh_sqlite, 600, seed=11, as_of=AS_OF)
    assert digest(engine) == digest(fresh_sqlite), "same seed, as-of and N must give identical rows"
    assert summary.customers == 600 and summary.first_customer_id == "C000000001"

    # The digest really covers the data: one changed usage cell changes it.
    with transaction(fresh_sqlite) as s:
        s.execute(
            update(MonthlyUsage)
            .where(MonthlyUsage.customer_id == s.scalar(select(func.min(Customer.id))))
            .values(sms=MonthlyUsage.sms + 1)
        )
    assert digest(engine) != digest(fresh_sqlite)


def test_different_seed_gives_different_data(engine, fresh_sqlite):
    generate(engine, 300, seed=1, as_of=AS_OF)
    generate(fresh_sqlite, 300, seed=2, as_of=AS_OF)
    assert digest(engine) != digest(fresh_sqlite)


def test_shape_tiers_people_and_flags(seeded):
    with transaction(seeded) as s:
        customers = s.execute(select(Customer.__table__)).all()
        managers = s.scalars(select(Manager)).all()
        clubs = s.execute(select(CustomerClub.club)).scalars().all()
    assert len(customers) == N
    tiers = Counter(c.tier for c in customers)
    assert tiers["silver"] > tiers["gold"] > tiers["platinum"] > tiers["diamond"] > 0
    assert all(c.tier_rank == TIERS.index(c.tier) for c in customers)

    # Birthdays: birth_mmdd matches, some on 29 February, about 1%+ on the demo day.
    with_birthday = [c for c in customers if c.birthday is not None]
    assert all(c.birth_mmdd == c.birthday.month * 100 + c.birthday.day for c in with_birthday)
    assert any(c.birth_mmdd == 229 for c in customers)
    assert sum(c.birth_mmdd == 1121 for c in customers) >= N // 100
    assert any(c.birthday is None and c.birth_mmdd is None for c in customers)

    # Money and flags.
    negative = [c for c in customers if c.balance < 0]
    assert negative and any(c.tier_rank >= 1 for c in negative)
    assert all(
        isinstance(c.balance, Decimal) and c.balance.as_tuple().exponent == -2 for c in customers
    )
    assert all(c.balance_as_of == datetime(2026, 11, 20, 16, 0, tzinfo=UTC) for c in customers)
    assert any(c.sms_opt_out for c in customers) and any(c.do_not_call for c in customers)
    assert {c.status for c in customers} == {"active", "suspended", "closed"}

    # People: valid, unique E.164 phones; zh-CN majority; the named time zones.
    phones = [c.phone for c in customers]
    assert all(to_e164(p) == p for p in phones)
    assert len(set(phones)) == N
    locales = Counter(c.locale for c in customers)
    assert locales["zh-CN"] > N * 0.8 and locales["en-US"] + locales["en-GB"] + locales["en"] > 0
    zones = {c.timezone for c in customers}
    assert {
        "Asia/Shanghai",
        "Asia/Urumqi",
        "Asia/Hong_Kong",
        "America/New_York",
        "Europe/London",
    } <= zones
    assert all(c.phone.startswith("+861") for c in customers if c.locale == "zh-CN")
    assert all(c.phone.startswith(("+1", "+44")) for c in customers if c.locale != "zh-CN")

    # Clubs, contact history, managers.
    assert set(clubs) == set(CLUBS)
    assert any(c.last_contact_on is None for c in customers)
    overdue = [
        c
        for c in customers
        if c.last_contact_on is not None and (AS_OF - c.last_contact_on).days > CADENCE_DAYS[c.tier]
    ]
    assert {c.tier for c in overdue} == set(TIERS)
    assert all(c.joined_on <= AS_OF for c in customers)
    assert all(
        c.last_contact_on is None or c.joined_on <= c.last_contact_on < AS_OF for c in customers
    )
    assert len(managers) == max(3, math.ceil(N / 400))
    assert all(20 <= m.daily_call_capacity <= 60 for m in managers)
    assert all(to_e164(m.phone) == m.phone for m in managers)
    assert not {m.phone for m in managers} & set(phones)


def _cost(plan: Plan, voice: int, data: int, sms: int) -> Decimal:
    return (
        plan.monthly_fee
        + max(0, voice - plan.voice_minutes) * plan.voice_overage_per_min
        + max(0, data - plan.data_mb) * plan.data_overage_per_mb
        + max(0, sms - plan.sms) * plan.sms_overage
    )


def test_shape_plans_and_usage_make_plan_fit_fire(seeded):
    with transaction(seeded) as s:
        plans = {p.id: p for p in s.scalars(select(Plan)).all()}
        months = s.scalars(select(MonthlyUsage.month).distinct().order_by(MonthlyUsage.month)).all()
        usage: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for cid, v, d, n in s.execute(
            select(
                MonthlyUsage.customer_id,
                MonthlyUsage.voice_minutes,
                MonthlyUsage.data_mb,
                MonthlyUsage.sms,
            )
        ):
            usage[cid].append((v, d, n))
        customers = s.execute(select(Customer.id, Customer.tier, Customer.plan_id)).all()

    assert 8 <= len(plans) <= 12
    for p in plans.values():
        assert p.tier_names, p.code
        for rate in (p.voice_overage_per_min, p.data_overage_per_mb, p.sms_overage):
            assert rate.as_tuple().exponent == -4
    assert months == [date(2026, 7, 1), date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]
    assert sum(len(v) == 4 for v in usage.values()) > N * 0.9

    # Cost three full months under the current plan and under every eligible plan.
    big_savers = heavy = light = 0
    for cid, tier, plan_id in customers:
        rows = usage[cid][-3:]
        if len(rows) < 3:
            continue
        current = plans[plan_id]
        assert tier in current.tier_names, "customers hold plans their tier may take"
        now_cost = sum((_cost(current, *r) for r in rows), Decimal(0))
        best = min(
            sum((_cost(p, *r) for r in rows), Decimal(0))
            for p in plans.values()
            if tier in p.tier_names
        )
        if best <= now_cost * Decimal("0.7"):
            big_savers += 1
        if now_cost > 2 * 3 * current.monthly_fee:
            heavy += 1
        if all(r[1] < current.data_mb * 0.2 for r in rows) and current.monthly_fee >= 288:
            light += 1
    # About one customer in eight misfits on purpose: enough for plan-fit, not a flood.
    assert N * 0.05 < big_savers < N * 0.2, "plan-fit needs some customers who would save a lot"
    assert heavy > N * 0.02 and light > N * 0.01


def test_seed_is_audited_and_rows_read_back_through_the_orm(seeded):
    with transaction(seeded) as s:
        (row,) = s.scalars(select(AuditLog).where(AuditLog.action == "seed")).all()
        details = json.loads(row.details)
        assert details["customers"] == N and details["seed"] == 7
        assert details["as_of"] == "2026-11-21" and details["months"] == 4
        assert (row.actor_type, row.actor_id) == ("system", "seed")
        first = s.scalars(select(Customer).where(Customer.external_id == "C000000001")).one()
        assert first.balance_as_of is not None and first.balance_as_of.tzinfo is not None
        assert first.plan is not None and first.tier in first.plan.tier_names
        # Rows were written below the ORM: bound comparisons must match the stored form.
        assert first.birthday is not None
        same_day = select(func.count()).where(Customer.birthday == first.birthday)
        assert (s.scalar(same_day) or 0) >= 1
        stamp = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
        assert s.scalar(select(func.count()).where(Customer.balance_as_of == stamp)) == N
        joined = select(func.count()).where(Customer.joined_on <= AS_OF)
        assert s.scalar(joined) == N
        assert s.scalar(select(func.count()).where(Customer.balance < Decimal("0.00"))) == sum(
            1 for b in s.scalars(select(Customer.balance)) if b < 0
        )


def test_refuses_a_database_with_customers_unless_appending(seeded, now, tmp_path):
    with pytest.raises(SeedError, match=r"already has 2000 customers.*--append"):
        generate(seeded, 10, seed=7, as_of=AS_OF)
    summary = generate(seeded, 500, seed=8, as_of=AS_OF, append=True)
    assert (summary.first_customer_id, summary.last_customer_id) == ("C000002001", "C000002500")
    assert summary.plans_created == 0
    assert summary.managers_total == max(3, math.ceil(2500 / 400))
    with transaction(seeded) as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 2500
    # The id sequence is past the bulk-written ids: an ordinary insert still works.
    path = tmp_path / "customers.csv"
    path.write_text(
        "customer_id,name,phone,locale,timezone,birthday,tier,clubs,plan_code,"
        "account_manager_id,balance,credit_limit,status,sms_opt_out,do_not_call,joined_on,"
        "last_contact_on\nNEW1,New,+8613700000001,,,,gold,,GLB-58,M00001,,,,,,,\n"
    )
    report = import_csv(seeded, "customers", path, Actor("import", "t"), now, "Asia/Shanghai")
    assert report.inserted == 1


def test_bad_parameters_and_missing_schema(engine, tmp_path):
    with pytest.raises(SeedError, match="at least 1"):
        generate(engine, 0, seed=1, as_of=AS_OF)
    with pytest.raises(SeedError, match="between 1 and 36"):
        generate(engine, 10, seed=1, as_of=AS_OF, months=0)
    blank = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
    with pytest.raises(SeedError, match="vipcare init"):
        generate(blank, 10, seed=1, as_of=AS_OF)
    blank.dispose()


def test_every_phone_pattern_is_valid_e164():
    rng = random.Random(5)
    for index in [0, 1, 7, 12_345, 999_999, 9_999_999, *rng.sample(range(10_000_000), 200)]:
        for make in (cn_mobile, us_mobile, uk_mobile):
            number = make(index, 4242, rng)
            assert to_e164(number) == number, number
        assert to_e164(manager_phone(index)) == manager_phone(index)
    for prefix in CN_MOBILE_PREFIXES:
        for _ in range(20):
            number = f"+86{prefix}{rng.randrange(10**8):08d}"
            assert to_e164(number) == number
    for area in US_AREA_CODES:
        assert to_e164(f"+1{area}2000000") == f"+1{area}2000000"
        assert to_e164(f"+1{area}9999999") == f"+1{area}9999999"
    for block in UK_MOBILE_RANGES:
        assert to_e164(f"+447{block}0000000") == f"+447{block}0000000"
    assert len(PLANS) == len({p.code for p in PLANS})


def test_feb_29_demo_day_and_leap_years(engine):
    generate(engine, 400, seed=3, as_of=date(2028, 2, 29), months=3)
    with transaction(engine) as s:
        births = s.scalars(select(Customer.birthday).where(Customer.birth_mmdd == 229)).all()
        months = s.scalars(select(MonthlyUsage.month).distinct().order_by(MonthlyUsage.month)).all()
    assert len(births) >= 4 and all(b.month == 2 and b.day == 29 for b in births)
    assert months == [date(2027, 11, 1), date(2027, 12, 1), date(2028, 1, 1)]


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_seed(cli, engine):
    args = ["seed", "--customers", "250", "--seed", "5", "--as-of", "2026-11-21", "--months", "3"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "seeded 250 customers (C000000001..C000000250)" in result.stdout
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 250
    again = cli.invoke(app, args)
    assert again.exit_code == 1 and "--append" in again.stderr
    assert cli.invoke(app, [*args, "--append"]).exit_code == 0
    assert cli.invoke(app, ["seed", "--customers", "5", "--as-of", "2026-02-30"]).exit_code == 2
