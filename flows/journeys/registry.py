"""The journeys, as one ordered list: the only place a journey is registered.

Order matters: grace credits first (money and suspension are urgent), then the
birthday, plan-fit and YAML-declared journeys, callbacks after them (they fill
the call capacity left), and the pre-call notice last (one text per customer per
day, covering every call the journeys above planned). A Python journey needs one
module and one entry here; a YAML journey (``kind: generic``) needs neither.
"""

from __future__ import annotations

from flows.journeys.birthday import Birthday
from flows.journeys.callback import Callback
from flows.journeys.generic import Generic
from flows.journeys.grace_credit import GraceCredit
from flows.journeys.plan_fit import PlanFit
from flows.journeys.precall import PrecallNotice
from flows.journeys.protocol import Journey
from rules.errors import UnknownNameError
from rules.loader import RuleSet
from rules.models import GenericJourneyRule

BEFORE_GENERIC: tuple[type[Journey], ...] = (GraceCredit, Birthday, PlanFit)
AFTER_GENERIC: tuple[type[Journey], ...] = (Callback, PrecallNotice)


def journeys_for(ruleset: RuleSet) -> list[Journey]:
    """Every journey that has a rule file, in run order."""
    generic: list[Journey] = [
        Generic(jid)
        for jid, rule in sorted(ruleset.journeys.items())
        if isinstance(rule, GenericJourneyRule)
    ]
    ordered = [cls() for cls in BEFORE_GENERIC] + generic + [cls() for cls in AFTER_GENERIC]
    return [j for j in ordered if j.id in ruleset.journeys]


def journey_for(ruleset: RuleSet, journey_id: str) -> Journey:
    """The journey ``journey_id``; raises :class:`UnknownNameError` with a suggestion."""
    for journey in journeys_for(ruleset):
        if journey.id == journey_id:
            return journey
    raise UnknownNameError("journey", journey_id, [j.id for j in journeys_for(ruleset)])
