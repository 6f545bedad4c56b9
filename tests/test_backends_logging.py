"""The masking log filter: phones masked, secrets redacted, record shape kept."""

from __future__ import annotations

import logging

from notifications.logging import MaskingFilter, install_masking, mask_phones

TOKEN = "s3cr3t-auth-token-value"


def record(msg: str, args: tuple[object, ...] | None = None) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)


def test_phones_masked_in_message_and_args_but_not_ids_or_dates() -> None:
    rec = record("send to %s via %s: %d tries, token %s", ("+8613812345678", "x", 3, TOKEN))
    MaskingFilter([TOKEN]).filter(rec)
    text = rec.getMessage()
    assert text == "send to +86138****5678 via x: 3 tries, token ********"
    assert mask_phones("GET /2010-04-01/Accounts/AC123/Messages.json?To=%2B8613812345678") == (
        "GET /2010-04-01/Accounts/AC123/Messages.json?To=%2B86138****5678"
    )
    assert mask_phones("SMa7aabb56d6fd44429123455397b9d0") == "SMa7aabb56d6fd44429123455397b9d0"


def test_uvicorn_style_tuple_args_keep_their_shape() -> None:
    rec = record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "POST", "/twilio/status", "1.1", 200))
    MaskingFilter().filter(rec)
    assert isinstance(rec.args, tuple) and len(rec.args) == 5
    assert rec.args[2:] == ("/twilio/status", "1.1", 200)


def test_tracebacks_are_scrubbed_and_install_is_idempotent() -> None:
    try:
        raise ValueError(f"bad number +8613812345678 with {TOKEN}")
    except ValueError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    logger = logging.getLogger("tests.masking")
    first = install_masking(logger, [TOKEN])
    assert install_masking(logger, ["another-secret"]) is first
    assert len([f for f in logger.filters if isinstance(f, MaskingFilter)]) == 1
    first.filter(rec)
    assert rec.exc_text is not None
    assert "+8613812345678" not in rec.exc_text and TOKEN not in rec.exc_text
    assert "+86138****5678" in rec.exc_text
    logger.removeFilter(first)
