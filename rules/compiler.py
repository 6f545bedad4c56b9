"""Compile audience conditions to SQLAlchemy boolean expressions over ``Customer``.

Nothing from a rule file ever becomes SQL text: every value is a bound
parameter. NULL semantics (the same in :mod:`rules.evaluate`): a comparison
with an unknown value (no plan, no manager, no join date ...) is *false*, and
every leaf is compiled two-valued (``col IS NOT NULL AND ...``), so ``not``
simply flips it: ``not {plan: {eq: X}}`` matches customers without a plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true

from crm.balances import BalanceAt
from crm.models import TIERS, Customer, CustomerClub, Manager, Plan
from rules.conditions import All, AnyOf, Compare, Condition, Not
from rules.dates import DERIVED, cutoff_for
from rules.errors import RulesError


def compile_condition(
    cond: Condition, as_of: date, *, balance_at: BalanceAt | None = None
) -> ColumnElement[bool]:
    """``cond`` as a WHERE clause over ``customers``, evaluated as of the local date ``as_of``.

    ``balance_at`` reads ``balance`` as it was known at a care day's instant
    (:class:`crm.balances.BalanceAt`); without it, the current balance.
    """
    if isinstance(as_of, datetime) or not isinstance(as_of, date):
        raise TypeError("as_of must be a calendar date (the operator's local date), not a datetime")
    return _compile(cond, as_of, balance_at)


def audience_filter(
    rule: Any, as_of: date, *, balance_at: BalanceAt | None = None
) -> ColumnElement[bool]:
    """The journey's audience as a WHERE clause."""
    return compile_condition(rule.audience, as_of, balance_at=balance_at)


def _compile(cond: Condition, as_of: date, balance_at: BalanceAt | None) -> ColumnElement[bool]:
    if isinstance(cond, All):
        if not cond.items:
            return true()
        return and_(*(_compile(c, as_of, balance_at) for c in cond.items))
    if isinstance(cond, AnyOf):
        if not cond.items:
            return false()
        return or_(*(_compile(c, as_of, balance_at) for c in cond.items))
    if isinstance(cond, Not):
        return not_(_compile(cond.item, as_of, balance_at))
    if isinstance(cond, Compare):
        return _leaf(cond, as_of, balance_at)
    raise RulesError(f"not a condition: {cond!r}")


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, tuple) else (value,)


def _compare(col: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "eq":
        return col == value
    if op == "ne":
        return col != value
    if op == "in":
        return col.in_(list(value))
    if op == "not_in":
        return col.not_in(list(value))
    if op == "gt":
        return col > value
    if op == "gte":
        return col >= value
    if op == "lt":
        return col < value
    if op == "lte":
        return col <= value
    if op == "between":
        low, high = value
        return col.between(low, high)
    raise RulesError(f"operator {op!r} cannot be compiled here")


def _leaf(c: Compare, as_of: date, balance_at: BalanceAt | None = None) -> ColumnElement[bool]:
    field, op, value = c.field, c.op, c.value
    if field == "balance" and balance_at is not None:
        return balance_at.test(lambda col: _compare(col, op, value))
    if field == "tier":
        ranks: Any = (
            tuple(TIERS.index(v) for v in value)
            if isinstance(value, tuple)
            else TIERS.index(str(value))
        )
        return _compare(Customer.tier_rank, op, ranks)
    if field in ("status", "locale", "timezone", "balance", "credit_limit", "points"):
        return _compare(getattr(Customer, field), op, value)
    if field in ("sms_opt_out", "do_not_call"):
        return _compare(getattr(Customer, field), op, bool(value))
    if field == "has_birthday":
        known = Customer.birthday.is_not(None)
        wanted = bool(value) if op == "eq" else not bool(value)
        return known if wanted else Customer.birthday.is_(None)
    if field == "clubs":
        return _clubs(op, _seq(value))
    if field in ("plan", "manager"):
        return _lookup(field, op, value)
    if field in DERIVED:
        return _derived(field, op, value, as_of)
    raise RulesError(f"field {field!r} cannot be compiled")


def _club_exists(clause: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists(
        select(CustomerClub.customer_id).where(CustomerClub.customer_id == Customer.id, clause)
    )


def _clubs(op: str, values: Sequence[Any]) -> ColumnElement[bool]:
    if op == "contains":
        return _club_exists(CustomerClub.club == values[0])
    if op == "contains_any":
        return _club_exists(CustomerClub.club.in_(list(values)))
    if op == "contains_all":
        return and_(*(_club_exists(CustomerClub.club == v) for v in values))
    raise RulesError(f"operator {op!r} does not apply to clubs")


def _lookup(field: str, op: str, value: Any) -> ColumnElement[bool]:
    """plan / manager: compare the code via an uncorrelated ``IN (SELECT id ...)``."""
    fk = Customer.plan_id if field == "plan" else Customer.manager_id
    if op == "is_null":
        return fk.is_(None) if value else fk.is_not(None)
    key = Plan.code if field == "plan" else Manager.external_id
    ident = Plan.id if field == "plan" else Manager.id
    values = list(_seq(value))
    matches = fk.in_(select(ident).where(key.in_(values) if len(values) > 1 else key == values[0]))
    if op in ("eq", "in"):
        return and_(fk.is_not(None), matches)
    if op in ("ne", "not_in"):
        return and_(fk.is_not(None), not_(matches))
    raise RulesError(f"operator {op!r} does not apply to {field}")


def _derived(field: str, op: str, value: Any, as_of: date) -> ColumnElement[bool]:
    """Derived integers as date comparisons: value >= N  <=>  column <= cutoff(N)."""
    col = getattr(Customer, DERIVED[field][0])
    if op == "is_null":
        return col.is_(None) if value else col.is_not(None)
    cut = cutoff_for(field, as_of)

    def at_least(n: int) -> ColumnElement[bool]:
        return col <= cut(n)

    def at_most(n: int) -> ColumnElement[bool]:
        return col > cut(n + 1)

    def equal(n: int) -> ColumnElement[bool]:
        return and_(at_least(n), at_most(n))

    if op == "gte":
        expr = at_least(value)
    elif op == "gt":
        expr = at_least(value + 1)
    elif op == "lte":
        expr = at_most(value)
    elif op == "lt":
        expr = at_most(value - 1)
    elif op == "eq":
        expr = equal(value)
    elif op == "ne":
        expr = not_(equal(value))
    elif op == "between":
        low, high = value
        expr = and_(at_least(low), at_most(high))
    elif op == "in":
        expr = or_(*(equal(v) for v in value))
    elif op == "not_in":
        expr = not_(or_(*(equal(v) for v in value)))
    else:
        raise RulesError(f"operator {op!r} does not apply to {field}")
    return and_(col.is_not(None), expr)
