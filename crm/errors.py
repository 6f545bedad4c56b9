"""Errors raised by the CRM layer; every one derives from :class:`CrmError`."""

from __future__ import annotations


class CrmError(Exception):
    """Base of every error the CRM package raises on purpose."""


class InvalidTransition(CrmError):
    """A state machine refused a move; ``reason`` says why."""

    def __init__(self, entity: str, current: str, target: str, reason: str) -> None:
        self.entity = entity
        self.current = current
        self.target = target
        self.reason = reason
        super().__init__(f"{entity}: cannot go from {current!r} to {target!r}: {reason}")


class NotFound(CrmError):
    """A referenced row does not exist."""
