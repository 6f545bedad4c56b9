"""The shape of every field a Twilio webhook may send us, checked before any database work.

A valid signature proves the request came from someone holding the auth token,
not that its fields are sane: a signed ``ErrorCode`` of 40 characters, a NUL in a
sid or Arabic-Indic digits must answer 400 with a short reason, never reach
PostgreSQL (which refuses NUL and over-long text with a 500). Patterns are
ASCII-only on purpose: ``str.isdigit`` accepts ``٣``, a regex class ``[0-9]``
does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from notifications.errors import WebhookError

SID = re.compile(r"[A-Za-z0-9]{2,64}")
"""Twilio sids are two letters + 32 hex (``SM…``, ``CA…``); any short alphanumeric is accepted."""
STATUS_WORD = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")
ERROR_CODE = re.compile(r"[0-9]{1,10}")
MESSAGE_ID = re.compile(r"[0-9]{1,18}")
ATTEMPT_ID = re.compile(r"[0-9a-f]{1,40}:[0-9]{1,18}")
"""The dispatcher's ``<token hex>:<message id>`` (``notifications.outbox.attempt_id_for``)."""
MAX_FROM = 32
MAX_INBOUND_BODY = 1600
"""Twilio concatenates at most 1,600 characters into one inbound message."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""C0/C1 controls except tab, line feed and carriage return (which real SMS text holds)."""


def shown(value: str, limit: int = 20) -> str:
    """A short, printable rendering of a refused value for the 400 reason."""
    text = value[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return repr(text) + ("…" if len(value) > limit else "")


def optional(
    params: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str
) -> str | None:
    """``params[name]`` when present and non-empty; 400 unless it matches ``pattern`` whole."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not pattern.fullmatch(value):
        raise WebhookError(400, f"{name} must be {what}, got {shown(value)}")
    return value


def required(params: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = optional(params, name, pattern, what)
    if value is None:
        raise WebhookError(400, f"expected {name} ({what})")
    return value


def free_text(params: Mapping[str, str], name: str, max_len: int) -> str | None:
    """Free text (an SMS body): bounded length, no control characters other than whitespace."""
    value = params.get(name)
    if value is None:
        return None
    if len(value) > max_len:
        raise WebhookError(400, f"{name} is longer than {max_len} characters")
    if _CONTROL.search(value):
        raise WebhookError(400, f"{name} contains control characters")
    return value
