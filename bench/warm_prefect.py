"""What the scheduler's warm Prefect context saves per job.

A cron job that runs ``vipcare run`` pays for a fresh process and a temporary
Prefect server every time; ``vipcare scheduler`` starts one server once and
every care-day job reuses it. This measures both on a small seeded database:

    .venv/bin/python bench/warm_prefect.py [--customers 2000] [--runs 3]

It prints the server's start-up, each in-process care-day run on the warm
server, and a cold ``vipcare run`` subprocess (what each job would cost without
the warm context). Dry runs, so every run does the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vipcare-warm-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    url = f"sqlite:///{work / 'bench.db'}"
    day = date(2026, 11, 23)

    from crm.db import make_engine
    from crm.schema import upgrade
    from seed import generate
    from vipcare.operations import quiet_prefect, run_care_day
    from vipcare.prefect_server import prefect_api
    from vipcare.settings import Settings

    engine = make_engine(url)
    upgrade(engine)
    generate(engine, args.customers, seed=3, as_of=day)
    engine.dispose()
    settings = Settings(_env_file=None, database_url=url)
    quiet_prefect()

    started = time.perf_counter()
    warm: list[float] = []
    with prefect_api():
        server = time.perf_counter() - started
        for _ in range(args.runs):
            t = time.perf_counter()
            run_care_day(settings, day, dry_run=True)
            warm.append(time.perf_counter() - t)

    cold: list[float] = []
    env = {**os.environ, "VIPCARE_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vipcare",
                "run",
                "--date",
                day.isoformat(),
                "--dry-run",
                "--json",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        cold.append(time.perf_counter() - t)

    print(f"customers: {args.customers}")
    print(f"temporary Prefect server start-up (once per scheduler process): {server:.1f} s")
    print(f"care-day job on the warm server: median {statistics.median(warm):.1f} s {warm}")
    print(
        f"cold `vipcare run` (new process + server each time): median "
        f"{statistics.median(cold):.1f} s {[round(c, 1) for c in cold]}"
    )
    print(f"saved per job: {statistics.median(cold) - statistics.median(warm):.1f} s")


if __name__ == "__main__":
    main()
