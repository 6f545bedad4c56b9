"""JSON Schema for rule files, so editors (VS Code's YAML extension) can autocomplete and
underline mistakes while marketing ops type. Generated from the pydantic models; the
condition part is generated from the field whitelist.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from rules.fields import FIELDS, LIST_OPS, OP_HELP, FieldSpec
from rules.models import CONDITION_MARK, MONEY_SCHEMA, CallQaRule, ContactPolicy, JourneyRule

SCHEMA_ID = "https://vipcare.example/schemas/rules.schema.json"


def _scalar(spec: FieldSpec) -> dict[str, Any]:
    if spec.kind in ("tier", "enum"):
        return {"enum": list(spec.choices)}
    if spec.kind == "money":
        return dict(MONEY_SCHEMA)
    if spec.kind == "integer":
        out: dict[str, Any] = {"type": "integer"}
        if spec.bounds:
            out["minimum"], out["maximum"] = spec.bounds
        return out
    if spec.kind == "boolean":
        return {"type": "boolean"}
    if spec.name == "locale":
        return {"type": "string", "pattern": r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"}
    return {"type": "string", "minLength": 1}


def _operand(spec: FieldSpec, op: str) -> dict[str, Any]:
    scalar = _scalar(spec)
    if op == "is_null":
        schema: dict[str, Any] = {"type": "boolean"}
    elif op == "between":
        schema = {"type": "array", "items": scalar, "minItems": 2, "maxItems": 2}
    elif op in LIST_OPS:
        schema = {"type": "array", "items": scalar, "minItems": 1}
    else:
        schema = scalar
    return {**schema, "description": OP_HELP[op]}


def condition_schema() -> dict[str, Any]:
    """The recursive ``Condition`` definition (all / any / not / field tests)."""
    ref = {"$ref": "#/$defs/Condition"}
    properties: dict[str, Any] = {
        "all": {
            "type": "array",
            "items": ref,
            "minItems": 1,
            "description": "every listed condition holds",
        },
        "any": {
            "type": "array",
            "items": ref,
            "minItems": 1,
            "description": "at least one listed condition holds",
        },
        "not": {**ref, "description": "the condition does not hold"},
    }
    for spec in FIELDS.values():
        ops = {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {op: _operand(spec, op) for op in spec.ops},
        }
        shorthand: list[dict[str, Any]] = [_scalar(spec)]
        if spec.kind != "set":
            shorthand.append({"type": "array", "items": _scalar(spec), "minItems": 1})
        properties[spec.name] = {"description": spec.description, "anyOf": [*shorthand, ops]}
    return {
        "type": "object",
        "description": "a condition: all / any / not, or field: value / field: {operator: value}",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": properties,
    }


def _link_conditions(node: Any) -> Any:
    """Replace pydantic's placeholder for condition fields by a $ref to ``Condition``."""
    if isinstance(node, dict):
        if node.get(CONDITION_MARK):
            rest = {k: v for k, v in node.items() if k != CONDITION_MARK}
            return {"$ref": "#/$defs/Condition", **rest}
        return {k: _link_conditions(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_conditions(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """One schema for every rule file: a journey file, the contact policy or call QA."""
    journeys = TypeAdapter(JourneyRule).json_schema(mode="validation")
    policy = ContactPolicy.model_json_schema(mode="validation")
    call_qa = CallQaRule.model_json_schema(mode="validation")
    defs: dict[str, Any] = {}
    defs.update(journeys.pop("$defs", {}))
    defs.update(policy.pop("$defs", {}))
    defs.update(call_qa.pop("$defs", {}))
    defs["ContactPolicy"] = policy
    defs["CallQaRule"] = call_qa
    defs["JourneyFile"] = journeys
    defs = _link_conditions(defs)
    defs["Condition"] = condition_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "vipcare rule file (journey, contact policy or call QA)",
        "anyOf": [
            {"$ref": "#/$defs/JourneyFile"},
            {"$ref": "#/$defs/ContactPolicy"},
            {"$ref": "#/$defs/CallQaRule"},
        ],
        "$defs": dict(sorted(defs.items())),
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
