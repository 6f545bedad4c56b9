"""Load and validate a directory of rule files, all or nothing.

Files are parsed with ruamel.yaml's round-trip loader, which keeps the line and
column of every key and value; pydantic then validates the plain data. Every
problem (YAML syntax, pydantic, and the cross-checks below) is mapped back to
``file:line:column`` with what was expected and, for names, a "did you mean"
suggestion. One bad file means nothing is loaded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeAlias

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
from rules.yaml_doc import YamlDoc, locate, parse_rule_bytes, plain, read_rule_bytes
from rules.yaml_limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "CheckedFile",
    "RuleSet",
    "RuleSource",
    "check_file",
    "load_rules",
]

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


# --- reading and checking one file at a time ------------------------------------------


@dataclass(frozen=True)
class RuleSource:
    """One rule file's bytes, read once: from the folder, or a copy kept elsewhere.

    ``path`` is where the file lives (and where its problems are reported); the
    bytes may be the last good copy kept in the database (:mod:`rules.live`).
    """

    path: Path
    raw: bytes | None
    unreadable: str | None = None
    """Why the file could not be read (``raw`` is None then)."""

    @classmethod
    def read(cls, path: Path) -> RuleSource:
        raw = read_rule_bytes(path)
        if isinstance(raw, str):
            return cls(path, None, raw)
        return cls(path, raw)

    @property
    def name(self) -> str:
        """The rule id the file must declare: its name without the suffix."""
        return self.path.stem

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.raw).hexdigest() if self.raw is not None else None

    def doc(self) -> YamlDoc:
        if self.raw is None:
            issue = RuleIssue(str(self.path), 1, 1, self.unreadable or "cannot read the file")
            return YamlDoc(self.path, "", None, [issue])
        return parse_rule_bytes(self.path, self.raw)


LoadedRule: TypeAlias = JourneyBase | ContactPolicy | CallQaRule


@dataclass
class CheckedFile:
    """One file checked on its own: the typed rule (None when it has an error) and its issues."""

    source: RuleSource
    rule: LoadedRule | None
    issues: list[RuleIssue]

    @property
    def errors(self) -> list[RuleIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.rule is not None and not self.errors


def file_kind(name: str) -> str:
    """``policy``, ``call_qa`` or ``journey``: how a file named ``name`` is checked."""
    if name == POLICY_STEM:
        return "policy"
    if name == CALL_QA_STEM:
        return "call_qa"
    return "journey"


def check_file(source: RuleSource, policy: ContactPolicy | None) -> CheckedFile:
    """Check one file; a journey is checked against ``policy`` (credit caps, unsubscribe text)."""
    kind = file_kind(source.name)
    found: tuple[LoadedRule | None, list[RuleIssue]]
    if kind == "policy":
        found = _load_policy(source)
    elif kind == "call_qa":
        found = _load_settings_file(source, CallQaRule)
    else:
        found = _load_journey(source, policy)
    rule, issues = found
    return CheckedFile(source, rule, issues)


def rule_paths(directory: Path) -> list[Path]:
    """The rule files of a folder, in name order (dot files are ignored)."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in YAML_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def missing_policy_issue(directory: Path) -> RuleIssue:
    return RuleIssue(
        str(directory / "contact_policy.yaml"),
        1,
        1,
        "missing contact_policy.yaml: every rules directory needs the contact policy",
        "copy rules/contact_policy.yaml from the vipcare defaults",
    )


def duplicate_issue(source: RuleSource, first: Path) -> RuleIssue:
    what = {"policy": "the contact policy", "call_qa": "call QA"}.get(
        file_kind(source.name), f"journey {source.name!r}"
    )
    return RuleIssue(
        str(source.path), 1, 1, f"{what} is already defined in {first}", "keep one file per rule"
    )


def assemble(
    source: Path,
    files: list[Path],
    policy: ContactPolicy,
    journeys: dict[str, JourneyBase],
    call_qa: CallQaRule | None,
    warnings: list[RuleIssue],
) -> RuleSet:
    """The :class:`RuleSet` of files already checked one by one."""
    return RuleSet(
        journeys=journeys,
        contact_policy=policy,
        source=source,
        files=files,
        warnings=warnings,
        call_qa=call_qa if call_qa is not None else CallQaRule(),
    )


# --- public entry points ---------------------------------------------------------------


