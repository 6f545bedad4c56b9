"""Characters that must not hide in text a person will read: control codes and bidi overrides.

A NUL breaks PostgreSQL's text columns; ESC, the C1 controls and the other C0
codes let a name rewrite the operator's terminal; the Unicode bidi embeddings,
overrides and isolates make text display in another order than it is stored
("Trojan source"). Imports refuse them (:func:`first_unsafe`), and every CLI
output path shows them as visible escapes (:func:`neutralise`).
"""

from __future__ import annotations

import re

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


def _escape(match: re.Match[str]) -> str:
    value = ord(match.group())
    return f"\\x{value:02x}" if value < 0x100 else f"\\u{value:04x}"


def neutralise(text: str, *, keep_newlines: bool = False) -> str:
    """Every unsafe character as a visible escape (``\\x1b``, ``\\u202e``); the rest unchanged."""
    pattern = UNSAFE_IN_LINES if keep_newlines else UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text
