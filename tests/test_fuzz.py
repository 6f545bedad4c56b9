"""Atheris fuzzing of the four hostile-input targets, at a small budget in every test run.

Each target runs in its own process for ``VIPCARE_FUZZ_SECONDS`` (default 4)
seconds, with a fresh seed that is printed: a finding fails the test and names
the seed and the saved input, and ``python -m fuzz.run TARGET --reproduce FILE``
replays it. ``scripts/fuzz`` runs the same targets for longer (see
docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("VIPCARE_FUZZ_SECONDS", "4"))

pytest.importorskip("atheris", reason="atheris is part of the test extras: pip install -e .[test]")


@pytest.mark.parametrize("target", ["rules", "templates", "csv", "webhooks"])
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz.run",
            target,
            "--seconds",
            str(SECONDS),
            "--corpus",
            str(tmp_path / "corpus"),
            "--artifacts",
            str(artifacts),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    output = result.stdout + result.stderr
    seed = re.search(r"seed (\d+)", output)
    runs = re.search(r"Done (\d+) runs", output)
    findings = sorted(p.name for p in artifacts.glob("*")) if artifacts.exists() else []
    summary = (
        f"target {target}, seed {seed.group(1) if seed else '?'}, findings {findings}"
        f" in {artifacts} (replay: python -m fuzz.run {target} --reproduce FILE)"
    )
    assert result.returncode == 0 and not findings, f"{summary}\n{output[-4000:]}"
    assert runs is not None and int(runs.group(1)) > 0, f"{summary}: no runs\n{output[-2000:]}"
    sys.stdout.write(f"{summary}: {runs.group(1)} inputs in {SECONDS} s\n")
