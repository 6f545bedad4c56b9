"""Errors the seed package raises on purpose."""

from __future__ import annotations

from crm.errors import CrmError


class SeedError(CrmError):
    """Seeding was refused or failed; the message says what to do.

    Derives from :class:`~crm.errors.CrmError` so that the CLI's ``input_errors``
    turns it into exit status 1 like every other deliberate CRM error.
    """
