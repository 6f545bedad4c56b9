"""``vipcare seed``, ``vipcare import`` and the customer, plan and manager lists."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from sqlalchemy import Engine, inspect

from crm.jsonable import jsonable
from vipcare.cli.common import (
    engine,
    fail,
    input_errors,
    live_rules,
    now_utc,
    parse_date,
    resolve_manager,
    settings,
    today_local,
)
from vipcare.console import console, err_console, json_text, print_json, print_table

customers_app = typer.Typer(help="VIP customers.", no_args_is_help=True)
plans_app = typer.Typer(help="The plan catalogue.", no_args_is_help=True)
managers_app = typer.Typer(help="Account managers.", no_args_is_help=True)

TABLE_ROWS = 1_000
"""Rows a table shows when no --limit is given; --json always prints everything."""


class ImportKind(StrEnum):
    plans = "plans"
    managers = "managers"
    customers = "customers"
    usage = "usage"
    balances = "balances"


class TierName(StrEnum):
    silver = "silver"
    gold = "gold"
    platinum = "platinum"
    diamond = "diamond"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("seed")(seed)
    app.command("import")(import_)
    app.add_typer(customers_app, name="customers")
    app.add_typer(plans_app, name="plans")
    app.add_typer(managers_app, name="managers")


def _schema_engine() -> Engine:
    eng = engine()
    if not inspect(eng).has_table("customers"):
        fail("the database has no vipcare schema yet; run `vipcare init` first")
    return eng


@input_errors
def seed(
    customers: int = typer.Option(..., "--customers", min=1, help="How many customers to make."),
    seed_value: int = typer.Option(42, "--seed", help="Random seed; same seed, same data."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="The demo day YYYY-MM-DD (default: today, operator time)."
    ),
    months: int = typer.Option(
        4, "--months", min=1, max=36, help="Full months of usage before the as-of month."
    ),
    append: bool = typer.Option(
        False, "--append", help="Add to a database that already has customers."
    ),
) -> None:
    """Fill the database with realistic, reproducible demo customers, plans and usage.

    Refuses a database that already has customers unless --append is given.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TimeElapsedColumn,
    )

    from seed import generate

    day = parse_date(as_of, "--as-of") or today_local()
    eng = _schema_engine()
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task: list[TaskID] = []

    def on_progress(done: int, total: int) -> None:
        # Started on the first chunk, so a refused seed prints no empty bar.
        if not task:
            bar.start()
            task.append(bar.add_task("seeding customers", total=total))
        bar.update(task[0], completed=done)

    try:
        summary = generate(
            eng,
            customers,
            seed_value,
            day,
            months,
            progress=on_progress,
            append=append,
            operator_tz=settings().timezone,
            at=now_utc(),
        )
    finally:
        bar.stop()
    months_text = f"{summary.months[0]:%Y-%m}..{summary.months[-1]:%Y-%m}"
    console.print(
        f"[green]seeded[/] {summary.customers} customers "
        f"({summary.first_customer_id}..{summary.last_customer_id}) as of {summary.as_of}, "
        f"seed {summary.seed}: {summary.usage_rows} usage rows ({months_text}), "
        f"{summary.club_rows} club memberships, {summary.managers_total} managers "
        f"({summary.managers_created} new), {summary.plans_created} new plans",
        highlight=False,
    )