def load_rules(path: Path | str) -> RuleSet:
    """Load ``path`` (a rules directory, or one rule file plus the policy beside it).

    All or nothing: raises :class:`RulesValidationError` listing every problem in
    every file. (What *runs* goes through :func:`rules.live.load_live_rules`,
    which keeps the last good version of a file that does not load.)
    """
    path = Path(path)
    if path.is_dir():
        files = rule_paths(path)
        base = path
    elif path.is_file():
        files = [path]
        base = path.parent
        sibling = _policy_file(base)
        if path.stem != POLICY_STEM and sibling is not None:
            files.insert(0, sibling)
    else:
        raise RulesError(f"{path}: no such file or directory")
    sources = [RuleSource.read(f) for f in files]
    issues: list[RuleIssue] = []
    policy: ContactPolicy | None = None
    policy_source = next((s for s in sources if file_kind(s.name) == "policy"), None)
    if policy_source is None:
        issues.append(missing_policy_issue(base))
    else:
        checked = check_file(policy_source, None)
        issues += checked.issues
        policy = checked.rule if isinstance(checked.rule, ContactPolicy) else None
    call_qa: CallQaRule | None = None
    journeys: dict[str, JourneyBase] = {}
    seen: dict[str, Path] = {POLICY_STEM: policy_source.path} if policy_source else {}
    for source in sources:
        if source is policy_source:
            continue
        if source.name in seen:
            issues.append(duplicate_issue(source, seen[source.name]))
            continue
        seen[source.name] = source.path
        checked = check_file(source, policy)
        issues += checked.issues
        if isinstance(checked.rule, CallQaRule):
            call_qa = checked.rule
        elif isinstance(checked.rule, JourneyBase):
            journeys[checked.rule.journey] = checked.rule
    if policy is None or any(i.severity == "error" for i in issues):
        raise RulesValidationError(issues)
    return assemble(path, files, policy, journeys, call_qa, issues)


def _policy_file(directory: Path) -> Path | None:
    for suffix in YAML_SUFFIXES:
        candidate = directory / f"{POLICY_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load_policy(source: RuleSource) -> tuple[ContactPolicy | None, list[RuleIssue]]:
    doc = source.doc()
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
    policy.stamp(doc.content_hash, source.path)
    return policy, doc.issues


def _load_settings_file(
    source: RuleSource, model: type[CallQaRule]
) -> tuple[CallQaRule | None, list[RuleIssue]]:
    """A rule file that is not a journey (``call_qa.yaml``): one pydantic model."""
    doc = source.doc()
    if doc.tree is None:
        return None, doc.issues
    try:
        rule = model.model_validate(plain(doc.tree))
    except ValidationError as exc:
        doc.add(pydantic_issues(exc, model))
        return None, doc.issues
    rule.stamp(doc.content_hash, source.path)
    return rule, doc.issues


# --- journeys --------------------------------------------------------------------------


def _load_journey(
    source: RuleSource, policy: ContactPolicy | None
) -> tuple[JourneyBase | None, list[RuleIssue]]:
    path = source.path
    doc = source.doc()
    if doc.tree is None:
        return None, doc.issues
    data: dict[Any, Any] = plain(doc.tree)
    model = _journey_model(data, path, doc)
    if model is None:
        return None, doc.issues
    _parse_conditions(data, doc)
    _renamed_keys(data, doc)
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


RENAMED_TRIGGER_KEYS = {"on": "on_date"}
"""Older spellings still read, with a warning: YAML 1.1 readers (PyYAML, many editors and
linters) read the key ``on`` as the boolean true, so a file using it fails their checks."""


def _renamed_keys(data: dict[Any, Any], doc: YamlDoc) -> None:
    """Read ``trigger: {on: ...}`` as ``on_date``, warning at the key (an error if both)."""
    trigger = data.get("trigger")
    if data.get("kind") != "generic" or not isinstance(trigger, dict):
        return
    for old, new in RENAMED_TRIGGER_KEYS.items():
        if old not in trigger:
            continue
        if new in trigger:
            doc.issue(
                ("trigger", old),
                f"both {old}: and {new}: are given; {old}: is the older spelling of {new}:",
                f"remove the line {old}:",
                at_key=True,
            )
            del trigger[old]
            continue
        line, column = locate(doc.tree, ("trigger", old), True)
        doc.issues = [  # this warning replaces the general "quote it" one at the same key
            i
            for i in doc.issues
            if not (i.line == line and i.column == column and "YAML 1.1" in i.message)
        ]
        doc.issue(
            ("trigger", old),
            f"the key {old}: is read as true by YAML 1.1 tools (PyYAML, many editors and"
            f" linters), so their schema checks fail; it is now spelled {new}:",
            f"rename {old}: to {new}:",
            at_key=True,
            severity="warning",
        )
        trigger[new] = trigger.pop(old)


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
