"""The Twilio Account SID is a secret: never in a log line or a CLI error (issue 12, "Also").

The twilio client logs each request URL, and every URL holds
``/Accounts/AC…/``; urllib3 logs the same path at DEBUG.
"""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from notifications.backends.twilio import TwilioSMSBackend
from notifications.base import OutgoingMessage
from notifications.fake_twilio import FakeTwilio
from notifications.logging import MaskingFilter, scrub_text
from vipcare.settings import Settings

pytest_plugins = ["plugins.fake_twilio"]


def test_request_logs_of_the_twilio_client_never_show_the_account_sid(
    fake_twilio: FakeTwilio, twilio_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = TwilioSMSBackend.from_settings(twilio_settings)
    backend.send(OutgoingMessage(1, "sms", "+8613812345678", "hello", "en", "ab:1"))
    text = caplog.text
    assert "/Accounts/AC********/Messages.json" in text  # the request line was captured
    assert fake_twilio.account_sid not in text
    assert fake_twilio.account_sid[2:] not in text


def test_any_account_sid_is_redacted_by_the_handler_filter() -> None:
    """A handler filter redacts account sids it was never told about (other loggers, Prefect)."""
    sid = "AC" + "0123456789abcdef" * 2
    args = (f"/Accounts/{sid}/",)
    record = logging.LogRecord("prefect", logging.INFO, __file__, 1, "GET %s failed", args, None)
    MaskingFilter().filter(record)
    assert sid not in record.getMessage() and "/Accounts/AC********/" in record.getMessage()
    # Only a real sid shape: words that merely start with AC stay readable.
    assert scrub_text("ACCEPTED ACK " + "AC" + "1" * 31) == "ACCEPTED ACK " + "AC" + "1" * 31


def test_cli_errors_never_show_the_account_sid(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from vipcare.cli.common import fail

    sid = "AC" + "9" * 32
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        fail(f"Twilio refused https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1
    assert sid not in result.output and "Accounts/AC********/" in result.output
