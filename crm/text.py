"""Characters that must not hide in text a person will read: control codes and bidi overrides,
and, in ids and names, invisible characters.

A NUL breaks PostgreSQL's text columns; ESC, the C1 controls and the other C0
codes let a name rewrite the operator's terminal; the Unicode bidi embeddings,
overrides and isolates make text display in another order than it is stored
("Trojan source"). Imports refuse them in every cell (:func:`first_unsafe`), and
every CLI output path shows them as visible escapes (:func:`neutralise`).

Ids and names are stricter (:func:`first_invisible`): no character that shows as
nothing. ``G8`` and ``G8`` + U+200B print alike but are different keys, so they
would become two customers. That is every Unicode format character (category Cf:
zero-width space U+200B, joiners U+200C/U+200D, direction marks U+200E/U+200F,
U+2060–U+2064, U+FEFF, the soft hyphen U+00AD, tag characters, …), the line and
paragraph separators, variation selectors, the combining grapheme joiner and the
Hangul fillers. Free text a manager types (a call note, a reschedule reason) may
hold joiners (emoji, some scripts need them); it is never a key, and the CLI
shows it through :func:`neutralise`.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE_CLASS = "\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
UNSAFE = re.compile(f"[{_UNSAFE_CLASS}]")
"""C0 controls except tab, DEL, C1 controls, bidi embeddings/overrides/isolates."""
UNSAFE_IN_LINES = re.compile(f"[{_UNSAFE_CLASS.replace(chr(10) + '-', chr(11) + '-')}]")
"""The same, but line feeds are allowed (multi-line output)."""


def code_point(char: str) -> str:
    """``"\\x1b"`` → ``"U+001B"``."""
    return f"U+{ord(char):04X}"


def first_unsafe(text: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first unsafe character in ``text``, or None."""
    found = UNSAFE.search(text)
    return None if found is None else (found.start() + 1, found.group())


_INVISIBLE_OTHER = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers: letters that show as nothing
    "\u2028\u2029"  # line and paragraph separators
)


def _invisible(char: str) -> bool:
    return (
        unicodedata.category(char) == "Cf"
        or char in _INVISIBLE_OTHER
        or "\ufe00" <= char <= "\ufe0f"  # variation selectors
        or "\U000e0100" <= char <= "\U000e01ef"
    )


def first_invisible(text: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first character in ``text`` that shows as
    nothing (see the module docstring), or None. For ids and names."""
    for position, char in enumerate(text, start=1):
        if _invisible(char):
            return position, char
    return None


def describe(char: str) -> str:
    """``"\u200b"`` → ``"U+200B ZERO WIDTH SPACE"``."""
    name = unicodedata.name(char, "")
    return f"{code_point(char)} {name}" if name else code_point(char)


def _escape(match: re.Match[str]) -> str:
    value = ord(match.group())
    return f"\\x{value:02x}" if value < 0x100 else f"\\u{value:04x}"


def neutralise(text: str, *, keep_newlines: bool = False) -> str:
    """Every unsafe character as a visible escape (``\\x1b``, ``\\u202e``); the rest unchanged."""
    pattern = UNSAFE_IN_LINES if keep_newlines else UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text
