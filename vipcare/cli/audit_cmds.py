"""``vipcare audit list`` and ``vipcare audit verify``."""

from __future__ import annotations

import json

import typer

from vipcare.cli.common import engine, fail, input_errors, now_utc, settings
from vipcare.console import console, err_console, print_json, print_table

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("list")
@input_errors
def list_(
    customer: str | None = typer.Option(None, "--customer", help="Customer id (external)."),
    action: list[str] = typer.Option([], "--action", help="Only these actions."),
    limit: int = typer.Option(200, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List audit rows, oldest first (the newest LIMIT rows)."""
    from crm import audit
    from crm.db import transaction

    with transaction(engine()) as session:
        rows = audit.list_rows(session, customer_ref=customer, limit=limit, actions=action)
        data = [
            {
                "seq": r.seq,
                "at": r.at,
                "actor": f"{r.actor_type}:{r.actor_id}",
                "action": r.action,
                "customer_id": r.customer_ref,
                "entity": r.entity,
                "rule_id": r.rule_id,
                "rule_hash": r.rule_hash,
                "details": json.loads(r.details),
                "hash": r.hash,
            }
            for r in rows
        ]
    if as_json:
        print_json(data)
        return
    print_table(
        "audit log",
        ["seq", "at", "actor", "action", "customer_id", "details"],
        (
            (
                d["seq"],
                d["at"],
                d["actor"],
                d["action"],
                d["customer_id"],
                json.dumps(d["details"], ensure_ascii=False)[:80],
            )
            for d in data
        ),
    )


@audit_app.command("verify")
@input_errors
def verify() -> None:
    """Recompute the hash chain and check the money and state invariants of every customer.

    Exit 1 naming the first altered or missing row, or listing the invariant
    violations (they also show in `vipcare status` until fixed).
    """
    from crm import audit, invariants
    from crm.db import transaction
    from flows.journeys.day import grace_limits
    from rules import load_rules

    eng = engine()
    with transaction(eng) as session:
        result = audit.verify(session)
    if not result.ok:
        fail(f"audit chain broken at row {result.first_bad_seq}: {result.problem}")
    console.print(f"[green]audit chain intact[/]: {result.rows_checked} rows verified")
    limits = grace_limits(load_rules(settings().rules_dir))
    checked = invariants.record_check(
        eng, "audit verify", now_utc(), since=None, grace=limits, owner="cli:audit verify"
    )
    if checked.violations:
        for v in checked.violations[:50]:
            err_console.print(f"  {v}", highlight=False, soft_wrap=True)
        more = len(checked.violations) - 50
        fail(
            f"{len(checked.violations)} money/state invariant violation(s) among "
            f"{checked.customers} customers" + (f" ({more} more not listed)" if more > 0 else "")
        )
    console.print(
        f"[green]money and state invariants hold[/]: {checked.customers} customers checked"
    )
