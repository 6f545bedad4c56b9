"""``vipcare bench``: the benchmark harness (``bench/``), imported only when it runs."""

from __future__ import annotations

import typer

from vipcare.cli.common import fail


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(bench)


def bench(ctx: typer.Context) -> None:
    """Run the benchmarks (every option of `python -m bench`; `vipcare bench --help`)."""
    try:
        from bench.cli import main as bench_main
    except ImportError as exc:
        fail(f"the benchmark harness is not installed with this copy of vipcare ({exc})")
    raise typer.Exit(bench_main(list(ctx.args)))
