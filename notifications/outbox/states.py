"""The outbox state machine: every status, the allowed moves, and why a move is refused."""

from __future__ import annotations

from collections.abc import Mapping

from crm.errors import InvalidTransition
from crm.statuses import MessageStatus

QUEUED = MessageStatus.QUEUED.value
SENDING = MessageStatus.SENDING.value
SENT = MessageStatus.SENT.value
DELIVERED = MessageStatus.DELIVERED.value
UNDELIVERED = MessageStatus.UNDELIVERED.value
FAILED = MessageStatus.FAILED.value
SUPPRESSED = MessageStatus.SUPPRESSED.value
EXPIRED = MessageStatus.EXPIRED.value
"""Not sent before its ``valid_until`` (a greeting after the birthday, a notice after its
deadline): it will never be sent, and the reason says why. From ``queued`` (the
dispatcher found it too late), ``sending`` (its time ran out between claim and
send) or ``sent`` (the provider dropped it when its validity period ran out,
Twilio error 30036)."""

TRANSITIONS: Mapping[str, frozenset[str]] = {
    QUEUED: frozenset({SENDING, SUPPRESSED, EXPIRED}),
    SENDING: frozenset({SENT, QUEUED, FAILED, EXPIRED}),
    SENT: frozenset({DELIVERED, UNDELIVERED, FAILED, EXPIRED}),
    DELIVERED: frozenset(),
    UNDELIVERED: frozenset(),
    FAILED: frozenset(),
    SUPPRESSED: frozenset(),
    EXPIRED: frozenset(),
}
"""Allowed moves; anything else is refused."""

TERMINAL: frozenset[str] = frozenset({DELIVERED, UNDELIVERED, FAILED, SUPPRESSED, EXPIRED})
"""States a message never leaves."""

ACCEPTED: tuple[str, ...] = (SENT, DELIVERED, UNDELIVERED)
"""The provider took the message: these count towards frequency caps."""

_SPECIFIC_REASONS: Mapping[tuple[str, str], str] = {
    (QUEUED, SENT): "a queued message must be claimed (sending) before it can be marked sent",
    (
        QUEUED,
        DELIVERED,
    ): "a queued message has not been sent yet; delivery needs sending and sent first",
    (QUEUED, UNDELIVERED): "a queued message has not been sent yet, so it cannot be undelivered",
    (QUEUED, FAILED): "a queued message has not been tried; only a send attempt can fail "
    "(use suppressed to stop it)",
    (SENDING, DELIVERED): "the provider has not confirmed acceptance yet; mark it sent first",
    (SENDING, UNDELIVERED): "the provider has not confirmed acceptance yet; mark it sent first",
    (
        SENDING,
        SUPPRESSED,
    ): "the message is already with the provider; it can no longer be suppressed",
    (SENT, QUEUED): "the provider accepted the message; sending it again would double-send",
    (SENT, SENDING): "the provider accepted the message; sending it again would double-send",
    (SENT, SUPPRESSED): "the provider accepted the message; it can no longer be suppressed",
}


def transition_reason(current: str, target: str) -> str | None:
    """Why ``current → target`` is illegal, or ``None`` when it is allowed."""
    if current not in TRANSITIONS:
        return f"unknown current status {current!r}"
    if target not in TRANSITIONS:
        return f"unknown status {target!r}; expected one of {', '.join(TRANSITIONS)}"
    if target in TRANSITIONS[current]:
        return None
    if current == target:
        return f"the message is already {current}"
    specific = _SPECIFIC_REASONS.get((current, target))
    if specific:
        return specific
    if current in TERMINAL:
        return f"{current} is final; a message never leaves it"
    allowed = ", ".join(sorted(TRANSITIONS[current]))
    return f"from {current} a message can only go to {allowed}"


def check_transition(current: str, target: str, entity: str = "message") -> None:
    """Raise :class:`InvalidTransition` when ``current → target`` is not allowed."""
    reason = transition_reason(current, target)
    if reason is not None:
        raise InvalidTransition(entity, current, target, reason)
