"""The append-only, hash-chained audit log: the one API every feature writes through.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own
canonical content, so altering or deleting any row breaks the chain from there
on. Appends first update the single ``audit_head`` row, which takes the write
lock (a row lock on PostgreSQL, the database lock on SQLite): two writers can
never fork the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from hashlib import sha256
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm.bulk import JsonText, insert_ignoring_conflicts, insert_many, table_of
from crm.models import AuditHead, AuditLog

GENESIS = "0" * 64
_LOG = table_of(AuditLog)
ActorType = Literal["flow", "manager", "system", "import", "webhook", "cli"]


@dataclass(frozen=True)
class Actor:
    """Who did it: a flow run, a manager, the system, an import."""

    type: ActorType
    id: str

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


SYSTEM = Actor("system", "vipcare")


class CanonicalJson(JsonText):
    """Details already in the chain's canonical JSON (see :func:`canonical`)."""


@dataclass
class AuditEntry:
    """One thing to record. ``details`` must be JSON-able (Decimal/date become strings),
    or already canonical (:func:`canonical`: a writer that stores the same details
    elsewhere serialises them once)."""

    action: str
    details: dict[str, Any] | CanonicalJson = field(default_factory=dict)
    customer_id: int | None = None
    customer_ref: str | None = None
    entity: str | None = None
    rule_id: str | None = None
    rule_hash: str | None = None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON-able in an audit row: {type(value).__name__}")


def canonical_json(details: dict[str, Any]) -> str:
    return json.dumps(
        details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    )


def _jsonable_default(value: Any) -> Any:
    """What :func:`crm.jsonable.jsonable` makes of a value, for ``json.dumps`` to call."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON-able in an audit row: {type(value).__name__}")


def canonical(details: dict[str, Any]) -> CanonicalJson:
    """``canonical_json(jsonable(details))`` in one pass of the C encoder.

    The text is the same as what :func:`append` would hash for ``jsonable(details)``,
    so a decision's details can be stored in a JSON column and the audit row alike.
    """
    return CanonicalJson(
        json.dumps(
            details,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=_jsonable_default,
        )
    )


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(
    *,
    prev_hash: str,
    seq: int,
    at: datetime,
    actor_type: str,
    actor_id: str,
    action: str,
    customer_id: int | None,
    customer_ref: str | None,
    entity: str | None,
    rule_id: str | None,
    rule_hash: str | None,
    details: str,
) -> str:
    return _hash(
        prev_hash,
        seq,
        _stamp(at),
        actor_type,
        actor_id,
        action,
        customer_id,
        customer_ref,
        entity,
        rule_id,
        rule_hash,
        details,
    )


def _hash(
    prev_hash: str,
    seq: int,
    stamp: str,
    actor_type: str,
    actor_id: str,
    action: str,
    customer_id: int | None,
    customer_ref: str | None,
    entity: str | None,
    rule_id: str | None,
    rule_hash: str | None,
    details: str,
) -> str:
    """:func:`row_hash` with the time already stamped (an append stamps it once)."""
    material = "\x1f".join(
        [
            prev_hash,
            str(seq),
            stamp,
            actor_type,
            actor_id,
            action,
            "" if customer_id is None else str(customer_id),
            customer_ref or "",
            entity or "",
            rule_id or "",
            rule_hash or "",
            details,
        ]
    )
    return sha256(material.encode("utf-8")).hexdigest()


def _lock_head(session: Session, count: int) -> tuple[int, str]:
    """Reserve ``count`` sequence numbers; returns (last_seq before, last_hash).

    The UPDATE takes the lock. On an empty chain two first writers may both find
    no head row: the insert ignores the loser's conflict and both retry the UPDATE,
    which then serialises them as usual.
    """
    bump = update(AuditHead).where(AuditHead.id == 1).values(last_seq=AuditHead.last_seq + count)
    if session.execute(bump).rowcount == 0:  # type: ignore[attr-defined]
        insert_ignoring_conflicts(
            session, AuditHead, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}], "id"
        )
        session.execute(bump)
    last_seq, last_hash = session.execute(
        select(AuditHead.last_seq, AuditHead.last_hash).where(AuditHead.id == 1)
    ).one()
    return int(last_seq) - count, str(last_hash)


def append(
    session: Session, actor: Actor, at: datetime, entries: Sequence[AuditEntry]
) -> list[int]:
    """Append ``entries`` in order, in the caller's transaction. Returns their seq numbers."""
    if not entries:
        return []
    if at.tzinfo is None:
        raise ValueError("audit time must be timezone-aware")
    start, prev = _lock_head(session, len(entries))
    stamp = _stamp(at)
    rows: list[dict[str, Any]] = []
    for seq, entry in enumerate(entries, start=start + 1):
        details = (
            entry.details
            if isinstance(entry.details, CanonicalJson)
            else canonical_json(entry.details)
        )
        digest = _hash(
            prev,
            seq,
            stamp,
            actor.type,
            actor.id,
            entry.action,
            entry.customer_id,
            entry.customer_ref,
            entry.entity,
            entry.rule_id,
            entry.rule_hash,
            details,
        )
        rows.append(
            {
                "seq": seq,
                "at": at,
                "actor_type": actor.type,
                "actor_id": actor.id,
                "action": entry.action,
                "customer_id": entry.customer_id,
                "customer_ref": entry.customer_ref,
                "entity": entry.entity,
                "rule_id": entry.rule_id,
                "rule_hash": entry.rule_hash,
                "details": str(details),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    for chunk_start in range(0, len(rows), 5000):
        insert_many(session, _LOG, rows[chunk_start : chunk_start + 5000])
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=prev))
    return [r["seq"] for r in rows]


