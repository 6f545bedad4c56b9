"""Typed configuration of the notifications package, built at the edge (the CLI, the scheduler).

``notifications`` never reads ``vipcare.settings``: whoever starts a dispatch or
the webhooks builds one :class:`NotificationConfig` (``Settings.notifications()``
does it from ``VIPCARE_*`` / ``TWILIO_*``) and passes it in. Secrets stay
``SecretStr`` so printing a config never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

BackendName = Literal["mock", "twilio"]


@dataclass(frozen=True)
class NotificationConfig:
    """Channels, credentials and the dispatcher's pace."""

    sms_backend: BackendName = "mock"
    voice_backend: BackendName = "mock"
    mock_store: Path | None = None
    """JSONL file where the mock backends keep their sends (in memory when None)."""
    send_rate_per_second: float = 10.0
    dispatch_concurrency: int = 4
    batch_size: int = 5000
    public_url: str = ""
    """Public base URL for provider callbacks (status callbacks, signatures)."""
    twilio_api_base: str = ""
    twilio_account_sid: SecretStr | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None

    def __post_init__(self) -> None:
        if self.send_rate_per_second <= 0:
            raise ValueError("send_rate_per_second must be greater than 0")
        if not 1 <= self.dispatch_concurrency <= 64:
            raise ValueError("dispatch_concurrency must be between 1 and 64")

    def backend_for(self, channel: str) -> BackendName:
        return self.sms_backend if channel == "sms" else self.voice_backend

    def auth_token(self) -> str:
        return self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else ""

    def account_sid(self) -> str:
        return self.twilio_account_sid.get_secret_value() if self.twilio_account_sid else ""

    def with_changes(self, **changes: object) -> NotificationConfig:
        """A copy with some fields changed (tests, one-off runs)."""
        return replace(self, **changes)  # type: ignore[arg-type]
