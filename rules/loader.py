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
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import jinja2
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crm.models import TASK_KINDS
from rules.conditions import Loc, PathIssue, parse_condition
from rules.errors import RuleIssue, RulesError, RulesValidationError, UnknownNameError, did_you_mean
from rules.models import (
    ACTION_TYPES,
    JOURNEY_IDS,
    JOURNEY_MODELS,
    JOURNEY_VARIABLES,
    SAMPLE_VARIABLES,
    CallQaRule,
    ContactPolicy,
    GraceCreditRule,
    JourneyBase,
)
from rules.templates import RENDER_ERRORS, compile_text, variables_used
from rules.values import show

POLICY_STEM = "contact_policy"
CALL_QA_STEM = "call_qa"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class RuleSet:
    """Every journey rule and the contact policy, loaded together from one place."""

    journeys: dict[str, JourneyBase]
    contact_policy: ContactPolicy
    source: Path
    files: list[Path] = field(default_factory=list)
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
    if issues or policy is None or call_qa is None:
        raise RulesValidationError(issues)
    return RuleSet(
        journeys=journeys, contact_policy=policy, source=path, files=files, call_qa=call_qa
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
        self, loc: Loc, message: str, suggestion: str | None = None, at_key: bool = False
    ) -> None:
        line, col = locate(self.tree, loc, at_key)
        self.issues.append(RuleIssue(str(self.path), line, col, message, suggestion))

    def add(self, found: Iterable[PathIssue]) -> None:
        for i in found:
            self.issue(i.loc, i.message, i.suggestion, i.at_key)


def _read(path: Path) -> _Doc:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _Doc(path, "", None, [RuleIssue(str(path), 1, 1, f"cannot read the file: {exc}")])
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
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc.tree = yaml.load(text)
    except DuplicateKeyError as exc:
        doc.issues.append(_yaml_issue(path, exc, duplicate=True))
        doc.tree = None
        return doc
    except MarkedYAMLError as exc:
        doc.issues.append(_yaml_issue(path, exc))
        return doc
    except YAMLError as exc:  # pragma: no cover - ruamel marks nearly everything
        doc.issues.append(RuleIssue(str(path), 1, 1, f"YAML error: {exc}"))
        return doc
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


def _load_settings_file(
    path: Path, model: type[CallQaRule]
) -> tuple[CallQaRule | None, list[RuleIssue]]:
    """A rule file that is not a journey (``call_qa.yaml``): one pydantic model."""
    doc = _read(path)
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
    doc = _read(path)
    if doc.tree is None:
        return None, doc.issues
    data: dict[Any, Any] = plain(doc.tree)
    stem = path.stem
    declared = data.get("journey")
    journey_id: str | None = None
    if "journey" not in data:
        doc.issue(
            (),
            "missing 'journey': expected the journey id, one of: " + ", ".join(JOURNEY_IDS),
            f"add the line: journey: {stem}" if stem in JOURNEY_MODELS else None,
        )
        journey_id = stem if stem in JOURNEY_MODELS else None
    elif declared not in JOURNEY_MODELS:
        doc.issue(
            ("journey",),
            f"unknown journey {show(declared)}; expected one of: {', '.join(JOURNEY_IDS)}",
            did_you_mean(declared, JOURNEY_IDS),
        )
        journey_id = stem if stem in JOURNEY_MODELS else None
    else:
        journey_id = str(declared)
        if stem != journey_id:
            doc.issue(
                ("journey",),
                f"file {path.name} declares journey {journey_id!r}; each journey lives in a file"
                " named after it",
                f"rename the file to {journey_id}.yaml",
            )
    if journey_id is None:
        return None, doc.issues
    data["journey"] = journey_id
    _parse_conditions(data, doc)
    doc.add(check_journey(journey_id, data, policy))
    model = JOURNEY_MODELS[journey_id]
    try:
        rule = model.model_validate(data)
    except ValidationError as exc:
        doc.add(pydantic_issues(exc, model))
        return None, doc.issues
    if doc.issues:
        return None, doc.issues
    rule.stamp(doc.content_hash, path)
    return rule, doc.issues


def _parse_conditions(data: dict[Any, Any], doc: _Doc) -> None:
    """Replace every condition (audience, each action's ``when``) by its parsed tree.

    A broken condition is reported here with its exact path and replaced by
    "everyone", so pydantic does not report it a second time.
    """
    if "audience" in data:
        cond, found = parse_condition(data["audience"], ("audience",))
        doc.add(found)
        data["audience"] = cond
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
    journey_id: str, data: dict[Any, Any], policy: ContactPolicy | None
) -> list[PathIssue]:
    """Cross-checks pydantic cannot do field by field: actions, templates, wording.

    Works on the plain data (not the validated model) so that these problems are
    reported in the same run as the structural ones.
    """
    model = JOURNEY_MODELS[journey_id]
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
    issues += _check_templates(journey_id, templates, policy)
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
        kind = spec.get("kind")
        if isinstance(kind, str) and kind in TASK_KINDS and kind not in model.task_kinds:
            issues.append(
                PathIssue(
                    (*here, "kind"),
                    f"the {journey_id} journey creates"
                    f" {' or '.join(model.task_kinds)} tasks, not {kind!r}",
                    f"write kind: {model.task_kinds[0]}",
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


def _check_templates(
    journey_id: str, templates: dict[Any, Any], policy: ContactPolicy | None
) -> list[PathIssue]:
    issues: list[PathIssue] = []
    allowed = list(JOURNEY_VARIABLES[journey_id])
    sample = {k: v for k, v in SAMPLE_VARIABLES.items() if k in allowed}
    if policy is not None and policy.hotline:
        sample["hotline"] = policy.hotline
    for name, template in templates.items():
        if not isinstance(template, dict) or not isinstance(template.get("text"), dict):
            continue
        category = template.get("category")
        for locale, text in template["text"].items():
            if not isinstance(text, str) or not isinstance(locale, str):
                continue
            here: Loc = ("templates", name, "text", locale)
            label = f"template {name!r} ({locale})"
            try:
                used = variables_used(text)
                compile_text(text)
            except jinja2.TemplateSyntaxError as exc:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: template syntax error on its line {exc.lineno}: {exc.message}",
                        "variables are written {{ name }}",
                    )
                )
                continue
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
                try:
                    rendered = compile_text(text).render(**sample)
                except RENDER_ERRORS as exc:
                    issues.append(
                        PathIssue(here, f"{label}: does not render for a sample customer: {exc}")
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
