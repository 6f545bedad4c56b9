"""The contact policy, applied in one place: send window, frequency caps, opt-out, do-not-call.

The policy itself is data (``rules/contact_policy.yaml``, loaded by the rules
package as ``ruleset.contact_policy``, a typed :class:`rules.models.ContactPolicy`);
this module applies it.

Decisions, in this order (the order matters):

1. **Opt-out / do-not-call** → suppress. SMS to a customer with
   ``sms_opt_out``; voice to a customer with ``do_not_call``.
2. **Marketing wording** → suppress a marketing SMS whose body lacks the
   unsubscribe text for its locale (a template bug must not reach customers).
3. **Send window** (customer-local time, ``customers.timezone``) → defer to the
   next window start; the message stays queued. This comes *before* the caps
   so that a message deferred to tomorrow is counted against tomorrow's cap.
4. **Frequency caps** per category → suppress with the reason.
   ``per_day`` counts the customer-local **calendar day** of the send;
   ``per_week`` counts a **rolling 7 days** (the 7×24 hours before the send).
   Counted: messages of that category, on any channel, already accepted by a
   provider (``sent``, ``delivered``, ``undelivered``) or in flight
   (``sending``), timed by ``sent_at`` (``sending_at`` while in flight).
   Failed and suppressed messages do not count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm.statuses import ReasonCode
from rules.models import CategoryCaps, ContactPolicy, SendWindow

WEEK = timedelta(days=7)


def policy_ref(policy: ContactPolicy) -> tuple[str, str]:
    """(rule_id, content_hash) of the policy, for audit rows."""
    return policy.rule_id, policy.content_hash


# ---------------------------------------------------------------------------
# Send window
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone; an unknown name falls back to UTC (validated at import time)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_window(local: time, window: SendWindow) -> bool:
    """``[start, end)`` in customer-local time (the rules guarantee start < end)."""
    return window.start <= local < window.end


def _local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """``day at`` in ``tz`` as aware UTC.

    A wall time skipped by a DST jump (02:30 on a spring-forward day) maps, with
    ``fold=0``, to the instant just after the gap (03:30 new time); an ambiguous
    one (autumn) to its first occurrence.
    """
    return datetime.combine(day, at).replace(tzinfo=tz).astimezone(UTC)


def schedule_in_window(at_utc: datetime, customer_tz: str, window: SendWindow) -> datetime:
    """The first instant at or after ``at_utc`` inside the customer's local send window.

    ``at_utc`` itself when it is inside; otherwise the next local window start,
    returned as aware UTC.
    """
    if at_utc.tzinfo is None:
        raise ValueError("at_utc must be timezone-aware")
    tz = zone(customer_tz)
    local = at_utc.astimezone(tz)
    if in_window(local.time().replace(tzinfo=None), window):
        return at_utc.astimezone(UTC)
    day = local.date()
    if local.time().replace(tzinfo=None) >= window.start:
        day += timedelta(days=1)
    start = _local_instant(day, window.start, tz)
    if start <= at_utc:  # only on a DST day; take the next one
        start = _local_instant(day + timedelta(days=1), window.start, tz)
    return start


def schedule_for_timezones(
    at_utc: datetime, timezones: Iterable[str], window: SendWindow
) -> dict[str, datetime]:
    """:func:`schedule_in_window` per distinct zone: journeys map it over many customers.

    A million customers live in a handful of zones, so this is computed once
    per zone and joined back by ``customers.timezone``.
    """
    return {tz: schedule_in_window(at_utc, tz, window) for tz in set(timezones)}


def local_day_start(at_utc: datetime, customer_tz: str) -> datetime:
    """Midnight of ``at_utc``'s customer-local calendar day, as aware UTC."""
    tz = zone(customer_tz)
    return _local_instant(at_utc.astimezone(tz).date(), time(0, 0), tz)


# ---------------------------------------------------------------------------
# Wording
# ---------------------------------------------------------------------------


def category_cap(policy: ContactPolicy, category: str) -> CategoryCaps | None:
    """The caps of ``category`` (service or marketing)."""
    found: CategoryCaps | None = getattr(policy.categories, category, None)
    return found


def unsubscribe_text_for(policy: ContactPolicy, locale: str) -> str | None:
    """The required unsubscribe wording for ``locale`` (``en-US`` → ``en`` → ``zh-CN``)."""
    return policy.unsubscribe_for(locale) or None


def has_unsubscribe_wording(body: str, locale: str, policy: ContactPolicy) -> bool:
    text = unsubscribe_text_for(policy, locale)
    return text is None or text.casefold() in body.casefold()


