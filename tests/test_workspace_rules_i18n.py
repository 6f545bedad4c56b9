"""``rules/call_qa.yaml`` (loaded next to the contact policy, never as a journey) and the
workspace's translation catalogue (every key in both languages, every key used exists)."""

from __future__ import annotations

import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from rules import load_rules
from rules.errors import RulesValidationError
from vipcare.web.i18n import LOCALES, MESSAGES, negotiate, pick_locale, translate

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
WEB = ROOT / "vipcare" / "web"


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


def test_every_message_has_both_languages_and_the_same_placeholders():
    for key, texts in MESSAGES.items():
        assert len(texts) == len(LOCALES) and all(t.strip() for t in texts), key
        zh, en = (set(re.findall(r"{(\w+)}", t)) for t in texts)
        assert zh == en, f"{key}: {zh} != {en}"


def _keys_used() -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r"""\bt\(\s*["']([a-z_.]+)["']""")
    for path in [*WEB.rglob("*.html"), *WEB.rglob("*.py")]:
        found |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_key_the_pages_use_is_in_the_catalogue():
    used = _keys_used()
    assert len(used) > 100
    assert sorted(used - set(MESSAGES)) == []


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
    ],
)
def test_the_browser_language_is_negotiated(header, locale):
    assert negotiate(header) == locale


def test_the_saved_setting_wins_then_the_cookie_then_the_browser():
    assert pick_locale("en", "zh-CN", "zh-CN") == "en"
    assert pick_locale(None, "en", "zh-CN") == "en"
    assert pick_locale(None, "xx", "en") == "en"
    assert translate("en", "showing_n_of_m", n=3, m=9) == "Showing 3 of 9"
    assert translate("zh-CN", "showing_n_of_m", n=3, m=9) == "显示 3 / 共 9 条"
