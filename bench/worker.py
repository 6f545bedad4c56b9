"""Run one scenario in this (child) process and write its result, with the peak RSS, as JSON.

    python -m bench.worker SCENARIO PARAMS_JSON OUT_JSON

The parent (:mod:`bench.cli`) starts one child per scenario so that each
scenario's peak resident memory is its own (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def scenario(name: str) -> Callable[..., dict[str, Any]]:
    """The scenario function called ``name``."""
    from bench import floor, naive, scenarios

    table: dict[str, Callable[..., dict[str, Any]]] = {
        "seed": scenarios.seed,
        "care_day": scenarios.care_day,
        "warm_care_day": scenarios.warm_care_day,
        "previews": scenarios.previews,
        "my_day": scenarios.my_day,
        "dispatch": scenarios.dispatch,
        "floor": floor.measure_floor,
        "naive": naive.measure_naive,
    }
    return table[name]


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    name, params, out = argv[0], json.loads(argv[1]), Path(argv[2])
    try:
        result = scenario(name)(**params)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, detail on stderr
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {first}"}))
        return 1
    result["peak_rss_mib"] = peak_rss_mib()
    out.write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
