"""Rule files: the shipped defaults load, and every kind of mistake is reported at its
line and column with what was expected (and a suggestion where one makes sense)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from rules import RulesValidationError, load_rules
from rules.conditions import Compare, parse
from rules.errors import ConditionError, RuleIssue, TemplateRenderError, UnknownNameError
from rules.models import (
    BirthdayRule,
    CallbackRule,
    CreateTask,
    GraceCreditRule,
    GrantCredit,
    PlanFitRule,
    PrecallNoticeRule,
    SendSms,
    Suspend,
)
from rules.schema import json_schema, json_schema_text
from rules.templates import render
from rules.yaml_doc import plain

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
FIXTURES = Path(__file__).resolve().parent / "rules_fixtures"

# Line numbers in the cases below refer to these bases; keep them stable.
CALLBACK = """\
journey: callback
description: Periodic callbacks
audience:
  all:
    - status: active
trigger:
  cadence_days: {diamond: 30, gold: 90}
  escalate_after_days: 7
  no_answer_retry_days: 2
  max_attempts: 3
actions:
  - create_task: {kind: callback}
"""

BIRTHDAY = """\
journey: birthday
description: Birthday greeting
audience:
  all:
    - tier: {gte: gold}
actions:
  - send_sms: {template: greeting}
  - grant_credit: {amount: "20.00", when: {tier: diamond}}
templates:
  greeting:
    category: marketing
    text:
      zh-CN: "生日快乐，{{ name }}！回TD退订"
      en: "Happy birthday, {{ name }}! Reply STOP to opt out"
"""

GRACE = """\
journey: grace_credit
description: Grace credit
audience:
  all:
    - balance: {lt: "0.00"}
trigger:
  threshold: "0.00"
  amount_by_tier: {gold: "10.00"}
  topup_days: 3
actions:
  - grant_credit: {}
  - send_sms: {template: grace_notice}
on_deadline:
  - suspend: {}
templates:
  grace_notice:
    category: service
    text:
      zh-CN: "已为您充值{{ amount }}元，请于{{ deadline }}前缴费。"
      en: "We added {{ amount }}; please top up by {{ deadline }}."
"""

POLICY = """\
send_window: {start: "09:00", end: "20:00"}
categories:
  service: {per_day: 3, per_week: 10}
  marketing: {per_day: 1, per_week: 2}
opt_out_keywords: [STOP, TD, 退订]
opt_in_keywords: [START]
unsubscribe_text:
  zh-CN: "回TD退订"
  en: "Reply STOP to opt out"
