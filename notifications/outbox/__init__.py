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
- :mod:`.claims`: the dispatcher's claim (select, lock, suppress, defer, sending);
- :mod:`.writeback`: the dispatcher's outcomes (sent, retried, failed, requeued);
- :mod:`.provider_status`: single-row moves (operators, provider status callbacks);
- :mod:`.views`: reading it (``vipcare messages list``).
"""

from notifications.outbox.claims import (
    accepted_counts,
    attempt_id_for,
    begin_sending,
    claim_due,
    defer,
    stuck_sending,
    suppress,
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
from notifications.outbox.views import MessageView, count_messages, list_messages
from notifications.outbox.writeback import (
    FailedOutcome,
    RetryOutcome,
    SentOutcome,
    WriteBack,
    owned,
    write_back,
)

__all__ = [
    "ACCEPTED",
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
    "DueMessage",
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
    "count_messages",
    "defer",
    "list_messages",
    "move",
    "move_queued",
    "owned",
    "stuck_sending",
    "suppress",
    "transition_reason",
    "write_back",
]