def record(
    session: Session,
    actor: Actor,
    at: datetime,
    action: str,
    details: dict[str, Any] | None = None,
    **fields: Any,
) -> int:
    """Append one row; a convenience over :func:`append`."""
    return append(session, actor, at, [AuditEntry(action=action, details=details or {}, **fields)])[
        0
    ]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(session: Session, batch: int = 10_000) -> VerifyResult:
    """Walk the whole chain; report the first row that is altered, missing or out of place."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    for row in _iter_rows(session, batch):
        if row.seq != expected_seq:
            return VerifyResult(
                False, checked, expected_seq, f"row {expected_seq} is missing (next is {row.seq})"
            )
        if row.prev_hash != prev:
            return VerifyResult(False, checked, row.seq, "prev_hash does not match the row before")
        recomputed = row_hash(
            prev_hash=prev,
            seq=row.seq,
            at=row.at,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            action=row.action,
            customer_id=row.customer_id,
            customer_ref=row.customer_ref,
            entity=row.entity,
            rule_id=row.rule_id,
            rule_hash=row.rule_hash,
            details=row.details,
        )
        if recomputed != row.hash:
            return VerifyResult(False, checked, row.seq, "content does not match its hash")
        prev = row.hash
        expected_seq += 1
        checked += 1
    head = session.execute(select(AuditHead.last_seq, AuditHead.last_hash)).first()
    if head is not None and (head.last_seq != checked or head.last_hash != prev):
        if head.last_seq > checked:
            return VerifyResult(
                False,
                checked,
                checked + 1,
                f"rows after {checked} were deleted (head is {head.last_seq})",
            )
        return VerifyResult(False, checked, checked, "chain head does not match the last row")
    return VerifyResult(True, checked)


def _iter_rows(session: Session, batch: int) -> Iterator[Any]:
    """Rows as plain tuples, in seq order, a batch at a time (bounded memory)."""
    table = AuditLog.__table__
    last = 0
    while True:
        rows = session.execute(
            select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def list_rows(
    session: Session, customer_ref: str | None = None, limit: int = 200, actions: Iterable[str] = ()
) -> list[AuditLog]:
    stmt = select(AuditLog).order_by(AuditLog.seq.desc()).limit(limit)
    if customer_ref is not None:
        stmt = stmt.where(AuditLog.customer_ref == customer_ref)
    acts = list(actions)
    if acts:
        stmt = stmt.where(AuditLog.action.in_(acts))
    return list(reversed(session.scalars(stmt).all()))
