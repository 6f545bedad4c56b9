"""The care run's driver-level bulk writes store exactly what a Core INSERT would, on both
databases; a decision's canonical JSON is the audit chain's; plain texts render as Jinja does."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from crm.audit import canonical, canonical_json
from crm.bulk import JsonText, insert_ignoring_conflicts, insert_many, table_of
from crm.db import session_factory
from crm.jsonable import jsonable
from crm.models import CreditLedger, JourneyOccurrence
from rules.errors import TemplateRenderError
from rules.template_limits import MAX_OUTPUT
from rules.templates import compile_text, plain_parts, render_text
from tests.builders import Crm

AT = datetime(2026, 11, 21, 9, 0, tzinfo=timezone(timedelta(hours=8)))


def test_insert_many_converts_every_value_through_its_column_type(engine: Engine) -> None:
    crm = Crm(engine)
    crm.manager("M1")
    ids = [crm.customer("C1"), crm.customer("C2")]
    rows = [
        {
            "customer_id": cid,
            "amount": amount,
            "balance_after": Decimal("40.00") + amount,
            "kind": "grace_advance",
            "journey": "grace_credit",
            "occurrence": "grace:2026-11",
            "rule_hash": None,
            "created_at": AT,
        }
        for cid, amount in zip(ids, [Decimal("10.00"), Decimal("-0.05")], strict=True)
    ]
    with session_factory(engine)() as session, session.begin():
        insert_many(session, table_of(CreditLedger), rows)
    with session_factory(engine)() as session:
        stored = session.scalars(select(CreditLedger).order_by(CreditLedger.id)).all()
    assert [(e.customer_id, e.amount, e.balance_after) for e in stored] == [
        (ids[0], Decimal("10.00"), Decimal("50.00")),
        (ids[1], Decimal("-0.05"), Decimal("39.95")),
    ]
    assert {e.created_at for e in stored} == {datetime(2026, 11, 21, 1, 0, tzinfo=UTC)}


def test_insert_many_refuses_rows_with_other_columns(engine: Engine) -> None:
    with session_factory(engine)() as session, pytest.raises(ValueError, match="every row"):
        insert_many(
            session,
            table_of(CreditLedger),
            [{"customer_id": 1, "amount": Decimal("1.00")}, {"customer_id": 2}],
        )


def test_conflict_gate_returns_only_new_keys_and_stores_json(engine: Engine) -> None:
    crm = Crm(engine)
    crm.manager("M1")
    first, second = crm.customer("C1"), crm.customer("C2")

    def row(cid: int, details: object) -> dict[str, object]:
        return {
            "journey": "birthday",
            "customer_id": cid,
            "occurrence": "birthday:2026",
            "decided_at": AT,
            "as_of": date(2026, 11, 21),
            "rule_id": "birthday",
            "rule_hash": "h" * 64,
            "run_id": "r1",
            "details": details,
        }

    with session_factory(engine)() as session, session.begin():
        won = insert_ignoring_conflicts(
            session, JourneyOccurrence, [row(first, JsonText('{"a":"1.00"}'))], "customer_id"
        )
        assert won == {first}
    with session_factory(engine)() as session, session.begin():
        won = insert_ignoring_conflicts(
            session,
            JourneyOccurrence,
            [row(first, {"b": 2}), row(second, {"b": 2})],
            "customer_id",
        )
        assert won == {second}
    with session_factory(engine)() as session:
        stored = dict(
            session.execute(select(JourneyOccurrence.customer_id, JourneyOccurrence.details)).all()
        )
    assert stored == {first: {"a": "1.00"}, second: {"b": 2}}


def test_canonical_is_the_chains_text_of_the_jsonable_details() -> None:
    details = {
        "customer_id": "C1",
        "amount": Decimal("-5.00"),
        "deadline": date(2026, 12, 1),
        "at": AT,
        "tasks": [3, 1],
        "nested": {"zz": "客户", "aa": (1, Decimal("0.10")), "none": None},
        "kinds": {"b", "a"},
    }
    assert str(canonical(details)) == canonical_json(jsonable(details))


@pytest.mark.parametrize(
    "text",
    [
        "尊敬的{{ name }}，您的客户经理{{ manager_name }}将致电 {{hotline}}。\n",
        "  Dear {{ name }}  ",
        "no variables at all",
        "",
    ],
)
def test_plain_texts_render_as_jinja_does(text: str) -> None:
    variables = {"name": "张三", "manager_name": "李四", "hotline": "10086"}
    assert plain_parts(text) is not None
    expected = "".join(compile_text(text).generate(**variables)).strip()
    assert render_text(text, variables) == expected


def test_texts_with_more_than_names_go_through_jinja() -> None:
    assert plain_parts("{{ name | upper }}") is None
    assert plain_parts("{% if name %}x{% endif %}") is None
    assert render_text("{{ name | upper }}", {"name": "ab"}) == "AB"


def test_plain_text_errors_are_jinjas() -> None:
    with pytest.raises(TemplateRenderError, match="undefined"):
        render_text("hi {{ missing }}", {"name": "x"})
    with pytest.raises(TemplateRenderError, match="longer than"):
        render_text("{{ name }}", {"name": "x" * (MAX_OUTPUT + 1)})


def test_python_side_defaults_are_filled_as_a_core_insert_would(engine: Engine) -> None:
    crm = Crm(engine)
    crm.manager("M1")
    cid = crm.customer("C1")
    with session_factory(engine)() as session, session.begin():
        won = insert_ignoring_conflicts(
            session,
            JourneyOccurrence,
            [
                {
                    "journey": "birthday",
                    "customer_id": cid,
                    "occurrence": "birthday:2026",
                    "decided_at": AT,
                    "as_of": date(2026, 11, 21),
                    "rule_id": "birthday",
                    "rule_hash": "h" * 64,
                    "run_id": None,
                }
            ],
            "customer_id",
        )
    assert won == {cid}
    with session_factory(engine)() as session:
        assert session.scalars(select(JourneyOccurrence.details)).one() == {}
