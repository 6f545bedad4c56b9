"""``vipcare import KIND FILE.csv``: validate a whole file, then upsert it in one transaction.

All or nothing. Pass 1 streams the file, checks every row (types, references,
duplicates) and spools the normalised rows to a temporary file; if any row is
bad it raises :class:`ImportFileError` carrying every issue and writes nothing.
Pass 2 replays the spool inside one transaction with bulk upserts keyed by the
external ids, then appends one audit row. Memory stays bounded: only the issue
list, the key set for duplicate detection and one chunk of rows are held.

Empty cells mean "unknown": they never erase what the database already holds
(see docs/import.md for the exact rules per column).
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, Table, delete, exists, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError, OperationalError
from sqlalchemy.orm import Session

from crm import audit, balances, consent, invariants, tasks
from crm.csvio import Cells, Issues, RowIssue, quoted, read_rows
from crm.db import transaction
from crm.errors import CrmError
from crm.models import (
    CUSTOMER_STATUSES,
    TIERS,
    CreditLedger,
    Customer,
    CustomerClub,
    Manager,
    MonthlyUsage,
    Plan,
    PlanTier,
)
from crm.phones import mask_in_text

Kind = Literal["plans", "managers", "customers", "usage", "balances"]
KINDS: tuple[str, ...] = ("plans", "managers", "customers", "usage", "balances")
HEADERS: dict[str, tuple[str, ...]] = {
    "plans": (
        "plan_code",
        "name",
        "monthly_fee",
        "voice_minutes",
        "data_mb",
        "sms",
        "voice_overage_per_min",
        "data_overage_per_mb",
        "sms_overage",
        "tiers",
    ),
    "managers": ("manager_id", "name", "phone", "email", "daily_call_capacity"),
    "customers": (
        "customer_id",
        "name",
        "phone",
        "locale",
        "timezone",
        "birthday",
        "tier",
        "clubs",
        "plan_code",
        "account_manager_id",
        "balance",
        "credit_limit",
        "status",
        "sms_opt_out",
        "do_not_call",
        "joined_on",
        "last_contact_on",
    ),
    "usage": ("customer_id", "month", "voice_minutes", "data_mb", "sms"),
    "balances": ("customer_id", "balance", "as_of"),
}
OPTIONAL: dict[str, tuple[str, ...]] = {"customers": ("points",), "managers": ("name_latin",)}
"""Columns a file may add after the header above (older files without them still import)."""
CHUNK = 5_000
_PLANS = cast(Table, Plan.__table__)
_MANAGERS = cast(Table, Manager.__table__)
_CUSTOMERS = cast(Table, Customer.__table__)
_USAGE = cast(Table, MonthlyUsage.__table__)
LISTED_ISSUES = 50
"""How many issues ``str(ImportFileError)`` lists before "... and N more"."""
KEPT_STALE = 1_000
DEFAULT_LOCALE = "zh-CN"


class CsvImportError(CrmError):
    """Base of the importer's errors."""


