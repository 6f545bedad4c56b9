"""Choosing a channel backend from the notification config: the mock, or Twilio."""

from __future__ import annotations

from typing import Any

from notifications.base import CHANNELS, ChannelBackend
from notifications.config import NotificationConfig
from notifications.errors import ConfigurationError


def get_backend(settings: NotificationConfig, channel: str, **options: Any) -> ChannelBackend:
    """A new backend for ``channel`` ('sms' or 'voice') as the settings say.

    ``options`` go to the backend's constructor (``retry``, ``sleep``, ``rng``,
    and for the mock its failure injection); tests use them, production does not.
    Each call makes a new instance: an in-memory mock store is per instance.
    """
    if channel not in CHANNELS:
        raise ConfigurationError(
            f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}"
        )
    name = settings.backend_for(channel)
    if name == "mock":
        from notifications.backends.mock import MockSMSBackend, MockVoiceBackend

        if "store" not in options:
            options.setdefault(
                "store_path", str(settings.mock_store) if settings.mock_store else None
            )
        cls = MockSMSBackend if channel == "sms" else MockVoiceBackend
        return cls(**options)
    if name == "twilio":
        from notifications.backends.twilio import TwilioSMSBackend, TwilioVoiceBackend

        tcls = TwilioSMSBackend if channel == "sms" else TwilioVoiceBackend
        return tcls.from_settings(settings, **options)
    raise ConfigurationError(f"unknown {channel} backend {name!r}; expected 'mock' or 'twilio'")