@input_errors
def import_(
    kind: ImportKind = typer.Argument(..., help="plans, managers, customers, usage or balances."),
    file: Path = typer.Argument(..., help="The CSV file (UTF-8, with or without BOM)."),
) -> None:
    """Import a CSV file; re-importing updates rows, never duplicates them.

    All or nothing: every row is checked first. If any row is bad, nothing is
    written, every problem is listed as FILE:LINE: column COLUMN: reason, and the
    exit status is 1. Otherwise the whole file goes in as one transaction.
    Balance rows older than the stored balance are skipped and listed as stale.
    See docs/import.md for the columns and rules.
    """
    from crm.audit import Actor
    from crm.importer import ImportFileError, import_csv

    if not file.is_file():
        fail(f"{file}: no such file")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    eng = _schema_engine()
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    phases: dict[str, Any] = {}

    def on_progress(phase: str, rows: int) -> None:
        if phase not in phases:
            phases[phase] = bar.add_task(f"{phase} {file.name}", total=None)
        bar.update(phases[phase], completed=rows)

    try:
        with bar:
            report = import_csv(
                eng,
                kind.value,
                file,
                Actor("import", "cli"),
                now_utc(),
                settings().timezone,
                progress=on_progress,
                manager_changed=_texts_follow_manager(eng)
                if kind.value in ("customers", "managers")
                else None,
            )
    except ImportFileError as exc:
        for line in exc.render().splitlines():
            err_console.print(escape(line), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"[green]imported[/] {escape(report.file)} as {report.kind}: {report.rows} rows, "
        f"{report.inserted} new, {report.updated} updated"
        + (f", {report.unchanged} unchanged" if report.unchanged else "")
        + (f", {report.stale_count} stale skipped" if report.stale_count else ""),
        highlight=False,
        soft_wrap=True,
    )
    for stale in report.stale[:50]:
        console.print(
            escape(
                f"{report.file}:{stale.line}: skipped stale balance for {stale.customer_id}: "
                f"as_of {jsonable(stale.as_of)} is older than the stored "
                f"{jsonable(stale.stored_as_of)}"
            ),
            highlight=False,
            soft_wrap=True,
        )
    if report.stale_count > 50:
        console.print(f"... and {report.stale_count - 50} more stale rows", highlight=False)
    if report.violations:
        err_console.print(
            f"[yellow]warning:[/] the check after the import found {report.violations} "
            "money/state invariant violation(s); `vipcare status` shows them",
            highlight=False,
        )


@customers_app.command("list")
@input_errors
def customers_list(
    tier: TierName | None = typer.Option(None, "--tier", help="Only this tier."),
    manager: str | None = typer.Option(None, "--manager", help="Only this manager's customers."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N customers."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (all rows)."),
) -> None:
    """List customers by customer_id. Tables show at most 1000 rows unless --limit is given."""
    from crm.db import transaction
    from crm.phones import mask
    from crm.queries import count_customers, iter_customers

    eng = _schema_engine()
    tier_name = tier.value if tier is not None else None
    with transaction(eng) as session:
        if manager is not None:
            resolve_manager(session, manager)
        if as_json:
            _stream_json(
                r.to_json()
                for r in iter_customers(session, tier=tier_name, manager=manager, limit=limit)
            )
            return
        shown = limit if limit is not None else TABLE_ROWS
        table_rows = [
            (
                r.customer_id,
                r.name,
                mask(r.phone),
                r.tier,
                r.plan_code,
                r.account_manager_id,
                r.balance,
                r.status,
                "|".join(r.clubs),
            )
            for r in iter_customers(session, tier=tier_name, manager=manager, limit=shown)
        ]
        total = (
            count_customers(session, tier=tier_name, manager=manager)
            if limit is None and len(table_rows) == TABLE_ROWS
            else len(table_rows)
        )
    print_table(
        "customers",
        [
            "customer_id",
            "name",
            "phone",
            "tier",
            "plan_code",
            "account_manager_id",
            "balance",
            "status",
            "clubs",
        ],
        table_rows,
    )
    if total > len(table_rows):
        console.print(
            f"[dim]showing {len(table_rows)} of {total} customers; use --limit or --json[/]"
        )


