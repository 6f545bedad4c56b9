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
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import jinja2
from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crm.models import TASK_KINDS, TIERS
from rules.conditions import Loc, PathIssue, parse_condition
from rules.errors import (
    FULL_WIDTH,
    RuleIssue,
    RulesError,
    RulesValidationError,
    Severity,
    TemplateRenderError,
    UnknownNameError,
    did_you_mean,
    punctuation_hint,
)
from rules.models import (
    ACTION_TYPES,
    DEFAULT_MAX_CREDIT,
    GENERIC_VARIABLES,
    JOURNEY_ID_RE,
    JOURNEY_IDS,
    JOURNEY_MODELS,
    JOURNEY_VARIABLES,
    SAMPLE_VARIABLES,
    ContactPolicy,
    GenericJourneyRule,
    GraceCreditRule,
    JourneyBase,
    PrecallNoticeRule,
)
from rules.templates import TemplateTooComplex, compile_text, render_text, variables_used
from rules.values import parse_money, show
from rules.yaml_limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, YamlLimitError, limited_yaml

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_NODES", "RuleSet", "load_rules"]

POLICY_STEM = "contact_policy"
DEFAULT_LEAD_TIME = timedelta(hours=2)
"""Lead time of the pre-call notice when no precall_notice rule is loaded."""
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
    journeys: dict[str, JourneyBase] = {}
    seen_files: dict[str, Path] = {}
    for file in files:
        if file == policy_path:
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
    if policy is None or any(i.severity == "error" for i in issues):
        raise RulesValidationError(issues)
    return RuleSet(
        journeys=journeys, contact_policy=policy, source=path, files=files, warnings=issues
    )


def _policy_file(directory: Path) -> Path | None:
    for suffix in YAML_SUFFIXES:
        candidate = directory / f"{POLICY_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# --- reading YAML ----------------------------------------------------------------------


@dataclass
class _Doc:
    path: Path
    content_hash: str
    tree: Any
    issues: list[RuleIssue]

    def issue(
        self,
        loc: Loc,
        message: str,
        suggestion: str | None = None,
        at_key: bool = False,
        severity: Severity = "error",
    ) -> None:
        line, col = locate(self.tree, loc, at_key)
        self.issues.append(RuleIssue(str(self.path), line, col, message, suggestion, severity))

    def add(self, found: Iterable[PathIssue]) -> None:
        for i in found:
            self.issue(i.loc, i.message, i.suggestion, i.at_key, i.severity)

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def _read(path: Path) -> _Doc:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # never more than the limit, whatever the file
    except OSError as exc:
        return _Doc(path, "", None, [RuleIssue(str(path), 1, 1, f"cannot read the file: {exc}")])
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES // 1024} KB; rule files may be at most"
        message += f" {MAX_FILE_BYTES // 1024} KB"
        issue = RuleIssue(str(path), 1, 1, message, "keep one journey per file, without padding")
        return _Doc(path, "", None, [issue])
    doc = _Doc(path, hashlib.sha256(raw).hexdigest(), None, [])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        doc.issues.append(
            RuleIssue(str(path), line, col, "the file is not UTF-8 text", "save the file as UTF-8")
        )
        return doc
    yaml = limited_yaml()
    try:
        doc.tree = yaml.load(text)
    except YamlLimitError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        doc.issues.append(RuleIssue(str(path), line, col, str(exc.problem), exc.suggestion))
        return doc
    except DuplicateKeyError as exc:
        doc.issues.append(_yaml_issue(path, exc, duplicate=True))
        doc.tree = None
        return doc
    except MarkedYAMLError as exc:
        doc.issues.append(_punctuation_issue(path, text, exc) or _yaml_issue(path, exc))
        return doc
    except YAMLError as exc:  # pragma: no cover - ruamel marks nearly everything
        doc.issues.append(RuleIssue(str(path), 1, 1, f"YAML error: {exc}"))
        return doc
    doc.issues += _punctuation_in_values(path, text)
    if doc.tree is None:
        doc.issues.append(
            RuleIssue(str(path), 1, 1, "the file is empty; expected a mapping (key: value lines)")
        )
    elif not isinstance(doc.tree, CommentedMap):
        doc.issues.append(
            RuleIssue(
                str(path),
                1,
                1,
                f"expected a mapping (key: value lines) at the top; got {_kind(doc.tree)}",
            )
        )
        doc.tree = None
    return doc


