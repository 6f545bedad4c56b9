"""The one way a stateful row changes status: a declared machine and a guarded, audited move.

Every lifecycle table (call tasks, messages, grace periods, lines, consent,
complaints, surveys, journey controls) declares a :class:`Machine`: its table,
its status column, and the transition map ``from → {to: audit action}``. A
status change is then always :func:`move`:

- one guarded ``UPDATE … WHERE <where> AND status = <source> RETURNING`` per
  legal source status of the target (usually one or two statements, never one
  per row), so of two racing writers exactly one changes each row;
- one audit row for exactly each row that changed, written in bulk in the same
  transaction, naming the status it came from;
- an illegal move is refused with a reason before anything is written
  (:class:`crm.errors.InvalidTransition`), like viewflow's guarded transitions.

:func:`move_one` is the single-row form a person's action uses: when the row did
not move it says why (not found, or the reason its current status refuses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Table, and_, select, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.errors import InvalidTransition, NotFound
from crm.models import Customer

S = TypeVar("S", bound=StrEnum)

_CHUNK = 1000
"""Ids per guarded UPDATE when a move names its rows (bound-parameter limits)."""


@dataclass(frozen=True)
class Moved(Generic[S]):
    """One row a move changed: its key, the status it left, and the columns asked for."""

    id: Any
    source: S
    customer_id: int | None
    customer_ref: str | None
    values: Mapping[str, Any]


AuditBuilder = Callable[[str, "Moved[Any]", dict[str, Any]], AuditEntry]
"""``(action, moved row, details) -> AuditEntry``: a machine's audit row for one changed row."""


def _default_entry(machine: Machine[Any]) -> AuditBuilder:
    def build(action: str, row: Moved[Any], details: dict[str, Any]) -> AuditEntry:
        return AuditEntry(
            action=action,
            details=details,
            customer_id=row.customer_id,
            customer_ref=row.customer_ref,
            entity=f"{machine.entity}:{row.id}",
        )

    return build


@dataclass(frozen=True)
class Machine(Generic[S]):
    """A lifecycle: which column holds the status and which moves are legal.

    ``moves[source][target]`` is the audit action written when a row goes from
    ``source`` to ``target`` (for example ``"task.ready"``). ``refusals`` give a
    specific reason for a move that is not legal, where the generic one would
    not help the reader. ``audit_columns`` are returned by the UPDATE for the
    audit rows (``entry`` builds them; by default entity ``<entity>:<id>``).
    """

    entity: str
    table: Table
    status_enum: type[S]
    moves: Mapping[S, Mapping[S, str]]
    status_column: str = "status"
    key: str = "id"
    customer_column: str | None = "customer_id"
    refusals: Mapping[tuple[S, S], str] = field(default_factory=dict)
    audit_columns: tuple[str, ...] = ()
    entry: AuditBuilder | None = None
    noun: str = ""
    source_key: str | None = "from"
    """The details key that records the status a row left (None: not recorded)."""

    def __post_init__(self) -> None:
        statuses = set(self.status_enum)
        missing = statuses - set(self.moves)
        if missing:
            raise ValueError(f"{self.entity}: no moves declared for {sorted(missing)}")
        for source, targets in self.moves.items():
            unknown = set(targets) - statuses
            if unknown or source not in statuses:
                raise ValueError(f"{self.entity}: unknown statuses in moves: {sorted(unknown)}")

    @property
    def column(self) -> Any:
        return self.table.c[self.status_column]

    @property
    def terminal(self) -> frozenset[S]:
        """Statuses a row never leaves."""
        return frozenset(s for s, targets in self.moves.items() if not targets)

    @property
    def open(self) -> tuple[S, ...]:
        """Statuses a row may still leave, in declaration order."""
        return tuple(s for s, targets in self.moves.items() if targets)

    def sources(self, target: S) -> tuple[S, ...]:
        """The statuses from which ``target`` is legal (the guards of a move's UPDATEs)."""
        return tuple(s for s, targets in self.moves.items() if target in targets)

    def action(self, source: S, target: S) -> str:
        return self.moves[source][target]

    def reason(self, current: str, target: str) -> str | None:
        """Why ``current → target`` is refused, or None when it is legal."""
        noun = self.noun or f"a {self.entity}"
        statuses = {s.value for s in self.status_enum}
        if current not in statuses:
            return f"unknown current status {current!r}"
        if target not in statuses:
            return f"unknown status {target!r}; expected one of {', '.join(sorted(statuses))}"
        source, to = self.status_enum(current), self.status_enum(target)
        if to in self.moves[source]:
            return None
        specific = self.refusals.get((source, to))
        if specific:
            return specific
        if source == to:
            return f"{noun} is already {current}"
        if not self.moves[source]:
            return f"{current} is final; {noun} never leaves it"
        allowed = ", ".join(sorted(self.moves[source]))
        return f"from {current}, {noun} can only go to {allowed}"

    def check(self, current: str, target: str, entity: str | None = None) -> None:
        """Raise :class:`InvalidTransition` when ``current → target`` is not legal."""
        reason = self.reason(current, target)
        if reason is not None:
            raise InvalidTransition(entity or self.entity, current, target, reason)


