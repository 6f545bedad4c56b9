"""How an inbound SMS is compared with the opt-out / opt-in keywords of the contact policy.

Customers type "STOP.", "退订。" or "「ＳＴＯＰ」！": NFKC folds full-width forms,
then surrounding whitespace and punctuation are stripped and the rest is
case-folded. Only the *surrounding* characters go, so "please stop calling" or
"S.T.O.P" stay ordinary replies and never unsubscribe anyone.
"""

from __future__ import annotations

import unicodedata

MAX_KEYWORD = 32
"""A keyword longer than this is not a keyword (and keeps the recorded text short)."""


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def normalise_keyword(text: str) -> str:
    """``" 「ＳＴＯＰ」！ "`` → ``"stop"``: NFKC, strip surrounding space/punctuation, case-fold."""
    folded = unicodedata.normalize("NFKC", text)
    start, end = 0, len(folded)
    while start < end and _is_edge(folded[start]):
        start += 1
    while end > start and _is_edge(folded[end - 1]):
        end -= 1
    return folded[start:end].casefold()