def ensure_unsubscribe(body: str, locale: str, policy: ContactPolicy) -> str:
    """``body`` with the unsubscribe wording appended if missing (for journeys, when rendering)."""
    text = unsubscribe_text_for(policy, locale)
    if text is None or text.casefold() in body.casefold():
        return body
    return f"{body.rstrip()} {text}"


# ---------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------

DecisionKind = Literal["send", "suppress", "defer"]


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str = ""
    code: str = ""
    until: datetime | None = None

    @property
    def text(self) -> str:
        """``code: reason``, what ``status_reason`` stores."""
        return f"{self.code}: {self.reason}" if self.code else self.reason


SEND = Decision("send")


@dataclass(frozen=True)
class Recipient:
    """The message and customer facts a decision needs."""

    customer_id: int
    channel: str
    category: str
    locale: str
    body: str
    timezone: str
    sms_opt_out: bool
    do_not_call: bool


def precheck(policy: ContactPolicy, r: Recipient, at: datetime, *, window: bool = True) -> Decision:
    """Everything but the caps: opt-out, do-not-call, wording, window."""
    if r.channel == "sms" and r.sms_opt_out:
        return Decision("suppress", "customer opted out of SMS", ReasonCode.OPT_OUT.value)
    if r.channel == "voice" and r.do_not_call:
        return Decision(
            "suppress", "customer is on the do-not-call list", ReasonCode.DO_NOT_CALL.value
        )
    if (
        r.channel == "sms"
        and r.category == "marketing"
        and not has_unsubscribe_wording(r.body, r.locale, policy)
    ):
        wording = unsubscribe_text_for(policy, r.locale)
        return Decision(
            "suppress",
            f"marketing text lacks the required unsubscribe wording {wording!r}",
            ReasonCode.MISSING_UNSUBSCRIBE.value,
        )
    if window:
        until = schedule_in_window(at, r.timezone, policy.send_window)
        if until != at.astimezone(UTC):
            w = policy.send_window
            local = at.astimezone(zone(r.timezone))
            return Decision(
                "defer",
                f"{local:%H:%M} {r.timezone} is outside the send window "
                f"{w.start:%H:%M}-{w.end:%H:%M}",
                ReasonCode.OUTSIDE_WINDOW.value,
                until,
            )
    return SEND


class CapCounter:
    """Frequency-cap bookkeeping for one batch of sends.

    Seeded with what already went out (:func:`notifications.outbox.accepted_counts`),
    then :meth:`decide` both checks and, when it says send, counts the message,
    so two messages of the same customer in one batch are capped correctly.
    """

    def __init__(
        self, policy: ContactPolicy, history: Iterable[tuple[int, str, datetime]] = ()
    ) -> None:
        self.policy = policy
        self._sent: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        for customer_id, category, when in history:
            self._sent[(customer_id, category)].append(when)

    def add(self, customer_id: int, category: str, when: datetime) -> None:
        self._sent[(customer_id, category)].append(when)

    def counts(self, customer_id: int, category: str, at: datetime, tz: str) -> tuple[int, int]:
        """(sent on the customer-local day of ``at``, sent in the 7 days up to ``at``)."""
        stamps = self._sent.get((customer_id, category), [])
        day_start = local_day_start(at, tz)
        day_end = local_day_start(day_start + timedelta(hours=36), tz)
        week_start = at - WEEK
        day = sum(1 for s in stamps if day_start <= s < day_end)
        week = sum(1 for s in stamps if s > week_start)
        return day, week

    def decide(self, r: Recipient, at: datetime) -> Decision:
        cap = category_cap(self.policy, r.category)
        if cap is not None:
            day, week = self.counts(r.customer_id, r.category, at, r.timezone)
            if day >= cap.per_day:
                local_day = at.astimezone(zone(r.timezone)).date()
                return Decision(
                    "suppress",
                    f"daily cap reached: {day} {r.category} message(s) already on "
                    f"{local_day.isoformat()} (customer-local); the cap is {cap.per_day}",
                    ReasonCode.CAP_DAY.value,
                )
            if week >= cap.per_week:
                return Decision(
                    "suppress",
                    f"weekly cap reached: {week} {r.category} message(s) in the last 7 days; "
                    f"the cap is {cap.per_week}",
                    ReasonCode.CAP_WEEK.value,
                )
        self.add(r.customer_id, r.category, at)
        return SEND


def decide(
    policy: ContactPolicy, r: Recipient, at: datetime, caps: CapCounter | None = None
) -> Decision:
    """The full decision for one message at send time (see the module doc for the order)."""
    first = precheck(policy, r, at)
    if first.kind != "send":
        return first
    return (caps if caps is not None else CapCounter(policy)).decide(r, at)
