"""Run one fuzz target under atheris (libFuzzer, coverage-guided).

    python -m fuzz.run TARGET [--seconds N] [--seed S] [--corpus DIR] [--artifacts DIR]

TARGET is one of ``rules``, ``templates``, ``csv``, ``webhooks``. The seed
corpus in ``fuzz/corpus/TARGET`` is copied into ``--corpus`` (a scratch
directory by default), where libFuzzer adds the inputs that reach new code.
A crash, a hang over 10 s or more than 2 GB of memory writes the input to
``--artifacts`` and exits non-zero; rerun it with
``python -m fuzz.run TARGET --reproduce FILE``. ``scripts/fuzz`` runs all four.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
INSTRUMENTED = {
    "rules": ["rules", "ruamel"],
    "templates": ["rules", "jinja2", "markupsafe"],
    "csv": ["crm"],
    "webhooks": ["notifications", "crm"],
}
"""What each target's coverage feedback comes from (instrumenting everything costs ~10 s)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["rules", "templates", "csv", "webhooks"])
    default_seconds = int(os.environ.get("VIPCARE_FUZZ_SECONDS", "60"))
    parser.add_argument("--seconds", type=int, default=default_seconds)
    parser.add_argument("--seed", type=int, default=None, help="libFuzzer seed (printed)")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--reproduce", type=Path, default=None, help="run one saved input")
    args = parser.parse_args(argv)

    import atheris  # only the fuzzing run needs it

    with atheris.instrument_imports(include=INSTRUMENTED[args.target]):
        from fuzz import targets

    work = Path(tempfile.mkdtemp(prefix=f"vipcare-fuzz-{args.target}-"))
    targets.prepare(work / "workspace", args.target)
    target = targets.TARGETS[args.target]
    if args.reproduce is not None:
        target(args.reproduce.read_bytes())
        sys.stdout.write(f"{args.reproduce}: no finding\n")
        return 0

    corpus = args.corpus or work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for seed_file in (CORPUS / args.target).glob("*"):
        shutil.copyfile(seed_file, corpus / seed_file.name)
    artifacts = args.artifacts or work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    sys.stdout.write(f"fuzz target {args.target}: seed {seed}, {args.seconds} s, corpus {corpus}\n")
    sys.stdout.flush()
    libfuzzer = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-seed={seed}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()
    return 0  # pragma: no cover - atheris.Fuzz() exits the process


if __name__ == "__main__":
    sys.exit(main())
