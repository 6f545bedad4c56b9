"""Benchmark seeding (and optionally CSV import) at scale; prints rows/s and peak memory.

Not a test. Examples::

    python bench/seed_bench.py --customers 1000000
    python bench/seed_bench.py --customers 1000000 --import \\
        --url postgresql+psycopg://postgres@127.0.0.1:5432/bench

The database must be empty (it is migrated first). With ``--import`` a
customers CSV of the same size is written to a temporary file and imported
into the same database twice (all inserts, then all updates).
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from crm.audit import Actor
from crm.db import make_engine
from crm.importer import HEADERS, import_csv
from crm.schema import upgrade
from seed import digest, generate
from seed.catalogue import PLANS
from seed.people import cn_mobile


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_customers_csv(path: Path, count: int, managers: int) -> None:
    """A valid customers file of ``count`` rows (ids I000000001…) using the seeded refs."""
    rng = random.Random(99)
    codes = [p.code for p in PLANS if "gold" in p.tiers]
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADERS["customers"])
        for i in range(count):
            out.writerow(
                [
                    f"I{i + 1:09d}",
                    f"客户{i}",
                    cn_mobile(i + 50_000_000, 17, rng),
                    "zh-CN",
                    "Asia/Shanghai",
                    f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "gold",
                    "music|film" if i % 3 == 0 else "",
                    rng.choice(codes),
                    f"M{1 + i % managers:05d}",
                    f"{rng.randint(-5000, 50000) / 100:.2f}",
                    "50.00",
                    "active",
                    "false",
                    "false",
                    "2020-01-01",
                    "",
                ]
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--months", type=int, default=4)
    parser.add_argument("--as-of", default="2026-11-21")
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--import", dest="do_import", action="store_true")
    parser.add_argument("--digest", action="store_true", help="also time the full-table digest")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vipcare-bench-"))
    url = args.url or f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    print(f"database: {url.split('@')[-1]}")

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 5 or done == total:
            last[0] = now
            print(f"  {done:>10,}/{total:,} customers", file=sys.stderr, flush=True)

    started = time.perf_counter()
    summary = generate(
        engine, args.customers, args.seed, date.fromisoformat(args.as_of), args.months, progress
    )
    took = time.perf_counter() - started
    rows = summary.customers + summary.usage_rows + summary.club_rows
    print(
        f"seed: {summary.customers:,} customers, {summary.usage_rows:,} usage rows, "
        f"{summary.club_rows:,} club rows in {took:.1f}s = "
        f"{summary.customers / took:,.0f} customers/s, {rows / took:,.0f} rows/s; "
        f"peak RSS {peak_mb():.0f} MB"
    )
    if args.digest:
        started = time.perf_counter()
        value = digest(engine)
        print(f"digest {value[:16]}… in {time.perf_counter() - started:.1f}s")

    if args.do_import:
        path = workdir / "customers.csv"
        write_customers_csv(path, args.customers, summary.managers_total)
        size = path.stat().st_size / 1e6
        for label in ("insert", "update"):
            started = time.perf_counter()
            report = import_csv(
                engine,
                "customers",
                path,
                Actor("import", "bench"),
                datetime.now(UTC),
                "Asia/Shanghai",
            )
            took = time.perf_counter() - started
            print(
                f"import ({label}): {report.rows:,} rows ({size:.0f} MB) in {took:.1f}s = "
                f"{report.rows / took:,.0f} rows/s; {report.inserted:,} new, "
                f"{report.updated:,} updated; peak RSS {peak_mb():.0f} MB"
            )
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
