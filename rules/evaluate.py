"""The audience semantics in pure Python: the test oracle for :mod:`rules.compiler`.

Production code never decides with it (runs, preview and explain all evaluate
in SQL); a property test checks both agree exactly on both databases. NULL
semantics: a comparison with an unknown value is false; ``is_null`` is the only
way to match unknowns; ``not`` flips the two-valued result, so
``not {plan: {eq: X}}`` is true for a customer without a plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.errors import NotFound
from crm.models import TIERS, Customer, CustomerClub, Manager, Plan
from rules.conditions import All, AnyOf, Compare, Condition, Not
from rules.dates import DERIVED
from rules.explain import Explanation, show_value


@dataclass(frozen=True)
class CustomerFacts:
    """What a condition can see of one customer (the whitelisted fields' inputs)."""

    customer_id: str
    tier: str
    status: str
    clubs: frozenset[str]
    plan: str | None
    manager: str | None
    locale: str
    timezone: str
    balance: Decimal
    credit_limit: Decimal
    points: int
    joined_on: date | None
    birthday: date | None
    last_contact_on: date | None
    sms_opt_out: bool
    do_not_call: bool
    id: int | None = None
    name: str = ""

    def value(self, name: str, as_of: date) -> Any:
        """The field's value as of ``as_of``; None means unknown."""
        if name in DERIVED:
            source, how = DERIVED[name]
            start: date | None = getattr(self, source)
            return None if start is None else how(start, as_of)
        if name == "has_birthday":
            return self.birthday is not None
        return getattr(self, name)


def _key(name: str, value: Any) -> Any:
    return TIERS.index(value) if name == "tier" else value


def _compare(c: Compare, actual: Any) -> bool:
    op, want = c.op, c.value
    if op == "is_null":
        return (actual is None) == bool(want)
    if actual is None:
        return False
    if c.field == "clubs":
        have: frozenset[str] = actual
        wanted = want if isinstance(want, tuple) else (want,)
        if op == "contains":
            return wanted[0] in have
        if op == "contains_any":
            return any(w in have for w in wanted)
        return all(w in have for w in wanted)
    a = _key(c.field, actual)
    if op in ("in", "not_in"):
        assert isinstance(want, tuple)
        inside = a in {_key(c.field, w) for w in want}
        return inside if op == "in" else not inside
    if op == "between":
        assert isinstance(want, tuple)
        low, high = (_key(c.field, w) for w in want)
        return bool(low <= a <= high)
    w = _key(c.field, want)
    if op == "eq":
        return bool(a == w)
    if op == "ne":
        return bool(a != w)
    if op == "gt":
        return bool(a > w)
    if op == "gte":
        return bool(a >= w)
    if op == "lt":
        return bool(a < w)
    if op == "lte":
        return bool(a <= w)
    raise ValueError(f"unknown operator {op!r}")


def evaluate(cond: Condition, facts: CustomerFacts, as_of: date) -> bool:
    """Does ``facts`` match ``cond`` as of ``as_of``?"""
    if isinstance(cond, All):
        return all(evaluate(c, facts, as_of) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, facts, as_of) for c in cond.items)
    if isinstance(cond, Not):
        return not evaluate(cond.item, facts, as_of)
    return _compare(cond, facts.value(cond.field, as_of))


def explain(cond: Condition, facts: CustomerFacts, as_of: date) -> Explanation:
    """Condition by condition, in Python: the oracle the SQL explanation is tested against."""
    if isinstance(cond, All):
        kids = [explain(c, facts, as_of) for c in cond.items]
        return Explanation(
            "all of" if kids else "everyone", all(k.passed for k in kids), children=kids
        )
    if isinstance(cond, AnyOf):
        kids = [explain(c, facts, as_of) for c in cond.items]
        return Explanation("any of", any(k.passed for k in kids), children=kids)
    if isinstance(cond, Not):
        inner = explain(cond.item, facts, as_of)
        return Explanation("not", not inner.passed, children=[inner])
    actual = facts.value(cond.field, as_of)
    shown = "[" + ", ".join(sorted(actual)) + "]" if isinstance(actual, frozenset) else actual
    return Explanation(cond.text(), _compare(cond, actual), show_value(shown), leaf=True)


# --- loading facts from the CRM -------------------------------------------------------


def _facts_stmt() -> Any:
    return (
        select(
            Customer.id,
            Customer.external_id,
            Customer.name,
            Customer.tier,
            Customer.status,
            Plan.code,
            Manager.external_id.label("manager_ref"),
            Customer.locale,
            Customer.timezone,
            Customer.balance,
            Customer.credit_limit,
            Customer.points,
            Customer.joined_on,
            Customer.birthday,
            Customer.last_contact_on,
            Customer.sms_opt_out,
            Customer.do_not_call,
        )
        .outerjoin(Plan, Plan.id == Customer.plan_id)
        .outerjoin(Manager, Manager.id == Customer.manager_id)
    )


def load_facts(session: Session, customer_ids: Sequence[int]) -> dict[int, CustomerFacts]:
    """Facts for many customers (by internal id) in two queries per 5,000."""
    out: dict[int, CustomerFacts] = {}
    ids = list(customer_ids)
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        clubs: dict[int, set[str]] = {}
        for cid, club in session.execute(
            select(CustomerClub.customer_id, CustomerClub.club).where(
                CustomerClub.customer_id.in_(chunk)
            )
        ):
            clubs.setdefault(cid, set()).add(club)
        for row in session.execute(_facts_stmt().where(Customer.id.in_(chunk))):
            out[row.id] = CustomerFacts(
                id=row.id,
                customer_id=row.external_id,
                name=row.name,
                tier=row.tier,
                status=row.status,
                clubs=frozenset(clubs.get(row.id, ())),
                plan=row.code,
                manager=row.manager_ref,
                locale=row.locale,
                timezone=row.timezone,
                balance=row.balance,
                credit_limit=row.credit_limit,
                points=row.points,
                joined_on=row.joined_on,
                birthday=row.birthday,
                last_contact_on=row.last_contact_on,
                sms_opt_out=bool(row.sms_opt_out),
                do_not_call=bool(row.do_not_call),
            )
    return out


def facts_for(session: Session, external_id: str) -> CustomerFacts:
    """Facts for one customer by the operator's id; raises ``crm.errors.NotFound``."""
    internal = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
    if internal is None:
        raise NotFound(f"no customer with id {external_id!r}")
    return load_facts(session, [internal])[internal]
