"""Helpers for the hostile-input webhook tests: a signed client without a fake server.

Signing needs only the auth token (``RequestValidator.compute_signature``), so
these tests and the property tests run without starting the fake Twilio.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy import Engine
from twilio.request_validator import RequestValidator

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from crm.db import transaction
from crm.models import Customer
from notifications.config import NotificationConfig
from notifications.webhooks import create_app

PUBLIC = "https://care.example.com"
TOKEN = "hostile-input-auth-token-0123456789"
ACCOUNT_SID = "AC" + "5" * 32
PHONE = "+8613812345678"


def hook_settings() -> NotificationConfig:
    return NotificationConfig(
        sms_backend="twilio",
        public_url=PUBLIC,
        twilio_account_sid=SecretStr(ACCOUNT_SID),
        twilio_auth_token=SecretStr(TOKEN),
        twilio_from_number="+15005550006",
    )


VALIDATOR = RequestValidator(TOKEN)


def signed_headers(path_and_query: str, params: dict[str, str]) -> dict[str, str]:
    return {
        "X-Twilio-Signature": VALIDATOR.compute_signature(PUBLIC + path_and_query, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class Hooks:
    """A TestClient that signs what it posts and turns server errors into 500 responses."""

    client: TestClient
    sids: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**9)))

    def post(self, path: str, params: dict[str, str], *, sign: bool = True) -> Any:
        headers = (
            signed_headers(path, params)
            if sign
            else {"Content-Type": "application/x-www-form-urlencoded"}
        )
        return self.client.post(path, content=urlencode(params).encode(), headers=headers)

    def inbound(self, body: str, phone: str = PHONE, sid: str | None = None) -> Any:
        params = {
            "AccountSid": ACCOUNT_SID,
            "From": phone,
            "To": "+15005550006",
            "Body": body,
            "MessageSid": sid or f"SM{next(self.sids):032x}",
        }
        return self.post("/twilio/inbound", params)


def make_client(engine: Engine, clock: Any) -> TestClient:
    app = create_app(engine, hook_settings(), clock=clock)
    return TestClient(app, raise_server_exceptions=False)


def add_customer(
    engine: Engine, ref: str = "C001", phone: str = PHONE, *, opted_out: bool = False
) -> int:
    with transaction(engine) as session:
        customer = Customer(
            external_id=ref,
            name="Wang Fang",
            phone=phone,
            tier="gold",
            tier_rank=1,
            locale="zh-CN",
            timezone="Asia/Shanghai",
            sms_opt_out=opted_out,
        )
        session.add(customer)
        session.flush()
        return customer.id


class CountingReceive:
    """An ASGI ``receive`` that yields ``chunks`` body chunks and counts how many were pulled."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks = chunks
        self.chunk = b"a" * size
        self.pulled = 0

    async def __call__(self) -> dict[str, Any]:
        if self.pulled >= self.chunks:
            return {"type": "http.disconnect"}
        self.pulled += 1
        return {
            "type": "http.request",
            "body": self.chunk,
            "more_body": self.pulled < self.chunks,
        }


def call_asgi(
    app: Any, path: str, headers: dict[str, str], receive: CountingReceive
) -> tuple[int, bytes]:
    """Run one POST through the ASGI app; returns (status, body)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("care.example.com", 443),
    }
    # In a thread of its own: a Playwright browser of another test in this worker may
    # have an event loop running in the main thread, and asyncio.run refuses to nest.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def fixed_clock(at: datetime) -> Any:
    return lambda: at


def add_message(
    engine: Engine, at: datetime, customer_id: int, sid: str | None, **overrides: Any
) -> int:
    """An outbound SMS already handed to Twilio (``sent``) unless ``overrides`` say otherwise."""
    from crm.models import OutboundMessage

    values: dict[str, Any] = dict(
        customer_id=customer_id,
        channel="sms",
        category="service",
        template="grace_notice",
        journey="grace_credit",
        occurrence=f"grace:{sid}",
        locale="zh-CN",
        to_phone=PHONE,
        body="尊敬的客户",
        scheduled_for=at,
        status="sent",
        provider="twilio",
        provider_message_id=sid,
        attempt_id="ab12:1",
        attempts=1,
        created_at=at,
        updated_at=at,
        sent_at=at,
    )
    values.update(overrides)
    with transaction(engine) as session:
        row = OutboundMessage(**values)
        session.add(row)
        session.flush()
        return row.id
