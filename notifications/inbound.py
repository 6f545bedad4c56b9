"""Inbound SMS keywords: is this reply an opt-out (STOP, TD, 退订) or an opt-in (START)?

The keyword lists come from the contact policy (``rules/contact_policy.yaml``);
the defaults here are what ships there. Matching is on the whole message,
trimmed (including full-width spaces) and case-folded: "  stop " and "Td" count,
"please stop calling" does not, so ordinary replies never unsubscribe anyone.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from notifications.errors import NotificationError

DEFAULT_OPT_OUT: tuple[str, ...] = ("STOP", "TD", "退订")
DEFAULT_OPT_IN: tuple[str, ...] = ("START",)


def normalise_keyword(text: str) -> str:
    """Trim and case-fold; NFKC first so full-width "ＳＴＯＰ" reads as "stop"."""
    return unicodedata.normalize("NFKC", text).strip().casefold()


class KeywordMatcher:
    """Classifies an inbound body: True = opt out, False = opt in, None = not a keyword."""

    def __init__(
        self,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
    ) -> None:
        self.opt_out = frozenset(normalise_keyword(k) for k in opt_out if k.strip())
        self.opt_in = frozenset(normalise_keyword(k) for k in opt_in if k.strip())
        if not self.opt_out:
            raise NotificationError("at least one opt-out keyword is required")
        both = self.opt_out & self.opt_in
        if both:
            raise NotificationError(
                f"keywords cannot both opt out and opt in: {', '.join(sorted(both))}"
            )

    def classify(self, body: str) -> bool | None:
        word = normalise_keyword(body)
        if word in self.opt_out:
            return True
        if word in self.opt_in:
            return False
        return None
