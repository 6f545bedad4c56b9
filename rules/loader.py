"""Load and validate a directory of rule files, all or nothing.

Files are parsed with ruamel.yaml's round-trip loader, which keeps the line and
column of every key and value; pydantic then validates the plain data. Every
problem (YAML syntax, pydantic, and the cross-checks below) is mapped back to
``file:line:column`` with what was expected and, for names, a "did you mean"
suggestion. One bad file means nothing is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rules.checks import check_journey
from rules.conditions import parse_condition
from rules.errors import (
    RuleIssue,
    RulesError,
    RulesValidationError,
    UnknownNameError,
    did_you_mean,
    punctuation_hint,
)
from rules.models import (
    JOURNEY_ID_RE,
    JOURNEY_IDS,
    JOURNEY_MODELS,
    CallQaRule,
    ContactPolicy,
    GenericJourneyRule,
    JourneyBase,
    PrecallNoticeRule,
)
from rules.pydantic_issues import pydantic_issues
from rules.values import show
from rules.yaml_doc import YamlDoc, plain, read_rule_file
from rules.yaml_limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_NODES", "RuleSet", "load_rules"]

POLICY_STEM = "contact_policy"
DEFAULT_LEAD_TIME = timedelta(hours=2)
"""Lead time of the pre-call notice when no precall_notice rule is loaded."""
CALL_QA_STEM = "call_qa"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class RuleSet:
    """Every journey rule and the contact policy, loaded together from one place."""

    journeys: dict[str, JourneyBase]
    contact_policy: ContactPolicy
    source: Path
    files: list[Path] = field(default_factory=list)
    warnings: list[RuleIssue] = field(default_factory=list)
    """Things that load but look like mistakes (a lower tier credited more than a higher one)."""
    call_qa: CallQaRule = field(default_factory=CallQaRule)
    """``call_qa.yaml`` (the defaults when the directory has none)."""

    def journey(self, journey_id: str) -> JourneyBase:
        """The rule for ``journey_id``; raises :class:`UnknownNameError` with a suggestion."""
        try:
            return self.journeys[journey_id]
        except KeyError:
            choices = list(self.journeys) or list(JOURNEY_IDS)
            raise UnknownNameError("journey", journey_id, choices) from None

    @property
    def precall_lead_time(self) -> timedelta:
        """How long after its pre-call notice a call task becomes ready (the precall rule)."""
        rule = self.journeys.get("precall_notice")
        if isinstance(rule, PrecallNoticeRule):
            return timedelta(hours=rule.trigger.lead_time_hours)
        return DEFAULT_LEAD_TIME

    @property
    def hashes(self) -> dict[str, str]:
        """rule_id → content hash, for the audit log."""
        out = {rid: rule.content_hash for rid, rule in self.journeys.items()}
        out[self.contact_policy.rule_id] = self.contact_policy.content_hash
        return out


# --- public entry points ---------------------------------------------------------------


def load_rules(path: Path | str) -> RuleSet:
    """Load ``path`` (a rules directory, or one rule file plus the policy beside it).

    Raises :class:`RulesValidationError` listing every problem in every file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and not p.name.startswith(".")
        )
        base = path
    elif path.is_file():
        files = [path]
        base = path.parent
        sibling = _policy_file(base)
        if path.stem != POLICY_STEM and sibling is not None:
            files.insert(0, sibling)
    else:
        raise RulesError(f"{path}: no such file or directory")
    issues: list[RuleIssue] = []
    policy_path = next((p for p in files if p.stem == POLICY_STEM), None)
    policy: ContactPolicy | None = None
    if policy_path is None:
        issues.append(
            RuleIssue(
                str(base / "contact_policy.yaml"),
                1,
                1,
                "missing contact_policy.yaml: every rules directory needs the contact policy",
                "copy rules/contact_policy.yaml from the vipcare defaults",
            )
        )
    else:
        policy, found = _load_policy(policy_path)
        issues += found
    qa_path = next((p for p in files if p.stem == CALL_QA_STEM), None)
    call_qa: CallQaRule | None = CallQaRule()
    if qa_path is not None:
        call_qa, found = _load_settings_file(qa_path, CallQaRule)
        issues += found
    journeys: dict[str, JourneyBase] = {}
    seen_files: dict[str, Path] = {}
    for file in files:
        if file in (policy_path, qa_path):
            continue
        rule, found = _load_journey(file, policy)
        issues += found
        if rule is None:
            continue
        if rule.journey in seen_files:
            issues.append(
                RuleIssue(
                    str(file),
                    1,
                    1,
                    f"journey {rule.journey!r} is already defined in {seen_files[rule.journey]}",
                    "keep one file per journey",
                )
            )
            continue
        seen_files[rule.journey] = file
        journeys[rule.journey] = rule
    if policy is None or call_qa is None or any(i.severity == "error" for i in issues):
        raise RulesValidationError(issues)
    return RuleSet(
        journeys=journeys,
        contact_policy=policy,
        source=path,
        files=files,
        warnings=issues,
        call_qa=call_qa,
    )


