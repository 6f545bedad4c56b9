"""Choosing a channel backend from settings: the mock by default, Twilio when configured."""

from __future__ import annotations

import os
from typing import Any

from notifications.base import CHANNELS, ChannelBackend
from notifications.errors import ConfigurationError
from vipcare.settings import Settings

MOCK_STORE_ENV = "VIPCARE_MOCK_STORE"


def mock_store_path(settings: Settings) -> str | None:
    """Where the mock keeps its sends: setting ``mock_store`` (env/.env ``VIPCARE_MOCK_STORE``).

    The environment is also read directly, for a settings object made before
    the variable was set (``get_settings`` is cached per process).
    """
    if settings.mock_store:
        return str(settings.mock_store)
    return os.environ.get(MOCK_STORE_ENV) or None


def get_backend(settings: Settings, channel: str, **options: Any) -> ChannelBackend:
    """A new backend for ``channel`` ('sms' or 'voice') as the settings say.

    ``options`` go to the backend's constructor (``retry``, ``sleep``, ``rng``,
    and for the mock its failure injection); tests use them, production does not.
    Each call makes a new instance: an in-memory mock store is per instance.
    """
    if channel not in CHANNELS:
        raise ConfigurationError(
            f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}"
        )
    name = settings.sms_backend if channel == "sms" else settings.voice_backend
    if name == "mock":
        from notifications.backends.mock import MockSMSBackend, MockVoiceBackend

        if "store" not in options:
            options.setdefault("store_path", mock_store_path(settings))
        cls = MockSMSBackend if channel == "sms" else MockVoiceBackend
        return cls(**options)
    if name == "twilio":
        from notifications.backends.twilio import TwilioSMSBackend, TwilioVoiceBackend

        tcls = TwilioSMSBackend if channel == "sms" else TwilioVoiceBackend
        return tcls.from_settings(settings, **options)
    raise ConfigurationError(f"unknown {channel} backend {name!r}; expected 'mock' or 'twilio'")
