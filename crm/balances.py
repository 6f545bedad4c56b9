"""The balances feed, reconciled with vipcare's own ledger: the one owner of balance history.

vipcare is not the billing system. Billing sends balances, each valid from its
own ``as_of``, late, twice and out of order; vipcare posts its own credits and
reversals (grace advances, perks) in :mod:`crm.ledger`. A customer's balance is

    the latest feed value  +  vipcare's postings made after that value's ``as_of``

so a feed stamped before a grant never wipes the advance, and a re-import is a
no-op. :func:`record_balances` lands feed rows (the CSV importer and, later, an
events API call it alike); :class:`BalanceAt` reads the balance that was *known*
at an instant (``as_of <= T`` and ``received_at <= T``), set-based, for a care day
that acts as of ``T``. ``customers.balance`` is the derived current value and
always equals the derivation (``crm.invariants`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Select,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union,
    update,
)
from sqlalchemy.orm import Session, aliased

from crm import audit
from crm.audit import Actor
from crm.bulk import insert_many, table_of
from crm.db import is_sqlite
from crm.errors import CrmError
from crm.models import BalanceFact as BalanceFactRow
from crm.models import CreditLedger, Customer
from crm.types import Money

CHUNK = 1000
KEPT_STALE = 1000
"""How many skipped stale rows an outcome lists (all are counted)."""
_FACTS = table_of(BalanceFactRow)
_CUSTOMERS = table_of(Customer)
_LEDGER = table_of(CreditLedger)


@dataclass(frozen=True)
class BalanceFact:
    """One balance as billing held it at ``as_of`` (aware UTC); ``source`` says where from."""

    customer_id: int
    balance: Decimal
    as_of: datetime
    source: str | None = None
    customer_ref: str | None = None
    line: int | None = None
    """The CSV line it came from, when it came from a file."""


@dataclass(frozen=True)
class StaleFact:
    """A fact older than the balance already stored: skipped (it can never be the latest)."""

    fact: BalanceFact
    stored_as_of: datetime


@dataclass
class BalanceOutcome:
    """What :func:`record_balances` did with each fact: counts, and the stale ones listed."""

    applied: int = 0
    repeated: int = 0
    """Facts already stored with the same value: a repeated feed is a no-op."""
    stale: list[StaleFact] = field(default_factory=list)
    stale_count: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"applied": self.applied, "repeated": self.repeated, "stale": self.stale_count}


class BalanceFactError(CrmError):
    """Facts refused as a whole: each ``(fact, reason)`` in ``problems``; nothing was written."""

    def __init__(self, problems: Sequence[tuple[BalanceFact, str]]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{_where(first[0])}: {first[1]}{more}")


def _where(fact: BalanceFact) -> str:
    return fact.source or f"customer {fact.customer_ref or fact.customer_id}"


def future_reason(as_of: datetime, received_at: datetime) -> str | None:
    """Why a fact stamped ``as_of`` cannot be taken at ``received_at`` (None: it can)."""
    if as_of > received_at:
        return (
            f"as_of {as_of.isoformat()} is in the future (received "
            f"{received_at.isoformat()}); a balance holds from a time that has come"
        )
    return None


def conflicts(
    session: Session | Connection, facts: Sequence[BalanceFact]
) -> list[tuple[BalanceFact, str]]:
    """Facts whose (customer, ``as_of``) is already stored with another balance.

    One instant has one balance: a feed that says otherwise is refused, never
    silently preferred one way or the other (the answer would depend on the order).
    """
    out: list[tuple[BalanceFact, str]] = []
    for chunk in _chunks(facts):
        stored = _stored_facts(session, chunk)
        for f in chunk:
            known = stored.get((f.customer_id, f.as_of))
            if known is not None and known != f.balance:
                out.append(
                    (
                        f,
                        f"balance {f.balance} contradicts {known} already received for the same "
                        f"as_of {f.as_of.isoformat()} (expected the same value, or a later as_of)",
                    )
                )
    return out


def record_balances(
    session: Session,
    facts: Sequence[BalanceFact],
    received_at: datetime,
    actor: Actor | None = None,
) -> BalanceOutcome:
    """Land feed rows received at ``received_at``, reconciled with the ledger, in bulk.

    Per fact: a future ``as_of`` or a value contradicting a stored one refuses the
    whole call (:class:`BalanceFactError`, nothing written); the same value again is
    ``repeated`` (no-op); older than the stored latest is ``stale`` (skipped,
    counted); otherwise it is stored and becomes the balance, plus every posting
    vipcare made after its ``as_of``. One customer at most once per call.

    ``actor`` (a feed other than a file import, which audits itself) gets one audit
    row ``balances.recorded`` with the counts.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    refused = [(f, r) for f in facts if (r := future_reason(f.as_of, received_at)) is not None]
    refused += conflicts(session, facts)
    if refused:
        raise BalanceFactError(refused)
    outcome = BalanceOutcome()
    for chunk in _chunks(facts):
        _record_chunk(session, chunk, received_at, outcome)
    if actor is not None:
        audit.record(session, actor, received_at, "balances.recorded", outcome.as_dict())
    return outcome


