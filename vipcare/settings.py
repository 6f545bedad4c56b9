"""Runtime settings, read from ``VIPCARE_*`` environment variables and a ``.env`` file.

The ``.env`` is the file ``VIPCARE_ENV_FILE`` names, else the one in the working
directory (:func:`env_file`). Secrets are ``SecretStr`` so that printing a
settings object never shows them; :func:`Settings.redacted_summary` is what the
CLI prints.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notifications.config import NotificationConfig

DEFAULT_RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
ENV_FILE_VARIABLE = "VIPCARE_ENV_FILE"


class SettingsError(ValueError):
    """The configuration cannot be found, or cannot be right where it is read."""


def env_file(start_dir: Path | None = None) -> Path | None:
    """The ``.env`` to read: ``VIPCARE_ENV_FILE``, else ``./.env``, else ``start_dir/.env``.

    ``VIPCARE_ENV_FILE`` must name a file (a typo would silently run on defaults).
    ``start_dir`` is for a process started in a folder that is not its own, such as
    a Prefect worker's flow run (see :mod:`vipcare.workers`).
    """
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise SettingsError(f"{ENV_FILE_VARIABLE}={named}: no such file")
        return path.resolve()
    for folder in (Path.cwd(), start_dir):
        if folder is not None and (folder / ".env").is_file():
            return (folder / ".env").resolve()
    return None


class Settings(BaseSettings):
    """Everything an operator can configure, with safe embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix="VIPCARE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = Field(
        default="sqlite:///vipcare.db",
        description="SQLAlchemy URL; a SQLite file in the working directory by default.",
    )
    timezone: str = Field(default="Asia/Shanghai", description="The operator's time zone.")
    rules_dir: Path = Field(default=DEFAULT_RULES_DIR)
    sms_backend: Literal["mock", "twilio"] = "mock"
    voice_backend: Literal["mock", "twilio"] = "mock"
    public_url: str = Field(default="", description="Public base URL for provider callbacks.")
    twilio_api_base: str = Field(default="", description="Point the Twilio client elsewhere.")
    mock_store: Path | None = Field(
        default=None,
        description="JSONL file where the mock backends keep their sends, so a restarted "
        "dispatcher can reconcile against them (VIPCARE_MOCK_STORE); in memory when empty.",
    )
    send_rate_per_second: float = Field(default=10.0, gt=0)
    dispatch_concurrency: int = Field(default=4, ge=1, le=64)
    batch_size: int = Field(default=5000, ge=100)
    web_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs workspace session cookies (VIPCARE_WEB_SECRET); when empty, "
        "a random key is generated once and kept in the database (table web_secrets).",
    )
    web_session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="How long a workspace sign-in lasts."
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the workspace "
        "believes (VIPCARE_TRUSTED_PROXIES: addresses or networks, comma-separated). Empty: "
        "nobody's, so the sign-in limit counts the connecting address.",
    )

    # -- the schedule: one definition for `vipcare scheduler` and `vipcare deploy` --
    care_run_at: time = Field(
        default=time(8, 0),
        description="When the daily care run starts, operator time (HH:MM). It decides only.",
    )
    dispatch_every_minutes: int = Field(
        default=5,
        ge=1,
        le=60,
        description="The dispatcher runs every N minutes (a divisor of 60), so every time "
        "zone's send window is served the same day.",
    )
    escalate_at: time = Field(
        default=time(7, 30),
        description="When the daily escalation sweep of overdue call tasks runs, operator time.",
    )
    catch_up_days: int = Field(
        default=7,
        ge=0,
        le=366,
        description="After downtime, missed care days up to this many are run, oldest first, "
        "each as its own date; older ones are skipped (recorded as skipped).",
    )
    care_shards: int = Field(
        default=1, ge=1, le=64, description="Shards of the scheduled care run (workers at scale)."
    )
    dispatch_lanes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Prefect deployments only: dispatchers that run side by side on the "
        "workers at each dispatch time, together held to the send rate.",
    )
    prefect_work_pool: str = Field(
        default="vipcare", description="The Prefect process work pool `vipcare deploy` uses."
    )

    twilio_account_sid: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "VIPCARE_TWILIO_ACCOUNT_SID"),
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "VIPCARE_TWILIO_AUTH_TOKEN"),
    )
    twilio_from_number: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_FROM_NUMBER", "VIPCARE_TWILIO_FROM_NUMBER"),
    )
    twilio_messaging_service_sid: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TWILIO_MESSAGING_SERVICE_SID", "VIPCARE_TWILIO_MESSAGING_SERVICE_SID"
        ),
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (for example 10.0.0.5 or "
                    "10.0.0.0/8); host names are not accepted"
                ) from None
        return value

    @field_validator("dispatch_every_minutes")
    @classmethod
    def _divides_an_hour(cls, value: int) -> int:
        if 60 % value:
            raise ValueError(
                f"{value} does not divide an hour; "
                "use one of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def notifications(self) -> NotificationConfig:
        """The typed configuration the notifications package takes (built here, at the edge)."""
        store = self.mock_store
        if store is None and os.environ.get("VIPCARE_MOCK_STORE"):
            # A settings object cached before the variable was set still honours it.
            store = Path(os.environ["VIPCARE_MOCK_STORE"])
        return NotificationConfig(
            sms_backend=self.sms_backend,
            voice_backend=self.voice_backend,
            mock_store=store,
            send_rate_per_second=self.send_rate_per_second,
            dispatch_concurrency=self.dispatch_concurrency,
            batch_size=self.batch_size,
            public_url=self.public_url,
            twilio_api_base=self.twilio_api_base,
            twilio_account_sid=self.twilio_account_sid,
            twilio_auth_token=self.twilio_auth_token,
            twilio_from_number=self.twilio_from_number,
            twilio_messaging_service_sid=self.twilio_messaging_service_sid,
        )

    def redacted_summary(self) -> dict[str, str]:
        """The configuration as strings, with every secret and URL password hidden."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "********" if value.get_secret_value() else ""
            elif value is None:
                out[name] = ""
            elif name == "database_url":
                out[name] = redact_url(str(value))
            elif name in {"public_url", "twilio_api_base"}:
                out[name] = redact_http_url(str(value))
            else:
                out[name] = str(value)
        return out


def redact_http_url(url: str) -> str:
    """Hide ``user:password@`` in an http(s) URL (a callback base may carry basic auth)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def redact_url(url: str) -> str:
    """Hide the password of a database URL."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL must still never leak
        return "<unparseable url>"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` instead."""
    return Settings(_env_file=env_file())
