"""How ``vipcare web`` serves the workspace: the uvicorn options, in one place (the CLI and
the tests that serve the app on a real socket use the same ones)."""

from __future__ import annotations

from typing import Any

from vipcare.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the workspace process.

    uvicorn's own proxy-header handling is off: by default it believes
    ``X-Forwarded-For`` from 127.0.0.1 (``FORWARDED_ALLOW_IPS``), so a guesser on the
    same host could claim a new address with every sign-in try. The workspace app
    applies ``VIPCARE_TRUSTED_PROXIES`` itself (:func:`vipcare.web.app.create_app`),
    whichever server runs it.
    """
    return {"proxy_headers": False, "forwarded_allow_ips": list(settings.trusted_proxies)}
