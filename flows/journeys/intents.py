"""What a journey decides: intents, one :class:`Decision` per customer, and the run report.

Journeys only decide; the writer (:mod:`flows.journeys.writer`) turns a batch of
decisions into rows through each table's owner.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flows.journeys.context import CustomerRow
from rules.models import JourneyBase


@dataclass
class MessageIntent:
    """Queue one message of ``rule``'s template (a pre-call notice uses the precall rule)."""

    rule: JourneyBase
    template: str
    variables: dict[str, str]
    not_before: datetime | None = None
    valid_until: datetime | None = None


@dataclass
class TaskIntent:
    """A call to make, planned on the first working day from ``earliest`` with room."""

    kind: str
    due_on: date
    earliest: date
    priority: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


@dataclass
class CreditIntent:
    amount: Decimal
    kind: str


@dataclass
class SuspendIntent:
    reason: str


@dataclass
class Decision:
    """Everything one journey decided for one customer, under one occurrence key."""

    customer: CustomerRow
    occurrence: str
    details: dict[str, Any] = field(default_factory=dict)
    messages: list[MessageIntent] = field(default_factory=list)
    tasks: list[TaskIntent] = field(default_factory=list)
    credits: list[CreditIntent] = field(default_factory=list)
    suspend: SuspendIntent | None = None
    message_ids: list[int] = field(default_factory=list)
    """Filled in by the writer, in ``messages`` order (for journeys that link to them)."""

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of the decision, for preview and the audit row."""
        return {
            "customer_id": self.customer.external_id,
            "occurrence": self.occurrence,
            "details": self.details,
            "messages": [m.template for m in self.messages],
            "tasks": [t.kind for t in self.tasks],
            "credits": [str(c.amount) for c in self.credits],
            "suspend": self.suspend is not None,
        }

    def describe(self) -> list[str]:
        """The decision's actions as short text (preview, explain)."""
        out = [f"send {m.template}" for m in self.messages]
        out += [f"grant credit {c.amount} ({c.kind})" for c in self.credits]
        out += [f"call task {t.kind}" + _task_reason(t) for t in self.tasks]
        if self.suspend is not None:
            out.append(f"suspend the line ({self.suspend.reason})")
        return out


def _task_reason(task: TaskIntent) -> str:
    d = task.details
    if "suggested_plan" in d:
        return f" ({d['current_plan']} → {d['suggested_plan']}, saves {d['monthly_saving']}/month)"
    if d.get("reason"):
        return f" ({d['reason']})"
    return ""


@dataclass
class JourneyReport:
    """What one journey did in one run: counts only, JSON-able."""

    journey: str
    candidates: int = 0
    decided: int = 0
    skipped_existing: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "candidates": self.candidates,
            "decided": self.decided,
            "skipped_existing": self.skipped_existing,
            **dict(sorted(self.counts.items())),
        }

    @classmethod
    def merged(cls, journey: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """One report from the per-shard reports of a journey."""
        total = cls(journey)
        for part in parts:
            total.candidates += part.get("candidates", 0)
            total.decided += part.get("decided", 0)
            total.skipped_existing += part.get("skipped_existing", 0)
            for key, value in part.items():
                if key not in {"journey", "candidates", "decided", "skipped_existing"}:
                    total.counts[key] += value
        return total.as_dict()