def _policy_file(directory: Path) -> Path | None:
    for suffix in YAML_SUFFIXES:
        candidate = directory / f"{POLICY_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load_policy(path: Path) -> tuple[ContactPolicy | None, list[RuleIssue]]:
    doc = read_rule_file(path)
    if doc.tree is None:
        return None, doc.issues
    data = plain(doc.tree)
    if "journey" in data:
        doc.issue(
            ("journey",),
            "contact_policy.yaml is the contact policy, not a journey",
            "move the journey to its own file named after it",
            at_key=True,
        )
        return None, doc.issues
    try:
        policy = ContactPolicy.model_validate(data)
    except ValidationError as exc:
        doc.add(pydantic_issues(exc, ContactPolicy))
        return None, doc.issues
    policy.stamp(doc.content_hash, path)
    return policy, doc.issues


def _load_settings_file(
    path: Path, model: type[CallQaRule]
) -> tuple[CallQaRule | None, list[RuleIssue]]:
    """A rule file that is not a journey (``call_qa.yaml``): one pydantic model."""
    doc = read_rule_file(path)
    if doc.tree is None:
        return None, doc.issues
    try:
        rule = model.model_validate(plain(doc.tree))
    except ValidationError as exc:
        doc.add(pydantic_issues(exc, model))
        return None, doc.issues
    rule.stamp(doc.content_hash, path)
    return rule, doc.issues


# --- journeys --------------------------------------------------------------------------


def _load_journey(
    path: Path, policy: ContactPolicy | None
) -> tuple[JourneyBase | None, list[RuleIssue]]:
    doc = read_rule_file(path)
    if doc.tree is None:
        return None, doc.issues
    data: dict[Any, Any] = plain(doc.tree)
    model = _journey_model(data, path, doc)
    if model is None:
        return None, doc.issues
    _parse_conditions(data, doc)
    doc.add(check_journey(model, data, policy))
    try:
        rule = model.model_validate(data)
    except ValidationError as exc:
        doc.add(pydantic_issues(exc, model))
        return None, doc.issues
    if doc.has_errors:
        return None, doc.issues
    rule.stamp(doc.content_hash, path)
    return rule, doc.issues


def _journey_model(data: dict[Any, Any], path: Path, doc: YamlDoc) -> type[JourneyBase] | None:
    """The model this file declares: a built-in journey, or ``kind: generic`` for a new one."""
    stem = path.stem
    declared = data.get("journey")
    kind = data.get("kind")
    builtin = ", ".join(JOURNEY_IDS)
    if kind is not None and kind != "generic":
        doc.issue(
            ("kind",),
            f"unknown kind {show(kind)}; the only kind is 'generic' (a journey declared in YAML"
            " alone)",
            did_you_mean(kind, ["generic"]),
        )
        return None
    if "journey" not in data:
        doc.issue(
            (),
            "missing 'journey': expected the journey id (the file name): one of the built-in"
            f" journeys ({builtin}), or a new id with kind: generic",
            f"add the line: journey: {stem}",
        )
        return None
    if kind == "generic":
        if declared in JOURNEY_MODELS:
            doc.issue(
                ("kind",),
                f"{declared!r} is a built-in journey; kind: generic declares a new one",
                "remove the line kind: generic, or give the journey another id",
                at_key=True,
            )
            return None
        if not isinstance(declared, str) or not re.fullmatch(JOURNEY_ID_RE, declared):
            doc.issue(
                ("journey",),
                f"{show(declared)} is not a journey id; use 2 to 32 lowercase letters, digits"
                " and _, starting with a letter (e.g. points_reminder)",
                punctuation_hint(declared) if isinstance(declared, str) else None,
            )
            return None
    elif declared not in JOURNEY_MODELS:
        close = did_you_mean(declared, JOURNEY_IDS)
        doc.issue(
            ("journey",),
            f"unknown journey {show(declared)}; the built-in journeys are {builtin}; a new"
            " journey needs the line kind: generic",
            close or "add the line: kind: generic",
        )
        return None
    if stem != declared:
        doc.issue(
            ("journey",),
            f"file {path.name} declares journey {declared!r}; each journey lives in a file"
            " named after it",
            f"rename the file to {declared}.yaml",
        )
    return GenericJourneyRule if kind == "generic" else JOURNEY_MODELS[str(declared)]


def _parse_conditions(data: dict[Any, Any], doc: YamlDoc) -> None:
    """Replace every condition (audience, each action's ``when``) by its parsed tree.

    A broken condition is reported here with its exact path and replaced by
    "everyone", so pydantic does not report it a second time.
    """
    if "audience" in data:
        cond, found = parse_condition(data["audience"], ("audience",))
        doc.add(found)
        data["audience"] = cond
    trigger = data.get("trigger")
    if data.get("kind") == "generic" and isinstance(trigger, dict) and "condition" in trigger:
        cond, found = parse_condition(trigger["condition"], ("trigger", "condition"))
        doc.add(found)
        trigger["condition"] = cond
    for list_key in ("actions", "on_deadline"):
        entries = data.get(list_key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            for name, spec in entry.items():
                if isinstance(spec, dict) and "when" in spec:
                    cond, found = parse_condition(spec["when"], (list_key, i, name, "when"))
                    doc.add(found)
                    spec["when"] = cond
