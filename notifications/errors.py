"""Errors raised by the notifications package; all derive from :class:`NotificationError`.

The split the dispatcher relies on: :class:`TransientSendError` means "the
message was *not* accepted, try again later" (429, 5xx, timeouts), and
:class:`PermanentSendError` means "do not try again" (invalid number, opted out).
"""

from __future__ import annotations

from typing import Any


class NotificationError(Exception):
    """Base of every error the notifications package raises on purpose."""


class ConfigurationError(NotificationError):
    """The backend cannot work with the given settings (missing credentials, sender...)."""


class SendError(NotificationError):
    """A send did not go through. ``provider_response`` is what the provider said, if anything."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str = "",
        provider_response: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason
        self.provider = provider
        self.provider_response: dict[str, Any] = provider_response or {}
        super().__init__(reason)


class TransientSendError(SendError):
    """Worth retrying later: 429, 5xx, timeouts, connection errors.

    ``retry_after`` is the provider's hint in seconds (``Retry-After``), if any.
    ``attempts`` is how many times the adapter already tried in this call.
    ``maybe_accepted`` is True when the request may have reached the provider
    (read timeout, 5xx after the body was sent): before sending again, call
    ``find_previous_attempt`` so that the customer never gets it twice.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        attempts: int = 1,
        maybe_accepted: bool = False,
        provider: str = "",
        provider_response: dict[str, Any] | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.attempts = attempts
        self.maybe_accepted = maybe_accepted
        super().__init__(reason, provider=provider, provider_response=provider_response)


class PermanentSendError(SendError):
    """Never retry: mark the message ``failed`` with ``code`` and ``reason``.

    ``code`` is the provider's error code as a string (``"21211"``) or a vipcare
    code for checks made before calling the provider (``"invalid_to"``).
    """

    def __init__(
        self,
        code: str,
        reason: str,
        provider_response: dict[str, Any] | None = None,
        *,
        provider: str = "",
    ) -> None:
        self.code = code
        super().__init__(reason, provider=provider, provider_response=provider_response)

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class OptedOutError(PermanentSendError):
    """The recipient unsubscribed at the provider (Twilio 21610): set the customer's sms_opt_out."""


class WebhookError(NotificationError):
    """A webhook request we refuse; carries the HTTP status to answer with."""

    def __init__(self, status_code: int, reason: str) -> None:
        self.status_code = status_code
        self.reason = reason
        super().__init__(reason)


# Provider error codes (Twilio's numbering; the mock uses the same) → a readable reason.
# ``status`` is what a *delivery report* with that code means when the provider
# did not say; send-time codes (2xxxx) are always permanent failures.
ERROR_CODES: dict[str, tuple[str, str]] = {
    "20003": ("failed", "authentication with the provider failed; check TWILIO_AUTH_TOKEN"),
    "20404": ("failed", "the provider does not know this resource"),
    "21211": ("failed", "invalid 'To' phone number"),
    "21212": ("failed", "invalid sender ('From') number"),
    "21408": ("failed", "sending to this region is not enabled on the account"),
    "21602": ("failed", "message body is required"),
    "21606": ("failed", "the sender number cannot send SMS"),
    "21608": ("failed", "trial accounts can only send to verified numbers"),
    "21610": ("failed", "the recipient replied STOP: unsubscribed at the provider"),
    "21612": ("failed", "the 'To' number cannot be reached by SMS from this sender"),
    "21614": ("failed", "the 'To' number is not a mobile number"),
    "21617": ("failed", "message body is too long (over 1600 characters)"),
    "21660": ("failed", "the sender number does not belong to this account"),
    "13224": ("failed", "invalid 'To' number for a call"),
    "13227": ("failed", "calls to this region are not enabled on the account"),
    "30001": ("failed", "provider queue overflow; the message was dropped"),
    "30002": ("failed", "the provider account is suspended"),
    "30003": ("undelivered", "unreachable handset: switched off or out of coverage"),
    "30004": ("undelivered", "message blocked by the recipient or the carrier"),
    "30005": ("undelivered", "unknown handset: the number does not exist at the carrier"),
    "30006": ("undelivered", "landline or unreachable carrier"),
    "30007": ("undelivered", "filtered by the carrier as spam"),
    "30008": ("failed", "unknown delivery error at the carrier"),
    "30036": ("expired", "the message's validity period ran out before it could be delivered"),
}
VALIDITY_EXPIRED = "30036"
"""Twilio's "validity period expired": the message ends ``expired``, not ``failed``."""


def describe_code(code: str | int | None) -> str:
    """A readable reason for a provider error code; unknown codes still say which code."""
    if code is None or code == "":
        return "no error code given"
    key = str(code)
    known = ERROR_CODES.get(key)
    return known[1] if known else f"provider error {key}"
