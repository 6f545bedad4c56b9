"""Why a customer is in or out of an audience, condition by condition, evaluated in SQL.

Every node of the condition tree (each ``all``/``any``/``not`` and each field
test) is compiled by :mod:`rules.compiler` — the same compiler the journeys
select with — and evaluated in one SELECT for the one customer, next to the
actual value of each field. Nothing is re-implemented in Python, so an
explanation cannot drift from what a run does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from crm.balances import BalanceAt
from crm.models import Customer, CustomerClub, Manager, Plan
from rules.compiler import compile_condition
from rules.conditions import All, AnyOf, Compare, Condition, Not
from rules.dates import DERIVED


@dataclass
class Explanation:
    """One condition's verdict, with the customer's actual value and the sub-conditions."""

    condition: str
    passed: bool
    actual: Any = None
    children: list[Explanation] = field(default_factory=list)
    leaf: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"condition": self.condition, "passed": self.passed}
        if self.leaf:
            out["actual"] = self.actual
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    def lines(self, depth: int = 0) -> list[tuple[int, Explanation]]:
        out = [(depth, self)]
        for child in self.children:
            out += child.lines(depth + 1)
        return out


def show_value(value: Any) -> str:
    """How an actual value reads in an explanation."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_value(name: str, dialect: str, balance_at: BalanceAt | None = None) -> ColumnElement[Any]:
    """The customer's value of a whitelisted field, as SQL (for showing, never for deciding)."""
    if name == "balance" and balance_at is not None:
        return balance_at.value
    if name in DERIVED:
        column: ColumnElement[Any] = getattr(Customer, DERIVED[name][0])
        return column
    if name == "has_birthday":
        return Customer.birthday.is_not(None)
    if name == "plan":
        return select(Plan.code).where(Plan.id == Customer.plan_id).scalar_subquery()
    if name == "manager":
        return (
            select(Manager.external_id).where(Manager.id == Customer.manager_id).scalar_subquery()
        )
    if name == "clubs":
        joined = (
            func.group_concat(CustomerClub.club, ", ")
            if dialect == "sqlite"
            else func.string_agg(CustomerClub.club, ", ")
        )
        return select(joined).where(CustomerClub.customer_id == Customer.id).scalar_subquery()
    plain: ColumnElement[Any] = getattr(Customer, name)
    return plain


def _nodes(cond: Condition, out: list[Condition]) -> None:
    out.append(cond)
    if isinstance(cond, All | AnyOf):
        for item in cond.items:
            _nodes(item, out)
    elif isinstance(cond, Not):
        _nodes(cond.item, out)


def explain(
    session: Session,
    cond: Condition,
    customer_id: int,
    as_of: date,
    *,
    balance_at: BalanceAt | None = None,
) -> Explanation:
    """``cond`` for one customer (internal id): every node's truth and every field's value.

    ``balance_at``: the balance as known at a care day's instant (what a run reads).
    """
    dialect = session.get_bind().dialect.name
    nodes: list[Condition] = []
    _nodes(cond, nodes)
    leaves = [n for n in nodes if isinstance(n, Compare)]
    fields = sorted({leaf.field for leaf in leaves})
    columns: list[Any] = [
        case(
            (compile_condition(n, as_of, balance_at=balance_at), literal(True)),
            else_=literal(False),
        ).label(f"n{i}")
        for i, n in enumerate(nodes)
    ]
    columns += [field_value(name, dialect, balance_at).label(f"f_{name}") for name in fields]
    row = session.execute(select(*columns).where(Customer.id == customer_id)).one()._mapping
    truth = {id(n): bool(row[f"n{i}"]) for i, n in enumerate(nodes)}
    values = {name: row[f"f_{name}"] for name in fields}
    return _build(cond, truth, values, as_of)


def _build(
    cond: Condition, truth: dict[int, bool], values: dict[str, Any], as_of: date
) -> Explanation:
    passed = truth[id(cond)]
    if isinstance(cond, All):
        kids = [_build(c, truth, values, as_of) for c in cond.items]
        return Explanation("all of" if kids else "everyone", passed, children=kids)
    if isinstance(cond, AnyOf):
        kids = [_build(c, truth, values, as_of) for c in cond.items]
        return Explanation("any of", passed, children=kids)
    if isinstance(cond, Not):
        return Explanation("not", passed, children=[_build(cond.item, truth, values, as_of)])
    assert isinstance(cond, Compare)
    actual = values[cond.field]
    if cond.field in DERIVED and actual is not None:
        source, how = DERIVED[cond.field]
        actual = f"{how(actual, as_of)} ({source} {actual})"
    return Explanation(cond.text(), passed, show_value(actual), leaf=True)
