"""The journey protocol: what a journey declares, and what the engine does with it.

A journey is one object. It declares

- its **predicates**: named SQL conditions over ``customers`` (and correlated
  subqueries), each defined once. The run selects candidates with all of
  them; ``explain`` evaluates each for one customer and shows the value that
  decided it;
- its **occurrence key** per candidate (the idempotence key of the decision);
- its **refinement**: what Python still decides about a candidate SQL let
  through (plan-fit's exact costing, the callback anchor), as a
  :class:`Candidate` or a :class:`Skip` with the reason;
- its **housekeeping** (closing graces, escalating overdue calls);
- its **pass period** (a journey whose inputs change monthly passes once a month).

Everything else is shared and generic over journeys: the audience, the action
interpreter (:mod:`flows.journeys.actions`), the writer, ``run``, ``preview``
and ``explain``. There is no branching on journey names anywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from crm.audit import AuditEntry
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.intents import Decision, JourneyReport
from rules.models import JourneyBase, Validity


@dataclass(frozen=True)
class Predicate:
    """A named SQL condition; ``shows`` is the value explain prints beside it."""

    name: str
    test: ColumnElement[bool]
    shows: Any = None
    """A SQL expression (column, scalar subquery) whose value explains the outcome."""
    fmt: Callable[[Any], str] = str


@dataclass
class TaskPlan:
    """The task a ``create_task`` action makes for this candidate: when, and why."""

    due_on: date
    earliest: date
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """A customer the journey acts on, with what its actions need to know."""

    customer: CustomerRow
    occurrence: str
    details: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    """Journey-specific template variables (the common ones are added by the interpreter)."""
    task: TaskPlan | None = None
    credit: Decimal | None = None
    """The amount of a ``grant_credit`` action that names none (grace: the tier's amount)."""
    deadline: date | None = None
    """What ``valid_until: deadline`` means for this candidate's messages."""


@dataclass(frozen=True)
class Skip:
    """A candidate SQL let through that the journey's refinement turned down, and why."""

    customer: CustomerRow
    code: str
    reason: str


class Journey(ABC):
    """One journey; subclasses declare its parts (see the module docstring)."""

    id: str
    rule_type: ClassVar[type[JourneyBase]]
    credit_kind: ClassVar[str] = "credit"
    """The ledger kind of a ``grant_credit`` this journey makes."""
    default_validity: ClassVar[Validity] = "end_of_day"
    """How long a message stays valid when its template does not say."""
    links_messages: ClassVar[bool] = False
    """The writer fills ``Decision.message_ids`` (the journey links tasks to them)."""

    def pass_period(self, ctx: RunContext) -> str | None:
        """A period whose completed pass makes later runs in it a no-op (None: every run)."""
        return None

    @abstractmethod
    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        """The trigger and limit checks, as named SQL conditions (the audience is added).

        ``session`` is for reading reference data the SQL needs (price lists), never
        for reading customers one by one.
        """

    def groups(self, ctx: RunContext, rule: JourneyBase) -> list[ColumnElement[bool]]:
        """Ordered partitions of the candidates (callbacks: top tiers first); [] = one."""
        return []

    def columns(self, ctx: RunContext, rule: JourneyBase) -> list[Any]:
        """Extra labelled columns the refinement reads from ``CustomerRow.extra``."""
        return []

    @abstractmethod
    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        """What SQL cannot decide: each candidate of the batch, or why it is skipped."""

    def housekeeping(
        self, session: Session, ctx: RunContext, rule: JourneyBase, report: JourneyReport
    ) -> None:
        """Work on earlier decisions before deciding anew (close graces, escalate calls)."""
        return None

    def after_write(
        self, session: Session, ctx: RunContext, rule: JourneyBase, won: list[Decision]
    ) -> list[AuditEntry]:
        """Rows only this journey keeps (a grace period), for the decisions just written."""
        return []