def _yaml_issue(path: Path, exc: MarkedYAMLError, duplicate: bool = False) -> RuleIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    problem = str(exc.problem or "")
    suggestion = None
    if duplicate:
        key = re.search(r'duplicate key "([^"]*)"', problem)
        name = key.group(1) if key else "?"
        first = exc.context_mark.line + 1 if exc.context_mark is not None else None
        message = f"duplicate key {name!r}: each key may appear only once in a mapping"
        if first is not None:
            message += f" (the mapping starts at line {first})"
        suggestion = "remove or merge the repeated key"
    else:
        context = f" ({exc.context})" if exc.context else ""
        message = f"YAML syntax error: {problem}{context}"
        if "\\t" in problem or "tab" in problem:
            suggestion = "indent with spaces, not tabs"
        elif "mapping values are not allowed" in problem:
            suggestion = "quote text that contains ': ' or check the indentation of this line"
        elif "could not find expected ':'" in problem:
            suggestion = "every key needs a ':' after it; check the indentation"
    return RuleIssue(str(path), line, col, message, suggestion)


def _punctuation_issue(path: Path, text: str, exc: MarkedYAMLError) -> RuleIssue | None:
    """A YAML error caused by full-width punctuation or a tab, reported where it really is.

    ruamel notices the damage later (``expected <block end>`` a line or two on);
    the first line up to the error that has a tab in its indentation, or
    full-width punctuation outside quotes and comments, is the real cause.
    """
    mark = exc.problem_mark or exc.context_mark
    last = (mark.line + 1) if mark is not None else len(text.splitlines())
    for number, line in enumerate(text.splitlines()[:last], start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            return RuleIssue(
                str(path),
                number,
                indent.index("\t") + 1,
                "YAML syntax error: a tab in the indentation of this line",
                "indent with spaces, not tabs",
            )
        code = _unquoted(line)
        for column, char in enumerate(code, start=1):
            if char in FULL_WIDTH and char != "　":
                return RuleIssue(
                    str(path),
                    number,
                    column,
                    f"YAML syntax error: full-width {char!r} where YAML needs {FULL_WIDTH[char]!r}",
                    punctuation_hint(char),
                )
    return None


CURLY_QUOTES = "“”‘’"


def _punctuation_in_values(path: Path, text: str) -> list[RuleIssue]:
    """Full-width punctuation that parsed but changes the meaning (the file loaded).

    A full-width comma inside ``[...]`` or ``{...}`` glues two items into one
    (an error); a value opened by a curly quote keeps the quotes in the value
    (a warning: Chinese text may mean it).
    """
    found: list[RuleIssue] = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = _unquoted(line)
        depth = 0
        for column, char in enumerate(code, start=1):
            depth += (char in "[{") - (char in "]}")
            if char == "，" and depth > 0:
                found.append(
                    RuleIssue(
                        str(path),
                        number,
                        column,
                        "a full-width '，' inside a [...] list joins two items into one",
                        punctuation_hint(char),
                    )
                )
        value = line.split(": ", 1)[1].lstrip() if ": " in line else ""
        if value and value[0] in CURLY_QUOTES:
            found.append(
                RuleIssue(
                    str(path),
                    number,
                    len(line) - len(value) + 1,
                    f"the value starts with a curly quote {value[0]!r}, which stays in the text",
                    'quote with straight quotes "..." (half-width), or drop the quotes',
                    "warning",
                )
            )
    return found


def _unquoted(line: str) -> str:
    """``line`` with quoted text and a trailing comment blanked out (same length)."""
    out = []
    quote: str | None = None
    for index, char in enumerate(line):
        if quote is not None:
            out.append(" ")
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
            out.append(" ")
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            break
        else:
            out.append(char)
    return "".join(out)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return f"the text {value!r}" if isinstance(value, str) else show(value)


def plain(node: Any) -> Any:
    """ruamel's round-trip objects → plain Python; YAML floats → exact Decimal of their text."""
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, float):
        return Decimal(repr(float(node)))
    if isinstance(node, int):
        return int(node)
    if isinstance(node, str):
        return str(node)
    return node


