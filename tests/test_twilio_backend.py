"""The Twilio adapter, through the unmodified twilio client, against the local fake Twilio."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifications.backends import get_backend
from notifications.backends.twilio import (
    TwilioBackend,
    TwilioSMSBackend,
    TwilioVoiceBackend,
    normalise_twilio_status,
    twiml_say,
)
from notifications.base import OutgoingMessage, RetryPolicy, SendResult
from notifications.config import NotificationConfig
from notifications.errors import (
    ConfigurationError,
    OptedOutError,
    PermanentSendError,
    TransientSendError,
)
from notifications.fake_twilio import FakeTwilio
from vipcare.settings import Settings

pytest_plugins = ["plugins.fake_twilio"]

TO = "+8613812345678"


def sms(
    n: int = 1, to: str = TO, body: str = "尊敬的客户，生日快乐", locale: str = "zh-CN"
) -> OutgoingMessage:
    return OutgoingMessage(n, "sms", to, body, locale, f"att-{n}")


class Sleeps:
    """An injected sleep: records what it was asked to wait, waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


Send = Callable[[TwilioBackend, OutgoingMessage], SendResult]


@pytest.fixture(params=["sync", "async"])
def send(request: pytest.FixtureRequest) -> Send:
    """Each test runs through ``send`` (threads) and ``send_async`` (the dispatcher's loop)."""
    if request.param == "sync":
        return lambda sender, msg: sender.send(msg)

    def on_a_loop(sender: TwilioBackend, msg: OutgoingMessage) -> SendResult:
        async def go() -> SendResult:
            try:
                return await sender.send_async(msg)
            finally:
                await sender.aclose()

        return asyncio.run(go())

    return on_a_loop


def backend(settings: Settings, channel: str = "sms", **options: Any) -> TwilioBackend:
    options.setdefault("sleep", Sleeps())
    options.setdefault("rng", random.Random(42))
    made = get_backend(settings, channel, **options)
    assert isinstance(made, TwilioBackend)
    return made


def test_sms_goes_through_the_real_client_with_status_callback(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    sender = backend(twilio_settings)
    assert isinstance(sender, TwilioSMSBackend)
    result = send(sender, sms())
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.provider_message_id)
    assert result.provider == "twilio" and result.status == "queued"
    assert result.raw["sid"] == result.provider_message_id and result.raw["to"] == TO
    [request] = fake_twilio.api_requests("POST", "/Messages.json")
    assert request.authorized
    assert request.headers["User-Agent"].startswith("twilio-python/9.")
    assert request.path == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert request.value("To") == TO
    assert request.value("From") == "+15005550006"
    assert request.value("Body") == "尊敬的客户，生日快乐"
    assert request.value("StatusCallback") == "https://care.example.com/twilio/status"
    assert fake_twilio.message(result.provider_message_id)["body"] == "尊敬的客户，生日快乐"


def test_messaging_service_sid_replaces_the_from_number(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    sender = backend(twilio_settings, from_number=None, messaging_service_sid="MG" + "1" * 32)
    result = send(sender, sms())
    assert result.status == "queued"  # Twilio says "accepted"; the outbox vocabulary is queued
    [request] = fake_twilio.api_requests("POST")
    assert request.value("MessagingServiceSid") == "MG" + "1" * 32
    assert request.value("From") is None


@pytest.mark.parametrize(
    ("locale", "language"), [("zh-CN", "zh-CN"), ("en", "en-US"), ("en-GB", "en-US")]
)
def test_voice_reads_the_notice_in_the_customers_language(
    send: Send,
    fake_twilio: FakeTwilio,
    twilio_settings: NotificationConfig,
    locale: str,
    language: str,
) -> None:
    caller = backend(twilio_settings, "voice")
    assert isinstance(caller, TwilioVoiceBackend)
    body = "Your manager <Li & Co> will call"
    result = send(caller, OutgoingMessage(5, "voice", TO, body, locale, "att-5"))
    assert re.fullmatch(r"CA[0-9a-f]{32}", result.provider_message_id)
    assert result.status == "queued"
    [request] = fake_twilio.api_requests("POST", "/Calls.json")
    assert request.value("Twiml") == (
        f'<Response><Say language="{language}">'
        "Your manager &lt;Li &amp; Co&gt; will call</Say></Response>"
    )
    assert request.value("StatusCallback") == "https://care.example.com/twilio/status"


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (21211, PermanentSendError, "invalid 'To' phone number"),
        (21610, OptedOutError, "unsubscribed"),
        (21614, PermanentSendError, "not a mobile number"),
    ],
)
def test_permanent_errors_carry_code_reason_and_response_and_are_not_retried(
    send: Send,
    fake_twilio: FakeTwilio,
    twilio_settings: NotificationConfig,
    code: int,
    error: type,
    words: str,
) -> None:
    fake_twilio.fail_number(TO, code)
    sleeps = Sleeps()
    with pytest.raises(PermanentSendError) as caught:
        send(backend(twilio_settings, sleep=sleeps), sms())
    assert type(caught.value) is error
    assert caught.value.code == str(code)
    assert words in caught.value.reason
    assert caught.value.provider_response["code"] == code
    assert caught.value.provider_response["status"] == 400
    assert caught.value.provider_response["more_info"].endswith(str(code))
    assert len(fake_twilio.api_requests("POST")) == 1 and sleeps.calls == []


