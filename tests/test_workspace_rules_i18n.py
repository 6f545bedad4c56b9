"""``rules/call_qa.yaml`` (loaded next to the contact policy, never as a journey) and how
the workspace picks a reader's language (the catalogues: ``test_workspace_catalogue.py``)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from rules import load_rules
from rules.errors import RulesValidationError
from vipcare.web.i18n import accepted, negotiate, pick_locale

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"


def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("*.py", "*.json", "__*"))
    return target


def test_the_shipped_call_qa_rule_samples_ten_percent():
    ruleset = load_rules(RULES_DIR)
    assert ruleset.call_qa.share == Decimal("0.10")
    assert ruleset.call_qa.outcomes == ["reached", "declined", "plan_changed"]
    assert ruleset.call_qa.rule_id == "call_qa" and len(ruleset.call_qa.content_hash) == 64
    assert "call_qa" not in ruleset.journeys


def test_without_the_file_the_defaults_apply(tmp_path):
    directory = rules_copy(tmp_path)
    (directory / "call_qa.yaml").unlink()
    rule = load_rules(directory).call_qa
    assert rule.share == Decimal("0.10") and rule.content_hash == ""


@pytest.mark.parametrize(
    ("text", "line", "message", "suggestion"),
    [
        ('share: "1.5"\n', 1, "expected a value <= 1", None),
        ('share: "0"\n', 1, "share must be above 0", None),
        ('share: "0.2"\noutcomes: [reched]\n', 2, "'reched' is not allowed here", "reached"),
        ('share: "0.2"\nsaed: x\n', 2, "unknown field 'saed'", "seed"),
    ],
)
def test_a_bad_call_qa_file_is_reported_at_its_line(tmp_path, text, line, message, suggestion):
    directory = rules_copy(tmp_path)
    (directory / "call_qa.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    (issue,) = caught.value.issues
    assert Path(issue.file).name == "call_qa.yaml" and issue.line == line
    assert message in issue.message, str(issue)
    if suggestion:
        assert issue.suggestion and suggestion in issue.suggestion


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "zh-CN"),
        ("", "zh-CN"),
        ("en-GB,en;q=0.9", "en"),
        ("zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("de-DE,en;q=0.5,zh;q=0.4", "en"),
        ("en;q=0,zh-CN;q=0.1", "zh-CN"),
        ("fr, de", "zh-CN"),
        ("en;q=bogus", "zh-CN"),
        ("zh-Hant-TW, en;q=0.5", "zh-CN"),  # Chinese serves a Traditional reader better
        ("EN-us", "en"),
        ("*", "zh-CN"),
        ("fr;q=0.9, en;q=0.8, zh;q=0.7", "en"),
        ("zh-CN;q=0.5, en", "en"),
    ],
)
def test_the_browser_language_is_negotiated(header, locale):
    assert negotiate(header) == locale


def test_the_saved_setting_wins_then_the_cookie_then_the_browser():
    assert pick_locale("en", "zh-CN", "zh-CN") == "en"
    assert pick_locale(None, "en", "zh-CN") == "en"
    assert pick_locale(None, "xx", "en") == "en"
    assert pick_locale(None, None, None) == "zh-CN"


def test_the_header_is_read_in_order_of_preference():
    assert accepted("de;q=0.2, en-GB, zh;q=0.9, fr;q=0") == ["en-GB", "zh", "de"]
    assert accepted("en;q=x, zh") == ["zh"]
