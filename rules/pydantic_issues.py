"""pydantic's validation errors, said the way a person editing YAML understands them."""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from rules.conditions import Loc, PathIssue
from rules.errors import (
    did_you_mean,
)
from rules.values import show


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
