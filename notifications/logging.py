"""A logging filter that masks phone numbers and hides secrets in every record it sees.

Secrets are the values it is given (the auth token, the Account SID) and, by
shape, every Twilio Account SID (``AC`` + 32 hex), which the Twilio client and
urllib3 print in each request URL.

Attach it to a *handler* to cover everything that handler writes (the CLI and
the webhook server do), or to a *logger* to cover records created on that
logger (the Twilio adapter does this for the client's request log, which would
otherwise print recipient numbers in query strings).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

from crm.phones import mask
from notifications.config import NotificationConfig

REDACTED = "********"

# A phone is "+" (or URL-encoded %2B) and 7-15 digits, or a bare run of 11-15
# digits standing alone. Digits inside words (SIDs, hashes), dates and paths
# ("2010-04-01") are left alone, unlike crm.phones.mask_in_text, so log lines
# stay readable.
_PHONE = re.compile(r"(\+|%2[Bb])(\d{7,15})(?!\d)|(?<![\w%+\-/.:])(\d{11,15})(?![\w])")


_ACCOUNT_SID = re.compile(r"\bAC[0-9a-fA-F]{32}\b")
"""A Twilio Account SID: a secret (with the token it opens the account), and in every API URL."""


def redact_account_sids(text: str) -> str:
    """``/Accounts/AC0123…/`` → ``/Accounts/AC********/``, whether or not the sid is configured."""
    return _ACCOUNT_SID.sub("AC" + REDACTED, text)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, every Account SID and every phone number hidden."""
    text = redact_account_sids(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return mask_phones(text)


def mask_phones(text: str) -> str:
    """Mask every phone number in ``text``: ``+8613812345678`` → ``+86138****5678``."""

    def _sub(match: re.Match[str]) -> str:
        prefix, digits, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            return mask(bare)
        return prefix + mask("+" + digits)[1:]

    return _PHONE.sub(_sub, text)


class MaskingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with phones masked and secrets redacted.

    Account SIDs are redacted by shape even when not given as secrets.

    Never drops a record. Secrets shorter than 6 characters are ignored:
    redacting them would shred ordinary words and hide nothing worth hiding.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 6)

    def scrub(self, text: str) -> str:
        return scrub_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        # Scrub the format string and each argument separately, keeping the
        # args' shape: formatters such as uvicorn's unpack them.
        if isinstance(record.msg, str):
            record.msg = self.scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._scrub_arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._scrub_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True

    def _scrub_arg(self, value: object) -> object:
        if value is None or isinstance(value, bool | int | float):
            return value  # keeps %d / %.2f working; vipcare logs phones as E.164 strings
        return self.scrub(value if isinstance(value, str) else str(value))


def install_masking(
    target: logging.Logger | logging.Handler, secrets: Iterable[str] = ()
) -> MaskingFilter:
    """Attach a :class:`MaskingFilter` to ``target`` once; later calls add secrets to it."""
    for existing in target.filters:
        if isinstance(existing, MaskingFilter):
            existing.add_secrets(secrets)
            return existing
    masking = MaskingFilter(secrets)
    target.addFilter(masking)
    return masking


def twilio_secrets(config: NotificationConfig) -> list[str]:
    """The configured auth token and Account SID (those set), for :func:`install_masking`."""
    return [v for v in (config.auth_token(), config.account_sid()) if v]


def install_on_root(secrets: Iterable[str] = ()) -> None:
    """Mask every handler of the root logger (call at a process edge, after logging is set up)."""
    wanted = list(secrets)
    for handler in logging.getLogger().handlers:
        install_masking(handler, wanted)
