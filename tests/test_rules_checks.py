"""The checks marketing ops asked for: literal braces, money typos, swapped tiers, full-width
punctuation and tabs — each reported at its line and column, with a hint in plain words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rules import RulesValidationError, load_rules
from rules.errors import RuleIssue

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


def rules_with(tmp_path: Path, name: str, text: str) -> Path:
    """A copy of the shipped rules with ``name`` replaced (or added) by ``text``."""
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("*.json"))
    (target / name).write_text(text, encoding="utf-8")
    return target


def errors(directory: Path) -> list[RuleIssue]:
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    return [i for i in caught.value.issues if i.severity == "error"]


def shipped(name: str) -> str:
    return (RULES_DIR / name).read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_single_brace_placeholder_is_refused_with_the_fix(tmp_path: Path) -> None:
    text = shipped("grace_credit.yaml").replace("请于{{ deadline }}前充值", "请于{deadline}前充值")
    (issue,) = errors(rules_with(tmp_path, "grace_credit.yaml", text))
    assert issue.line == line_of(text, "请于{deadline}前充值")
    assert "{deadline} has single braces" in issue.message
    assert issue.suggestion == "write {{ deadline }}"


def test_a_grace_amount_typed_in_fen_is_refused_with_the_likely_meaning(tmp_path: Path) -> None:
    text = shipped("grace_credit.yaml").replace('gold: "10.00"', 'gold: "1500"')
    (issue,) = errors(rules_with(tmp_path, "grace_credit.yaml", text))
    assert issue.line == line_of(text, '"1500"')
    assert "1500.00 is above the grace_credit cap of 100.00" in issue.message
    assert issue.suggestion == "amounts are in yuan with 2 decimals: did you mean 15.00?"


def test_a_big_birthday_perk_is_refused_against_the_default_cap(tmp_path: Path) -> None:
    text = shipped("birthday.yaml").replace('amount: "20.00"', 'amount: "50000.00"')
    (issue,) = errors(rules_with(tmp_path, "birthday.yaml", text))
    assert "50000.00 is above the birthday cap of 50.00" in issue.message


def test_a_lower_tier_credited_more_than_a_higher_one_loads_with_a_warning(
    tmp_path: Path,
) -> None:
    text = shipped("grace_credit.yaml").replace(
        'gold: "10.00", platinum: "20.00"', 'gold: "30.00", platinum: "20.00"'
    )
    ruleset = load_rules(rules_with(tmp_path, "grace_credit.yaml", text))
    (warning,) = ruleset.warnings
    assert warning.severity == "warning"
    assert warning.line == line_of(text, 'gold: "30.00"')
    assert "gold (30.00) gets more than platinum (20.00), a higher tier" in warning.message
    assert f":{warning.column}: warning: gold (30.00)" in str(warning)


def test_a_full_width_colon_is_reported_on_its_own_line_with_a_hint(tmp_path: Path) -> None:
    text = shipped("callback.yaml").replace("  escalate_after_days: 7", "  escalate_after_days： 7")
    (issue,) = errors(rules_with(tmp_path, "callback.yaml", text))
    assert issue.line == line_of(text, "escalate_after_days：")
    assert issue.column == len("  escalate_after_days") + 1
    assert "full-width '：'" in issue.message
    assert issue.suggestion is not None and "ASCII ':' followed by a space" in issue.suggestion


def test_a_full_width_comma_in_a_list_is_an_error_on_its_line(tmp_path: Path) -> None:
    old = "opt_out_keywords: [STOP, STOPALL"
    assert old in shipped("contact_policy.yaml")
    text = shipped("contact_policy.yaml").replace(old, "opt_out_keywords: [STOP， STOPALL")
    (issue,) = errors(rules_with(tmp_path, "contact_policy.yaml", text))
    assert (issue.line, issue.message) == (
        line_of(text, "STOP，"),
        "a full-width '，' inside a [...] list joins two items into one",
    )
    assert issue.suggestion is not None and "ASCII ','" in issue.suggestion


def test_a_curly_quoted_value_loads_with_a_warning(tmp_path: Path) -> None:
    text = shipped("contact_policy.yaml").replace('hotline: "10086"', "hotline: “10086”")
    ruleset = load_rules(rules_with(tmp_path, "contact_policy.yaml", text))
    (warning,) = ruleset.warnings
    assert warning.line == line_of(text, "hotline") and "curly quote" in warning.message


def test_a_tab_in_the_indentation_is_named(tmp_path: Path) -> None:
    text = shipped("callback.yaml").replace("  max_attempts: 3", "\tmax_attempts: 3")
    (issue,) = errors(rules_with(tmp_path, "callback.yaml", text))
    assert issue.line == line_of(text, "\tmax_attempts")
    assert issue.suggestion == "indent with spaces, not tabs"


def test_validity_that_only_another_journey_can_honour_is_refused(tmp_path: Path) -> None:
    text = shipped("birthday.yaml").replace("valid_until: end_of_day", "valid_until: deadline")
    (issue,) = errors(rules_with(tmp_path, "birthday.yaml", text))
    assert issue.message == "valid_until: deadline only applies to the grace_credit journey"
