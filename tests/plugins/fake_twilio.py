"""Pytest plugin: a fake Twilio server per test, and settings that point vipcare at it.

Use from a test module with ``pytest_plugins = ["plugins.fake_twilio"]`` (the
``tests`` folder is on ``sys.path`` under pytest's default import mode).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from notifications.config import NotificationConfig
from notifications.fake_twilio import FakeTwilio
from vipcare.settings import Settings

FROM_NUMBER = "+15005550006"
PUBLIC_URL = "https://care.example.com"


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A fresh fake Twilio on 127.0.0.1 and a random port, stopped after the test."""
    with FakeTwilio() as fake:
        yield fake


def twilio_config(
    fake: FakeTwilio, public_url: str = PUBLIC_URL, **changes: object
) -> NotificationConfig:
    """Settings selecting Twilio for SMS, aimed at ``fake``; ``changes`` are more settings."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        sms_backend="twilio",
        public_url=public_url,
        twilio_api_base=fake.base_url,
        twilio_account_sid=SecretStr(fake.account_sid),
        twilio_auth_token=SecretStr(fake.auth_token),
        twilio_from_number=FROM_NUMBER,
        **changes,
    ).notifications()


@pytest.fixture
def twilio_settings(fake_twilio: FakeTwilio) -> NotificationConfig:
    """The notification config selecting the Twilio backend, aimed at the fake."""
    return twilio_config(fake_twilio, voice_backend="twilio")
