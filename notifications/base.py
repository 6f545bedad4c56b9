"""The channel-backend contract: one fixed send pipeline, providers fill in a few hooks.

Modelled on django-anymail's backends: :meth:`ChannelBackend.send` always
validates the recipient, calls the provider hook :meth:`ChannelBackend._send`,
retries transient failures a bounded number of times (reconciling first when a
failure was ambiguous), and normalises the provider's status. Providers never
re-implement that order, so the mock and Twilio behave the same to the dispatcher.

Retry split: the adapter makes a *short in-call* retry (default 3 tries, well
under a minute); when that is exhausted it raises :class:`TransientSendError`
and the dispatcher makes the *long* retry through ``next_attempt_at``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from crm import statuses
from crm.phones import InvalidPhone, mask, to_e164
from notifications.errors import PermanentSendError, TransientSendError

log = logging.getLogger(__name__)

Channel = Literal["sms", "voice"]
CHANNELS: tuple[str, ...] = statuses.values(statuses.Channel)
STATUSES: tuple[str, ...] = ("queued", "sent", "delivered", "undelivered", "failed")
"""Normalised provider statuses, in the vocabulary of the outbox."""
FINAL_STATUSES: frozenset[str] = frozenset({"delivered", "undelivered", "failed"})


@dataclass
class OutgoingMessage:
    """One message as the dispatcher hands it over: already rendered, already policy-checked.

    ``attempt_id`` is the dispatcher's idempotence token for this try; the same
    id must be used when reconciling with :meth:`ChannelBackend.find_previous_attempt`.
    """

    message_id: int
    channel: Channel
    to: str
    body: str
    locale: str
    attempt_id: str
    status_callback: str | None = None
    valid_for: int | None = None
    """Seconds the message may still be delivered (time left to its ``valid_until``, at
    least 1); ``None``: no limit. Providers that can drop a late message get it
    (Twilio: ``ValidityPeriod``)."""


@dataclass
class SendResult:
    """What the provider accepted. ``status`` is normalised (one of :data:`STATUSES`)."""

    provider: str
    provider_message_id: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None


@dataclass
class DeliveryReport:
    """A later status for an accepted message (status callback or simulated report)."""

    provider_message_id: str
    status: str
    error_code: str | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, for the in-call retry.

    A ``Retry-After`` hint longer than ``max_retry_after`` is not waited for
    here: the error goes to the dispatcher, which schedules the retry instead.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before try ``attempt + 1``; ``None`` means do not retry in-call."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # Honour the hint exactly, plus a little jitter so that clients spread out.
            return retry_after + rng.uniform(0, self.base_delay)
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return rng.uniform(0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


class ChannelBackend(ABC):
    """A channel adapter. Subclasses implement :meth:`_send` and :meth:`_find_previous`.

    ``sleep`` and ``rng`` are injected so that tests never really wait and
    jitter is reproducible.
    """

    provider: ClassVar[str] = "base"
    channel: Channel = "sms"
    native_async: ClassVar[bool] = False
    """True when :meth:`_send_async` talks to the provider without a thread."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.retry = retry if retry is not None else RetryPolicy()
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()

    # -- the fixed pipeline -------------------------------------------------
    def send(self, msg: OutgoingMessage) -> SendResult:
        """Send ``msg``: validate, call the provider (with bounded retry), normalise.

        Raises :class:`PermanentSendError` (do not retry; ``OptedOutError`` for
        an unsubscribed recipient) or :class:`TransientSendError` (retry later).
        """
        self.validate(msg)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._send(msg)
            except TransientSendError as exc:
                wait = self._retry_wait(msg, exc, attempt)
                self.sleep(wait)
                if exc.maybe_accepted:
                    previous = self._previous_after_error(msg, exc, self.find_previous_attempt)
                    if previous is not None:
                        return previous
                continue
            return self._normalised(result)

    async def send_async(self, msg: OutgoingMessage) -> SendResult:
        """:meth:`send` for the dispatcher's event loop, with the same pipeline.

        Backends with a native async client (``native_async``) implement
        :meth:`_send_async`; the others run :meth:`send` in a worker thread.
        """
        if not self.native_async:
            return await asyncio.to_thread(self.send, msg)
        self.validate(msg)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._send_async(msg)
            except TransientSendError as exc:
                wait = self._retry_wait(msg, exc, attempt)
                if self.sleep is time.sleep:
                    await asyncio.sleep(wait)
                else:
                    self.sleep(wait)  # an injected (fake) sleep returns at once
                if exc.maybe_accepted:
                    found = await asyncio.to_thread(
                        self._previous_after_error, msg, exc, self.find_previous_attempt
                    )
                    if found is not None:
                        return found
                continue
            return self._normalised(result)

    async def find_previous_attempt_async(
        self, msg: OutgoingMessage, since: datetime | None = None
    ) -> SendResult | None:
        """:meth:`find_previous_attempt` from the event loop (in a worker thread: it is rare)."""
        return await asyncio.to_thread(self.find_previous_attempt, msg, since)

    async def aclose(self) -> None:
        """Release what :meth:`send_async` opened on the current event loop (its connections)."""
        return None

    def _retry_wait(self, msg: OutgoingMessage, exc: TransientSendError, attempt: int) -> float:
        """Seconds before the next in-call try, or re-raise ``exc`` when there is none."""
        exc.attempts = attempt
        wait = self.retry.delay(attempt, exc.retry_after, self.rng)
        if wait is None:
            raise exc
        log.info(
            "%s: transient failure sending message %s to %s (try %d/%d): %s; retrying in %.2fs",
            self.provider,
            msg.message_id,
            mask(msg.to),
            attempt,
            self.retry.max_attempts,
            exc.reason,
            wait,
        )
        return wait

    def _previous_after_error(
        self,
        msg: OutgoingMessage,
        exc: TransientSendError,
        lookup: Callable[[OutgoingMessage], SendResult | None],
    ) -> SendResult | None:
        """After an ambiguous failure: the accepted attempt, or ``None`` to try again."""
        try:
            previous = lookup(msg)
        except TransientSendError:
            # Cannot tell whether it went out: never guess, hand the
            # ambiguous error to the dispatcher to reconcile later.
            raise exc from None
        if previous is not None:
            log.info(
                "%s: message %s was accepted despite the error (%s); not resending",
                self.provider,
                msg.message_id,
                previous.provider_message_id,
            )
        return previous

    def find_previous_attempt(
        self, msg: OutgoingMessage, since: datetime | None = None
    ) -> SendResult | None:
        """Did the provider already accept this attempt? For reconciliation after a crash.

        ``since`` (aware UTC; e.g. the row's ``sending_at`` minus a margin)
        bounds the search; ``None`` lets the backend use its own window.
        Returns the accepted message (normalised) or ``None``; may raise
        :class:`TransientSendError` when the provider cannot be asked right now.
        """
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        found = self._find_previous(msg, since)
        return None if found is None else self._normalised(found)

    def validate(self, msg: OutgoingMessage) -> None:
        """Refuse what no provider could send, before spending a request on it."""
        if msg.channel != self.channel:
            raise PermanentSendError(
                "wrong_channel",
                f"{type(self).__name__} sends {self.channel}, not {msg.channel!r}",
                provider=self.provider,
            )
        try:
            e164 = to_e164(msg.to)
        except InvalidPhone as exc:
            raise PermanentSendError(
                "invalid_to", f"{mask(msg.to)} is not a valid phone number", provider=self.provider
            ) from exc
        if e164 != msg.to:
            raise PermanentSendError(
                "invalid_to",
                f"{mask(msg.to)} is not in E.164 form (expected {mask(e164)})",
                provider=self.provider,
            )
        if not msg.body.strip():
            raise PermanentSendError("empty_body", "message body is empty", provider=self.provider)
        if not msg.attempt_id:
            raise PermanentSendError(
                "no_attempt_id", "attempt_id is required for reconciliation", provider=self.provider
            )

    def normalise_status(self, status: str) -> str:
        """Map the provider's status word to one of :data:`STATUSES`; providers override."""
        if status in STATUSES:
            return status
        raise ValueError(f"unknown status {status!r} from {self.provider}")

    # -- provider hooks -----------------------------------------------------
    @abstractmethod
    def _send(self, msg: OutgoingMessage) -> SendResult:
        """One try at the provider. Raise Transient/PermanentSendError, never anything else."""

    async def _send_async(self, msg: OutgoingMessage) -> SendResult:
        """One try at the provider from the event loop (``native_async`` backends)."""
        raise NotImplementedError

    @abstractmethod
    def _find_previous(self, msg: OutgoingMessage, since: datetime | None) -> SendResult | None:
        """Look the attempt up at the provider."""

    def _normalised(self, result: SendResult) -> SendResult:
        result.status = self.normalise_status(result.status)
        return result
