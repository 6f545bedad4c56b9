"""Rule files that marketing ops edit: typed models, loader/validator, compiler, evaluator.

Public API (see docs/internal-contracts.md):

- :func:`load_rules` → :class:`RuleSet` (all or nothing; raises
  :class:`rules.errors.RulesValidationError`);
- :mod:`rules.models`: the typed journey models and :class:`ContactPolicy`;
- :func:`rules.compiler.compile_condition`: condition → SQLAlchemy expression;
- :mod:`rules.evaluate`: the same semantics in Python, plus ``explain``;
- :func:`rules.templates.render`.
"""

from __future__ import annotations

from rules.errors import RuleIssue, RulesError, RulesValidationError
from rules.loader import RuleSet, load_rules
from rules.models import (
    JOURNEY_IDS,
    BirthdayRule,
    CallbackRule,
    ContactPolicy,
    GraceCreditRule,
    JourneyBase,
    JourneyRule,
    PlanFitRule,
    PrecallNoticeRule,
)

__all__ = [
    "JOURNEY_IDS",
    "BirthdayRule",
    "CallbackRule",
    "ContactPolicy",
    "GraceCreditRule",
    "JourneyBase",
    "JourneyRule",
    "PlanFitRule",
    "PrecallNoticeRule",
    "RuleIssue",
    "RuleSet",
    "RulesError",
    "RulesValidationError",
    "load_rules",
]