class UnknownKindError(CsvImportError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown import kind {kind!r} (expected one of {', '.join(KINDS)})")


class ImportFileError(CsvImportError):
    """The file was refused; nothing was written. ``issues`` holds every problem found."""

    def __init__(self, file: str, issues: list[RowIssue], total: int) -> None:
        self.file = file
        self.issues = issues
        self.total = total
        super().__init__(self.render())

    def render(self, limit: int = LISTED_ISSUES) -> str:
        lines = [str(i) for i in self.issues[:limit]]
        if self.total > limit:
            lines.append(f"... and {self.total - limit} more problems")
        noun = "problem" if self.total == 1 else "problems"
        lines.append(f"{self.file}: {self.total} {noun}; nothing was imported (all or nothing)")
        return "\n".join(lines)


@dataclass(frozen=True)
class StaleRow:
    """A balance row older than the balance already stored; skipped, not an error."""

    line: int
    customer_id: str
    as_of: datetime
    stored_as_of: datetime


@dataclass
class ImportReport:
    kind: str
    file: str
    sha256: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    """Balance rows already received with the same value: a re-import changes nothing."""
    stale: list[StaleRow] = field(default_factory=list)
    stale_count: int = 0
    audit_seq: int = 0
    violations: int = 0
    """Invariant violations the check after the import found (``vipcare status`` lists them)."""


@dataclass
class _Ctx:
    """What row parsers need: where errors go, the clock and the reference maps."""

    issues: Issues
    at: datetime
    tz: tzinfo
    today: date
    actor: audit.Actor = audit.SYSTEM
    plans: dict[str, int] = field(default_factory=dict)
    managers: dict[str, int] = field(default_factory=dict)
    manager_changed: ManagerChanged | None = None


ManagerChanged = Callable[[Session, list[int]], None]
"""Called in the import's transaction with the customers whose manager is now another
one, or whose manager's name or number changed (the CLI re-renders their queued texts:
:mod:`notifications.manager_change`, a layer above this one)."""


def import_csv(
    engine: Engine,
    kind: str,
    path: str | Path,
    actor: audit.Actor,
    at: datetime,
    operator_tz: str | tzinfo,
    progress: Callable[[str, int], None] | None = None,
    manager_changed: ManagerChanged | None = None,
) -> ImportReport:
    """Import one CSV file of ``kind``; raises :class:`ImportFileError` if any row is bad.

    ``progress(phase, rows)`` is called as rows are checked (``"checking"``) and
    written (``"writing"``), for a progress display on big files.
    ``manager_changed`` see :data:`ManagerChanged`.
    """
    if kind not in KINDS:
        raise UnknownKindError(kind)
    if at.tzinfo is None:
        raise ValueError("import time must be timezone-aware")
    try:
        tz = ZoneInfo(operator_tz) if isinstance(operator_tz, str) else operator_tz
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CsvImportError(f"unknown operator time zone {operator_tz!r}") from exc
    source = Path(path)
    display = str(path)
    if not source.is_file():
        raise CsvImportError(f"{display}: no such file")
    try:
        report = ImportReport(kind=kind, file=display, sha256=_sha256(source))
    except OSError as exc:
        raise CsvImportError(f"{display}: cannot read the file: {exc.strerror or exc}") from exc
    issues = Issues(display)
    ctx = _Ctx(
        issues=issues,
        at=at,
        tz=tz,
        today=at.astimezone(tz).date(),
        actor=actor,
        manager_changed=manager_changed,
    )
    handler = _HANDLERS[kind]

    with tempfile.TemporaryFile(prefix="vipcare-import-") as spool:
        with engine.connect() as conn:
            handler.load_refs(conn, ctx)
            conn.rollback()
            report.rows = _validate(conn, handler, source, ctx, spool, progress)
        if issues:
            raise ImportFileError(display, issues.sorted(HEADERS[kind]), issues.total)
        spool.seek(0)
        try:
            with transaction(engine) as session:
                written = 0
                for chunk in _replay(spool):
                    handler.write(session, chunk, ctx, report)
                    written += len(chunk)
                    if progress is not None:
                        progress("writing", written)
                report.audit_seq = audit.record(
                    session,
                    actor,
                    at,
                    "import",
                    {
                        "kind": kind,
                        "file": source.name,
                        "sha256": report.sha256,
                        "rows": report.rows,
                        "inserted": report.inserted,
                        "updated": report.updated,
                        "unchanged": report.unchanged,
                        "stale": report.stale_count,
                    },
                    entity=kind,
                )
        except IntegrityError as exc:
            raise CsvImportError(
                f"{display}: the database changed while importing "
                f"({_first_line(exc.orig)}); "
                "nothing was imported, run the import again"
            ) from exc
        except (OperationalError, InternalError):
            raise  # the database's state (disk full, read-only, connection lost), not the file's
        except DBAPIError as exc:
            # Validation should leave nothing for the database to refuse; if it does,
            # say so in one line (never the statement or its parameters: rows hold phones).
            raise CsvImportError(
                f"{display}: the database refused the import "
                f"({type(exc.orig).__name__}: {_first_line(exc.orig)}); "
                "nothing was imported"
            ) from exc
    # The money invariants of the customers this import touched (crm.invariants).
    checked = invariants.record_check(engine, "import", at, since=at, owner=str(actor))
    report.violations = len(checked.violations)
    return report


def _first_line(error: BaseException | None) -> str:
    """The first line of a driver error, phones masked (PostgreSQL adds DETAIL lines)."""
    return mask_in_text((str(error).splitlines() or [""])[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _validate(
    conn: Any,
    handler: _Handler,
    path: Path,
    ctx: _Ctx,
    spool: IO[bytes],
    progress: Callable[[str, int], None] | None = None,
) -> int:
    """Pass 1: check every row; spool good chunks while the file is still clean."""
    rows = 0
    seen: dict[Any, int] = {}
    key_column = HEADERS[handler.kind][0]
    pending: list[tuple[Any, ...]] = []

    def flush() -> None:
        if pending:
            resolved = handler.resolve(conn, pending, ctx)
            conn.rollback()  # read-only; never hold SQLite's write lock while parsing
            if not ctx.issues:
                pickle.dump(resolved, spool, protocol=pickle.HIGHEST_PROTOCOL)
            pending.clear()

    for line, raw in read_rows(
        path,
        str(ctx.issues.file),
        HEADERS[handler.kind],
        ctx.issues,
        OPTIONAL.get(handler.kind, ()),
    ):
        rows += 1
        cells = Cells(ctx.issues, line, raw)
        record = handler.parse(cells, ctx)
        key = handler.key(raw)
        if key is not None:
            first = seen.get(key)
            if first is not None:
                cells.problem(
                    key_column,
                    f"duplicate {handler.describe_key(key)} (first on line {first}; "
                    f"expected each {handler.key_label} once per file)",
                )
            else:
                seen[key] = line
        if cells.ok and record is not None:
            pending.append(record)
            if len(pending) >= CHUNK:
                flush()
        if progress is not None and rows % CHUNK == 0:
            progress("checking", rows)
    flush()
    return rows


def _replay(spool: IO[bytes]) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        try:
            # Our own temporary file, written a moment ago by this process.
            yield pickle.load(spool)
        except EOFError:
            return


def _upsert(
    session: Session, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` every other column, as one executemany."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    columns = [c for c in rows[0] if c not in keys]
    stmt: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    else:  # pragma: no cover - vipcare supports these two
        raise CsvImportError(f"import does not support the {dialect} database")
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}
    )
    session.execute(stmt, rows)


def _ids_by_external(
    session: Any, column: Any, id_column: Any, refs: Iterable[str]
) -> dict[str, int]:
    refs = list(refs)
    found: dict[str, int] = {}
    for start in range(0, len(refs), CHUNK):
        stmt = select(column, id_column).where(column.in_(refs[start : start + CHUNK]))
        found.update((ref, rid) for ref, rid in session.execute(stmt))
    return found


class _Handler:
    """One import kind: how to parse a row, resolve references and write a chunk."""

    kind: str = ""
    key_label: str = ""

    def load_refs(self, conn: Any, ctx: _Ctx) -> None:
        """Load small reference maps once (plans, managers)."""

    def key(self, raw: dict[str, str]) -> Any:
        value = raw[HEADERS[self.kind][0]]
        return value or None

    def describe_key(self, key: Any) -> str:
        return f"{self.key_label} {key!r}"

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def resolve(
        self, conn: Any, records: list[tuple[Any, ...]], ctx: _Ctx
    ) -> list[tuple[Any, ...]]:
        """Check references that need the database, for a chunk; returns the spooled form."""
        return list(records)

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        raise NotImplementedError


class _Plans(_Handler):
    kind = "plans"
    key_label = "plan_code"

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        record = (
            cells.ident("plan_code"),
            cells.text("name"),
            cells.money("monthly_fee", non_negative=True),
            cells.count("voice_minutes"),
            cells.count("data_mb"),
            cells.count("sms"),
            cells.money("voice_overage_per_min", scale=4, non_negative=True),
            cells.money("data_overage_per_mb", scale=4, non_negative=True),
            cells.money("sms_overage", scale=4, non_negative=True),
            cells.tier_list("tiers", TIERS),
        )
        return record if cells.ok else None

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        table = _PLANS
        codes = [r[0] for r in chunk]
        existing = _ids_by_external(session, Plan.code, Plan.id, codes)
        names = (
            "code",
            "name",
            "monthly_fee",
            "voice_minutes",
            "data_mb",
            "sms",
            "voice_overage_per_min",
            "data_overage_per_mb",
            "sms_overage",
        )
        _upsert(session, table, ["code"], [dict(zip(names, r[:9], strict=True)) for r in chunk])
        ids = _ids_by_external(session, Plan.code, Plan.id, codes)
        session.execute(delete(PlanTier).where(PlanTier.plan_id.in_(list(ids.values()))))
        session.execute(
            insert(PlanTier), [{"plan_id": ids[r[0]], "tier": t} for r in chunk for t in r[9]]
        )
        report.updated += len(existing)
        report.inserted += len(chunk) - len(existing)


class _Managers(_Handler):
    kind = "managers"
    key_label = "manager_id"

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        record = (
            cells.ident("manager_id"),
            cells.text("name"),
            cells.phone("phone"),
            cells.email("email"),
            cells.count("daily_call_capacity", what="a whole number of calls >= 0"),
            cells.latin_text("name_latin") if cells.raw("name_latin") else None,
        )
        return record if cells.ok else None

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        refs = [r[0] for r in chunk]
        stored: dict[str, tuple[str | None, str | None]] = {}
        named: dict[str, tuple[int, str, str, str | None]] = {}
        stmt = select(
            Manager.external_id,
            Manager.email,
            Manager.name_latin,
            Manager.id,
            Manager.name,
            Manager.phone,
        ).where(Manager.external_id.in_(refs))
        for ref, email, latin, mid, name, phone in session.execute(stmt.with_for_update()):
            stored[ref] = (email, latin)
            named[ref] = (mid, name, phone, latin)
        rows = [
            {
                "external_id": ref,
                "name": name,
                "phone": phone,
                # An empty cell is "unknown": keep what we already have.
                "email": email if email is not None else stored.get(ref, (None, None))[0],
                "daily_call_capacity": capacity,
                "name_latin": latin if latin is not None else stored.get(ref, (None, None))[1],
            }
            for ref, name, phone, email, capacity, latin in chunk
        ]
        _upsert(session, _MANAGERS, ["external_id"], rows)
        renamed = [
            named[r["external_id"]][0]
            for r in rows
            if r["external_id"] in named
            and named[r["external_id"]][1:] != (r["name"], r["phone"], r["name_latin"])
        ]
        if renamed and ctx.manager_changed is not None:
            customers = session.scalars(
                select(Customer.id).where(Customer.manager_id.in_(renamed))
            ).all()
            ctx.manager_changed(session, list(customers))
        report.updated += len(stored)
        report.inserted += len(chunk) - len(stored)


_CUSTOMER_KEEP = (
    "locale",
    "timezone",
    "birthday",
    "plan_id",
    "manager_id",
    "credit_limit",
    "status",
    "joined_on",
    "points",
)
"""Columns where an empty cell keeps the stored value (new rows get the default)."""


class _Customers(_Handler):
    kind = "customers"
    key_label = "customer_id"

    def load_refs(self, conn: Any, ctx: _Ctx) -> None:
        ctx.plans = {code: pid for code, pid in conn.execute(select(Plan.code, Plan.id))}
        ctx.managers = {
            ref: mid for ref, mid in conn.execute(select(Manager.external_id, Manager.id))
        }

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        plan_code = cells.raw("plan_code")
        plan_id = ctx.plans.get(plan_code) if plan_code else None
        if plan_code and plan_id is None:
            cells.problem(
                "plan_code",
                f"unknown plan {plan_code!r} (expected a plan_code already imported; "
                "import plans first)",
            )
        manager_ref = cells.raw("account_manager_id")
        manager_id = ctx.managers.get(manager_ref) if manager_ref else None
        if manager_ref and manager_id is None:
            cells.problem(
                "account_manager_id",
                f"unknown manager {manager_ref!r} (expected a manager_id already imported; "
                "import managers first)",
            )
        tier = cells.choice("tier", TIERS, what="tier")
        record = (
            cells.ident("customer_id"),
            cells.text("name"),
            cells.phone("phone"),
            cells.locale("locale"),
            cells.timezone("timezone"),
            cells.day("birthday", not_after=ctx.today),
            tier,
            cells.club_list("clubs"),
            plan_id,
            manager_id,
            cells.money("balance", required=False),
            cells.money("credit_limit", required=False, non_negative=True),
            cells.choice("status", CUSTOMER_STATUSES, what="status")
            if cells.raw("status")
            else None,
            cells.boolean("sms_opt_out"),
            cells.boolean("do_not_call"),
            cells.day("joined_on", not_after=ctx.today),
            cells.day("last_contact_on", not_after=ctx.today),
            cells.count("points") if cells.raw("points") else None,
        )
        return record if cells.ok else None

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        table = _CUSTOMERS
        refs = [r[0] for r in chunk]
        stored: dict[str, Any] = {}
        stmt = select(
            table.c.id,
            table.c.external_id,
            *(table.c[name] for name in _CUSTOMER_KEEP),
            table.c.balance,
            table.c.balance_as_of,
            table.c.status_since,
            table.c.sms_opt_out,
            table.c.do_not_call,
            table.c.last_contact_on,
            exists().where(CreditLedger.customer_id == table.c.id).correlate(table).label("posted"),
        ).where(table.c.external_id.in_(refs))
        for row in session.execute(stmt.with_for_update()):
            stored[row.external_id] = row
        default_tz = getattr(ctx.tz, "key", None) or str(ctx.tz)
        rows = [_merge_customer(r, stored.get(r[0]), default_tz, ctx.at) for r in chunk]
        _upsert(session, table, ["external_id"], rows)
        _apply_consent(session, chunk, stored, ctx)
        moves = {
            old.id: row["manager_id"]
            for row in rows
            if (old := stored.get(row["external_id"])) is not None
            and row["manager_id"] != old.manager_id
        }
        if moves:
            tasks.reassign_open(session, moves, ctx.at, ctx.actor)
            if ctx.manager_changed is not None:
                ctx.manager_changed(session, sorted(moves))

        ids = {ref: row.id for ref, row in stored.items()}
        new_refs = [ref for ref in refs if ref not in stored]
        ids.update(_ids_by_external(session, Customer.external_id, Customer.id, new_refs))
        session.execute(
            delete(CustomerClub).where(CustomerClub.customer_id.in_(list(ids.values())))
        )
        clubs = [{"customer_id": ids[r[0]], "club": c} for r in chunk for c in r[7]]
        if clubs:
            session.execute(insert(CustomerClub), clubs)
        report.updated += len(stored)
        report.inserted += len(chunk) - len(stored)


def _merge_customer(
    record: tuple[Any, ...], old: Any, default_tz: str, at: datetime
) -> dict[str, Any]:
    """One upsert row: the file's values, with empty cells filled from the stored row."""
    (
        ref,
        name,
        phone,
        locale,
        timezone,
        birthday,
        tier,
        _clubs,
        plan_id,
        manager_id,
        balance,
        credit_limit,
        status,
        sms_opt_out,
        do_not_call,
        joined_on,
        last_contact_on,
        points,
    ) = record
    given = {
        "locale": locale,
        "timezone": timezone,
        "birthday": birthday,
        "plan_id": plan_id,
        "manager_id": manager_id,
        "credit_limit": credit_limit,
        "status": status,
        "joined_on": joined_on,
        "points": points,
    }
    row: dict[str, Any] = {
        "external_id": ref,
        "name": name,
        "phone": phone,
        "tier": tier,
        "tier_rank": TIERS.index(tier),
    }
    if old is None:
        defaults = {
            "locale": DEFAULT_LOCALE,
            "timezone": default_tz,
            "credit_limit": Decimal("0.00"),
            "status": "active",
            "points": 0,
        }
        for column, value in given.items():
            row[column] = value if value is not None else defaults.get(column)
        # The customers file's balance has no time of its own: stored with an unknown as-of.
        row["balance"] = balance if balance is not None else Decimal("0.00")
        row["balance_as_of"] = None
        row["status_since"] = None
        row["sms_opt_out"] = bool(sms_opt_out)
        row["do_not_call"] = bool(do_not_call)
        row["last_contact_on"] = last_contact_on
    else:
        for column, value in given.items():
            row[column] = value if value is not None else getattr(old, column)
        # A status change holds from the import: a day replayed from before it never
        # acts on it (flows.journeys: the status must have held at the day's instant).
        row["status_since"] = at if row["status"] != old.status else old.status_since
        # The balance is the balances feed's (crm.balances, reconciled with the ledger):
        # the customers file's untimed balance only fills in for a customer who has
        # neither a fed balance nor a vipcare posting yet (old.posted).
        if balance is not None and old.balance_as_of is None and not old.posted:
            row["balance"] = balance
        else:
            row["balance"] = old.balance
        row["balance_as_of"] = old.balance_as_of
        # Flags of a stored customer change only through crm.consent (_apply_consent).
        row["sms_opt_out"] = old.sms_opt_out
        row["do_not_call"] = old.do_not_call
        # vipcare records contacts itself, so a stale file never moves the date back.
        dates = [d for d in (last_contact_on, old.last_contact_on) if d is not None]
        row["last_contact_on"] = max(dates) if dates else None
    birthday_value = row["birthday"]
    row["birth_mmdd"] = (
        None if birthday_value is None else birthday_value.month * 100 + birthday_value.day
    )
    return row


def _apply_consent(
    session: Session, chunk: list[tuple[Any, ...]], stored: dict[str, Any], ctx: _Ctx
) -> None:
    """Flags the file sets on stored customers, through the consent owner (audited).

    An import may set an opt-out or do-not-call flag but never clears one:
    customers opt back in themselves (START), never through a bulk file.
    """
    flags: tuple[tuple[consent.Flag, int], ...] = (("sms_opt_out", 13), ("do_not_call", 14))
    for flag, position in flags:
        ids = [
            stored[r[0]].id
            for r in chunk
            if r[0] in stored and r[position] and not getattr(stored[r[0]], flag)
        ]
        if ids:
            consent.set_flag(
                session,
                flag,
                True,
                ids,
                ctx.at,
                ctx.actor,
                source="import",
            )


class _CustomerRefs(_Handler):
    """Kinds keyed by an existing customer: checks the ids in chunked set queries."""

    def resolve(
        self, conn: Any, records: list[tuple[Any, ...]], ctx: _Ctx
    ) -> list[tuple[Any, ...]]:
        refs = {r[1] for r in records}
        ids = _ids_by_external(conn, Customer.external_id, Customer.id, refs)
        out = []
        for record in records:
            cid = ids.get(record[1])
            if cid is None:
                ctx.issues.add(
                    record[0],
                    "customer_id",
                    f"unknown customer {record[1]!r} (expected a customer_id already imported; "
                    "import customers first)",
                )
                continue
            out.append((cid, *record))
        return out


class _Usage(_CustomerRefs):
    kind = "usage"
    key_label = "customer_id and month"

    def key(self, raw: dict[str, str]) -> Any:
        return (raw["customer_id"], raw["month"]) if raw["customer_id"] else None

    def describe_key(self, key: Any) -> str:
        return f"usage for customer_id {key[0]!r} and month {key[1]!r}"

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        record = (
            cells.line,
            cells.ident("customer_id"),
            cells.month("month"),
            cells.count("voice_minutes"),
            cells.count("data_mb"),
            cells.count("sms"),
        )
        return record if cells.ok else None

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        ids = list({r[0] for r in chunk})
        months = list({r[3] for r in chunk})
        stmt = select(
            MonthlyUsage.customer_id,
            MonthlyUsage.month,
            MonthlyUsage.voice_minutes,
            MonthlyUsage.data_mb,
            MonthlyUsage.sms,
        ).where(MonthlyUsage.customer_id.in_(ids), MonthlyUsage.month.in_(months))
        existing = {(cid, month): (v, d, s) for cid, month, v, d, s in session.execute(stmt)}
        # Figures arrive with the time they were received: a care day replayed from
        # before it never costs a plan on them. The same figures again change nothing.
        rows = [
            {
                "customer_id": cid,
                "month": month,
                "voice_minutes": v,
                "data_mb": d,
                "sms": s,
                "received_at": ctx.at,
            }
            for cid, _line, _ref, month, v, d, s in chunk
            if existing.get((cid, month)) != (v, d, s)
        ]
        _upsert(session, _USAGE, ["customer_id", "month"], rows)
        hits = sum(1 for r in chunk if (r[0], r[3]) in existing)
        report.updated += sum(1 for r in rows if (r["customer_id"], r["month"]) in existing)
        report.unchanged += len(chunk) - len(rows)
        report.inserted += len(chunk) - hits


class _Balances(_CustomerRefs):
    """The balances feed, landed through :func:`crm.balances.record_balances`.

    A future ``as_of`` and a value that contradicts one already received for the
    same instant are refused at their line and column; repeated rows change
    nothing; rows older than the stored balance are skipped and counted.
    """

    kind = "balances"
    key_label = "customer_id"

    def parse(self, cells: Cells, ctx: _Ctx) -> tuple[Any, ...] | None:
        as_of = _as_of(cells, ctx.tz)
        if as_of is not None and balances.future_reason(as_of, ctx.at) is not None:
            raw = cells.raw("as_of")
            meaning = (
                f" (a date means the end of that day, {as_of.astimezone(ctx.tz):%H:%M:%S} "
                f"{getattr(ctx.tz, 'key', ctx.tz)})"
                if len(raw) == 10
                else ""
            )
            cells.problem(
                "as_of",
                f"{quoted(raw)} is in the future{meaning}: the import runs at "
                f"{ctx.at.astimezone(ctx.tz).isoformat(timespec='seconds')}; expected a time "
                "that has come (a typo in the year?)",
            )
        record = (
            cells.line,
            cells.ident("customer_id"),
            cells.money("balance"),
            as_of,
        )
        return record if cells.ok else None

    def resolve(
        self, conn: Any, records: list[tuple[Any, ...]], ctx: _Ctx
    ) -> list[tuple[Any, ...]]:
        resolved = super().resolve(conn, records, ctx)
        for fact, reason in balances.conflicts(conn, [_fact(r, ctx) for r in resolved]):
            assert fact.line is not None
            ctx.issues.add(fact.line, "balance", reason)
        return resolved

    def write(
        self, session: Session, chunk: list[tuple[Any, ...]], ctx: _Ctx, report: ImportReport
    ) -> None:
        try:
            outcome = balances.record_balances(session, [_fact(r, ctx) for r in chunk], ctx.at)
        except balances.BalanceFactError as exc:  # changed since the check: all or nothing
            raise CsvImportError(
                f"{ctx.issues.file}: the stored balances changed while importing ({exc}); "
                "nothing was imported, run the import again"
            ) from exc
        for stale in outcome.stale:
            if len(report.stale) < KEPT_STALE:
                fact = stale.fact
                report.stale.append(
                    StaleRow(
                        fact.line or 0, fact.customer_ref or "", fact.as_of, stale.stored_as_of
                    )
                )
        report.stale_count += outcome.stale_count
        report.updated += outcome.applied
        report.unchanged += outcome.repeated


def _fact(record: tuple[Any, ...], ctx: _Ctx) -> balances.BalanceFact:
    cid, line, ref, balance, as_of = record
    return balances.BalanceFact(
        customer_id=cid,
        balance=balance,
        as_of=as_of,
        source=f"{Path(str(ctx.issues.file)).name}:{line}",
        customer_ref=ref,
        line=line,
    )


def _as_of(cells: Cells, tz: tzinfo) -> datetime | None:
    """A date means the end of that day in the operator's zone; a naive time is read there too."""
    value = cells.raw("as_of")
    expected = "(expected a date YYYY-MM-DD or an ISO time like 2026-11-20T18:00:00+08:00)"
    if not value:
        cells.problem("as_of", f"is empty {expected}")
        return None
    if len(value) == 10:
        day = cells.day("as_of", required=True)
        if day is None:
            return None
        parsed = datetime.combine(day, time(23, 59, 59), tzinfo=tz)
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            cells.problem("as_of", f"{quoted(value)} is not a date or time {expected}")
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz)
        if parsed.year < 1900:
            cells.problem("as_of", f"{quoted(value)} is before 1900 {expected}")
            return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31 west of UTC: past the last date Python can hold
        cells.problem("as_of", f"{quoted(value)} is out of range {expected}")
        return None


_HANDLERS: dict[str, _Handler] = {
    "plans": _Plans(),
    "managers": _Managers(),
    "customers": _Customers(),
    "usage": _Usage(),
    "balances": _Balances(),
}

__all__ = [
    "HEADERS",
    "KINDS",
    "CsvImportError",
    "ImportFileError",
    "ImportReport",
    "Kind",
    "RowIssue",
    "StaleRow",
    "UnknownKindError",
    "import_csv",
]
