"""Schema, migrations and the exact-money / UTC column types, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from crm.db import transaction
from crm.models import Base, Customer, JourneyOccurrence, Plan
from crm.phones import InvalidPhone, mask, mask_in_text, to_e164
from crm.schema import current_revision, head_revision, upgrade


def test_migrations_match_the_models(engine):
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(engine):
    before = upgrade(engine)
    assert before[0] == before[1] == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {
        "customers",
        "audit_log",
        "journey_occurrences",
        "outbound_messages",
        "call_tasks",
    } <= tables


def _plan(**kw) -> Plan:
    values = dict(
        code="P",
        name="P",
        monthly_fee=Decimal("128.00"),
        voice_minutes=1,
        data_mb=1,
        sms=1,
        voice_overage_per_min=Decimal("0.15"),
        data_overage_per_mb=Decimal("0.0293"),
        sms_overage=Decimal("0.1"),
    )
    values.update(kw)
    return Plan(**values)


def test_money_is_exact_and_stored_as_minor_units(engine):
    with transaction(engine) as s:
        s.add(_plan())
    with transaction(engine) as s:
        plan = s.scalars(select(Plan)).one()
        assert plan.monthly_fee == Decimal("128.00") and plan.data_overage_per_mb == Decimal(
            "0.0293"
        )
        # 0.1 + 0.2 style drift is impossible: sums are integer arithmetic in SQL
        total = s.scalar(select(func.sum(Plan.data_overage_per_mb)))
        assert total == Decimal("0.0293")
        raw = s.execute(text("SELECT monthly_fee, data_overage_per_mb FROM plans")).one()
        assert tuple(raw) == (12800, 293)


@pytest.mark.parametrize("bad", [1.5, "abc", Decimal("1.001")])
def test_money_refuses_floats_and_extra_decimals(engine, bad):
    with transaction(engine) as s, pytest.raises(StatementError):
        s.add(_plan(monthly_fee=bad))
        s.flush()


def test_times_are_utc_and_naive_times_are_refused(engine):
    shanghai = timezone(timedelta(hours=8))
    with transaction(engine) as s:
        s.add(_plan())
        s.add(
            Customer(
                external_id="C1",
                name="n",
                phone="+8613800000000",
                tier="gold",
                tier_rank=1,
                balance_as_of=datetime(2026, 11, 21, 10, 0, tzinfo=shanghai),
            )
        )
    with transaction(engine) as s:
        got = s.scalars(select(Customer.balance_as_of)).one()
    assert got == datetime(2026, 11, 21, 2, 0, tzinfo=UTC) and got.tzinfo is UTC
    with transaction(engine) as s, pytest.raises(StatementError, match="naive"):
        s.execute(text("SELECT 1"))
        s.add(
            Customer(
                external_id="C2",
                name="n",
                phone="+8613800000001",
                tier="gold",
                tier_rank=1,
                balance_as_of=datetime(2026, 11, 21, 10, 0),
            )
        )
        s.flush()


def test_occurrence_key_is_unique(engine, now):
    with transaction(engine) as s:
        s.add(
            Customer(external_id="C1", name="n", phone="+8613800000000", tier="gold", tier_rank=1)
        )
    with transaction(engine) as s:
        cid = s.scalar(select(Customer.id))
    row = dict(
        journey="birthday",
        customer_id=cid,
        occurrence="birthday:2027",
        decided_at=now,
        as_of=now.date(),
        rule_id="birthday",
        rule_hash="h",
    )
    with transaction(engine) as s:
        s.add(JourneyOccurrence(**row))
    with pytest.raises(IntegrityError), transaction(engine) as s:
        s.add(JourneyOccurrence(**row))


def test_check_constraints_refuse_unknown_tiers(engine):
    with pytest.raises(IntegrityError), transaction(engine) as s:
        s.add(
            Customer(external_id="C1", name="n", phone="+8613800000000", tier="bronze", tier_rank=0)
        )


def test_phones():
    assert to_e164("138 1234 5678") == "+8613812345678"
    assert to_e164("+44 20 7946 0958") == "+442079460958"
    with pytest.raises(InvalidPhone, match="not a valid phone"):
        to_e164("+86123")
    assert mask("+8613812345678") == "+86138****5678"
    assert "13812345678" not in mask_in_text("send to +8613812345678 failed")


def test_downgrade_to_the_first_revision_and_back_keeps_the_data(engine):
    """Every migration can be undone and redone on a database that holds rows."""
    from alembic import command

    from crm.schema import alembic_config

    with transaction(engine) as s:
        s.add(
            Customer(external_id="C1", name="n", phone="+8613800000000", tier="gold", tier_rank=1)
        )
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert current_revision(engine) == "0001"
    assert "points" not in {c["name"] for c in inspect(engine).get_columns("customers")}
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with transaction(engine) as s:
        assert s.scalars(select(Customer.points)).one() == 0


@pytest.mark.parametrize(
    ("table", "column", "allowed", "refused"),
    [
        ("outbound_messages", "status", "expired", "lost"),
        ("call_tasks", "kind", "care", "visit"),
        ("grace_periods", "status", "cancelled", "forgiven"),
    ],
)
def test_new_states_are_allowed_and_unknown_ones_refused(engine, table, column, allowed, refused):
    """The CHECK constraints the migrations rewrote know the new values, and only those."""
    ddl_values = _check_values(engine, table, column)
    assert allowed in ddl_values and refused not in ddl_values


def _check_values(engine, table: str, column: str) -> str:
    """The text of the CHECK constraint on ``column`` as the database stores it."""
    checks = inspect(engine).get_check_constraints(table)
    found = [c["sqltext"] for c in checks if c["name"] == f"ck_{table}_{column}"]
    assert found, f"no CHECK on {table}.{column}"
    return " ".join(found)


def test_points_cannot_go_negative(engine):
    with pytest.raises(IntegrityError), transaction(engine) as s:
        s.add(
            Customer(
                external_id="C1",
                name="n",
                phone="+8613800000000",
                tier="gold",
                tier_rank=1,
                points=-1,
            )
        )
