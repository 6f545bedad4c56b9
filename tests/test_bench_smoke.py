"""The benchmark harness at a tiny size, on SQLite and PostgreSQL: structure, not speed.

Runs ``python -m bench`` as a subprocess (all scenarios in that one process,
``--in-process``, to stay quick) and checks what could go wrong: every scenario
ran, the rerun decided nothing, the floor inserted exactly the rows the first
day wrote, the JSON is valid and the generated docs hold the tables. No
timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parent.parent
SIZE = 300
SCENARIOS = {"seed", "first_day", "rerun", "normal_day", "floor", "previews", "naive", "my_day"}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--sizes",
            str(SIZE),
            "--databases",
            "sqlite,postgresql",
            "--postgres-admin-url",
            PG_ADMIN_URL,
            "--naive-sample",
            "5",
            "--no-prefect",
            "--dispatch-messages",
            "40",
            "--dispatch-rated-messages",
            "20",
            "--dispatch-rate",
            "100",
            "--my-day-requests",
            "3",
            "--in-process",
            "--workdir",
            str(tmp / "work"),
            "--json-out",
            str(out),
            "--write-docs",
            "--docs-dir",
            str(tmp / "docs"),
            "--no-plot",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, (tmp / "docs" / "benchmarks.md").read_text()


@pytest.mark.postgres
def test_every_scenario_runs_on_both_databases(bench_run: tuple[dict, str, str]) -> None:
    results, _, _ = bench_run
    assert [(r["database"], r["customers"]) for r in results["runs"]] == [
        ("sqlite", SIZE),
        ("postgresql", SIZE),
    ]
    assert results["failures"] == []
    for run in results["runs"]:
        sc = run["scenarios"]
        copy = {"floor_copy"} if run["database"] == "postgresql" else set()
        assert set(sc) == SCENARIOS | copy, run["database"]
        for name, result in sc.items():
            assert "error" not in result, (run["database"], name, result)
            assert result["peak_rss_mib"] > 0
        assert sc["seed"]["customers"] == SIZE
        assert sc["first_day"]["decided"] > 0
        assert sc["rerun"]["decided"] == 0  # a rerun is a no-op
        assert sum(sc["rerun"]["rows_written"].values()) == 0
        written = {k: v for k, v in sc["first_day"]["rows_written"].items() if v}
        inserted = {k: v for k, v in sc["floor"]["rows_inserted"].items() if v}
        assert inserted == written  # the floor writes exactly the first day's rows
        if copy:
            copied = {k: v for k, v in sc["floor_copy"]["rows_inserted"].items() if v}
            assert copied == written and sc["floor_copy"]["method"] == "copy"
        assert written["audit_log"] >= sc["first_day"]["decided"]
        assert set(sc["previews"]["journeys"]) >= {"birthday", "callback", "grace_credit"}
        assert sc["naive"]["extrapolated"] is True and sc["naive"]["sample"] == 5
        assert sc["my_day"]["open_tasks"] == SIZE // 5
        assert sc["my_day"]["p50_ms"] <= sc["my_day"]["p95_ms"]
    ratios_present = {t["figure"] for t in results["targets"]}
    assert "first day" in ratios_present and "rerun / first run" in ratios_present


@pytest.mark.postgres
def test_dispatch_runs_or_says_it_is_not_available(bench_run: tuple[dict, str, str]) -> None:
    results, stdout, docs = bench_run
    for kind in ("sqlite", "postgresql"):
        unlimited = results["dispatch"][kind]["unlimited"]
        if (ROOT / "bench" / "dispatch_bench.py").exists():
            assert unlimited["available"] is True
            assert unlimited["sent"] == unlimited["messages"] == 40
            rated = results["dispatch"][kind]["rated"]
            assert rated["sent"] == 20 and rated["target_rate"] == 100
        else:
            assert unlimited == {**unlimited, "available": False}
            assert "not available" in docs and "not available" in stdout


@pytest.mark.postgres
def test_docs_are_generated_with_the_tables(bench_run: tuple[dict, str, str]) -> None:
    results, stdout, docs = bench_run
    assert docs.startswith("# Benchmarks")
    assert results["command"].startswith("python -m bench ") and results["command"] in docs
    for heading in (
        "## The machine",
        "## Issue 11's targets",
        "## Baselines and ratios",
        "## Scaling",
        f"## sqlite, {SIZE:,} customers",
        f"## postgresql, {SIZE:,} customers",
        "## Dispatch",
        "## Misses and what was tried",
    ):
        assert heading in docs, heading
    assert "| first care day (journeys + hygiene) |" in docs
    assert "EXTRAPOLATED from 5 customers" in docs
    assert (ROOT / "bench" / "notes.md").read_text().strip().splitlines()[-1] in docs
    assert results["machine"]["postgresql"] and results["machine"]["postgresql"] in docs
    assert "ratios" in stdout and "first care day" in stdout


def test_bad_options_are_one_line_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--databases", "oracle"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown database oracle" in proc.stderr and "Traceback" not in proc.stderr


def test_the_scaling_fit_reads_the_growth_exponent() -> None:
    from bench.report import loglog_exponent

    linear = [(n, 0.002 * n) for n in (10_000, 100_000, 1_000_000)]
    quadratic = [(n, 1e-9 * n * n) for n in (10_000, 100_000, 1_000_000)]
    assert loglog_exponent(linear) == pytest.approx(1.0)
    assert loglog_exponent(quadratic) == pytest.approx(2.0)
    assert loglog_exponent(linear[:1]) is None


def test_targets_are_judged_met_missed_or_not_measured() -> None:
    from bench.report import targets

    def scenario(seconds: float, **extra: object) -> dict[str, object]:
        return {"seconds": seconds, "peak_rss_mib": 200.0, **extra}

    run = {
        "database": "sqlite",
        "customers": 1_000_000,
        "scenarios": {
            "first_day": scenario(50.0, decided=1),
            "floor": scenario(20.0, rows=10),
            "rerun": scenario(6.0, decided=0),
            "naive": scenario(4000.0),
            "previews": scenario(9.0, max_seconds=3.5),
        },
    }
    dispatch = {"sqlite": {"unlimited": {"available": False, "reason": "absent"}}}
    status = {t["figure"]: t["status"] for t in targets([run], dispatch)}
    assert status == {
        "first day": "met",  # 50 s and 2.5× the floor
        "normal day in a warm process": "not measured",
        "rerun / first run": "missed",  # 12%
        "naive way / vipcare (first day)": "missed",  # 80×
        "peak memory (care days)": "met",
        "preview per journey (slowest)": "missed",
        "dispatch through the Twilio adapter to the fake": "not measured",
    }


def test_the_fake_alone_bench_stays_within_the_latency_bound() -> None:
    """Each connection waits ``latency`` per answer, so no round beats connections / latency."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.fake_bench", "--requests", "120", "--rounds", "2"),
            *("--connections", "4,12", "--latency", "0.02", "--json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert [(f["connections"], f["round"]) for f in figures] == [(4, 1), (4, 2), (12, 1), (12, 2)]
    for figure in figures:
        assert 0 < figure["rate"] <= figure["ideal_rate"] == figure["connections"] / 0.02
        assert figure["fake_cpu_us_per_request"] is not None
    refused = subprocess.run(
        [sys.executable, "-m", "bench.fake_bench", "--latency", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "--latency must be" in refused.stderr
    assert "Traceback" not in refused.stderr
