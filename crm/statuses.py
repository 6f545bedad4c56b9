"""Every coded value vipcare stores and shows, as a ``StrEnum``: statuses, kinds,
outcomes, flags and reason codes.

One place, importing nothing else from ``crm``, so every layer can use it (the
schema's CHECK constraints, the owners' state machines, the CLI's ``--status``
choices, the workspace's labels, colours and filters). A member *is* its string
(``TaskStatus.READY == "ready"``), so rows, JSON and audit details are unchanged.
The workspace's tests enumerate every member here and fail when one lacks a
label in either language (``tests/test_workspace_labels.py``).
"""

from __future__ import annotations

from enum import StrEnum, unique


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The members as plain strings, in declaration order (for CHECK constraints,
    ``--status`` help and messages, where a member's ``repr`` would read wrong)."""
    return tuple(member.value for member in enum)


@unique
class Tier(StrEnum):
    """Customer tiers in ascending order (``customers.tier_rank`` is the index)."""

    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"
    DIAMOND = "diamond"


@unique
class LineStatus(StrEnum):
    """A customer's line (``customers.status``)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


@unique
class Club(StrEnum):
    """Interest clubs the workspace has words for; an operator may import others
    (``customer_clubs.club`` is free text), which are shown as imported."""

    MUSIC = "music"
    GAMES = "games"
    FILM = "film"
    HEALTH = "health"
    TRAVEL = "travel"
    READING = "reading"
    SPORTS = "sports"


@unique
class ConsentFlag(StrEnum):
    """The customer's contact consent flags (``customers.<flag>``)."""

    SMS_OPT_OUT = "sms_opt_out"
    DO_NOT_CALL = "do_not_call"


@unique
class TaskKind(StrEnum):
    CALLBACK = "callback"
    PLAN_FIT = "plan_fit"
    GRACE_FOLLOWUP = "grace_followup"
    BIRTHDAY = "birthday"
    CARE = "care"
    """A call of a journey marketing ops declared in YAML (its reason says why)."""


@unique
class TaskStatus(StrEnum):
    AWAITING_NOTICE = "awaiting_notice"
    READY = "ready"
    DONE = "done"
    CANCELLED = "cancelled"


@unique
class TaskOutcome(StrEnum):
    """What the manager records after a call."""

    REACHED = "reached"
    NO_ANSWER = "no_answer"
    DECLINED = "declined"
    PLAN_CHANGED = "plan_changed"
    WRONG_NUMBER = "wrong_number"


@unique
class NoticeState(StrEnum):
    """A call task's pre-call SMS as the workspace shows it."""

    NO_NOTICE = "no_notice"
    WAITING = "waiting"
    """Queued or being sent."""
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"


@unique
class RescheduleRefusal(StrEnum):
    """Why a reschedule was refused (``crm.tasks.RescheduleError.code``)."""

    REASON = "reason"
    """No reason given, or one that is too long."""
    PAST = "past"
    TOO_FAR = "too_far"
    SAME_DAY = "same_day"
    WEEKEND = "weekend"
    NO_CAPACITY = "no_capacity"
    FULL = "full"


@unique
class MessageStatus(StrEnum):
    """The outbox state machine's states (``notifications.outbox.states``)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"


@unique
class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"


@unique
class MessageCategory(StrEnum):
    """Frequency caps and the unsubscribe wording apply per category."""

    SERVICE = "service"
    MARKETING = "marketing"


@unique
class ReasonCode(StrEnum):
    """Why a message was not sent, or a call has no pre-call SMS.

    Stored as the head of a ``code: readable text`` reason (``outbound_messages.
    status_reason``, a task's ``no_notice_reason``); the text is for operators,
    the code is what the workspace labels in the reader's language.
    """

    OPT_OUT = "opt_out"
    DO_NOT_CALL = "do_not_call"
    MISSING_UNSUBSCRIBE = "missing_unsubscribe"
    OUTSIDE_WINDOW = "outside_window"
    CAP_DAY = "cap_day"
    CAP_WEEK = "cap_week"
    VALID_UNTIL = "valid_until"
    WINDOW_AFTER_VALIDITY = "window_after_validity"
    CALL_CLOSED = "call_closed"
    CANCELLED = "cancelled"
    """A grace notice withdrawn because the grace no longer holds."""
    REPAID = "repaid"
    """A grace notice withdrawn because the customer topped up before it went out."""
    SUSPENDED = "suspended"
    """Care withdrawn because the line is suspended."""
    CLOSED = "closed"
    """Care withdrawn because the account is closed."""
    PRECALL_OFF = "precall_off"
    """The pre-call notice journey is disabled: calls go ahead without an SMS."""
    PROVIDER_ERROR = "provider_error"
    """The SMS provider refused or could not deliver the message (its code says why)."""


LEGACY_REASONS: dict[str, ReasonCode] = {
    "customer opted out of SMS": ReasonCode.OPT_OUT,
    "the pre-call notice journey is off": ReasonCode.PRECALL_OFF,
}
"""Reasons stored before they carried a code (rows written by earlier versions)."""


_REASON_CODES = frozenset(code.value for code in ReasonCode)


def reason_code(text: str | None) -> ReasonCode | None:
    """The code of a stored reason: ``"opt_out: customer opted out of SMS"`` →
    ``opt_out``; a pre-call task's ``"notice suppressed: opt_out: ..."`` → ``opt_out``;
    None when the reason carries no code this version knows."""
    rest = (text or "").strip()
    while rest:
        if rest in LEGACY_REASONS:
            return LEGACY_REASONS[rest]
        head, sep, tail = rest.partition(":")
        head = head.strip()
        if head in _REASON_CODES:
            return ReasonCode(head)
        if not sep or not head.startswith("notice "):
            return None
        rest = tail.strip()  # "notice <status>: <the message's own reason>"
    return None


@unique
class GraceStatus(StrEnum):
    OPEN = "open"
    REPAID = "repaid"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@unique
class InboundAction(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


@unique
class InboundOutcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    SUPERSEDED = "superseded"


@unique
class AccountRole(StrEnum):
    MANAGER = "manager"
    SUPERVISOR = "supervisor"


@unique
class SessionEnd(StrEnum):
    """Why a workspace session ended before it expired (``staff_sessions.end_reason``)."""

    SIGNED_OUT = "signed_out"
    PASSWORD_CHANGED = "password_changed"
    ROLE_CHANGED = "role_changed"


@unique
class SignInNotice(StrEnum):
    """What the sign-in page explains: a session that ended, or the lifetime ran out."""

    EXPIRED = "expired"
    SIGNED_OUT = SessionEnd.SIGNED_OUT.value
    PASSWORD_CHANGED = SessionEnd.PASSWORD_CHANGED.value
    ROLE_CHANGED = SessionEnd.ROLE_CHANGED.value


@unique
class QaCriterion(StrEnum):
    ACCURACY = "accuracy"
    COURTESY = "courtesy"
    PROACTIVE_OFFER = "proactive_offer"


@unique
class RunStatus(StrEnum):
    """A recorded job run (``job_runs.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@unique
class RunKind(StrEnum):
    """What a job run was (``job_runs.kind``)."""

    JOURNEY = "journey"
    CARE_DAY = "care_day"
    DISPATCH = "dispatch"
    ESCALATION = "escalation"


@unique
class ActorType(StrEnum):
    """Who an audit row says acted (``audit_log.actor_type``)."""

    MANAGER = "manager"
    FLOW = "flow"
    SYSTEM = "system"
    WEBHOOK = "webhook"
    IMPORT = "import"
    CLI = "cli"


@unique
class AuditAction(StrEnum):
    """Every fixed audit action. Two families carry a name: ``journey.<journey id>``
    (one per decision) and ``grace.<GraceStatus>``."""

    TASK_READY = "task.ready"
    TASK_DONE = "task.done"
    TASK_RETRY_SCHEDULED = "task.retry_scheduled"
    TASK_RESCHEDULED = "task.rescheduled"
    TASK_REASSIGNED = "task.reassigned"
    TASK_CANCELLED = "task.cancelled"
    TASK_ESCALATED = "task.escalated"
    LEDGER_CREDIT = "ledger.credit"
    LEDGER_REVERSAL = "ledger.reversal"
    CUSTOMER_SUSPENDED = "customer.suspended"
    CUSTOMER_SMS_OPT_OUT = "customer.sms_opt_out"
    CUSTOMER_SMS_OPT_IN = "customer.sms_opt_in"
    CUSTOMER_DO_NOT_CALL = "customer.do_not_call"
    CUSTOMER_DO_NOT_CALL_LIFTED = "customer.do_not_call_lifted"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_UNDELIVERED = "message.undelivered"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_SUPPRESSED = "message.suppressed"
    MESSAGE_EXPIRED = "message.expired"
    MESSAGE_DEFERRED = "message.deferred"
    MESSAGE_RETRY = "message.retry"
    MESSAGE_RERENDERED = "message.rerendered"
    MESSAGE_RECONCILED = "message.reconciled"
    QA_SAMPLE_DRAWN = "qa.sample_drawn"
    QA_REVIEWED = "qa.reviewed"
    ACCOUNT_PASSWORD_SET = "account.password_set"
    ACCOUNT_SIGNED_IN = "account.signed_in"
    ACCOUNT_SIGNED_OUT = "account.signed_out"
    ACCOUNT_PREFERENCES = "account.preferences"
    MANAGER_ADDED = "manager.added"
    RULES_ACCEPTED = "rules.accepted"
    RULES_REFUSED = "rules.refused"
    RULES_LIVE = "rules.live"
    IMPORT = "import"


JOURNEY_ACTION_PREFIX = "journey."
GRACE_ACTION_PREFIX = "grace."
