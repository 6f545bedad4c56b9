"""Hostile rule files: alias bombs, loops, deep nesting, huge files and floods of problems.

Defect 2 of issue 12: a YAML "billion laughs" grew past 1.8 GB in 90 s and hung
every command that loads rules; a 9.6 MB file took 148 s and printed 100,000
problems. Each limit is reported at file:line:col like any other problem.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_rules_loader import rules_copy
from typer.testing import CliRunner

from rules import load_rules
from rules.errors import RuleIssue, RulesValidationError
from rules.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from vipcare.cli import app
from vipcare.settings import get_settings

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

BOMB = """\
journey: callback
description: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def issues_of(directory: Path) -> list[RuleIssue]:
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    return caught.value.issues


def test_a_billion_laughs_is_refused_at_the_alias_that_overflows(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    (directory / "callback.yaml").write_text(BOMB, encoding="utf-8")
    [issue] = issues_of(directory)
    # Lines 1-5 hold about 12,350 values once expanded; each *d on line 6 adds 11,111,
    # so the 8th one (column 36) is the first past 100,000.
    assert MAX_NODES == 100_000
    assert issue.file.endswith("callback.yaml")
    assert (issue.line, issue.column) == (6, 36)
    assert "alias *d" in issue.message and "100,000" in issue.message
    assert issue.suggestion


def test_an_alias_inside_its_own_anchor_is_a_loop(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    text = "journey: callback\naudience: &loop\n  all:\n    - *loop\n"
    (directory / "callback.yaml").write_text(text, encoding="utf-8")
    [issue] = issues_of(directory)
    assert (issue.line, issue.column) == (4, 7)
    assert "alias *loop" in issue.message and "inside" in issue.message


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    text = (directory / "callback.yaml").read_text(encoding="utf-8")
    text = text.replace("audience:\n", "audience: &who\n", 1)
    text += "x-reuse: {copy: *who}\n"  # an extra key still fails, but not because of the alias
    (directory / "callback.yaml").write_text(text, encoding="utf-8")
    [issue] = issues_of(directory)
    assert "unknown field 'x-reuse'" in issue.message
    grace = (directory / "grace_credit.yaml").read_text(encoding="utf-8")
    grace = grace.replace(
        "  amount_by_tier:", "  base: &amounts {gold: '10.00'}\n  amount_by_tier:", 1
    )
    (directory / "grace_credit.yaml").write_text(grace, encoding="utf-8")
    shutil.copyfile(RULES_DIR / "callback.yaml", directory / "callback.yaml")
    [issue] = issues_of(directory)
    assert "unknown field 'base' in trigger" in issue.message  # the anchor itself is fine


def test_nesting_deeper_than_the_limit_is_refused_where_it_starts(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    depth = MAX_DEPTH + 10
    text = "journey: callback\naudience: " + "[" * depth + "]" * depth + "\n"
    (directory / "callback.yaml").write_text(text, encoding="utf-8")
    [issue] = issues_of(directory)
    assert issue.line == 2
    assert f"nested deeper than {MAX_DEPTH} levels" in issue.message
    # Thousands of levels used to end in a RecursionError traceback.
    text = "journey: callback\naudience: " + "[" * 5000 + "]" * 5000 + "\n"
    (directory / "callback.yaml").write_text(text, encoding="utf-8")
    [issue] = issues_of(directory)
    assert (issue.line, issue.column) == (2, 11 + MAX_DEPTH - 1)
    deep_block = (
        "journey: callback\n"
        + "".join("  " * i + f"k{i}:\n" for i in range(depth))
        + "  " * depth
        + "x: 1\n"
    )
    (directory / "callback.yaml").write_text(deep_block, encoding="utf-8")
    [issue] = issues_of(directory)
    assert f"nested deeper than {MAX_DEPTH} levels" in issue.message


def test_a_file_over_the_size_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    big = "journey: callback\ndescription: x\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1)
    (directory / "callback.yaml").write_text(big, encoding="utf-8")
    [issue] = issues_of(directory)
    assert (issue.line, issue.column) == (1, 1)
    assert f"at most {MAX_FILE_BYTES // 1024} KB" in issue.message


def test_problems_are_capped_per_file_and_overall_but_all_are_counted(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    for journey in ("callback", "birthday", "plan_fit", "grace_credit", "precall_notice"):
        path = directory / f"{journey}.yaml"
        extra = "".join(f"unknown_{i}: {i}\n" for i in range(300))
        path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    error = caught.value
    assert error.total == len(error.issues) == 1500
    lines = error.listing()
    shown = [line for line in lines if ": unknown field" in line]
    assert len(shown) == 200  # at most 50 per file, 200 overall
    assert sum("callback.yaml" in line for line in shown) == 50
    assert any("… and 250 more problems in" in line for line in lines)
    assert lines[-1] == "… and 1300 more problems (1500 in all)"
    assert str(error).count("\n") < 220


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "command",
    [
        ["rules", "check"],
        ["rules", "explain", "callback", "C001", "--date", "2026-11-21"],
        ["rules", "preview", "callback", "--date", "2026-11-21"],
    ],
)
def test_every_rules_command_answers_a_bomb_with_a_located_error(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    directory = rules_copy(tmp_path)
    (directory / "callback.yaml").write_text(BOMB, encoding="utf-8")
    monkeypatch.setenv("VIPCARE_RULES_DIR", str(directory))
    result = cli.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{directory / 'callback.yaml'}:6:36: " in result.output
    assert "Traceback" not in result.output
