"""The real channel: SMS through Twilio's Messages API, voice notices through its Calls API.

Uses the official, unmodified ``twilio.rest.Client``; ``VIPCARE_TWILIO_API_BASE``
only sets ``client.api.base_url`` (the 2010-04-01 API's domain), which is how
tests and outside checks point it at the local fake. The only additions are
the HTTP clients of :mod:`notifications.backends.twilio_http`: they remember the
last response (``TwilioRestException`` drops the headers and we need
``Retry-After`` and the provider's ``Date``), and the async one lets the
dispatcher keep many sends in flight from one event loop
(``client.messages.create_async``), which is how it reaches 1,000 msg/s.

Error mapping (see :func:`translate_error`): 429 → transient with ``retry_after``;
5xx and read timeouts → transient and *maybe accepted*; 21610 →
:class:`OptedOutError`; other 4xx codes → :class:`PermanentSendError` with a
readable reason; bad credentials → :class:`ConfigurationError`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import aiohttp
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client

from crm.phones import mask
from notifications.backends.twilio_http import (
    AsyncRememberingHttpClient,
    RememberingHttpClient,
    last_response,
)
from notifications.base import (
    Channel,
    ChannelBackend,
    OutgoingMessage,
    RetryPolicy,
    SendResult,
)
from notifications.config import NotificationConfig
from notifications.errors import (
    ConfigurationError,
    NotificationError,
    OptedOutError,
    PermanentSendError,
    SendError,
    TransientSendError,
    describe_code,
)
from notifications.logging import install_masking, redact_account_sids

log = logging.getLogger(__name__)
HTTP_LOG = logging.getLogger("notifications.twilio.http")
"""The Twilio client's own request log goes here, phone-masked and secret-redacted."""
_TWILIO_LIB_LOG = logging.getLogger("twilio.http_client")
"""The client library's default request logger (used by clients built without ours)."""

STATUS_CALLBACK_PATH = "/twilio/status"
OPTED_OUT = 21610
AUTH_FAILED = (20003, 20005, 20008)
MAX_VALIDITY_PERIOD = 36_000
"""Twilio accepts a ``ValidityPeriod`` of 1 to 36,000 seconds (10 hours)."""

MESSAGE_STATUSES: dict[str, str] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "partially_delivered": "undelivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
"""Twilio Message status → vipcare status."""