Details = Mapping[str, Any] | Callable[[Moved[Any]], Mapping[str, Any]]
"""What a move records about each row: the same for all, or computed from the row."""


def move(
    session: Session,
    machine: Machine[S],
    where: ColumnElement[bool] | Sequence[Any],
    to: S,
    *,
    at: datetime,
    actor: Actor,
    values: Mapping[str, Any] | None = None,
    details: Details | None = None,
    sources: Iterable[S] | None = None,
    returning: Sequence[str] = (),
    action: str | None = None,
) -> list[Moved[S]]:
    """Move the rows matching ``where`` (a condition, or a list of keys) to ``to``.

    Only rows in a legal source status move (``sources`` narrows them further);
    ``values`` are set on the same rows in the same statement. Returns the rows
    that changed, each with its source status and the ``returning`` columns, and
    writes one audit row for each (``action`` overrides the map's action, for a
    move the map allows under several names, e.g. a message that expired or was
    withdrawn). A target that no source allows is refused before any write.
    """
    legal = machine.sources(to)
    if not legal:
        raise InvalidTransition(
            machine.entity, "(any)", to, f"no status of {machine.entity} may go to {to}"
        )
    if sources is not None:
        wanted = set(sources)
        for source in wanted - set(legal):
            machine.check(source, to)
        legal = tuple(s for s in legal if s in wanted)
    table = machine.table
    key = table.c[machine.key]
    extra = tuple(dict.fromkeys((*machine.audit_columns, *returning)))
    cols = [key, *(table.c[c] for c in extra)]
    if machine.customer_column:
        cols.append(table.c[machine.customer_column])
    sets = {machine.status_column: to.value, **(values or {})}

    conditions: list[ColumnElement[bool]]
    if isinstance(where, ColumnElement):
        conditions = [where]
    else:
        keys = sorted(set(where))
        conditions = [key.in_(keys[i : i + _CHUNK]) for i in range(0, len(keys), _CHUNK)]

    raw: list[tuple[S, Any]] = []
    for source in legal:
        for condition in conditions:
            stmt = (
                update(table)
                .where(and_(condition, machine.column == source.value))
                .values(sets)
                .returning(*cols)
            )
            raw.extend((source, row) for row in session.execute(stmt).all())
    if not raw:
        return []

    refs = _customer_refs(
        session, {row[-1] for _, row in raw if machine.customer_column and row[-1] is not None}
    )
    moved = sorted(
        (
            Moved(
                id=row[0],
                source=source,
                customer_id=row[-1] if machine.customer_column else None,
                customer_ref=refs.get(row[-1]) if machine.customer_column else None,
                values=dict(zip(extra, row[1 : 1 + len(extra)], strict=True)),
            )
            for source, row in raw
        ),
        key=lambda m: m.id,
    )
    build = machine.entry or _default_entry(machine)
    entries: list[AuditEntry] = []
    for m in moved:
        found = details(m) if callable(details) else details
        entries.append(
            build(
                action or machine.action(m.source, to),
                m,
                {machine.source_key: m.source.value, **(found or {})}
                if machine.source_key
                else dict(found or {}),
            )
        )
    audit.append(session, actor, at, entries)
    return moved


def move_one(
    session: Session,
    machine: Machine[S],
    key: Any,
    to: S,
    *,
    at: datetime,
    actor: Actor,
    values: Mapping[str, Any] | None = None,
    details: Details | None = None,
    returning: Sequence[str] = (),
    action: str | None = None,
    label: str | None = None,
) -> Moved[S]:
    """Move one row, or say why not: :class:`NotFound`, or the refusal of its status."""
    moved = move(
        session,
        machine,
        [key],
        to,
        at=at,
        actor=actor,
        values=values,
        details=details,
        returning=returning,
        action=action,
    )
    if moved:
        return moved[0]
    name = label or f"{machine.entity} {key}"
    current = session.execute(
        select(machine.column).where(machine.table.c[machine.key] == key)
    ).scalar_one_or_none()
    if current is None:
        raise NotFound(f"no {machine.entity} with id {key}")
    machine.check(str(current), to.value, name)
    # Legal from its status now, yet not moved: it changed between the UPDATE and this read.
    raise InvalidTransition(name, str(current), to.value, "it was changed at the same time")


def _customer_refs(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    ordered = sorted(ids)
    found: dict[int, str] = {}
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        found.update(
            session.execute(
                select(Customer.id, Customer.external_id).where(Customer.id.in_(chunk))
            ).all()  # type: ignore[arg-type]
        )
    return found
