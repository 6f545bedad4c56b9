"""Phone numbers: parse to E.164 with ``phonenumbers``, and mask them for logs."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from crm.errors import CrmError


class InvalidPhone(CrmError):
    pass


def to_e164(raw: str, default_region: str = "CN") -> str:
    """Normalise ``raw`` to E.164, or raise :class:`InvalidPhone` saying why."""
    text = raw.strip()
    if not text:
        raise InvalidPhone("phone number is empty")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{raw!r} is not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(
            f"{raw!r} is not a valid phone number; expected E.164 like +8613812345678"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(phone: str | None) -> str:
    """``+8613812345678`` → ``+86138****5678``: enough to recognise, not to dial."""
    if not phone:
        return ""
    digits = phone.lstrip("+")
    if len(digits) <= 6:
        return "+" + "*" * len(digits) if phone.startswith("+") else "*" * len(digits)
    head = 5 if len(digits) > 10 else 3
    masked = digits[:head] + "*" * (len(digits) - head - 4) + digits[-4:]
    return ("+" if phone.startswith("+") else "") + masked


@lru_cache(maxsize=8192)
def readable(phone: str) -> str:
    """``+8613812345678`` → ``+86 138 1234 5678``, for people who dial it (E.164 if unparsable)."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


_PHONE_IN_TEXT = re.compile(r"\+?\d[\d \-]{7,}\d")


def mask_in_text(text: str) -> str:
    """Mask every phone-looking run of digits in free text (log lines, errors)."""
    return _PHONE_IN_TEXT.sub(lambda m: mask(re.sub(r"[ \-]", "", m.group(0))), text)
