"""``python -m bench`` / ``vipcare bench``: every benchmark figure from one command.

    python -m bench --sizes 10000,100000,1000000 --databases sqlite,postgresql \\
        --json-out bench-results.json --write-docs

Seeds each size reproducibly (``--seed``), runs every scenario in its own child
process, prints a table per size and writes the results as JSON; with
``--write-docs`` it also writes ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
``--from-json FILE`` re-renders the table and docs from an earlier run's JSON.
Exit status: 0 when every scenario ran, 1 when one failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.databases import PG_ADMIN, BenchError, server_version
from bench.machine import describe
from bench.runner import ROOT, Options, run_all

DATABASES = ("sqlite", "postgresql")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not sizes or any(s < 50 for s in sizes):
        raise argparse.ArgumentTypeError("every size must be at least 50 customers")
    return sizes


def _databases(text: str) -> list[str]:
    kinds = [s.strip() for s in text.split(",") if s.strip()]
    bad = [k for k in kinds if k not in DATABASES]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown database {', '.join(bad) or '(none)'}: expected sqlite and/or postgresql"
        )
    return kinds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=[10_000, 100_000, 1_000_000],
        help="customer counts (default 10000,100000,1000000)",
    )
    p.add_argument(
        "--postgresql-sizes",
        type=_sizes,
        help="customer counts on PostgreSQL, when they differ from --sizes",
    )
    p.add_argument(
        "--databases",
        type=_databases,
        default=["sqlite"],
        help="sqlite and/or postgresql (fresh database per size on 127.0.0.1:5432)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the generated data (default 7)")
    p.add_argument("--as-of", default="2026-11-23", help="the first care day (default 2026-11-23)")
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument(
        "--naive-sample",
        type=int,
        default=200,
        help="customers in the naive way's sample (0 skips it)",
    )
    p.add_argument(
        "--no-prefect",
        action="store_true",
        help="skip Prefect: no warm-process day, the naive sample without tasks",
    )
    p.add_argument(
        "--dispatch-messages",
        type=int,
        default=100_000,
        help="messages dispatched unlimited (0 skips dispatch)",
    )
    p.add_argument("--dispatch-rate", type=float, default=500.0, help="the set rate, msg/s")
    p.add_argument(
        "--dispatch-rated-messages",
        type=int,
        default=10_000,
        help="messages dispatched at the set rate",
    )
    p.add_argument(
        "--my-day-open-tasks",
        type=int,
        default=200_000,
        help="open tasks for My day (at most a fifth of the customers)",
    )
    p.add_argument("--my-day-requests", type=int, default=200)
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run scenarios in this process (faster; peak RSS is then cumulative)",
    )
    p.add_argument("--postgres-admin-url", default=PG_ADMIN)
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    p.add_argument("--json-out", type=Path, help="write the results here as JSON")
    p.add_argument(
        "--write-docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png"
    )
    p.add_argument("--docs-dir", type=Path, default=ROOT / "docs")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument("--from-json", type=Path, help="render an earlier run's JSON instead of running")
    return p


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_tables(results: dict[str, Any]) -> None:
    for run in results["runs"]:
        print(f"\n{run['database']}, {run['customers']:,} customers")
        print(report.text_table(report.RUN_HEADERS, report.run_table(run)))
    print("\nratios")
    print(report.text_table(report.RATIO_HEADERS, report.ratio_rows(results["runs"])))
    if results["dispatch"]:
        print("\ndispatch")
        print(report.text_table(report.DISPATCH_HEADERS, report.dispatch_rows(results["dispatch"])))
    print("\nissue 11 targets (at the largest size measured)")
    print(
        report.text_table(
            ["database", "figure", "target", "measured", "status"],
            [
                [t["database"], t["figure"], t["target"], t["measured"], t["status"]]
                for t in results["targets"]
            ],
        )
    )


def write_docs(results: dict[str, Any], docs_dir: Path, draw: bool) -> Path:
    from bench.docs import render

    plot_name: str | None = None
    note: str | None = "not drawn (`--no-plot`)"
    if draw:
        note = report.plot(results["runs"], docs_dir / "benchmarks.png")
        plot_name = None if note else "benchmarks.png"
    docs_dir.mkdir(parents=True, exist_ok=True)
    path = docs_dir / "benchmarks.md"
    path.write_text(render(results, plot_name, note))
    return path


def command_line(argv: list[str]) -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.from_json:
        try:
            results = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as exc:
            log(f"error: {args.from_json}: cannot read the results: {exc}")
            return 1
        results["scaling"] = report.scaling(results["runs"])  # judged by this version's rules
        results["targets"] = report.targets(results["runs"], results["dispatch"])
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vipcare-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        options = Options(
            sizes=args.sizes,
            postgresql_sizes=args.postgresql_sizes or args.sizes,
            databases=args.databases,
            seed=args.seed,
            as_of=args.as_of,
            batch_size=args.batch_size,
            naive_sample=args.naive_sample,
            prefect=not args.no_prefect,
            dispatch_messages=args.dispatch_messages,
            dispatch_rate=args.dispatch_rate,
            dispatch_rated_messages=args.dispatch_rated_messages,
            my_day_open_tasks=args.my_day_open_tasks,
            my_day_requests=args.my_day_requests,
            in_process=args.in_process,
            workdir=workdir,
        )
        pg_version = None
        if "postgresql" in args.databases:
            try:
                pg_version = server_version(args.postgres_admin_url)
            except Exception as exc:  # noqa: BLE001 - any driver error is one line
                log(
                    f"error: PostgreSQL at {args.postgres_admin_url.split('@')[-1]}: "
                    f"{str(exc).strip().splitlines()[0]}"
                )
                return 1
        started = datetime.now(UTC)
        log(f"benchmark work directory: {workdir}")
        try:
            runs, dispatch, failures = run_all(options, log)
        except BenchError as exc:
            log(f"error: {exc}")
            return 1
        results = {
            "command": command_line(argv),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": describe(ROOT, pg_version),
            "options": {
                "sizes": args.sizes,
                "postgresql_sizes": args.postgresql_sizes or args.sizes,
                "databases": args.databases,
                "seed": args.seed,
                "as_of": args.as_of,
                "batch_size": args.batch_size,
                "naive_sample": args.naive_sample,
                "prefect": not args.no_prefect,
                "dispatch_messages": args.dispatch_messages,
                "dispatch_rate": args.dispatch_rate,
                "in_process": args.in_process,
            },
            "runs": runs,
            "dispatch": dispatch,
            "failures": failures,
        }
        results["scaling"] = report.scaling(runs)
        results["targets"] = report.targets(runs, dispatch)
    print_tables(results)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
        log(f"results written to {args.json_out}")
    if args.write_docs:
        path = write_docs(results, args.docs_dir, draw=not args.no_plot)
        log(f"docs written to {path}")
    return 1 if results["failures"] else 0
