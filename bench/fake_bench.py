"""Benchmark: the fake Twilio alone under the dispatch benchmark's raw load generator.

    python -m bench.fake_bench [--requests 20000] [--rounds 3] [--connections 64,256]
                               [--latency 0.1] [--json]

Starts ``python -m notifications.fake_twilio`` in its own process, as
:mod:`bench.dispatch_bench` does, and posts pre-built creates on keep-alive
connections (no client library), ``rounds`` times per connection count, resetting
the fake between rounds. Each round gives the creates per second and the fake's
own CPU time per create: the ceiling the fake sets under the dispatcher, and what
it costs. With ``--latency`` every answer waits that long; the ideal rate is then
connections / latency, and reaching near it shows the waits do not hold each other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from bench.dispatch_bench import CONCURRENCY, BenchError, FakeProcess, fake_alone_rate


def measure_fake(
    requests: int, rounds: int, connections: list[int], latency: float
) -> list[dict[str, Any]]:
    """One figure per round: rate, the ideal rate under ``latency``, fake CPU per request."""
    if requests < 1 or rounds < 1 or not connections or min(connections) < 1:
        raise BenchError("requests, rounds and every connection count must be at least 1")
    figures: list[dict[str, Any]] = []
    with FakeProcess() as fake:
        if latency:
            fake.control("latency", {"seconds": str(latency)})
        for count in connections:
            for n in range(1, rounds + 1):
                cpu0 = fake.cpu_seconds()
                rate = fake_alone_rate(fake.base_url, requests, count)
                cpu1 = fake.cpu_seconds()
                fake.control("reset", {})
                figures.append(
                    {
                        "round": n,
                        "connections": count,
                        "requests": requests,
                        "latency": latency,
                        "rate": round(rate, 1),
                        "ideal_rate": round(count / latency, 1) if latency else None,
                        "fake_cpu_us_per_request": (
                            None
                            if cpu0 is None or cpu1 is None
                            else round((cpu1 - cpu0) / requests * 1e6)
                        ),
                        "load_average": round(os.getloadavg()[0], 2),
                    }
                )
    return figures


def _counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="creates per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=_counts, default=[CONCURRENCY], help="e.g. 64,256,512"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--json", action="store_true", help="one JSON array, nothing else")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.latency) and args.latency >= 0):
        parser.error(f"--latency must be a number of seconds >= 0, not {args.latency}")
    try:
        figures = measure_fake(args.requests, args.rounds, args.connections, args.latency)
    except (BenchError, OSError) as exc:
        sys.stderr.write(f"fake bench: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
        return 0
    for row in figures:
        ideal = f" (ideal {row['ideal_rate']:,.0f})" if row["ideal_rate"] else ""
        sys.stdout.write(
            f"{row['connections']:>4} connections, round {row['round']}: "
            f"{row['rate']:>9,.0f} creates/s{ideal}, "
            f"fake CPU {row['fake_cpu_us_per_request']} µs/create, load {row['load_average']}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
