"""``vipcare init`` and ``vipcare config``."""

from __future__ import annotations

import typer

from vipcare.cli.common import engine, input_errors, settings
from vipcare.console import console, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("config")(config)


@input_errors
def init() -> None:
    """Create or upgrade the database schema. Running it again is harmless."""
    from crm.schema import upgrade

    before, after = upgrade(engine(require_schema=False))
    if before == after:
        console.print(f"database already at revision [bold]{after}[/]; nothing to do")
    else:
        console.print(f"database migrated {before or '(empty)'} → [bold green]{after}[/]")


def config(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the effective configuration, with secrets redacted."""
    summary = settings().redacted_summary()
    if as_json:
        print_json([{"setting": k, "value": v} for k, v in summary.items()])
        return
    print_table("vipcare configuration", ["setting", "value"], summary.items())
