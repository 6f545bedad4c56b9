"""Inbound SMS keywords: is this reply an opt-out (STOP, TD, 退订, ...) or an opt-in (START, ...)?

The keyword lists come from the contact policy (``rules/contact_policy.yaml``);
the defaults here are what ships there: Twilio's own opt-out and opt-in words
plus the Chinese ones. Matching is on the whole message after
:func:`rules.keywords.normalise_keyword` (NFKC, surrounding spaces and
punctuation stripped, case-folded): "  stop ", "STOP." and "退订。" count,
"please stop calling" does not, so ordinary replies never unsubscribe anyone.
"""

from __future__ import annotations

from collections.abc import Iterable

from notifications.errors import NotificationError
from rules.keywords import normalise_keyword

DEFAULT_OPT_OUT: tuple[str, ...] = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "TD",
    "退订",
)
DEFAULT_OPT_IN: tuple[str, ...] = ("START", "YES", "UNSTOP")

__all__ = ["DEFAULT_OPT_IN", "DEFAULT_OPT_OUT", "KeywordMatcher", "normalise_keyword"]


class KeywordMatcher:
    """Classifies an inbound body: True = opt out, False = opt in, None = not a keyword."""

    def __init__(
        self,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
    ) -> None:
        self.opt_out = frozenset(w for w in map(normalise_keyword, opt_out) if w)
        self.opt_in = frozenset(w for w in map(normalise_keyword, opt_in) if w)
        if not self.opt_out:
            raise NotificationError("at least one opt-out keyword is required")
        both = self.opt_out & self.opt_in
        if both:
            raise NotificationError(
                f"keywords cannot both opt out and opt in: {', '.join(sorted(both))}"
            )

    def keyword(self, body: str) -> str:
        """The normalised form of ``body`` that :meth:`classify` compares."""
        return normalise_keyword(body)

    def classify(self, body: str) -> bool | None:
        word = normalise_keyword(body)
        if word in self.opt_out:
            return True
        if word in self.opt_in:
            return False
        return None
