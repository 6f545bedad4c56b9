"""A fake Twilio REST API for tests and outside checks (``python -m notifications.fake_twilio``)."""

from notifications.fake_twilio.server import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    CallbackResult,
    FakeTwilio,
    RecordedRequest,
    twilio_error,
)

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "CallbackResult",
    "FakeTwilio",
    "RecordedRequest",
    "twilio_error",
]
