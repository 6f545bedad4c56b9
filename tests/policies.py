"""Contact policies for tests, built as the rules package's typed model (the only kind there is)."""

from __future__ import annotations

from datetime import time

from rules.models import ContactPolicy

ALL_DAY = (time(0, 0), time(23, 59, 59, 999999))
"""A send window that is open at every instant of the day."""


def make_policy(
    window: tuple[time, time] = (time(9, 0), time(20, 0)),
    service: tuple[int, int] = (3, 10),
    marketing: tuple[int, int] = (1, 2),
) -> ContactPolicy:
    """A contact policy like the shipped one, with the window and caps a test needs."""
    return ContactPolicy.model_validate(
        {
            "send_window": {"start": window[0], "end": window[1]},
            "categories": {
                "service": {"per_day": service[0], "per_week": service[1]},
                "marketing": {"per_day": marketing[0], "per_week": marketing[1]},
            },
            "opt_out_keywords": ["STOP", "TD", "退订"],
            "opt_in_keywords": ["START"],
            "unsubscribe_text": {"zh-CN": "回TD退订", "en": "Reply STOP to opt out"},
            "hotline": "10086",
        }
    )
