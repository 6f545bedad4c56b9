"""A live smoke test against the real Twilio: runs only with real credentials in the environment.

Needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER and
VIPCARE_LIVE_TEST_TO (a phone you own, E.164). It sends one real SMS.
"""

from __future__ import annotations

import os
import uuid

import pytest

from notifications.backends.twilio import TwilioSMSBackend
from notifications.base import OutgoingMessage
from vipcare.settings import Settings

REQUIRED = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "VIPCARE_LIVE_TEST_TO")
MISSING = [name for name in REQUIRED if not os.environ.get(name)]

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"live Twilio smoke test needs {', '.join(MISSING) or 'nothing'} in the environment",
    ),
]


def test_one_real_sms_is_accepted_and_found_again() -> None:
    settings = Settings(_env_file=None, twilio_api_base="").notifications()  # type: ignore[call-arg]
    backend = TwilioSMSBackend.from_settings(settings, public_url="")
    attempt = uuid.uuid4().hex
    body = f"vipcare live smoke test {attempt[:8]}"
    msg = OutgoingMessage(0, "sms", os.environ["VIPCARE_LIVE_TEST_TO"], body, "en", attempt)
    result = backend.send(msg)
    assert result.provider_message_id.startswith(("SM", "MM"))
    assert result.status in {"queued", "sent", "delivered"}
    found = backend.find_previous_attempt(msg)
    assert found is not None and found.provider_message_id == result.provider_message_id