def _chunks(facts: Sequence[BalanceFact]) -> list[Sequence[BalanceFact]]:
    return [facts[i : i + CHUNK] for i in range(0, len(facts), CHUNK)]


def _stored_facts(
    session: Session | Connection, chunk: Sequence[BalanceFact]
) -> dict[tuple[int, datetime], Decimal]:
    ids = sorted({f.customer_id for f in chunk})
    instants = sorted({f.as_of for f in chunk})
    if not ids:
        return {}
    rows = session.execute(
        select(_FACTS.c.customer_id, _FACTS.c.as_of, _FACTS.c.balance).where(
            _FACTS.c.customer_id.in_(ids), _FACTS.c.as_of.in_(instants)
        )
    )
    return {(cid, as_of): balance for cid, as_of, balance in rows}


def _record_chunk(
    session: Session, chunk: Sequence[BalanceFact], received_at: datetime, outcome: BalanceOutcome
) -> None:
    ids = sorted({f.customer_id for f in chunk})
    latest_stmt = select(_CUSTOMERS.c.id, _CUSTOMERS.c.balance_as_of).where(
        _CUSTOMERS.c.id.in_(ids)
    )
    if not is_sqlite(session):
        latest_stmt = latest_stmt.with_for_update()
    latest: dict[int, Any] = dict(session.execute(latest_stmt).tuples().all())
    stored = _stored_facts(session, chunk)
    fresh: list[BalanceFact] = []
    for f in chunk:
        if (f.customer_id, f.as_of) in stored:
            outcome.repeated += 1
            continue
        current = latest.get(f.customer_id)
        if current is not None and f.as_of < current:
            outcome.stale_count += 1
            if len(outcome.stale) < KEPT_STALE:
                outcome.stale.append(StaleFact(f, current))
            continue
        fresh.append(f)
    if not fresh:
        return
    insert_many(
        session,
        _FACTS,
        [
            {
                "customer_id": f.customer_id,
                "as_of": f.as_of,
                "balance": f.balance,
                "received_at": received_at,
                "source": (f.source or "")[:300] or None,
            }
            for f in fresh
        ],
    )
    ledger = aliased(CreditLedger)
    as_of = bindparam("f_as_of", type_=_CUSTOMERS.c.balance_as_of.type)
    after = (
        select(func.coalesce(func.sum(ledger.amount), 0))
        .where(ledger.customer_id == _CUSTOMERS.c.id, ledger.created_at > as_of)
        .scalar_subquery()
    )
    session.execute(
        update(_CUSTOMERS)
        .where(_CUSTOMERS.c.id == bindparam("f_id"))
        .values(
            balance=type_coerce(bindparam("f_balance", type_=Money(2)), Money(2))
            + type_coerce(after, Money(2)),
            balance_as_of=as_of,
            balance_received_at=bindparam("f_received", type_=_CUSTOMERS.c.balance_as_of.type),
        )
        .execution_options(synchronize_session=False),
        [
            {
                "f_id": f.customer_id,
                "f_balance": f.balance,
                "f_as_of": f.as_of,
                "f_received": received_at,
            }
            for f in fresh
        ],
    )
    outcome.applied += len(fresh)


