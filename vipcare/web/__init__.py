"""The account-manager workspace (``vipcare web``): FastAPI + Jinja2, server-rendered."""

from __future__ import annotations

from vipcare.web.app import Dispatcher, create_app

__all__ = ["Dispatcher", "create_app"]