@plans_app.command("list")
@input_errors
def plans_list(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List the plan catalogue with fees, allowances, overage rates and eligible tiers."""
    from crm.db import transaction
    from crm.importer import HEADERS
    from crm.queries import list_plans

    with transaction(_schema_engine()) as session:
        plans = list_plans(session)
    if as_json:
        print_json([p.to_json() for p in plans])
        return
    print_table(
        "plans",
        list(HEADERS["plans"]),
        (
            (
                p.plan_code,
                p.name,
                p.monthly_fee,
                p.voice_minutes,
                p.data_mb,
                p.sms,
                p.voice_overage_per_min,
                p.data_overage_per_mb,
                p.sms_overage,
                "|".join(p.tiers),
            )
            for p in plans
        ),
    )


@managers_app.command("list")
@input_errors
def managers_list(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List account managers with their daily call capacity and customer count."""
    from crm.db import transaction
    from crm.phones import mask
    from crm.queries import list_managers

    with transaction(_schema_engine()) as session:
        managers = list_managers(session)
    if as_json:
        print_json([m.to_json() for m in managers])
        return
    print_table(
        "managers",
        ["manager_id", "name", "name_latin", "phone", "email", "daily_call_capacity", "customers"],
        (
            (
                m.manager_id,
                m.name,
                m.name_latin or "",
                mask(m.phone),
                m.email,
                m.daily_call_capacity,
                m.customers,
            )
            for m in managers
        ),
    )


class Role(StrEnum):
    manager = "manager"
    supervisor = "supervisor"


@managers_app.command("set-password")
@input_errors
def managers_set_password(
    manager_id: str = typer.Argument(..., help="The manager id (case-sensitive), e.g. M00001."),
    role: Role | None = typer.Option(
        None, "--role", help="manager (default for a new sign-in) or supervisor (sees the team)."
    ),
    stdin: bool = typer.Option(
        False, "--stdin", help="Read the password from one line of standard input."
    ),
) -> None:
    """Set (or change) a manager's workspace password; signs out their open sessions.

    Prompts twice without echo, or reads one line with --stdin. Stored as an
    argon2 hash only; the password is never printed or logged.
    """
    from crm.accounts import check_password, set_password
    from crm.audit import Actor
    from crm.db import transaction

    eng = _schema_engine()
    with transaction(eng) as session:  # an unknown id fails before any prompt
        resolve_manager(session, manager_id, "MANAGER_ID")
    if stdin:
        line = sys.stdin.readline()
        if not line:
            fail("--stdin: no password on standard input")
        password = line.rstrip("\r\n")
    else:
        password = typer.prompt(
            f"new password for {manager_id}", hide_input=True, confirmation_prompt=True
        )
    check_password(password)
    actor = Actor("cli", os.environ.get("USER", "operator"))
    with transaction(eng) as session:
        account = set_password(
            session,
            manager_id,
            password,
            now_utc(),
            actor,
            role=role.value if role is not None else None,
        )
    console.print(
        f"password set for {escape(account.manager_ref)} ({escape(account.name)}), "
        f"role [bold]{account.role}[/]; sign in at the workspace (`vipcare web`)",
        highlight=False,
    )


def _texts_follow_manager(eng: Any) -> Any:
    """What an import does when customers get another manager (or their manager a new
    name or number): their queued texts are rendered again, naming the manager who will
    call. The rules are the live set (a refused edit runs on its last good version, as
    the journeys do); only when no rule set can run does the import stop with the
    problems and write nothing (a text naming the wrong manager is worse than a re-run
    after the rules are fixed)."""
    from sqlalchemy.orm import Session

    from crm.audit import Actor
    from notifications.manager_change import follow_new_manager

    # read before the import's transaction opens (SQLite has one writer at a time), and
    # read only: an import that is refused must write nothing, not even a rules record
    ruleset = live_rules(eng, record=False).require()

    def follow(session: Session, customer_ids: list[int]) -> None:
        follow_new_manager(
            session,
            ruleset,
            customer_ids,
            now_utc(),
            Actor("import", "cli"),
        )

    return follow


def _stream_json(rows: Iterable[dict[str, Any]]) -> None:
    """A JSON array written row by row, so a million customers never sit in memory."""
    out = sys.stdout
    out.write("[")
    first = True
    for row in rows:
        out.write("\n  " if first else ",\n  ")
        out.write(json_text(row))
        first = False
    out.write("\n]\n" if not first else "]\n")
