"""Orchestration: seed each size once, clone it per scenario, run every scenario in a child.

The order per database and size: seed; clone twice (the floor's copy, and one
for preview, the naive sample and My day); the first care day; the SQL floor
(which copies the first day's rows as they stand then); the rerun; the next
day; a normal day in a warm Prefect process (two days on); the previews; the
naive sample; My day. Dispatch runs once per database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.databases import BenchError, Databases

ROOT = Path(__file__).resolve().parent.parent

Log = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    sizes: list[int]
    postgresql_sizes: list[int]
    databases: list[str]
    seed: int
    as_of: str
    batch_size: int
    naive_sample: int
    prefect: bool
    dispatch_messages: int
    dispatch_rate: float
    dispatch_rated_messages: int
    my_day_open_tasks: int
    my_day_requests: int
    in_process: bool
    workdir: Path


class Runner:
    """Calls scenarios (a child process each, unless ``in_process``) and collects results."""

    def __init__(self, options: Options, log: Log) -> None:
        self.options = options
        self.log = log
        self.failures: list[str] = []
        self._count = 0

    def call(self, label: str, name: str, **params: Any) -> dict[str, Any]:
        started = time.perf_counter()
        if self.options.in_process:
            result = self._in_process(name, params)
        else:
            result = self._child(name, params)
        result["wall_seconds"] = time.perf_counter() - started
        if "error" in result:
            self.failures.append(f"{label}: {result['error']}")
            self.log(f"  {label}: FAILED: {result['error']}")
        else:
            shown = result.get("seconds")
            self.log(
                f"  {label}: "
                + (f"{shown:.2f} s" if isinstance(shown, int | float) else "done")
                + f", peak RSS {result.get('peak_rss_mib', 0):.0f} MiB"
            )
        return result

    def _in_process(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        from bench.worker import peak_rss_mib, scenario

        try:
            result = scenario(name)(**params)
        except Exception as exc:  # noqa: BLE001 - one failed scenario is reported, not fatal
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return {"error": f"{type(exc).__name__}: {first}"}
        result = json.loads(json.dumps(result, default=str))
        result["peak_rss_mib"] = peak_rss_mib()
        result["peak_rss_note"] = "in-process: the harness's own peak so far"
        return result

    def _child(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        self._count += 1
        out = self.options.workdir / f"result-{self._count:03d}-{name}.json"
        log = self.options.workdir / f"result-{self._count:03d}-{name}.log"
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.worker", name, json.dumps(params), str(out)],
                cwd=ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
        else:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            result = {"error": f"exit status {proc.returncode}: {' '.join(tail)}"}
        return result


def run_size(runner: Runner, dbs: Databases, kind: str, size: int) -> dict[str, Any]:
    """Every per-size scenario for ``size`` customers on ``kind``."""
    o = runner.options
    label = f"{kind} {size:,}"
    runner.log(f"[{label}] seeding")
    from bench.scenarios import next_day

    out: dict[str, Any] = {"database": kind, "customers": size, "scenarios": {}}
    sc = out["scenarios"]
    main = dbs.create(kind, f"s{size}")
    sc["seed"] = runner.call(
        f"{label} seed", "seed", url=main.url, customers=size, seed=o.seed, as_of=o.as_of
    )
    if "error" in sc["seed"]:
        dbs.drop(main)
        return out
    floor_db = dbs.clone(main, f"f{size}")
    side = dbs.clone(main, f"n{size}")
    try:
        sc["first_day"] = runner.call(
            f"{label} first day",
            "care_day",
            url=main.url,
            day=o.as_of,
            run_id="bench-first",
            batch_size=o.batch_size,
        )
        # The floor copies the first day's rows as they stand right after it (later days
        # update them and add rows they would reference).
        first = sc["first_day"]
        if "error" not in first:
            sc["floor"] = runner.call(
                f"{label} SQL floor",
                "floor",
                source_url=main.url,
                target_url=floor_db.url,
                marks=first["marks"],
                candidates={j: v["candidates"] for j, v in first["journeys"].items()},
            )
        dbs.drop(floor_db)
        if kind == "postgresql" and "error" not in first:
            copy_db = dbs.clone(side, f"c{size}")  # side is still the seeded state
            sc["floor_copy"] = runner.call(
                f"{label} SQL floor (COPY)",
                "floor",
                source_url=main.url,
                target_url=copy_db.url,
                marks=first["marks"],
                candidates={j: v["candidates"] for j, v in first["journeys"].items()},
                method="copy",
            )
            dbs.drop(copy_db)
        sc["rerun"] = runner.call(
            f"{label} rerun",
            "care_day",
            url=main.url,
            day=o.as_of,
            run_id="bench-rerun",
            batch_size=o.batch_size,
        )
        sc["normal_day"] = runner.call(
            f"{label} normal day",
            "care_day",
            url=main.url,
            day=next_day(o.as_of),
            run_id="bench-normal",
            batch_size=o.batch_size,
        )
        if o.prefect:
            sc["warm_normal_day"] = runner.call(
                f"{label} warm normal day (Prefect)",
                "warm_care_day",
                url=main.url,
                day=next_day(o.as_of, 2),
                workdir=str(o.workdir),
                batch_size=o.batch_size,
            )
        sc["previews"] = runner.call(f"{label} previews", "previews", url=side.url, as_of=o.as_of)
        if o.naive_sample > 0:
            sc["naive"] = runner.call(
                f"{label} naive sample ({o.naive_sample})",
                "naive",
                url=side.url,
                as_of=o.as_of,
                sample=o.naive_sample,
                workdir=str(o.workdir),
                prefect=o.prefect,
            )
        open_tasks = min(o.my_day_open_tasks, size // 5)
        sc["my_day"] = runner.call(
            f"{label} My day ({open_tasks:,} open tasks)",
            "my_day",
            url=side.url,
            as_of=o.as_of,
            open_tasks=open_tasks,
            done_tasks=open_tasks,
            audit_rows=min(1_000_000, size),
            requests=o.my_day_requests,
        )
    finally:
        dbs.drop_all()
    return out


def run_dispatch(runner: Runner, dbs: Databases, kind: str) -> dict[str, Any]:
    """Dispatch unlimited, then at the set rate, on a fresh database (it seeds its messages)."""
    o = runner.options
    label = f"{kind} dispatch"
    db = dbs.create(kind, "dispatch")
    try:
        unlimited = runner.call(
            f"{label} unlimited ({o.dispatch_messages:,} messages)",
            "dispatch",
            url=db.url,
            messages=o.dispatch_messages,
            rate=None,
            workdir=str(o.workdir),
        )
        if not unlimited.get("available", True) or "error" in unlimited:
            return {"unlimited": unlimited}
        rated = runner.call(
            f"{label} at {o.dispatch_rate:g}/s ({o.dispatch_rated_messages:,} messages)",
            "dispatch",
            url=db.url,
            messages=o.dispatch_rated_messages,
            rate=o.dispatch_rate,
            workdir=str(o.workdir),
        )
        return {"unlimited": unlimited, "rated": rated}
    finally:
        dbs.drop_all()


def run_all(options: Options, log: Log) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    runner = Runner(options, log)
    runs: list[dict[str, Any]] = []
    dispatch: dict[str, Any] = {}
    for kind in options.databases:
        dbs = Databases(options.workdir)
        try:
            sizes = options.postgresql_sizes if kind == "postgresql" else options.sizes
            for size in sizes:
                runs.append(run_size(runner, dbs, kind, size))
            if options.dispatch_messages > 0:
                dispatch[kind] = run_dispatch(runner, dbs, kind)
        except BenchError as exc:
            runner.failures.append(f"{kind}: {exc}")
            log(f"[{kind}] FAILED: {exc}")
        finally:
            dbs.drop_all()
    return runs, dispatch, runner.failures
