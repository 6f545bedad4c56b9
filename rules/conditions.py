"""Audience conditions: the typed tree, its parser (with exact error paths) and its text.

A condition in a rule file is one of:

- ``{all: [c1, c2, ...]}``: every condition holds;
- ``{any: [c1, c2, ...]}``: at least one holds;
- ``{not: c}``: ``c`` does not hold;
- ``{field: {op: value}}``, or the shorthand ``{field: value}`` (``eq``; ``contains``
  for ``clubs``; a list means ``in``).

A mapping with several keys means all of them. Parsing never raises for bad
input from a file: it returns every problem with its path, so the loader can
point at the exact line and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, TypeAlias

from crm.models import TIERS
from rules.errors import ConditionError, Severity, did_you_mean
from rules.fields import COMBINATORS, FIELDS, LIST_OPS, OP_TEXT, OPERATORS, FieldSpec
from rules.values import LOCALE_RE, parse_money, parse_whole, show, timezones

Loc: TypeAlias = tuple[str | int, ...]
Scalar: TypeAlias = str | int | bool | Decimal
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class PathIssue:
    """A problem at a path inside a document (mapped to line:column by the loader)."""

    loc: Loc
    message: str
    suggestion: str | None = None
    at_key: bool = False
    severity: Severity = "error"


@dataclass(frozen=True)
class Compare:
    """``field op value``; ``value`` is a tuple for list operators and ``between``."""

    field: str
    op: str
    value: Value

    def text(self) -> str:
        if self.op == "is_null":
            return f"{self.field} {'is null' if self.value else 'is not null'}"
        if self.op == "between":
            assert isinstance(self.value, tuple)
            low, high = self.value
            return f"{self.field} between {_fmt(low)} and {_fmt(high)}"
        return f"{self.field} {OP_TEXT[self.op]} {_fmt(self.value)}"


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...] = ()

    def text(self) -> str:
        if not self.items:
            return "everyone"
        return "all of: " + "; ".join(i.text() for i in self.items)


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...] = field(default=())

    def text(self) -> str:
        return "any of: " + "; ".join(i.text() for i in self.items)


@dataclass(frozen=True)
class Not:
    item: Condition

    def text(self) -> str:
        return f"not ({self.item.text()})"


Condition: TypeAlias = All | AnyOf | Not | Compare
EVERYONE = All(())


def _fmt(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if (not value or any(c in value for c in " ,[]'\";")) else value
    return str(value)


def to_data(cond: Condition) -> dict[str, Any]:
    """The condition as plain YAML/JSON data (amounts as text)."""

    def plain(v: Value) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Decimal) else v

    if isinstance(cond, Compare):
        return {cond.field: {cond.op: plain(cond.value)}}
    if isinstance(cond, All):
        return {"all": [to_data(i) for i in cond.items]}
    if isinstance(cond, AnyOf):
        return {"any": [to_data(i) for i in cond.items]}
    return {"not": to_data(cond.item)}


def fields_used(cond: Condition) -> set[str]:
    if isinstance(cond, Compare):
        return {cond.field}
    if isinstance(cond, Not):
        return fields_used(cond.item)
    out: set[str] = set()
    for item in cond.items:
        out |= fields_used(item)
    return out


# --- parsing -------------------------------------------------------------------------

EXAMPLE = "a condition such as {tier: {gte: gold}}, or all: / any: / not:"


def parse_condition(raw: object, loc: Loc = ()) -> tuple[Condition, list[PathIssue]]:
    """Parse a condition; returns the tree (best effort) and every problem found."""
    issues: list[PathIssue] = []
    cond = _parse(raw, loc, issues)
    return cond, issues


def parse(raw: object) -> Condition:
    """Parse a condition given in code; raises :class:`ConditionError` on the first problem."""
    if isinstance(raw, All | AnyOf | Not | Compare):
        return raw
    cond, issues = parse_condition(raw)
    if issues:
        first = issues[0]
        where = ".".join(str(p) for p in first.loc)
        prefix = f"{where}: " if where and not first.message.startswith(where) else ""
        raise ConditionError(prefix + first.message, first.suggestion)
    return cond


def _parse(raw: object, loc: Loc, issues: list[PathIssue]) -> Condition:
    if not isinstance(raw, dict):
        issues.append(PathIssue(loc, f"expected {EXAMPLE}; got {show(raw)}"))
        return EVERYONE
    if not raw:
        issues.append(PathIssue(loc, f"empty condition; expected {EXAMPLE}"))
        return EVERYONE
    parts: list[Condition] = []
    for key, value in raw.items():
        here = (*loc, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                issues.append(
                    PathIssue(
                        here, f"'{key}' needs a non-empty list of conditions; got {show(value)}"
                    )
                )
                continue
            items = tuple(_parse(item, (*here, i), issues) for i, item in enumerate(value))
            parts.append(All(items) if key == "all" else AnyOf(items))
        elif key == "not":
            if isinstance(value, list):
                issues.append(
                    PathIssue(
                        here,
                        "'not' takes one condition, not a list",
                        "write not: {any: [...]} to exclude customers matching any of several",
                    )
                )
                continue
            parts.append(Not(_parse(value, here, issues)))
        elif isinstance(key, str) and key in FIELDS:
            parts.append(_parse_field(FIELDS[key], value, here, issues))
        else:
            issues.append(
                PathIssue(
                    here,
                    f"unknown field {key!r}; expected one of: {', '.join(FIELDS)}"
                    " (or all, any, not)",
                    did_you_mean(key, [*FIELDS, *COMBINATORS]),
                    at_key=True,
                )
            )
    if len(parts) == 1:
        return parts[0]
    return All(tuple(parts))


def _parse_field(spec: FieldSpec, raw: object, loc: Loc, issues: list[PathIssue]) -> Condition:
    if isinstance(raw, dict):
        if not raw:
            issues.append(
                PathIssue(loc, f"expected an operator for {spec.name}: {', '.join(spec.ops)}")
            )
            return EVERYONE
        parts: list[Condition] = []
        for op, value in raw.items():
            here = (*loc, op)
            if not isinstance(op, str) or op not in OPERATORS:
                issues.append(
                    PathIssue(
                        here,
                        f"unknown operator {op!r} for {spec.name}; expected one of:"
                        f" {', '.join(spec.ops)}",
                        did_you_mean(op, spec.ops) or did_you_mean(op, OPERATORS),
                        at_key=True,
                    )
                )
                continue
            if op not in spec.ops:
                issues.append(
                    PathIssue(
                        here,
                        f"operator {op!r} does not apply to {spec.name} ({spec.kind});"
                        f" expected one of: {', '.join(spec.ops)}",
                        did_you_mean(op, spec.ops),
                        at_key=True,
                    )
                )
                continue
            parsed = _parse_operand(spec, op, value, here, issues)
            if parsed is not None:
                parts.append(parsed)
        if len(parts) == 1:
            return parts[0]
        return All(tuple(parts))
    if isinstance(raw, list):
        if spec.kind == "set":
            issues.append(
                PathIssue(
                    loc,
                    f"a list is ambiguous for {spec.name}",
                    f"write {spec.name}: {{contains_any: [...]}} or {{contains_all: [...]}}",
                )
            )
            return EVERYONE
        return _parse_operand(spec, "in", raw, loc, issues) or EVERYONE
    if raw is None:
        hint = (
            f"to test for an unknown {spec.name}, write {{is_null: true}}"
            if spec.nullable
            else None
        )
        issues.append(PathIssue(loc, f"expected a value for {spec.name}; {_expected(spec)}", hint))
        return EVERYONE
    return _parse_operand(spec, spec.shorthand_op, raw, loc, issues) or EVERYONE


def _parse_operand(
    spec: FieldSpec, op: str, raw: object, loc: Loc, issues: list[PathIssue]
) -> Compare | None:
    if op == "is_null":
        if not isinstance(raw, bool):
            issues.append(PathIssue(loc, f"is_null takes true or false; got {show(raw)}"))
            return None
        return Compare(spec.name, op, raw)
    if op in LIST_OPS or op == "between":
        if not isinstance(raw, list):
            example = "[low, high]" if op == "between" else "[a, b]"
            issues.append(PathIssue(loc, f"{op} takes a list such as {example}; got {show(raw)}"))
            return None
        if op == "between" and len(raw) != 2:
            issues.append(
                PathIssue(loc, f"between takes exactly two values [low, high]; got {len(raw)}")
            )
            return None
        if not raw:
            issues.append(PathIssue(loc, f"{op} needs at least one value; got an empty list"))
            return None
        values: list[Scalar] = []
        ok = True
        for i, item in enumerate(raw):
            v = _parse_scalar(spec, item, (*loc, i), issues)
            if v is None:
                ok = False
            else:
                values.append(v)
        if not ok:
            return None
        if op == "between" and _order_key(spec, values[0]) > _order_key(spec, values[1]):
            issues.append(
                PathIssue(
                    loc,
                    f"between needs [low, high] with low <= high; got [{_fmt(values[0])},"
                    f" {_fmt(values[1])}]",
                    f"write [{_fmt(values[1])}, {_fmt(values[0])}]",
                )
            )
            return None
        return Compare(spec.name, op, tuple(values))
    if isinstance(raw, list | dict):
        issues.append(
            PathIssue(loc, f"{op} takes a single value; {_expected(spec)}; got {show(raw)}")
        )
        return None
    value = _parse_scalar(spec, raw, loc, issues)
    return None if value is None else Compare(spec.name, op, value)


def _expected(spec: FieldSpec) -> str:
    kind = spec.kind
    if kind in ("tier", "enum"):
        return "expected one of: " + ", ".join(spec.choices)
    if kind == "money":
        return 'expected an amount such as "10.00"'
    if kind == "integer":
        return "expected a whole number"
    if kind == "boolean":
        return "expected true or false"
    if spec.name == "locale":
        return "expected a locale such as zh-CN or en"
    if spec.name == "timezone":
        return "expected an IANA time zone such as Asia/Shanghai"
    return "expected text"


def _parse_scalar(spec: FieldSpec, raw: object, loc: Loc, issues: list[PathIssue]) -> Scalar | None:
    kind = spec.kind
    try:
        if kind in ("tier", "enum"):
            if isinstance(raw, str) and raw in spec.choices:
                return raw
            issues.append(
                PathIssue(
                    loc,
                    f"{show(raw)} is not a {spec.name}; {_expected(spec)}",
                    did_you_mean(raw, spec.choices),
                )
            )
            return None
        if kind == "money":
            return parse_money(raw)
        if kind == "integer":
            number = parse_whole(raw)
            if spec.bounds and not spec.bounds[0] <= number <= spec.bounds[1]:
                low, high = spec.bounds
                raise ValueError(f"expected a whole number from {low} to {high}, got {number}")
            return number
        if kind == "boolean":
            if isinstance(raw, bool):
                return raw
            raise ValueError(f"{_expected(spec)}; got {show(raw)}")
        # text and set members
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError(f"{_expected(spec)}; got {show(raw)}")
        text = str(raw)
        if spec.name == "locale" and not LOCALE_RE.match(text):
            raise ValueError(f"{text!r} is not a locale; {_expected(spec)}")
        if spec.name == "timezone" and text not in timezones():
            issues.append(
                PathIssue(
                    loc,
                    f"{text!r} is not a known time zone; {_expected(spec)}",
                    did_you_mean(text, sorted(timezones())),
                )
            )
            return None
        return text
    except ValueError as exc:
        issues.append(PathIssue(loc, f"{spec.name}: {exc}"))
        return None


def _order_key(spec: FieldSpec, value: Scalar) -> Any:
    if spec.kind == "tier":
        return TIERS.index(str(value))
    return value


def as_of_date(value: object) -> date:
    """Guard used by compiler and evaluator: conditions are evaluated as of a calendar date."""
    if not isinstance(value, date):
        raise TypeError(f"as_of must be a date, got {type(value).__name__}")
    return value


def describe(cond: Condition) -> str:
    return cond.text()


def flatten_all(cond: Condition) -> Sequence[Condition]:
    return cond.items if isinstance(cond, All) else (cond,)