def locate(tree: Any, loc: Loc, at_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of ``loc`` in a round-trip tree.

    Path items not present (a missing field, a pydantic union tag) are skipped
    or stop the walk; the deepest position found is reported, so a missing
    field points at its parent key.
    """
    pos = (0, 0)
    node = tree
    items = list(loc)
    for index, item in enumerate(items):
        last = index == len(items) - 1
        if isinstance(node, CommentedMap) and _has_key(node, item):
            key = _real_key(node, item)
            key_pos = node.lc.key(key)
            if last:
                pos = key_pos if at_key or not _is_scalar(node[key]) else node.lc.value(key)
                return pos[0] + 1, pos[1] + 1
            pos = key_pos
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(item, int) and 0 <= item < len(node):
            pos = node.lc.item(item)
            node = node[item]
        elif isinstance(item, str) and not isinstance(node, CommentedMap | CommentedSeq):
            break
        else:
            continue
    return pos[0] + 1, pos[1] + 1


def _has_key(node: CommentedMap, item: object) -> bool:
    return item in node or any(str(k) == str(item) for k in node)


def _real_key(node: CommentedMap, item: object) -> Any:
    if item in node:
        return item
    return next(k for k in node if str(k) == str(item))


def _is_scalar(value: object) -> bool:
    return not isinstance(value, dict | list)


# --- pydantic errors → issues ----------------------------------------------------------


def pydantic_issues(exc: ValidationError, model: type[BaseModel]) -> list[PathIssue]:
    out: list[PathIssue] = []
    for err in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(err["loc"])
        etype: str = err["type"]
        value = err.get("input")
        ctx: dict[str, Any] = err.get("ctx") or {}
        at_key = False
        if "[key]" in loc:
            loc = loc[: loc.index("[key]")]
            at_key = True
        name = str(loc[-1]) if loc else ""
        where = _where(loc[:-1])
        suggestion: str | None = None
        if etype == "missing":
            message = f"missing required field {name!r}{where}"
        elif etype == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = f"unknown field {name!r}{where}"
            if allowed:
                message += "; expected one of: " + ", ".join(allowed)
            suggestion = did_you_mean(name, allowed)
            at_key = True
        elif etype == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            expected = (
                " or ".join(repr(c) for c in choices)
                if len(choices) < 3
                else "one of: " + ", ".join(choices)
            )
            message = f"{show(value)} is not allowed here; expected {expected}"
            suggestion = did_you_mean(value, choices)
        elif etype.startswith("int_"):
            message = f"{name}: expected a whole number, got {show(value)}"
        elif etype.startswith("bool_"):
            message = f"{name}: expected true or false, got {show(value)}"
        elif etype == "string_type":
            message = f"{name}: expected text, got {show(value)}"
        elif etype in ("dict_type", "model_type", "model_attributes_type"):
            message = f"{name or 'this'}: expected a mapping (key: value lines), got {show(value)}"
        elif etype == "list_type":
            message = f"{name}: expected a list (lines starting with '- '), got {show(value)}"
        elif etype == "string_too_short":
            message = f"{name}: must not be empty"
        elif etype == "too_short":
            if ctx.get("field_type") == "List":
                message = f"{name}: needs at least {ctx.get('min_length', 1)} item(s)"
            elif ctx.get("field_type") == "Dictionary":
                message = f"{name}: needs at least {ctx.get('min_length', 1)} entry(ies)"
            else:
                message = f"{name}: must not be empty"
        elif etype in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            bound = {
                "greater_than_equal": ">=",
                "greater_than": ">",
                "less_than_equal": "<=",
                "less_than": "<",
            }[etype]
            limit = next(iter(ctx.values()), "?")
            message = f"{name}: expected a value {bound} {limit}, got {show(value)}"
        elif etype == "string_pattern_mismatch":
            message = (
                f"{show(value)} is not a valid name; use lowercase letters, digits and _ "
                "(e.g. grace_notice)"
            )
        elif etype.startswith("time_"):
            message = f'{name}: expected a time such as "09:00", got {show(value)}'
        elif etype.startswith("decimal_"):
            message = f'{name}: expected a number such as "0.15", got {show(value)}'
        elif etype == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
            if loc and isinstance(loc[-1], str) and not message.startswith(name):
                message = f"{name}: {message}"
        else:
            message = f"{name + ': ' if name else ''}{err['msg']}"
        out.append(PathIssue(loc, message, suggestion, at_key))
    return out


def _where(loc: Loc) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return f" in {'.'.join(parts)}" if parts else ""


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if len(models) == 1:
                tp = models[0]
            elif len(members) == 1:
                tp = members[0]
            else:
                return tp
        else:
            return tp


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    tp: Any = model
    for item in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if isinstance(item, str) and item in tp.model_fields:
                tp = tp.model_fields[item].annotation
            continue
        origin = get_origin(tp)
        if origin is list and isinstance(item, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


# --- contact policy --------------------------------------------------------------------


def _load_policy(path: Path) -> tuple[ContactPolicy | None, list[RuleIssue]]:
    doc = _read(path)
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


# --- journeys --------------------------------------------------------------------------


def _load_journey(
    path: Path, policy: ContactPolicy | None
) -> tuple[JourneyBase | None, list[RuleIssue]]:
    doc = _read(path)
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


def _journey_model(data: dict[Any, Any], path: Path, doc: _Doc) -> type[JourneyBase] | None:
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


def _parse_conditions(data: dict[Any, Any], doc: _Doc) -> None:
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


def check_journey(
    model: type[JourneyBase], data: dict[Any, Any], policy: ContactPolicy | None
) -> list[PathIssue]:
    """Cross-checks pydantic cannot do field by field: actions, templates, wording, amounts.

    Works on the plain data (not the validated model) so that these problems are
    reported in the same run as the structural ones.
    """
    journey_id = str(data.get("journey"))
    issues: list[PathIssue] = []
    raw_templates = data.get("templates")
    templates: dict[Any, Any] = raw_templates if isinstance(raw_templates, dict) else {}
    lists: list[tuple[str, tuple[str, ...]]] = [("actions", model.allowed_actions)]
    if model is GraceCreditRule:
        lists.append(("on_deadline", GraceCreditRule.deadline_actions))
    for list_key, allowed in lists:
        entries = data.get(list_key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # pydantic reports the shape
            name, spec = next(iter(entry.items()))
            if name not in ACTION_TYPES:
                continue
            here: Loc = (list_key, i, name)
            if name not in allowed:
                issues.append(
                    PathIssue(
                        here,
                        f"{name} is not allowed in {list_key} of the {journey_id} journey;"
                        f" expected one of: {', '.join(allowed)}",
                        did_you_mean(name, allowed),
                        at_key=True,
                    )
                )
                continue
            if isinstance(spec, dict) or spec is None:
                issues += _check_action(journey_id, model, name, spec or {}, templates, here)
                if name == "grant_credit" and isinstance(spec, dict):
                    issues += _check_amounts(journey_id, spec, here, policy)
    trigger = data.get("trigger")
    if model is GraceCreditRule and isinstance(trigger, dict):
        issues += _check_amounts(journey_id, trigger, ("trigger",), policy)
    if isinstance(trigger, dict) and isinstance(trigger.get("cadence_days"), dict):
        issues += _tier_order(
            trigger["cadence_days"],
            ("trigger", "cadence_days"),
            "is called back less often than",
            higher_is_more=False,
        )
    issues += _check_templates(journey_id, model, templates, policy)
    return issues


def _check_action(
    journey_id: str,
    model: type[JourneyBase],
    name: str,
    spec: dict[Any, Any],
    templates: dict[Any, Any],
    here: Loc,
) -> list[PathIssue]:
    issues: list[PathIssue] = []
    if name in ("send_sms", "send_voice"):
        channel = "sms" if name == "send_sms" else "voice"
        ref = spec.get("template")
        if not isinstance(ref, str):
            return issues
        if ref not in templates:
            names = [str(n) for n in templates]
            issues.append(
                PathIssue(
                    (*here, "template"),
                    f"unknown template {ref!r}; templates in this file: "
                    + (", ".join(names) if names else "(none)"),
                    did_you_mean(ref, names),
                )
            )
        else:
            target = templates[ref]
            has = target.get("channel", "sms") if isinstance(target, dict) else channel
            if has in ("sms", "voice") and has != channel:
                issues.append(
                    PathIssue(
                        (*here, "template"),
                        f"template {ref!r} is a {has} template; {name} needs one with"
                        f" channel: {channel}",
                        f"use send_{has}" if has in ("sms", "voice") else None,
                    )
                )
    elif name == "create_task":
        kind = spec.get("kind", "care")
        if isinstance(kind, str) and kind in TASK_KINDS and kind not in model.task_kinds:
            issues.append(
                PathIssue(
                    (*here, "kind") if "kind" in spec else here,
                    f"the {journey_id} journey creates"
                    f" {' or '.join(model.task_kinds)} tasks, not {kind!r}",
                    f"write kind: {model.task_kinds[0]}",
                    at_key="kind" not in spec,
                )
            )
        if kind == "care" and not spec.get("reason"):
            issues.append(
                PathIssue(
                    here,
                    "a care call task needs a reason: the manager reads it to know why to call",
                    'add reason: "…" (or a text per locale: {zh-CN: "…", en: "…"})',
                    at_key=True,
                )
            )
    elif name == "grant_credit":
        given = "amount" in spec or "amount_by_tier" in spec
        if model is GraceCreditRule and given:
            issues.append(
                PathIssue(
                    here,
                    "in grace_credit the amount comes from trigger.amount_by_tier",
                    "remove amount / amount_by_tier from grant_credit",
                    at_key=True,
                )
            )
        elif model is not GraceCreditRule and not given:
            issues.append(
                PathIssue(
                    here, 'grant_credit needs amount (e.g. "20.00") or amount_by_tier', at_key=True
                )
            )
    return issues


def _money_or_none(value: object) -> Decimal | None:
    try:
        return parse_money(value)
    except ValueError:
        return None  # the model reports a malformed amount


def _check_amounts(
    journey_id: str, spec: dict[Any, Any], here: Loc, policy: ContactPolicy | None
) -> list[PathIssue]:
    """Credit amounts: within the contact policy's cap, and higher tiers never get less."""
    issues: list[PathIssue] = []
    cap = policy.max_credit_for(journey_id) if policy is not None else DEFAULT_MAX_CREDIT
    found: list[tuple[Loc, Decimal]] = []
    amount = _money_or_none(spec["amount"]) if "amount" in spec else None
    if amount is not None:
        found.append(((*here, "amount"), amount))
    by_tier = spec.get("amount_by_tier")
    if isinstance(by_tier, dict):
        for tier, value in by_tier.items():
            money = _money_or_none(value)
            if money is not None:
                found.append(((*here, "amount_by_tier", tier), money))
        issues += _tier_order(by_tier, (*here, "amount_by_tier"), "gets more than")
    for loc, value in found:
        if value > cap:
            issues.append(
                PathIssue(
                    loc,
                    f"a credit of {value} is above the {journey_id} cap of {cap} (max_credit"
                    " in contact_policy.yaml)",
                    f"amounts are in yuan with 2 decimals: did you mean {value / 100:.2f}?"
                    if value >= cap * 10
                    else f"lower it, or raise max_credit.{journey_id} in contact_policy.yaml",
                )
            )
    return issues


def _tier_order(
    by_tier: dict[Any, Any], here: Loc, verb: str, higher_is_more: bool = True
) -> list[PathIssue]:
    """Warn where a lower tier is treated better than a higher one (a likely swap)."""
    values: list[tuple[int, str, Decimal]] = []
    for tier, raw in by_tier.items():
        if tier in TIERS:
            number = _money_or_none(raw) if higher_is_more else _number_or_none(raw)
            if number is not None:
                values.append((TIERS.index(tier), str(tier), number))
    values.sort()
    issues: list[PathIssue] = []
    for (_, low, low_value), (_, high, high_value) in pairwise(values):
        better = low_value > high_value if higher_is_more else low_value < high_value
        if better:
            issues.append(
                PathIssue(
                    (*here, low),
                    f"{low} ({low_value}) {verb} {high} ({high_value}), a higher tier",
                    "check the values are not swapped",
                    severity="warning",
                )
            )
    return issues


def _number_or_none(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    return Decimal(value)


VALIDITY_OF: dict[str, str] = {"deadline": "grace_credit", "while_task_open": "precall_notice"}
"""Validities that only one journey can honour."""
SINGLE_BRACE = re.compile(r"(?<!\{)\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}(?!\})")
JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def _check_templates(
    journey_id: str,
    model: type[JourneyBase],
    templates: dict[Any, Any],
    policy: ContactPolicy | None,
) -> list[PathIssue]:
    issues: list[PathIssue] = []
    generic = model is GenericJourneyRule
    allowed = list(GENERIC_VARIABLES if generic else JOURNEY_VARIABLES[journey_id])
    sample = {k: v for k, v in SAMPLE_VARIABLES.items() if k in allowed}
    if policy is not None and policy.hotline:
        sample["hotline"] = policy.hotline
    for name, template in templates.items():
        if not isinstance(template, dict) or not isinstance(template.get("text"), dict):
            continue
        category = template.get("category")
        validity = template.get("valid_until")
        only = VALIDITY_OF.get(validity) if isinstance(validity, str) else None
        if only is not None and only != journey_id:
            issues.append(
                PathIssue(
                    ("templates", name, "valid_until"),
                    f"valid_until: {validity} only applies to the {only} journey",
                    "use end_of_day or {days: N}",
                )
            )
        for locale, text in template["text"].items():
            if not isinstance(text, str) or not isinstance(locale, str):
                continue
            here: Loc = ("templates", name, "text", locale)
            label = f"template {name!r} ({locale})"
            try:
                used = variables_used(text)
                compile_text(text)
            except TemplateTooComplex as exc:
                issues.append(PathIssue(here, f"{label}: on its line {exc.lineno}: {exc.message}"))
                continue
            except jinja2.TemplateSyntaxError as exc:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: template syntax error on its line {exc.lineno}: {exc.message}",
                        "variables are written {{ name }}",
                    )
                )
                continue
            single = SINGLE_BRACE.findall(JINJA_BLOCK.sub("", text))
            for var in single:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: {{{var}}} has single braces, so customers would get the"
                        " literal text",
                        f"write {{{{ {var} }}}}",
                    )
                )
            unknown = sorted(used - set(allowed))
            for var in unknown:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: unknown template variable {var!r}; the {journey_id} journey"
                        f" provides: {', '.join(allowed)}",
                        did_you_mean(var, allowed),
                    )
                )
            rendered: str | None = None
            if not unknown:
                try:  # with the same limits (size, depth, time) as every real render
                    rendered = render_text(text, sample)
                except TemplateRenderError as exc:
                    reason = str(exc).removeprefix("template does not render: ")
                    issues.append(
                        PathIssue(here, f"{label}: does not render for a sample customer: {reason}")
                    )
            if category == "marketing" and policy is not None:
                wording = policy.unsubscribe_for(locale)
                if wording not in (rendered if rendered is not None else text):
                    issues.append(
                        PathIssue(
                            here,
                            f"{label}: a marketing template must contain the unsubscribe wording"
                            f" {wording!r} from contact_policy.yaml",
                            f"append {wording!r} to the text",
                        )
                    )
    return issues
