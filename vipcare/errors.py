"""One line about an error, for a person: what went wrong, never a traceback or SQL."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError


def describe_error(exc: BaseException) -> str:
    """The driver's message for database errors (no SQL, no parameters); else type and text.

    Invalid rule files give every located problem (``file:line:col: ...``, up to 20) on
    the one line, never just the first line of the listing.
    """
    from rules.errors import RulesValidationError

    if isinstance(exc, RulesValidationError):
        text = str(exc).strip().splitlines()
        if len(text) == 1:  # already one line with its problems (rules.live.NoLiveRules)
            return f"{type(exc).__name__}: {text[0]}"
        head = f"{exc.total} problem{'s' if exc.total != 1 else ''} in the rule files"
        return f"{type(exc).__name__}: {head}: " + "; ".join(exc.listing(overall=20))
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        source = orig if orig is not None else exc
        text = str(source).strip().splitlines()
        return f"database error: {type(source).__name__}: {text[0] if text else ''}".rstrip(": ")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
