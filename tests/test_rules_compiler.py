"""Compiled SQL and the Python evaluator agree, on SQLite and PostgreSQL; values are bound."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, insert, inspect, select
from sqlalchemy.dialects import postgresql

from crm.db import transaction
from crm.models import CUSTOMER_STATUSES, TIERS, Customer, CustomerClub, Manager, Plan
from rules.compiler import compile_condition
from rules.conditions import Condition, parse
from rules.dates import add_months, month_cutoff, months_between, years_between
from rules.evaluate import CustomerFacts, evaluate, explain, load_facts
from rules.fields import FIELDS, LIST_OPS

INJECTION = "x'; DROP TABLE customers; --"
CLUBS = ["music", "games", "film", "health", INJECTION]
PLANS = ["basic-58", "vip-198", INJECTION]
MANAGERS = ["m-001", "m-002", INJECTION]
LOCALES = ["zh-CN", "en", "en-US"]
ZONES = ["Asia/Shanghai", "Asia/Urumqi"]
AS_OF = [date(2026, 2, 28), date(2028, 2, 29), date(2026, 3, 31), date(2026, 11, 21)]
MONEY = [Decimal(v) for v in ("-50.00", "-0.01", "0.00", "0.01", "10.00", "20.50")]


def setup_reference_data(engine: Engine) -> None:
    with transaction(engine) as s:
        s.execute(
            insert(Plan),
            [
                {
                    "id": i + 1,
                    "code": code,
                    "name": code,
                    "monthly_fee": Decimal("58.00"),
                    "voice_minutes": 100,
                    "data_mb": 1024,
                    "sms": 100,
                    "voice_overage_per_min": Decimal("0.1900"),
                    "data_overage_per_mb": Decimal("0.0293"),
                    "sms_overage": Decimal("0.1000"),
                }
                for i, code in enumerate(PLANS)
            ],
        )
        s.execute(
            insert(Manager),
            [
                {
                    "id": i + 1,
                    "external_id": ref,
                    "name": f"Manager {i}",
                    "phone": "+8613800138000",
                    "daily_call_capacity": 40,
                }
                for i, ref in enumerate(MANAGERS)
            ],
        )


def replace_customers(engine: Engine, people: list[CustomerFacts]) -> None:
    """Core bulk inserts: a few dozen customers per example, no ORM round trips."""
    with transaction(engine) as s:
        s.execute(delete(CustomerClub))
        s.execute(delete(Customer))
        rows = []
        for p in people:
            assert p.id is not None
            rows.append(
                {
                    "id": p.id,
                    "external_id": p.customer_id,
                    "name": p.name,
                    "phone": "+8613912345678",
                    "locale": p.locale,
                    "timezone": p.timezone,
                    "birthday": p.birthday,
                    "birth_mmdd": p.birthday.month * 100 + p.birthday.day if p.birthday else None,
                    "tier": p.tier,
                    "tier_rank": TIERS.index(p.tier),
                    "plan_id": PLANS.index(p.plan) + 1 if p.plan else None,
                    "manager_id": MANAGERS.index(p.manager) + 1 if p.manager else None,
                    "balance": p.balance,
                    "credit_limit": p.credit_limit,
                    "points": p.points,
                    "status": p.status,
                    "sms_opt_out": p.sms_opt_out,
                    "do_not_call": p.do_not_call,
                    "joined_on": p.joined_on,
                    "last_contact_on": p.last_contact_on,
                }
            )
        if rows:
            s.execute(insert(Customer), rows)
        clubs = [{"customer_id": p.id, "club": c} for p in people for c in p.clubs]
        if clubs:
            s.execute(insert(CustomerClub), clubs)


def sql_matches(engine: Engine, cond: Condition, as_of: date) -> set[int]:
    with transaction(engine) as s:
        return set(s.scalars(select(Customer.id).where(compile_condition(cond, as_of))))


# --- strategies ------------------------------------------------------------------------

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "tier": st.sampled_from(TIERS),
    "status": st.sampled_from(CUSTOMER_STATUSES),
    "clubs": st.sampled_from(CLUBS),
    "plan": st.sampled_from(PLANS),
    "manager": st.sampled_from(MANAGERS),
    "locale": st.sampled_from(LOCALES),
    "timezone": st.sampled_from(ZONES),
    "balance": st.sampled_from([str(m) for m in MONEY]),
    "credit_limit": st.sampled_from([str(m) for m in MONEY]),
    "points": st.sampled_from([0, 4999, 5000, 20000]),
    "tenure_days": st.integers(0, 60),
    "tenure_months": st.integers(0, 30),
    "age": st.integers(0, 40),
    "days_since_contact": st.integers(0, 40),
    "sms_opt_out": st.booleans(),
    "do_not_call": st.booleans(),
    "has_birthday": st.booleans(),
}


def _sort_pair(field: str, pair: tuple[Any, Any]) -> list[Any]:
    if field == "tier":
        return sorted(pair, key=TIERS.index)
    if field in ("balance", "credit_limit"):
        return sorted(pair, key=Decimal)
    return sorted(pair)


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    spec = FIELDS[field]
    values = VALUES[field]
    op = draw(st.sampled_from(spec.ops))
    if op == "is_null":
        value: Any = draw(st.booleans())
    elif op == "between":
        value = _sort_pair(field, (draw(values), draw(values)))
    elif op in LIST_OPS:
        value = draw(st.lists(values, min_size=1, max_size=3))
    else:
        value = draw(values)
    if op == spec.shorthand_op and draw(st.booleans()):
        return {field: value}  # the shorthand form
    return {field: {op: value}}


conditions = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"any": items}),
        inner.map(lambda item: {"not": item}),
    ),
    max_leaves=6,
)


def maybe_date(as_of: date, low: int, high: int) -> st.SearchStrategy[date | None]:
    return st.one_of(st.none(), st.integers(low, high).map(lambda d: as_of - timedelta(days=d)))


@st.composite
def datasets(draw: st.DrawFn) -> tuple[date, list[CustomerFacts]]:
    as_of = draw(st.sampled_from(AS_OF))
    size = draw(st.integers(5, 30))
    people = []
    for i in range(1, size + 1):
        birthday = draw(
            st.one_of(
                maybe_date(as_of, 0, 41 * 366),
                st.sampled_from([date(2000, 2, 29), date(1996, 2, 29), date(1990, 1, 31)]),
            )
        )
        people.append(
            CustomerFacts(
                id=i,
                customer_id=f"C{i:04d}",
                name=f"Customer {i}",
                tier=draw(st.sampled_from(TIERS)),
                status=draw(st.sampled_from(CUSTOMER_STATUSES)),
                clubs=draw(st.frozensets(st.sampled_from(CLUBS), max_size=3)),
                plan=draw(st.one_of(st.none(), st.sampled_from(PLANS))),
                manager=draw(st.one_of(st.none(), st.sampled_from(MANAGERS))),
                locale=draw(st.sampled_from(LOCALES)),
                timezone=draw(st.sampled_from(ZONES)),
                balance=draw(st.sampled_from(MONEY)),
                credit_limit=draw(st.sampled_from(MONEY)),
                points=draw(st.sampled_from([0, 4999, 5000, 20000])),
                joined_on=draw(maybe_date(as_of, -5, 1000)),
                birthday=birthday,
                last_contact_on=draw(maybe_date(as_of, -3, 45)),
                sms_opt_out=draw(st.booleans()),
                do_not_call=draw(st.booleans()),
            )
        )
    return as_of, people


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=datasets(), raws=st.lists(conditions, min_size=3, max_size=3))
def test_compiled_sql_matches_python_evaluation(
    engine: Engine, data: tuple[date, list[CustomerFacts]], raws: list[dict[str, Any]]
) -> None:
    as_of, people = data
    if not hasattr(engine, "_rules_reference_loaded"):
        setup_reference_data(engine)
        engine._rules_reference_loaded = True  # type: ignore[attr-defined]
    replace_customers(engine, people)
    for raw in raws:
        cond = parse(raw)
        expected = {p.id for p in people if evaluate(cond, p, as_of)}
        assert sql_matches(engine, cond, as_of) == expected, (raw, as_of)


def test_facts_loaded_from_the_database_are_the_facts_inserted(engine: Engine) -> None:
    setup_reference_data(engine)
    as_of = date(2026, 11, 21)
    people = [
        CustomerFacts(
            id=1, customer_id="C1", name="A", tier="gold", status="active",
            clubs=frozenset({"music", INJECTION}), plan=INJECTION, manager="m-002",
            locale="en", timezone="Asia/Urumqi", balance=Decimal("-0.01"),
            credit_limit=Decimal("20.50"), points=0, joined_on=as_of, birthday=date(2000, 2, 29),
            last_contact_on=None, sms_opt_out=True, do_not_call=False,
        ),
        CustomerFacts(
            id=2, customer_id="C2", name="B", tier="silver", status="closed", clubs=frozenset(),
            plan=None, manager=None, locale="zh-CN", timezone="Asia/Shanghai",
            balance=Decimal("0.00"), credit_limit=Decimal("0.00"), points=0, joined_on=None,
            birthday=None, last_contact_on=as_of, sms_opt_out=False, do_not_call=True,
        ),
    ]  # fmt: skip
    replace_customers(engine, people)
    with transaction(engine) as s:
        assert load_facts(s, [1, 2]) == {1: people[0], 2: people[1]}


# --- injection-looking values ------------------------------------------------------------


def test_injection_looking_values_are_plain_strings(engine: Engine) -> None:
    setup_reference_data(engine)
    base: dict[str, Any] = dict(
        name="X", tier="gold", status="active", manager=None, locale="en",
        timezone="Asia/Shanghai", balance=Decimal("0.00"), credit_limit=Decimal("0.00"), points=0,
        joined_on=None, birthday=None, last_contact_on=None, sms_opt_out=False,
        do_not_call=False,
    )  # fmt: skip
    people = [
        CustomerFacts(id=1, customer_id="C1", clubs=frozenset({INJECTION}), plan=INJECTION, **base),
        CustomerFacts(id=2, customer_id="C2", clubs=frozenset({"music"}), plan="vip-198", **base),
        CustomerFacts(id=3, customer_id="C3", clubs=frozenset(), plan=None, **base),
    ]
    replace_customers(engine, people)
    as_of = date(2026, 11, 21)
    for raw, expected in [
        ({"clubs": {"contains": INJECTION}}, {1}),
        ({"plan": INJECTION}, {1}),
        ({"plan": {"in": [INJECTION, "vip-198"]}}, {1, 2}),
        ({"manager": {"ne": INJECTION}}, set()),
        ({"timezone": {"not_in": ["Asia/Urumqi"]}}, {1, 2, 3}),
        ({"not": {"clubs": {"contains_any": [INJECTION, "x' OR '1'='1"]}}}, {2, 3}),
    ]:
        cond = parse(raw)
        sql = str(
            select(Customer.id)
            .where(compile_condition(cond, as_of))
            .compile(dialect=postgresql.dialect())
        )
        assert "DROP" not in sql and "'1'='1" not in sql, sql
        assert sql_matches(engine, cond, as_of) == expected, raw
    assert inspect(engine).has_table("customers")
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 3


def test_every_value_is_a_bound_parameter() -> None:
    cond = parse(
        {
            "all": [
                {"tier": {"gte": "platinum"}},
                {"balance": {"between": ["-12.34", "56.78"]}},
                {"locale": {"in": ["en-GB", "fr"]}},
                {"tenure_months": {"gt": 17}},
                {"manager": {"eq": "mgr-424242"}},
            ]
        }
    )
    compiled = (
        select(Customer.id)
        .where(compile_condition(cond, date(2026, 11, 21)))
        .compile(dialect=postgresql.dialect())
    )
    text = str(compiled)
    for literal in ("1234", "5678", "en-GB", "fr", "mgr-424242", "2025"):
        assert literal not in text, text
    params = compiled.construct_params()
    flat = {
        str(v) for value in params.values() for v in (value if isinstance(value, list) else [value])
    }
    assert {"2", "-12.34", "56.78", "mgr-424242"} <= flat
    assert {"en-GB", "fr"} <= flat


def test_as_of_must_be_a_date() -> None:
    with pytest.raises(TypeError):
        compile_condition(parse({"age": {"gte": 18}}), datetime(2026, 1, 1, tzinfo=UTC))


# --- NULL semantics and calendar arithmetic -----------------------------------------------


def test_unknown_values_compare_false_and_not_flips() -> None:
    facts = CustomerFacts(
        customer_id="C1", tier="gold", status="active", clubs=frozenset(), plan=None,
        manager=None, locale="en", timezone="Asia/Shanghai", balance=Decimal("0.00"),
        credit_limit=Decimal("0.00"), points=0, joined_on=None, birthday=None, last_contact_on=None,
        sms_opt_out=False, do_not_call=False,
    )  # fmt: skip
    as_of = date(2026, 11, 21)
    assert not evaluate(parse({"plan": {"eq": "vip-198"}}), facts, as_of)
    assert not evaluate(parse({"plan": {"ne": "vip-198"}}), facts, as_of)
    assert evaluate(parse({"not": {"plan": {"eq": "vip-198"}}}), facts, as_of)
    assert not evaluate(parse({"days_since_contact": {"not_in": [1, 2]}}), facts, as_of)
    assert evaluate(parse({"days_since_contact": {"is_null": True}}), facts, as_of)


def test_whole_months_and_years() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert months_between(date(2026, 1, 31), date(2026, 2, 28)) == 1
    assert months_between(date(2026, 1, 30), date(2026, 2, 27)) == 0
    # A 29 February birthday adds a year on 28 February in common years.
    assert years_between(date(2000, 2, 29), date(2027, 2, 27)) == 26
    assert years_between(date(2000, 2, 29), date(2027, 2, 28)) == 27
    assert years_between(date(2000, 2, 29), date(2028, 2, 28)) == 27
    assert years_between(date(2000, 2, 29), date(2028, 2, 29)) == 28


@pytest.mark.parametrize("as_of", [*AS_OF, date(2027, 1, 31), date(2026, 4, 30)])
def test_month_cutoff_is_exact(as_of: date) -> None:
    starts = [as_of - timedelta(days=d) for d in range(-40, 800, 3)]
    for n in range(0, 26):
        cut = month_cutoff(as_of, n)
        for start in starts:
            assert (months_between(start, as_of) >= n) == (start <= cut), (start, as_of, n)


def test_explain_gives_each_condition_its_actual_value() -> None:
    facts = CustomerFacts(
        customer_id="C7", tier="silver", status="active", clubs=frozenset({"music"}),
        plan="vip-198", manager=None, locale="en", timezone="Asia/Shanghai",
        balance=Decimal("-5.00"), credit_limit=Decimal("0.00"), points=0,
        joined_on=date(2025, 11, 21),
        birthday=None, last_contact_on=None, sms_opt_out=False, do_not_call=False,
    )  # fmt: skip
    cond = parse(
        {
            "all": [
                {"status": "active"},
                {"tier": {"gte": "gold"}},
                {"balance": {"lt": "0.00"}},
                {"not": {"clubs": {"contains": "music"}}},
                {"tenure_months": {"gte": 12}},
                {"manager": {"is_null": False}},
            ]
        }
    )
    result = explain(cond, facts, date(2026, 11, 21))
    assert result.passed is False
    assert [(c.condition, c.actual, c.passed) for c in result.children if c.leaf] == [
        ("status = active", "active", True),
        ("tier >= gold", "silver", False),
        ("balance < 0.00", "-5.00", True),
        ("tenure_months >= 12", "12", True),
        ("manager is not null", "unknown", False),
    ]
    negation = result.children[3]
    assert (negation.condition, negation.passed) == ("not", False)
    assert negation.children[0].to_dict() == {
        "condition": "clubs contains music",
        "passed": True,
        "actual": "[music]",
    }
