"""The outbox: every SMS/voice notice as a row, moved through a guarded state machine.

::

    queued ──▶ sending ──▶ sent ──▶ delivered | undelivered | failed
      │  ▲        │
      │  └────────┤ (transient failure: retry later; crash reconciliation)
      ▼           ▼
  suppressed    failed (permanent, or retries exhausted)
  expired (never sent after its valid_until)

This package is the one owner of ``outbound_messages``: nothing else writes its
state. Every move goes through :func:`check_transition`, which refuses an
illegal one with :class:`crm.errors.InvalidTransition` and a reason a person can
act on. The modules, one job each:

- :mod:`.states`: the statuses and the transition table;
- :mod:`.queue`: new messages from the journeys, and cancelling queued ones;
- :mod:`.claims`: the dispatcher's claim (select, lock, suppress, defer, sending, leases);
- :mod:`.expiry`: messages past their validity end ``expired`` instead of arriving late;
- :mod:`.writeback`: the dispatcher's outcomes (sent, retried, failed, requeued);
- :mod:`.provider_status`: single-row moves (operators, provider status callbacks);
- :mod:`.views`: reading it (``vipcare messages list``).
"""

from notifications.outbox.claims import (
    Abandoned,
    accepted_counts,
    attempt_id_for,
    begin_sending,
    claim_due,
    defer,
    sending_owners,
    stuck_sending,
    suppress,
)
from notifications.outbox.expiry import (
    CALL_NO_LONGER_PLANNED,
    expire,
    expire_overdue,
    notice_tasks,
    past_validity,
    window_after_validity,
)
from notifications.outbox.provider_status import (
    DEFAULT_LEAD_TIME,
    WEBHOOK,
    apply_provider_status,
    move,
)
from notifications.outbox.queue import move_queued
from notifications.outbox.rows import DueMessage
from notifications.outbox.states import (
    ACCEPTED,
    DELIVERED,
    EXPIRED,
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    TERMINAL,
    TRANSITIONS,
    UNDELIVERED,
    check_transition,
    transition_reason,
)
from notifications.outbox.views import MessageView, count_due, count_messages, list_messages
from notifications.outbox.writeback import (
    ExpiredOutcome,
    FailedOutcome,
    RetryOutcome,
    SentOutcome,
    WriteBack,
    owned,
    renew_claims,
    write_back,
)

__all__ = [
    "ACCEPTED",
    "CALL_NO_LONGER_PLANNED",
    "DEFAULT_LEAD_TIME",
    "DELIVERED",
    "EXPIRED",
    "FAILED",
    "QUEUED",
    "SENDING",
    "SENT",
    "SUPPRESSED",
    "TERMINAL",
    "TRANSITIONS",
    "UNDELIVERED",
    "WEBHOOK",
    "Abandoned",
    "DueMessage",
    "ExpiredOutcome",
    "FailedOutcome",
    "MessageView",
    "RetryOutcome",
    "SentOutcome",
    "WriteBack",
    "accepted_counts",
    "apply_provider_status",
    "attempt_id_for",
    "begin_sending",
    "check_transition",
    "claim_due",
    "count_due",
    "count_messages",
    "defer",
    "expire",
    "expire_overdue",
    "list_messages",
    "move",
    "move_queued",
    "notice_tasks",
    "owned",
    "past_validity",
    "renew_claims",
    "sending_owners",
    "stuck_sending",
    "suppress",
    "transition_reason",
    "window_after_validity",
    "write_back",
]
