"""The whitelist of customer fields an audience condition may test, and their operators.

Rule files name fields from :data:`FIELDS` only; each field has a kind that
fixes which operators apply and what a value must look like. The compiler and
the Python evaluator both dispatch on these kinds, so adding a field means
adding it here, in ``rules.compiler`` and in ``rules.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crm.models import CUSTOMER_STATUSES, TIERS

FieldKind = Literal["tier", "enum", "set", "text", "money", "integer", "boolean"]

EQUALITY: tuple[str, ...] = ("eq", "ne", "in", "not_in")
ORDERING: tuple[str, ...] = ("gt", "gte", "lt", "lte", "between")
NULLS: tuple[str, ...] = ("is_null",)
SET_OPS: tuple[str, ...] = ("contains", "contains_any", "contains_all")
OPERATORS: tuple[str, ...] = EQUALITY + ORDERING + NULLS + SET_OPS
"""Every operator a rule file may use."""

LIST_OPS = frozenset({"in", "not_in", "contains_any", "contains_all"})
"""Operators whose value is a non-empty list."""

OP_TEXT: dict[str, str] = {
    "eq": "=",
    "ne": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "in": "in",
    "not_in": "not in",
    "between": "between",
    "is_null": "is null",
    "contains": "contains",
    "contains_any": "contains any of",
    "contains_all": "contains all of",
}
"""How each operator reads in explanations ("tier >= gold")."""

OP_HELP: dict[str, str] = {
    "eq": "equal to the value",
    "ne": "not equal to the value (false when the field is unknown)",
    "in": "equal to one of the listed values",
    "not_in": "equal to none of the listed values (false when the field is unknown)",
    "gt": "greater than the value",
    "gte": "greater than or equal to the value",
    "lt": "less than the value",
    "lte": "less than or equal to the value",
    "between": "between the two listed values, both ends included: [low, high]",
    "is_null": "true: the field is unknown; false: the field is known",
    "contains": "the set contains the value",
    "contains_any": "the set contains at least one of the listed values",
    "contains_all": "the set contains every listed value",
}


@dataclass(frozen=True)
class FieldSpec:
    """One whitelisted field: its kind, operators and (for enums) allowed values."""

    name: str
    kind: FieldKind
    description: str
    ops: tuple[str, ...]
    nullable: bool = False
    choices: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None
    """Allowed range of integer values (keeps the date arithmetic in range)."""

    @property
    def shorthand_op(self) -> str:
        """The operator meant by ``field: value`` without an explicit operator."""
        return "contains" if self.kind == "set" else "eq"


_NUMBER_OPS = EQUALITY + ORDERING

FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec(
            "tier",
            "tier",
            "VIP tier; ordered silver < gold < platinum < diamond",
            _NUMBER_OPS,
            choices=TIERS,
        ),
        FieldSpec("status", "enum", "line status", EQUALITY, choices=CUSTOMER_STATUSES),
        FieldSpec("clubs", "set", "interest clubs the customer belongs to", SET_OPS),
        FieldSpec("plan", "text", "current plan code (unknown: no plan)", EQUALITY + NULLS, True),
        FieldSpec(
            "manager",
            "text",
            "account manager id (unknown: no manager assigned)",
            EQUALITY + NULLS,
            True,
        ),
        FieldSpec("locale", "text", "preferred language, e.g. zh-CN or en", EQUALITY),
        FieldSpec("timezone", "text", "IANA time zone, e.g. Asia/Shanghai", EQUALITY),
        FieldSpec("balance", "money", 'account balance in yuan, e.g. "-5.00"', _NUMBER_OPS),
        FieldSpec("credit_limit", "money", "credit limit in yuan", _NUMBER_OPS),
        FieldSpec(
            "points",
            "integer",
            "loyalty points balance (积分)",
            _NUMBER_OPS,
            bounds=(0, 1_000_000_000),
        ),
        FieldSpec(
            "tenure_days",
            "integer",
            "whole days since the customer joined (unknown: join date missing)",
            _NUMBER_OPS + NULLS,
            True,
            bounds=(0, 36500),
        ),
        FieldSpec(
            "tenure_months",
            "integer",
            "whole months since the customer joined (unknown: join date missing)",
            _NUMBER_OPS + NULLS,
            True,
            bounds=(0, 1200),
        ),
        FieldSpec(
            "age",
            "integer",
            "age in whole years (unknown: birthday missing)",
            _NUMBER_OPS + NULLS,
            True,
            bounds=(0, 150),
        ),
        FieldSpec(
            "days_since_contact",
            "integer",
            "whole days since the last completed contact (unknown: never contacted)",
            _NUMBER_OPS + NULLS,
            True,
            bounds=(0, 36500),
        ),
        FieldSpec("sms_opt_out", "boolean", "the customer opted out of SMS", ("eq", "ne")),
        FieldSpec("do_not_call", "boolean", "the customer must not be called", ("eq", "ne")),
        FieldSpec("has_birthday", "boolean", "the birthday is known", ("eq", "ne")),
    )
}
"""The whitelist: every field an audience or ``when`` condition may name."""

COMBINATORS: tuple[str, ...] = ("all", "any", "not")