def test_invalid_number_is_refused_before_calling_twilio(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        send(backend(twilio_settings), sms(to="+86123"))
    assert caught.value.code == "invalid_to"
    assert fake_twilio.requests == []


def test_server_errors_retry_with_backoff_then_succeed_without_duplicates(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    fake_twilio.queue_fault(500, count=2, path_contains="Messages.json", method="POST")
    sleeps = Sleeps()
    sender = backend(twilio_settings, sleep=sleeps, retry=RetryPolicy(max_attempts=3))
    result = send(sender, sms())
    assert len(fake_twilio.api_requests("POST")) == 3
    # A 500 may hide an accepted message: each retry is preceded by a lookup.
    assert len(fake_twilio.api_requests("GET", "/Messages.json")) == 2
    assert [m["sid"] for m in fake_twilio.messages] == [result.provider_message_id]
    assert len(sleeps.calls) == 2
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0  # full jitter, doubling


def test_an_unreachable_provider_during_reconciliation_keeps_the_ambiguous_error(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    fake_twilio.queue_fault(500, method="POST")
    fake_twilio.queue_fault(503, method="GET")
    with pytest.raises(TransientSendError) as caught:
        send(backend(twilio_settings), sms())
    assert caught.value.maybe_accepted and caught.value.attempts == 1
    assert len(fake_twilio.api_requests("POST")) == 1


def test_retries_are_bounded(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    fake_twilio.queue_fault(503, count=10, path_contains="Messages.json", method="POST")
    sleeps = Sleeps()
    sender = backend(twilio_settings, sleep=sleeps, retry=RetryPolicy(max_attempts=4))
    with pytest.raises(TransientSendError) as caught:
        send(sender, sms())
    assert caught.value.attempts == 4
    assert caught.value.maybe_accepted
    assert caught.value.provider_response["status"] == 503
    assert len(fake_twilio.api_requests("POST")) == 4
    assert len(sleeps.calls) == 3
    assert fake_twilio.messages == []


def test_429_retry_after_is_honoured(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    fake_twilio.queue_fault(429, retry_after=3, path_contains="Messages.json", method="POST")
    sleeps = Sleeps()
    sender = backend(twilio_settings, sleep=sleeps)
    result = send(sender, sms())
    assert result.status == "queued"
    assert len(sleeps.calls) == 1
    assert 3.0 <= sleeps.calls[0] <= 3.5
    # A 429 was certainly not accepted: no reconciliation lookup.
    assert fake_twilio.api_requests("GET") == []
    assert len(fake_twilio.api_requests("POST")) == 2


def test_429_with_a_long_retry_after_goes_back_to_the_dispatcher(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    fake_twilio.queue_fault(429, retry_after=120, path_contains="Messages.json", method="POST")
    sleeps = Sleeps()
    with pytest.raises(TransientSendError) as caught:
        send(backend(twilio_settings, sleep=sleeps), sms())
    assert caught.value.retry_after == 120
    assert not caught.value.maybe_accepted
    assert caught.value.provider_response["code"] == 20429
    assert sleeps.calls == [] and len(fake_twilio.api_requests("POST")) == 1


def test_timeout_after_acceptance_is_reconciled_not_resent(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    release = fake_twilio.hold_next(
        max_wait=5, after_create=True, path_contains="Messages.json", method="POST"
    )
    try:
        sender = backend(twilio_settings, timeout=0.3)
        result = send(sender, sms())
    finally:
        release.set()
    assert len(fake_twilio.api_requests("POST")) == 1
    assert [m["sid"] for m in fake_twilio.messages] == [result.provider_message_id]
    assert result.raw.get("reconciled") is True


def test_find_previous_attempt_matches_number_body_and_window(
    send: Send,
    twilio_settings: NotificationConfig,
) -> None:
    instant = [datetime(2026, 11, 21, 2, 0, tzinfo=UTC)]
    with FakeTwilio(clock=lambda: instant[0]) as fake:
        settings = twilio_settings.with_changes(twilio_api_base=fake.base_url)
        sent = send(backend(settings), sms(1, body="hello"))
        send(backend(settings), sms(2, to="+8613912345678", body="hello"))
        instant[0] += timedelta(hours=3)
        after_crash = backend(settings)  # a new process: nothing in memory
        since = datetime(2026, 11, 21, 1, 55, tzinfo=UTC)
        found = after_crash.find_previous_attempt(sms(1, body="hello"), since=since)
        assert found is not None and found.provider_message_id == sent.provider_message_id
        assert found.status == "queued"
        assert after_crash.find_previous_attempt(sms(1, body="other"), since=since) is None
        later = since + timedelta(minutes=10)
        assert after_crash.find_previous_attempt(sms(1, body="hello"), since=later) is None
        # Without since, the window is the provider's clock minus the lookback (15 min).
        assert after_crash.find_previous_attempt(sms(1, body="hello")) is None
        [listing, *_] = fake.api_requests("GET", "/Messages.json")
        assert listing.query["To"] == [TO]


def test_voice_reconciliation_needs_a_window(
    send: Send, twilio_settings: NotificationConfig
) -> None:
    instant = [datetime(2026, 11, 21, 2, 0, tzinfo=UTC)]
    with FakeTwilio(clock=lambda: instant[0]) as fake:
        settings = twilio_settings.with_changes(twilio_api_base=fake.base_url)
        call = OutgoingMessage(9, "voice", TO, "hello", "en", "att-9")
        placed = send(backend(settings, "voice"), call)
        found = backend(settings, "voice").find_previous_attempt(
            call, since=instant[0] - timedelta(minutes=1)
        )
        assert found is not None and found.provider_message_id == placed.provider_message_id
        assert (
            backend(settings, "voice").find_previous_attempt(
                call, since=instant[0] + timedelta(minutes=1)
            )
            is None
        )


def test_bad_credentials_are_a_configuration_error(
    send: Send, fake_twilio: FakeTwilio, twilio_settings: NotificationConfig
) -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN"):
        send(backend(twilio_settings, auth_token="wrong-token-123456"), sms())
    [request] = fake_twilio.requests
    assert not request.authorized


def test_missing_configuration_is_explained(twilio_settings: NotificationConfig) -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID"):
        get_backend(twilio_settings.with_changes(twilio_auth_token=None), "sms")
    with pytest.raises(ConfigurationError, match="TWILIO_FROM_NUMBER"):
        get_backend(twilio_settings.with_changes(twilio_from_number=None), "sms")
    with pytest.raises(ConfigurationError, match="TWILIO_FROM_NUMBER"):
        get_backend(
            twilio_settings.with_changes(
                twilio_from_number=None, twilio_messaging_service_sid="MG1"
            ),
            "voice",
        )


def test_empty_api_base_means_the_real_twilio(twilio_settings: NotificationConfig) -> None:
    real = backend(twilio_settings.with_changes(twilio_api_base=""))
    assert real.client.api.base_url == "https://api.twilio.com"


def test_logs_mask_phones_and_never_show_the_auth_token(
    send: Send,
    fake_twilio: FakeTwilio,
    twilio_settings: NotificationConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_twilio.queue_fault(500, path_contains="Messages.json", method="POST")
    sender = backend(twilio_settings)
    send(sender, sms())
    sender.find_previous_attempt(sms(), since=datetime(2000, 1, 1, tzinfo=UTC))
    fake_twilio.fail_number("+8613912345678", 21211)
    with pytest.raises(PermanentSendError):
        send(sender, sms(2, to="+8613912345678"))
    text = caplog.text
    assert "Twilio API Request" in text  # the client's own request log was captured...
    assert "+86138****5678" in text  # ...with numbers masked
    assert fake_twilio.auth_token not in text
    assert "8613812345678" not in text and "8613912345678" not in text


def test_status_tables() -> None:
    assert normalise_twilio_status("sending") == "sent"
    assert normalise_twilio_status("Delivered") == "delivered"
    assert normalise_twilio_status("canceled") == "failed"
    assert normalise_twilio_status("completed", "voice") == "delivered"
    assert normalise_twilio_status("no-answer", "voice") == "undelivered"
    with pytest.raises(ValueError, match="unknown Twilio sms status"):
        normalise_twilio_status("received")
    assert twiml_say("a&b", "zh") == '<Response><Say language="zh-CN">a&amp;b</Say></Response>'