def adopt_bulk_loaded(session: Session) -> int:
    """Give balances bulk-loaded with a feed time (the seed) their history row; returns how many.

    Set-based: one INSERT … SELECT and one UPDATE over the customers whose
    ``balance_as_of`` has no ``balance_received_at`` yet (received then, as_of then).
    """
    c = _CUSTOMERS.c
    untracked = and_(c.balance_as_of.is_not(None), c.balance_received_at.is_(None))
    added = session.execute(
        _FACTS.insert().from_select(
            ["customer_id", "as_of", "balance", "received_at", "source"],
            select(c.id, c.balance_as_of, c.balance, c.balance_as_of, literal("seed")).where(
                untracked
            ),
        )
    ).rowcount  # type: ignore[attr-defined]
    session.execute(update(_CUSTOMERS).where(untracked).values(balance_received_at=c.balance_as_of))
    return int(added or 0)


# -- reading a balance as it was known at an instant ---------------------------------------


@dataclass(frozen=True)
class BalanceAt:
    """Each customer's balance as known at instant ``at``, as SQL correlated to ``customers``.

    Known at ``at``: the latest feed row with ``as_of <= at`` that had arrived by
    ``at``, plus the postings made after its ``as_of`` up to ``at``. A customer
    whose balance has no feed time (seeded, or from the customers file) counts as
    known since ever. NULL when nothing was known yet: no comparison matches it.

    Most customers' current balance already is that value (nothing arrived or was
    posted since ``at``); :meth:`test` lets the database use the index on
    ``customers.balance`` for them and computes the history only for the others.
    """

    at: datetime

    def _changed_parts(self) -> list[Select[Any]]:
        return [
            select(_LEDGER.c.customer_id).where(_LEDGER.c.created_at > self.at),
            select(_CUSTOMERS.c.id).where(_CUSTOMERS.c.balance_received_at > self.at),
        ]

    def changed(self) -> CompoundSelect[Any]:
        """Customers whose balance at ``at`` may differ from ``customers.balance``."""
        return union(*self._changed_parts())

    @property
    def value(self) -> ColumnElement[Decimal]:
        c = Customer
        at = self.at
        after = aliased(CreditLedger)
        posted_after = (
            select(func.coalesce(func.sum(after.amount), 0))
            .where(after.customer_id == c.id, after.created_at > at)
            .correlate(Customer)
            .scalar_subquery()
        )
        fact = aliased(BalanceFactRow)
        known_as_of = (
            select(func.max(fact.as_of))
            .where(fact.customer_id == c.id, fact.as_of <= at, fact.received_at <= at)
            .correlate(Customer)
            .scalar_subquery()
        )
        held = aliased(BalanceFactRow)
        held_balance = (
            select(held.balance)
            .where(held.customer_id == c.id, held.as_of == known_as_of)
            .correlate(Customer)
            .scalar_subquery()
        )
        between = aliased(CreditLedger)
        posted_between = (
            select(func.coalesce(func.sum(between.amount), 0))
            .where(
                between.customer_id == c.id,
                between.created_at > known_as_of,
                between.created_at <= at,
            )
            .correlate(Customer)
            .scalar_subquery()
        )
        current_known = or_(
            c.balance_as_of.is_(None),
            and_(c.balance_as_of <= at, c.balance_received_at <= at),
        )
        expr = case(
            (current_known, c.balance - type_coerce(posted_after, Money(2))),
            else_=type_coerce(held_balance, Money(2)) + type_coerce(posted_between, Money(2)),
        )
        return type_coerce(expr, Money(2))

    def test(
        self, compare: Callable[[ColumnElement[Decimal]], ColumnElement[bool]]
    ) -> ColumnElement[bool]:
        """``compare(balance at at)``, two-valued (an unknown balance never matches).

        The candidates are those whose current balance matches (the index on
        ``customers.balance`` finds them) and those :meth:`changed` since ``at``; only
        they pay for the history.
        """
        value = self.value
        current = select(_CUSTOMERS.c.id).where(compare(_CUSTOMERS.c.balance))
        return and_(
            Customer.id.in_(union(current, *self._changed_parts())),
            func.coalesce(compare(value), false()),  # unknown: false, also under a ``not``
        )


__all__ = [
    "BalanceAt",
    "BalanceFact",
    "BalanceFactError",
    "BalanceOutcome",
    "StaleFact",
    "conflicts",
    "future_reason",
    "record_balances",
]
