"""``vipcare qa``: draw the daily call-QA sample and list samples and reviews."""

from __future__ import annotations

import os
from datetime import timedelta

import typer

from vipcare.cli.common import (
    engine,
    input_errors,
    live_ruleset,
    now_utc,
    parse_day,
    print_shown,
    resolve_manager,
    settings,
    today_local,
)
from vipcare.console import console, print_json, print_table

qa_app = typer.Typer(help="Call QA: the daily review sample.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(qa_app, name="qa")


@qa_app.command("sample")
@input_errors
def sample(
    on: str | None = typer.Option(
        None, "--date", help="The day whose calls to sample (default: yesterday, operator time)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Draw the day's QA sample (share from rules/call_qa.yaml); running it again adds nothing."""
    from crm.audit import Actor
    from crm.db import transaction
    from crm.qa import draw_sample

    day = parse_day(on) or today_local() - timedelta(days=1)
    rule = live_ruleset(engine()).call_qa
    with transaction(engine()) as session:
        result = draw_sample(
            session,
            day,
            share=rule.share,
            seed=rule.seed,
            outcomes=tuple(rule.outcomes),
            tz=settings().tz,
            at=now_utc(),
            actor=Actor("cli", os.environ.get("USER", "operator")),
            rule_hash=rule.content_hash or None,
        )
    if as_json:
        print_json(result.as_dict())
        return
    console.print(
        f"{day}: {result.calls} completed calls, {result.drawn} new samples drawn "
        f"({result.sampled} in all, target {result.target} = {rule.share * 100:.0f}%)",
        highlight=False,
    )


@qa_app.command("list")
@input_errors
def list_(
    on: str | None = typer.Option(None, "--date", help="Only samples of this day."),
    manager: str | None = typer.Option(None, "--manager", help="Only this manager's calls."),
    limit: int = typer.Option(200, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List QA samples with their review scores, newest day first."""
    from crm.db import transaction
    from crm.jsonable import jsonable
    from crm.qa import list_samples

    day = parse_day(on)
    with transaction(engine()) as session:
        manager_key = resolve_manager(session, manager) if manager else None
        rows, total = list_samples(
            session, first=day, last=day, manager_id=manager_key, limit=limit
        )
    data = [
        {
            "sample_id": r.sample_id,
            "day": r.day,
            "task_id": r.task_id,
            "manager_id": r.manager_ref,
            "customer_id": r.customer_ref,
            "outcome": r.outcome,
            "satisfaction": r.satisfaction,
            "reviewed_at": r.reviewed_at,
            "reviewer_id": r.reviewer_ref,
            "scores": r.scores,
            "review_note": r.review_note,
        }
        for r in rows
    ]
    if as_json:
        print_json(data)
        return
    print_table(
        "call QA samples",
        ["sample", "day", "task", "manager", "customer", "outcome", "scores", "reviewer"],
        (
            [
                d["sample_id"],
                d["day"],
                d["task_id"],
                d["manager_id"],
                d["customer_id"],
                d["outcome"],
                jsonable(d["scores"]) or "not reviewed",
                d["reviewer_id"],
            ]
            for d in data
        ),
        empty="no samples",
    )
    print_shown(len(rows), total, "samples")