"""

BASES = {"callback": CALLBACK, "birthday": BIRTHDAY, "grace_credit": GRACE}


@dataclass(frozen=True)
class Case:
    id: str
    file: str
    text: str
    line: int
    message: str
    suggestion: str | None = None
    column: int | None = None


def edit(base: str, old: str, new: str) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


C, B, G = CALLBACK, BIRTHDAY, GRACE
CASES = [
    # --- audience conditions ---------------------------------------------------------
    Case(
        "unknown-field",
        "callback.yaml",
        edit(C, "- status: active", "- statuss: active"),
        5,
        "unknown field 'statuss'",
        "did you mean 'status'?",
        7,
    ),
    Case(
        "unknown-operator",
        "birthday.yaml",
        edit(B, "{gte: gold}", "{gtee: gold}"),
        5,
        "unknown operator 'gtee' for tier",
        "did you mean 'gte'?",
        14,
    ),
    Case(
        "bad-tier",
        "birthday.yaml",
        edit(B, "{gte: gold}", "{gte: gld}"),
        5,
        "'gld' is not a tier",
        "did you mean 'gold'?",
        19,
    ),
    Case(
        "bad-status",
        "callback.yaml",
        edit(C, "status: active", "status: activ"),
        5,
        "'activ' is not a status",
        "did you mean 'active'?",
        15,
    ),
    Case(
        "op-not-for-field",
        "callback.yaml",
        edit(C, "status: active", "clubs: {gt: music}"),
        5,
        "operator 'gt' does not apply to clubs",
    ),
    Case(
        "money-3-decimals",
        "callback.yaml",
        edit(C, "status: active", "balance: {lt: 10.125}"),
        5,
        "more than 2 decimal places",
    ),
    Case(
        "money-not-a-number",
        "callback.yaml",
        edit(C, "status: active", 'balance: {lt: "ten"}'),
        5,
        "expected an amount",
    ),
    Case(
        "between-one-value",
        "callback.yaml",
        edit(C, "status: active", "age: {between: [30]}"),
        5,
        "between takes exactly two values",
    ),
    Case(
        "between-reversed",
        "callback.yaml",
        edit(C, "status: active", "age: {between: [40, 30]}"),
        5,
        "low <= high",
        "write [30, 40]",
    ),
    Case(
        "in-needs-list",
        "callback.yaml",
        edit(C, "status: active", "tier: {in: gold}"),
        5,
        "in takes a list",
    ),
    Case(
        "not-with-list",
        "callback.yaml",
        edit(C, "- status: active", "- not: [{tier: gold}]"),
        5,
        "'not' takes one condition",
    ),
    Case(
        "empty-all",
        "callback.yaml",
        edit(C, "  all:\n    - status: active", "  all: []"),
        4,
        "'all' needs a non-empty list",
    ),
    Case(
        "is-null-not-nullable",
        "callback.yaml",
        edit(C, "status: active", "status: {is_null: true}"),
        5,
        "operator 'is_null' does not apply to status",
    ),
    Case(
        "boolean-as-text",
        "callback.yaml",
        edit(C, "status: active", 'sms_opt_out: "no"'),
        5,
        "expected true or false",
    ),
    Case(
        "integer-out-of-range",
        "callback.yaml",
        edit(C, "status: active", "age: {gte: 500}"),
        5,
        "from 0 to 150",
    ),
    Case(
        "unknown-timezone",
        "callback.yaml",
        edit(C, "status: active", "timezone: Asia/Shanghia"),
        5,
        "not a known time zone",
        "did you mean 'Asia/Shanghai'?",
    ),
    Case(
        "bad-locale",
        "callback.yaml",
        edit(C, "status: active", "locale: English"),
        5,
        "is not a locale",
    ),
    Case(
        "when-unknown-field",
        "birthday.yaml",
        edit(B, "when: {tier: diamond}", "when: {teir: diamond}"),
        8,
        "unknown field 'teir'",
        "did you mean 'tier'?",
    ),
    # --- journey id and top level ------------------------------------------------------
    Case(
        "unknown-journey",
        "birthday.yaml",
        edit(B, "journey: birthday", "journey: birthdy"),
        1,
        "unknown journey 'birthdy'",
        "did you mean 'birthday'?",
        10,
    ),
    Case(
        "file-name-mismatch",
        "plan_fit.yaml",
        C,
        1,
        "declares journey 'callback'",
        "rename the file to callback.yaml",
    ),
    Case(
        "missing-journey",
        "callback.yaml",
        edit(C, "journey: callback\n", ""),
        1,
        "missing 'journey'",
        "add the line: journey: callback",
    ),
    Case(
        "unknown-top-level",
        "callback.yaml",
        edit(C, "description:", "descripton:"),
        2,
        "unknown field 'descripton'",
        "did you mean 'description'?",
        1,
    ),
    Case(
        "empty-description",
        "callback.yaml",
        edit(C, "Periodic callbacks", '""'),
        2,
        "must not be empty",
    ),
    Case(
        "enabled-not-bool",
        "callback.yaml",
        edit(C, "description:", "enabled: maybe\ndescription:"),
        2,
        "expected true or false",
        column=10,
    ),
    # --- triggers ------------------------------------------------------------------------
    Case(
        "unknown-trigger-key",
        "callback.yaml",
        edit(C, "escalate_after_days: 7", "escalate_after: 7"),
        8,
        "unknown field 'escalate_after' in trigger",
        "did you mean 'escalate_after_days'?",
    ),
    Case(
        "missing-trigger-field",
        "callback.yaml",
        edit(C, "  max_attempts: 3\n", ""),
        6,
        "missing required field 'max_attempts' in trigger",
    ),
    Case(
        "cadence-bad-tier-key",
        "callback.yaml",
        edit(C, "gold: 90", "gld: 90"),
        7,
        "'gld' is not allowed here",
        "did you mean 'gold'?",
        31,
    ),
    Case(
        "integer-as-word",
        "callback.yaml",
        edit(C, "escalate_after_days: 7", "escalate_after_days: soon"),
        8,
        "expected a whole number",
    ),
    Case(
        "integer-too-small",
        "callback.yaml",
        edit(C, "escalate_after_days: 7", "escalate_after_days: 0"),
        8,
        "expected a value >= 1",
    ),
    Case(
        "trigger-money-float",
        "grace_credit.yaml",
        edit(G, 'threshold: "0.00"', "threshold: 0.125"),
        7,
        "more than 2 decimal places",
    ),
    Case(
        "share-above-one",
        "plan_fit.yaml",
        "journey: plan_fit\ndescription: d\ntrigger:\n  min_saving_share: 1.5\n"
        '  min_saving_amount: "20.00"\nactions:\n  - create_task: {kind: plan_fit}\n',
        4,
        "expected a value <= 1",
    ),
    # --- actions -------------------------------------------------------------------------
    Case(
        "action-not-allowed",
        "callback.yaml",
        edit(C, "  - create_task: {kind: callback}", '  - grant_credit: {amount: "5.00"}'),
        12,
        "grant_credit is not allowed in actions of the callback journey",
    ),
    Case(
        "unknown-action",
        "callback.yaml",
        edit(C, "- create_task:", "- create_taks:"),
        12,
        "unknown field 'create_taks'",
        "did you mean 'create_task'?",
    ),
    Case(
        "two-actions-in-one",
        "callback.yaml",
        edit(
            C,
            "  - create_task: {kind: callback}",
            "  - create_task: {kind: callback}\n    send_sms: {template: x}",
        ),
        12,
        "each action is exactly one of",
    ),
    Case(
        "wrong-task-kind",
        "callback.yaml",
        edit(C, "{kind: callback}", "{kind: birthday}"),
        12,
        "the callback journey creates callback tasks, not 'birthday'",
    ),
    Case(
        "unknown-task-kind",
        "callback.yaml",
        edit(C, "{kind: callback}", "{kind: calback}"),
        12,
        "'calback' is not allowed here",
        "did you mean 'callback'?",
    ),
    Case(
        "unknown-template-ref",
        "birthday.yaml",
        edit(B, "{template: greeting}", "{template: greting}"),
        7,
        "unknown template 'greting'",
        "did you mean 'greeting'?",
        26,
    ),
    Case(
        "grant-without-amount",
        "birthday.yaml",
        edit(B, 'grant_credit: {amount: "20.00", when', "grant_credit: {when"),
        8,
        "grant_credit needs amount",
    ),
    Case(
        "grace-grant-with-amount",
        "grace_credit.yaml",
        edit(G, "grant_credit: {}", 'grant_credit: {amount: "5.00"}'),
        11,
        "in grace_credit the amount comes from trigger.amount_by_tier",
    ),
    Case(
        "deadline-action-not-allowed",
        "grace_credit.yaml",
        edit(G, "  - suspend: {}", "  - grant_credit: {}"),
        14,
        "grant_credit is not allowed in on_deadline",
    ),
    Case(
        "voice-template-for-sms",
        "birthday.yaml",
        edit(B, "    category: marketing", "    category: marketing\n    channel: voice"),
        7,
        "send_sms needs one with channel: sms",
        "use send_voice",
    ),
    Case(
        "limits-once-per-wrong",
        "birthday.yaml",
        B + "limits:\n  once_per: month\n",
        16,
        "'month' is not allowed here; expected 'year'",
    ),
    # --- templates -----------------------------------------------------------------------
    Case(
        "unknown-template-variable",
        "birthday.yaml",
        edit(B, "生日快乐，{{ name }}", "生日快乐，{{ nmae }}"),
        13,
        "unknown template variable 'nmae'",
        "did you mean 'name'?",
    ),
    Case(
        "variable-of-other-journey",
        "birthday.yaml",
        edit(B, "Happy birthday, {{ name }}!", "Happy birthday! {{ amount }} added."),
        14,
        "unknown template variable 'amount'",
    ),
    Case(
        "template-syntax",
        "birthday.yaml",
        edit(B, "Happy birthday, {{ name }}!", "Hi {{ name }!"),
        14,
        "template syntax error",
    ),
    Case(
        "template-does-not-render",
        "birthday.yaml",
        edit(B, "Happy birthday, {{ name }}!", "Hi {{ name.__class__.__mro__ }}!"),
        14,
        "does not render for a sample customer",
    ),
    Case(
        "missing-unsubscribe",
        "birthday.yaml",
        edit(B, "！回TD退订", "！"),
        13,
        "must contain the unsubscribe wording '回TD退订'",
        "append '回TD退订' to the text",
    ),
    Case(
        "missing-en-text",
        "birthday.yaml",
        edit(B, '      en: "Happy birthday, {{ name }}! Reply STOP to opt out"\n', ""),
        12,
        "missing the required locale(s): en",
    ),
    Case(
        "bad-category",
        "birthday.yaml",
        edit(B, "category: marketing", "category: promo"),
        11,
        "'promo' is not allowed here",
    ),
    Case(
        "bad-template-name",
        "birthday.yaml",
        edit(B, "  greeting:\n", "  Greeting!:\n"),
        10,
        "is not a valid name",
    ),
    Case(
        "no-actions",
        "callback.yaml",
        edit(C, "actions:\n  - create_task: {kind: callback}\n", "actions: []\n"),
        11,
        "needs at least 1 item",
    ),
    # --- contact policy ------------------------------------------------------------------
    Case(
        "policy-window-reversed",
        "contact_policy.yaml",
        edit(POLICY, 'start: "09:00", end: "20:00"', 'start: "21:00", end: "20:00"'),
        1,
        "must be before end",
    ),
    Case(
        "policy-unknown-key",
        "contact_policy.yaml",
        edit(POLICY, "opt_out_keywords:", "opt_out_keyword:"),
        5,
        "unknown field 'opt_out_keyword'",
        "did you mean 'opt_out_keywords'?",
    ),
    Case(
        "policy-missing-en",
        "contact_policy.yaml",
        edit(POLICY, '  en: "Reply STOP to opt out"\n', ""),
        7,
        "missing the required locale(s): en",
    ),
    Case(
        "policy-week-below-day",
        "contact_policy.yaml",
        edit(POLICY, "{per_day: 3, per_week: 10}", "{per_day: 3, per_week: 2}"),
        3,
        "per_week (2) must be at least per_day (3)",
    ),
    Case(
        "policy-keyword-both-ways",
        "contact_policy.yaml",
        edit(POLICY, "[START]", "[START, stop]"),
        1,
        "keywords both opt out and opt in: stop",
    ),
    # --- YAML itself ---------------------------------------------------------------------
    Case(
        "duplicate-key",
        "callback.yaml",
        (FIXTURES / "duplicate_key.yaml").read_text(),
        7,
        "duplicate key 'escalate_after_days'",
        "remove or merge the repeated key",
        3,
    ),
    Case(
        "unclosed-flow-mapping",
        "callback.yaml",
        (FIXTURES / "unclosed_flow.yaml").read_text(),
        5,
        "YAML syntax error",
    ),
    Case(
        "tab-indentation",
        "callback.yaml",
        (FIXTURES / "tab_indent.yaml").read_text(),
        4,
        "YAML syntax error",
        "indent with spaces, not tabs",
        1,
    ),
    Case(
        "top-level-list",
        "callback.yaml",
        (FIXTURES / "top_level_list.yaml").read_text(),
        1,
        "expected a mapping (key: value lines) at the top; got a list",
    ),
    Case("empty-file", "callback.yaml", "", 1, "the file is empty"),
]


def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    target.mkdir()
    for source in RULES_DIR.glob("*.yaml"):
        shutil.copyfile(source, target / source.name)
    return target


def load_issues(directory: Path) -> list[RuleIssue]:
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    return caught.value.issues


def test_there_are_at_least_30_distinct_malformed_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30
    assert len({c.text for c in CASES}) == len(CASES)


@pytest.mark.parametrize("base", sorted(BASES))
def test_the_bases_of_the_cases_are_valid(tmp_path: Path, base: str) -> None:
    directory = rules_copy(tmp_path)
    (directory / f"{base}.yaml").write_text(BASES[base], encoding="utf-8")
    (directory / "contact_policy.yaml").write_text(POLICY, encoding="utf-8")
    assert base in load_rules(directory).journeys


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_file_is_reported_at_its_line(tmp_path: Path, case: Case) -> None:
    directory = rules_copy(tmp_path)
    (directory / case.file).write_text(case.text, encoding="utf-8")
    issues = load_issues(directory)
    assert {Path(i.file).name for i in issues} == {case.file}, issues
    hits = [i for i in issues if case.message in i.message]
    assert hits, f"no issue says {case.message!r}: {[str(i) for i in issues]}"
    issue = hits[0]
    assert issue.line == case.line, str(issue)
    if case.column is not None:
        assert issue.column == case.column, str(issue)
    if case.suggestion is not None:
        assert issue.suggestion is not None and case.suggestion in issue.suggestion, str(issue)
    assert str(issue).startswith(f"{directory / case.file}:{case.line}:{issue.column}: ")


def test_not_utf8_file(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    shutil.copyfile(FIXTURES / "latin1.yaml", directory / "callback.yaml")
    (issue,) = load_issues(directory)
    assert (issue.line, issue.message) == (2, "the file is not UTF-8 text")
    assert issue.suggestion == "save the file as UTF-8"


def test_every_error_of_a_file_is_reported_in_one_run(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    shutil.copyfile(FIXTURES / "many_errors.yaml", directory / "callback.yaml")
    found = {(i.line, i.message.split(";")[0], i.suggestion) for i in load_issues(directory)}
    assert found == {
        (5, "unknown field 'teir'", "did you mean 'tier'?"),
        (6, "'activ' is not a status", "did you mean 'active'?"),
        (12, "unknown field 'retry_days' in trigger", "did you mean 'no_answer_retry_days'?"),
        (14, "unknown field 'priorty' in actions.create_task", "did you mean 'priority'?"),
    }


def test_missing_contact_policy(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    (directory / "contact_policy.yaml").unlink()
    (issue,) = load_issues(directory)
    assert issue.file.endswith("contact_policy.yaml")
    assert "missing contact_policy.yaml" in issue.message


def test_all_or_nothing_lists_problems_of_every_file(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    (directory / "callback.yaml").write_text(edit(C, "gold: 90", "gld: 90"), encoding="utf-8")
    (directory / "birthday.yaml").write_text(edit(B, "{gte: gold}", "{gte: gld}"), encoding="utf-8")
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    files = sorted(Path(i.file).name for i in caught.value.issues)
    assert files == ["birthday.yaml", "callback.yaml"]
    text = str(caught.value)
    assert text.startswith("2 problems in the rule files:")
    assert "birthday.yaml:5:19: 'gld' is not a tier" in text


def test_valid_files_beside_a_bad_one_are_not_loaded(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    (directory / "callback.yaml").write_text("journey: callback\n", encoding="utf-8")
    with pytest.raises(RulesValidationError):
        load_rules(directory)
    (directory / "callback.yaml").unlink()
    assert set(load_rules(directory).journeys) == {
        "birthday",
        "grace_credit",
        "plan_fit",
        "precall_notice",
        "points_reminder",
        "club_event",
    }


def test_suggestions_for_names() -> None:
    with pytest.raises(ConditionError) as caught:
        parse({"all": [{"tier": {"gte": "gold"}}, {"cluubs": {"contains": "music"}}]})
    assert caught.value.suggestion == "did you mean 'clubs'?"
    ruleset = load_rules(RULES_DIR)
    with pytest.raises(UnknownNameError) as unknown:
        ruleset.journey("grace")
    assert unknown.value.suggestion == "did you mean 'grace_credit'?"
    with pytest.raises(UnknownNameError) as template:
        ruleset.journey("grace_credit").template("grace_notise")
    assert template.value.suggestion == "did you mean 'grace_notice'?"
    with pytest.raises(ConditionError) as far:
        parse({"zzzz": 1})
    assert far.value.suggestion is None


# --- the shipped defaults ----------------------------------------------------------------


def test_shipped_rules_load_with_hashes_and_ids() -> None:
    ruleset = load_rules(RULES_DIR)
    assert set(ruleset.journeys) == {
        "birthday",
        "plan_fit",
        "grace_credit",
        "precall_notice",
        "callback",
        "points_reminder",
        "club_event",
    }
    assert not ruleset.journeys["points_reminder"].enabled  # examples ship disabled
    assert not ruleset.journeys["club_event"].enabled
    rules: list[tuple[str, Any]] = [*ruleset.journeys.items()]
    for rule_id, rule in [*rules, ("contact_policy", ruleset.contact_policy)]:
        assert rule.rule_id == rule_id
        assert rule.source is not None
        assert rule.content_hash == hashlib.sha256(rule.source.read_bytes()).hexdigest()
    assert ruleset.hashes["contact_policy"] == ruleset.contact_policy.content_hash


def test_content_hash_changes_with_the_file_bytes(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    before = load_rules(directory).journeys["callback"].content_hash
    path = directory / "callback.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "# a comment changes the text\n", "utf-8")
    assert load_rules(directory).journeys["callback"].content_hash != before


def test_shipped_defaults_are_the_documented_ones() -> None:
    ruleset = load_rules(RULES_DIR)
    birthday = ruleset.journeys["birthday"]
    assert isinstance(birthday, BirthdayRule)
    assert birthday.limits.once_per == "year"
    assert birthday.trigger.offset_days == 0 and birthday.trigger.feb29_in_common_years == "feb28"
    greeting = birthday.template("greeting")
    assert (greeting.category, greeting.channel) == ("marketing", "sms")
    (sms,) = birthday.actions_of(SendSms)
    assert sms.template == "greeting" and sms.when is None
    (credit,) = birthday.actions_of(GrantCredit)
    assert credit.amount == Decimal("20.00") and credit.when == Compare("tier", "eq", "diamond")
    (task,) = birthday.actions_of(CreateTask)
    assert task.kind == "birthday" and task.when == Compare("tier", "eq", "diamond")

    plan_fit = ruleset.journeys["plan_fit"]
    assert isinstance(plan_fit, PlanFitRule)
    assert plan_fit.trigger.months == 3
    assert plan_fit.trigger.min_saving_share == Decimal("0.15")
    assert plan_fit.trigger.min_saving_amount == Decimal("20.00")
    assert (plan_fit.limits.max_open_tasks, plan_fit.limits.cooldown_after_decline_days) == (1, 90)

    grace = ruleset.journeys["grace_credit"]
    assert isinstance(grace, GraceCreditRule)
    assert grace.trigger.threshold == Decimal("0.00")
    assert grace.trigger.amount_by_tier == {
        "gold": Decimal("10.00"),
        "platinum": Decimal("20.00"),
        "diamond": Decimal("50.00"),
    }
    assert grace.trigger.topup_days == 3 and grace.limits.once_per == "month"
    assert [type(a) for a in grace.action_list] == [GrantCredit, SendSms]
    assert [type(a) for a in grace.deadline_action_list] == [Suspend, SendSms, CreateTask]
    assert grace.template("grace_notice").category == "service"

    precall = ruleset.journeys["precall_notice"]
    assert isinstance(precall, PrecallNoticeRule)
    assert precall.trigger.lead_time_hours == 2
    text = render(
        precall,
        "precall",
        "en",
        {"name": "Ann", "manager_name": "Li Na", "manager_phone": "+8613800138000"},
    )
    assert "your account manager Li Na will call you soon from +8613800138000" in text

    callback = ruleset.journeys["callback"]
    assert isinstance(callback, CallbackRule)
    assert callback.trigger.cadence_days == {
        "diamond": 30,
        "platinum": 60,
        "gold": 90,
        "silver": 180,
    }
    assert (
        callback.trigger.escalate_after_days,
        callback.trigger.no_answer_retry_days,
        callback.trigger.max_attempts,
    ) == (7, 2, 3)

    policy = ruleset.contact_policy
    assert policy.opt_out_keywords == [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "TD",
        "退订",
    ]
    assert policy.opt_in_keywords == ["START", "YES", "UNSTOP"]
    assert policy.unsubscribe_text == {"zh-CN": "回TD退订", "en": "Reply STOP to opt out"}
    assert policy.is_opt_out(" td ") and not policy.is_opt_out("TDX")
    assert (policy.categories.marketing.per_day, policy.categories.marketing.per_week) == (1, 2)


def test_render_falls_back_by_locale_and_refuses_missing_variables() -> None:
    grace = load_rules(RULES_DIR).journey("grace_credit")
    variables = {
        "name": "Ann",
        "amount": "10.00",
        "deadline": "2026-11-24",
        "balance": "-3.00",
        "topup_amount": "3.00",
        "hotline": "10086",
        "not_declared": "ignored",
    }
    assert render(grace, "grace_notice", "en-US", variables).startswith("Dear Ann")
    assert render(grace, "grace_notice", "fr", variables).startswith("尊敬的Ann")
    with pytest.raises(TemplateRenderError, match="'balance' is undefined"):
        render(grace, "grace_notice", "en", {"name": "Ann", "amount": "10.00", "hotline": "1"})


def test_a_single_file_is_checked_with_the_policy_beside_it(tmp_path: Path) -> None:
    directory = rules_copy(tmp_path)
    ruleset = load_rules(directory / "birthday.yaml")
    assert list(ruleset.journeys) == ["birthday"]
    (directory / "birthday.yaml").write_text(edit(B, "！回TD退订", "！"), encoding="utf-8")
    issues = load_issues(directory / "birthday.yaml")
    assert any("unsubscribe wording" in i.message for i in issues)


# --- JSON Schema -------------------------------------------------------------------------


def test_shipped_schema_is_current() -> None:
    assert (RULES_DIR / "schema.json").read_text(encoding="utf-8") == json_schema_text()


def test_schema_accepts_shipped_files_and_flags_typos() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in RULES_DIR.glob("*.yaml"):
        data = json.loads(json.dumps(plain(YAML().load(path.read_text("utf-8"))), default=str))
        assert list(validator.iter_errors(data)) == [], path
    bad = plain(YAML().load(edit(C, "- status: active", "- teir: gold")))
    assert list(validator.iter_errors(json.loads(json.dumps(bad, default=str))))