CALL_STATUSES: dict[str, str] = {
    "queued": "queued",
    "initiated": "queued",
    "ringing": "queued",
    "in-progress": "sent",
    "completed": "delivered",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
"""Twilio Call status → vipcare status (a completed call is a delivered notice)."""

VOICE_LANGUAGES: dict[str, str] = {"zh": "zh-CN", "en": "en-US"}
"""Locale prefix → ``<Say language=...>``; other locales are read in en-US."""


def normalise_twilio_status(status: str, channel: Channel = "sms") -> str:
    """Map a Twilio message or call status to the outbox vocabulary; unknown → ValueError."""
    table = MESSAGE_STATUSES if channel == "sms" else CALL_STATUSES
    try:
        return table[status.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Twilio {channel} status {status!r}") from None


def voice_language(locale: str) -> str:
    return VOICE_LANGUAGES.get(locale.split("-")[0].split("_")[0].lower(), "en-US")


def twiml_say(body: str, locale: str) -> str:
    """Inline TwiML that reads ``body`` once in the customer's language."""
    return (
        f"<Response><Say language={quoteattr(voice_language(locale))}>"
        f"{xml_escape(body)}</Say></Response>"
    )


def _retry_after(headers: Any, now: datetime | None) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now is None or when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _server_date(headers: Any) -> datetime | None:
    value = headers.get("Date") if headers else None
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _message(exc: TwilioRestException) -> str:
    """Twilio's error text, without an Account SID (a 404 quotes the resource URL)."""
    return redact_account_sids(str(exc.msg or ""))


def _error_body(exc: TwilioRestException) -> dict[str, Any]:
    body: dict[str, Any] = {"status": exc.status, "code": exc.code, "message": _message(exc)}
    if isinstance(exc.details, dict):
        body["details"] = exc.details
    if exc.code:
        body["more_info"] = f"https://www.twilio.com/docs/errors/{exc.code}"
    return body


def translate_error(
    exc: TwilioRestException, response: Response | None, *, method: str = "POST"
) -> NotificationError:
    """A Twilio HTTP error as the error the dispatcher acts on."""
    body = _error_body(exc)
    headers = response.headers if response is not None else None
    if exc.status == 429:
        return TransientSendError(
            f"Twilio rate limit (HTTP 429, code {exc.code or 'n/a'})",
            retry_after=_retry_after(headers, _server_date(headers)),
            provider="twilio",
            provider_response=body,
        )
    if exc.status >= 500:
        return TransientSendError(
            f"Twilio server error (HTTP {exc.status}): {_message(exc)}",
            retry_after=_retry_after(headers, _server_date(headers)),
            maybe_accepted=method == "POST",
            provider="twilio",
            provider_response=body,
        )
    if exc.status in (401, 403) or exc.code in AUTH_FAILED:
        return ConfigurationError(
            f"Twilio refused the credentials (HTTP {exc.status}, code {exc.code}); "
            "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    code = str(exc.code) if exc.code else f"http_{exc.status}"
    reason = describe_code(exc.code) if exc.code else f"HTTP {exc.status}"
    message = _message(exc)
    if message and message not in reason:
        reason = f"{reason} (Twilio: {message})"
    error = OptedOutError if exc.code == OPTED_OUT else PermanentSendError
    return error(code, reason, body, provider="twilio")


class TwilioBackend(ChannelBackend):
    """Shared Twilio plumbing; :class:`TwilioSMSBackend` and :class:`TwilioVoiceBackend` send."""

    provider: ClassVar[str] = "twilio"
    native_async: ClassVar[bool] = True

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        public_url: str = "",
        api_base: str = "",
        timeout: float = 10.0,
        lookback: timedelta = timedelta(minutes=15),
        search_limit: int = 50,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(retry=retry, sleep=sleep, rng=rng)
        if not account_sid or not auth_token:
            raise ConfigurationError(
                "the Twilio backend needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        self.from_number = from_number or None
        self.messaging_service_sid = messaging_service_sid or None
        self.public_url = public_url.rstrip("/")
        self.lookback = lookback
        self.search_limit = search_limit
        # Filters on the loggers that see request lines (records are created there),
        # so numbers are masked whatever handlers the process configured.
        # The Account SID is in every request URL; it is a secret like the token.
        loggers = (HTTP_LOG, log, logging.getLogger("urllib3.connectionpool"), _TWILIO_LIB_LOG)
        for logger in loggers:
            install_masking(logger, [auth_token, account_sid])
        self._http = RememberingHttpClient(timeout=timeout, logger=HTTP_LOG)
        self.client = Client(account_sid, auth_token, http_client=self._http)
        self._async_http = AsyncRememberingHttpClient(timeout=timeout, logger=HTTP_LOG)
        self.async_client = Client(account_sid, auth_token, http_client=self._async_http)
        if api_base:
            # The 2010-04-01 API (Messages, Calls) lives on the `api` domain;
            # Domain.absolute_url joins its base_url with each resource path.
            self.client.api.base_url = api_base.rstrip("/")
            self.async_client.api.base_url = api_base.rstrip("/")

    @classmethod
    def from_settings(cls, settings: NotificationConfig, **options: Any) -> TwilioBackend:
        """Build from the notification config; ``options`` override (tests)."""
        kwargs: dict[str, Any] = {
            "account_sid": settings.account_sid(),
            "auth_token": settings.auth_token(),
            "from_number": settings.twilio_from_number,
            "messaging_service_sid": settings.twilio_messaging_service_sid,
            "public_url": settings.public_url,
            "api_base": settings.twilio_api_base,
        }
        kwargs.update(options)
        return cls(**kwargs)

    def status_callback_url(self, msg: OutgoingMessage) -> str | None:
        if msg.status_callback:
            return msg.status_callback
        return f"{self.public_url}{STATUS_CALLBACK_PATH}" if self.public_url else None

    def normalise_status(self, status: str) -> str:
        return normalise_twilio_status(status, self.channel)

    def _call(self, method: str, action: Callable[[], Any], what: str) -> Any:
        """Run one client call, turning every failure into a vipcare error."""
        try:
            return action()
        except TwilioRestException as exc:
            raise translate_error(exc, last_response(), method=method) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise TransientSendError(
                f"Twilio did not accept the connection in time ({what})", provider="twilio"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise TransientSendError(
                f"Twilio did not answer in time ({what})",
                maybe_accepted=method == "POST",
                provider="twilio",
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise TransientSendError(
                f"could not reach Twilio ({what}): {type(exc).__name__}",
                maybe_accepted=method == "POST",
                provider="twilio",
            ) from exc
        except TwilioException as exc:  # a list page that was not 200
            response = last_response()
            status = response.status_code if response is not None else 0
            if status == 429 or status >= 500 or status == 0:
                headers = response.headers if response is not None else None
                raise TransientSendError(
                    f"Twilio answered HTTP {status} ({what})",
                    retry_after=_retry_after(headers, _server_date(headers)),
                    provider="twilio",
                ) from exc
            raise SendError(f"Twilio answered HTTP {status} ({what})", provider="twilio") from exc

    async def _call_async(self, method: str, action: Awaitable[Any], what: str) -> Any:
        """:meth:`_call` for an awaitable client call (the same error mapping)."""
        try:
            return await action
        except TwilioRestException as exc:
            raise translate_error(exc, last_response(), method=method) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransientSendError(
                f"Twilio did not accept the connection in time ({what})", provider="twilio"
            ) from exc
        except TimeoutError as exc:  # aiohttp's read timeout is one
            raise TransientSendError(
                f"Twilio did not answer in time ({what})",
                maybe_accepted=method == "POST",
                provider="twilio",
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientSendError(
                f"could not reach Twilio ({what}): {type(exc).__name__}",
                maybe_accepted=method == "POST",
                provider="twilio",
            ) from exc

    async def aclose(self) -> None:
        await self._async_http.close()

    def _raw(self) -> dict[str, Any]:
        response = last_response()
        if response is None or not response.text:
            return {}
        try:
            parsed = json.loads(response.text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def _window_start(self, since: datetime | None) -> datetime | None:
        """``since``, or the provider's own clock (its ``Date`` header) minus ``lookback``."""
        if since is not None:
            return since.astimezone(UTC)
        response = last_response()
        provider_now = _server_date(response.headers if response is not None else None)
        return None if provider_now is None else provider_now - self.lookback


class TwilioSMSBackend(TwilioBackend):
    """SMS through ``client.messages.create`` with a status callback."""

    channel: Channel = "sms"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.from_number and not self.messaging_service_sid:
            raise ConfigurationError(
                "the Twilio SMS backend needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
            )

    def _params(self, msg: OutgoingMessage) -> dict[str, Any]:
        params: dict[str, Any] = {"to": msg.to, "body": msg.body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        callback = self.status_callback_url(msg)
        if callback:
            params["status_callback"] = callback
        if msg.valid_for is not None:
            # Twilio drops it (error 30036) rather than deliver it after its validity.
            params["validity_period"] = min(MAX_VALIDITY_PERIOD, max(1, msg.valid_for))
        return params

    def _send(self, msg: OutgoingMessage) -> SendResult:
        params = self._params(msg)
        message = self._call("POST", lambda: self.client.messages.create(**params), "send SMS")
        return self._accepted(msg, message)

    async def _send_async(self, msg: OutgoingMessage) -> SendResult:
        params = self._params(msg)
        create = self.async_client.messages.create_async(**params)
        message = await self._call_async("POST", create, "send SMS")
        return self._accepted(msg, message)

    def _accepted(self, msg: OutgoingMessage, message: Any) -> SendResult:
        log.info(
            "twilio: SMS for message %s to %s accepted as %s (%s)",
            msg.message_id,
            mask(msg.to),
            message.sid,
            message.status,
        )
        return SendResult(
            provider=self.provider,
            provider_message_id=str(message.sid),
            status=str(message.status),
            raw=self._raw(),
            error_code=str(message.error_code) if message.error_code else None,
        )

    def _find_previous(self, msg: OutgoingMessage, since: datetime | None) -> SendResult | None:
        # No server-side date filter: DateSent is empty while a message is still
        # queued, and a just-accepted message is exactly what we look for.
        found = self._call(
            "GET",
            lambda: self.client.messages.list(to=msg.to, limit=self.search_limit),
            "list recent SMS",
        )
        start = self._window_start(since)
        for message in found:  # newest first
            if start is not None and message.date_created and message.date_created < start:
                continue
            if str(message.direction or "").startswith("outbound") and message.body == msg.body:
                if self.from_number and message.from_ and message.from_ != self.from_number:
                    continue
                log.info(
                    "twilio: message %s to %s was already accepted as %s",
                    msg.message_id,
                    mask(msg.to),
                    message.sid,
                )
                return SendResult(
                    provider=self.provider,
                    provider_message_id=str(message.sid),
                    status=str(message.status),
                    raw={"sid": message.sid, "status": message.status, "reconciled": True},
                    error_code=str(message.error_code) if message.error_code else None,
                )
        return None


class TwilioVoiceBackend(TwilioBackend):
    """Voice notices through ``client.calls.create`` with inline ``<Say>`` TwiML."""

    channel: Channel = "voice"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.from_number:
            raise ConfigurationError("the Twilio voice backend needs TWILIO_FROM_NUMBER")

    def _params(self, msg: OutgoingMessage) -> dict[str, Any]:
        params: dict[str, Any] = {
            "to": msg.to,
            "from_": self.from_number,
            "twiml": twiml_say(msg.body, msg.locale),
        }
        callback = self.status_callback_url(msg)
        if callback:
            params["status_callback"] = callback
        return params

    def _send(self, msg: OutgoingMessage) -> SendResult:
        params = self._params(msg)
        call = self._call("POST", lambda: self.client.calls.create(**params), "place call")
        return self._accepted(msg, call)

    async def _send_async(self, msg: OutgoingMessage) -> SendResult:
        params = self._params(msg)
        call = await self._call_async(
            "POST", self.async_client.calls.create_async(**params), "place call"
        )
        return self._accepted(msg, call)

    def _accepted(self, msg: OutgoingMessage, call: Any) -> SendResult:
        log.info(
            "twilio: call for message %s to %s queued as %s",
            msg.message_id,
            mask(msg.to),
            call.sid,
        )
        return SendResult(
            provider=self.provider,
            provider_message_id=str(call.sid),
            status=str(call.status),
            raw=self._raw(),
        )

    def _find_previous(self, msg: OutgoingMessage, since: datetime | None) -> SendResult | None:
        # A call has no body to compare: the newest call from our number to theirs
        # inside the window is taken as this attempt. Pass a tight ``since``.
        found = self._call(
            "GET",
            lambda: self.client.calls.list(to=msg.to, limit=self.search_limit),
            "list recent calls",
        )
        start = self._window_start(since)
        if start is None:
            return None
        for call in found:
            if call.date_created and call.date_created < start:
                continue
            sender = getattr(call, "_from", None)  # CallInstance keeps "from" as _from
            if sender in (None, self.from_number):
                return SendResult(
                    provider=self.provider,
                    provider_message_id=str(call.sid),
                    status=str(call.status),
                    raw={"sid": call.sid, "status": call.status, "reconciled": True},
                )
        return None
