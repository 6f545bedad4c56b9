"""``vipcare rules ...``: check, schema, explain and preview the rule files.

No Prefect here: these commands must start fast and work without a flow server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from vipcare.cli.common import engine, fail, input_errors, parse_date, settings, today_local
from vipcare.console import console, err_console, print_json, print_table, safe

rules_app = typer.Typer(
    help="Check, explain and preview the rule files marketing ops edit.",
    no_args_is_help=True,
)

RULES_OPTION = typer.Option(
    None, "--rules", help="Rules directory (default: the configured rules_dir)."
)


def register(app: typer.Typer) -> None:
    """Attach ``vipcare rules`` to the main app."""
    app.add_typer(rules_app, name="rules")


def _rules_dir(path: Path | None) -> Path:
    return path if path is not None else settings().rules_dir


@rules_app.command("check")
def check(
    path: Path | None = typer.Argument(
        None, help="A rules directory or one rule file (default: the configured rules_dir)."
    ),
) -> None:
    """Validate the rule files; exit 1 listing every problem as file:line:col: message."""
    from rules.errors import RulesError, RulesValidationError
    from rules.loader import load_rules

    target = _rules_dir(path)
    try:
        ruleset = load_rules(target)
    except RulesValidationError as exc:
        for line in exc.listing():
            sys.stdout.write(f"{safe(line)}\n")
        count = exc.total
        err_console.print(
            f"[bold red]error:[/] {count} problem{'s' if count != 1 else ''} in {target}",
            highlight=False,
        )
        raise typer.Exit(1) from None
    except RulesError as exc:
        fail(escape(str(exc)))
    for warning in ruleset.warnings:
        sys.stdout.write(f"{warning}\n")
    rows = [
        (rule.rule_id, rule.source, "yes" if rule.enabled else "no", rule.content_hash[:16])
        for rule in ruleset.journeys.values()
    ]
    policy = ruleset.contact_policy
    rows.append((policy.rule_id, policy.source, "-", policy.content_hash[:16]))
    print_table("rule files", ["rule_id", "file", "enabled", "sha256"], rows)
    console.print(
        f"[green]ok[/]: {len(ruleset.journeys)} journey(s) and the contact policy are valid",
        highlight=False,
    )


@rules_app.command("schema")
def schema(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the JSON Schema to this file (default: print it)."
    ),
) -> None:
    """Write the JSON Schema of rule files, for editor autocompletion (see docs/rules.md)."""
    from rules.schema import json_schema_text

    text = json_schema_text()
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"JSON Schema written to {output}", highlight=False, markup=False)


@rules_app.command("explain")
@input_errors
def explain(
    journey: str = typer.Argument(..., help="Journey id, e.g. birthday."),
    customer_id: str = typer.Argument(..., help="The customer's id (as in the CRM import)."),
    date_: str | None = typer.Option(
        None, "--date", help="As-of date YYYY-MM-DD (default: today)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    rules_dir: Path | None = RULES_OPTION,
) -> None:
    """Why a journey would or would not act on a customer: audience, checks, verdict."""
    from flows.journeys.explain import explain as explain_journey
    from rules.loader import load_rules

    as_of = parse_date(date_) or today_local()
    ruleset = load_rules(_rules_dir(rules_dir))
    verdict = explain_journey(
        engine(), ruleset, journey, customer_id, as_of, operator_tz=settings().timezone
    )
    if as_json:
        print_json(verdict.to_dict())
        return
    rule = ruleset.journey(journey)
    in_out = "[green]IN[/]" if verdict.audience.passed else "[red]OUT[/]"
    console.print(
        f"[bold]{verdict.journey}[/] for customer [bold]{escape(customer_id)}[/] as of {as_of}:"
        f" {in_out} the audience",
        highlight=False,
    )
    console.print(
        f"rule file {rule.source} (sha256 {rule.content_hash[:16]}…)"
        + ("" if rule.enabled else " [yellow](journey disabled)[/]"),
        highlight=False,
    )
    console.print("[bold]audience[/]", highlight=False)
    _print_explanation(verdict.audience, 1)
    if verdict.checks:
        console.print("[bold]trigger and limits[/]", highlight=False)
        for c in verdict.checks:
            mark = "[green]✔[/]" if c.passed else "[red]✘[/]"
            console.print(
                f"  {mark} {escape(c.check)}  [dim](actual: {escape(c.actual)})[/]", highlight=False
            )
    console.print("[bold]actions[/]", highlight=False)
    for a in verdict.actions:
        mark = "[green]✔[/]" if a["applies"] else "[red]✘[/]"
        stage = "on deadline: " if a["stage"] == "on_deadline" else ""
        console.print(f"  {mark} {stage}{escape(a['action'])}", highlight=False)
    outcome = "[green]would act[/]" if verdict.would_act else "[red]would not act[/]"
    console.print(
        f"verdict: the journey {outcome} on {as_of}: {escape(verdict.reason)}", highlight=False
    )


def _print_explanation(node: Any, depth: int) -> None:
    for level, item in node.lines():
        mark = "[green]✔[/]" if item.passed else "[red]✘[/]"
        actual = f"  [dim](actual: {escape(str(item.actual))})[/]" if item.leaf else ""
        console.print(
            f"{'  ' * (depth + level)}{mark} {escape(item.condition)}{actual}", highlight=False
        )


@rules_app.command("preview")
@input_errors
def preview(
    journey: str = typer.Argument(..., help="Journey id, e.g. birthday."),
    date_: str | None = typer.Option(
        None, "--date", help="As-of date YYYY-MM-DD (default: today)."
    ),
    limit: int = typer.Option(20, "--limit", min=0, max=10_000, help="Customers to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    rules_dir: Path | None = RULES_OPTION,
) -> None:
    """Who the journey would act on, on a date, and what it would send. Changes nothing."""
    from flows.journeys.preview import run_preview
    from rules.loader import load_rules

    as_of = parse_date(date_) or today_local()
    ruleset = load_rules(_rules_dir(rules_dir))
    result = run_preview(engine(), ruleset, journey, as_of, limit, operator_tz=settings().timezone)
    if as_json:
        print_json(result.to_dict())
        return
    state = "" if result.enabled else " [yellow](journey disabled: it would not run)[/]"
    console.print(f"[bold]{result.journey}[/] {result.headline}{state}", highlight=False)
    skipped = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in result.skipped.items())
    console.print(
        f"[dim]{result.candidates} passed the trigger checks in SQL"
        + (f"; then skipped: {skipped}" if skipped else "")
        + "[/]",
        highlight=False,
    )
    print_table(
        f"first {len(result.customers)} of {result.acting_count}",
        ["customer_id", "name", "tier", "locale", "actions"],
        (
            (
                c.get("customer_id"),
                c.get("name", ""),
                c.get("tier", ""),
                c.get("locale", ""),
                "; ".join(str(a) for a in c.get("actions", [])),
            )
            for c in result.customers
        ),
        empty="nobody would be acted on",
    )
    totals = result.totals
    parts = [f"{n} × {name}" for name, n in totals.get("messages", {}).items()]
    parts += [f"{n} × call task {kind}" for kind, n in totals.get("tasks", {}).items()]
    credits = totals.get("credits", {})
    if credits.get("count"):
        parts.append(f"{credits['count']} credit(s) totalling {credits['total']}")
    if totals.get("suspensions"):
        parts.append(f"{totals['suspensions']} suspension(s)")
    if parts:
        console.print(f"in all: {', '.join(parts)}", highlight=False, markup=False)
    for name, by_locale in result.samples.items():
        console.print(f"[bold]template {name}[/] (one text per language)", highlight=False)
        for locale, text in sorted(by_locale.items()):
            console.print(f"  {locale}: {text}", highlight=False, markup=False)
