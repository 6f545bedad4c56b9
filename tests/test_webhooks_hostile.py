"""Hostile webhook input: oversized bodies, malformed signed fields, replays (SQLite + PostgreSQL).

Defects 1, 5 and 6 of issue 12: a large POST was buffered whole before any
check; signed but malformed fields reached PostgreSQL and answered 500; a
replayed inbound START re-subscribed a customer who had sent STOP since.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, select
from webhook_support import (
    PHONE,
    CountingReceive,
    Hooks,
    add_customer,
    add_message,
    call_asgi,
    hook_settings,
    make_client,
    signed_headers,
)

from crm.db import transaction
from crm.models import AuditLog, OutboundMessage
from notifications.webhooks import MAX_BODY, create_app

SID = "SM" + "a" * 32


@pytest.fixture
def hooks(engine: Engine, now: datetime) -> Iterator[Hooks]:
    with make_client(engine, lambda: now) as client:
        yield Hooks(client)


def audit_rows(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(AuditLog.action).order_by(AuditLog.seq)))


# -- defect 1: the body is limited while it streams in ---------------------------


@pytest.mark.parametrize("path", ["/twilio/status", "/twilio/inbound"])
def test_a_huge_chunked_body_is_refused_after_reading_at_most_the_limit(path: str) -> None:
    """No Content-Length (chunked): the handler stops pulling once it has MAX_BODY bytes."""
    app = create_app(None, hook_settings(), clock=lambda: None)  # type: ignore[arg-type]
    chunk = 16 * 1024
    receive = CountingReceive(chunks=10_000, size=chunk)  # 160 MB offered
    status, body = call_asgi(
        app, path, {"content-type": "application/x-www-form-urlencoded"}, receive
    )
    assert status == 413, body
    assert b"too large" in body
    # At most the limit plus the one chunk that crossed it was ever pulled.
    assert receive.pulled <= MAX_BODY // chunk + 1


def test_a_declared_content_length_over_the_limit_is_refused_before_reading() -> None:
    app = create_app(None, hook_settings(), clock=lambda: None)  # type: ignore[arg-type]
    receive = CountingReceive(chunks=25_000, size=16 * 1024)  # 400 MB offered
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "content-length": str(400 * 1024 * 1024),
    }
    status, _body = call_asgi(app, "/twilio/status", headers, receive)
    assert status == 413
    assert receive.pulled == 0


def test_a_malformed_content_length_is_a_400() -> None:
    app = create_app(None, hook_settings(), clock=lambda: None)  # type: ignore[arg-type]
    headers = {"content-type": "application/x-www-form-urlencoded", "content-length": "1e9"}
    status, _body = call_asgi(app, "/twilio/status", headers, CountingReceive(1, 10))
    assert status == 400


def test_a_body_just_under_the_limit_is_still_read_and_checked(hooks: Hooks) -> None:
    """The limit is not off by one: MAX_BODY bytes reach the signature check (403 unsigned)."""
    params = {"MessageSid": SID, "MessageStatus": "delivered"}
    filler = MAX_BODY - len(urlencode({**params, "Pad": ""}))
    response = hooks.post("/twilio/status", {**params, "Pad": "x" * filler}, sign=False)
    assert response.status_code == 403
    response = hooks.post("/twilio/status", {**params, "Pad": "x" * (filler + 1)}, sign=False)
    assert response.status_code == 413


# -- defect 5: signed but malformed fields are a 400, never a 500 -----------------


@pytest.mark.parametrize(
    ("params", "query", "reason"),
    [
        ({"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "3" * 33}, "", "ErrorCode"),
        ({"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "٣٠٠٠٣"}, "", "ErrorCode"),
        ({"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "30003\x00"}, "", "ErrorCode"),
        ({"MessageSid": "SM\x00" + "a" * 30, "MessageStatus": "delivered"}, "", "MessageSid"),
        ({"MessageSid": "SM-" + "a" * 30, "MessageStatus": "delivered"}, "", "MessageSid"),
        ({"MessageSid": "SMé" + "a" * 30, "MessageStatus": "delivered"}, "", "MessageSid"),
        ({"CallSid": "CA\x00" + "b" * 30, "CallStatus": "completed"}, "", "CallSid"),
        ({"MessageSid": SID, "MessageStatus": "deli\x00vered"}, "", "MessageStatus"),
        ({"MessageSid": SID, "MessageStatus": "x" * 5000}, "", "MessageStatus"),
        (
            {"MessageSid": SID, "MessageStatus": "delivered"},
            "message_id=1&attempt_id=ab12%003",
            "attempt_id",
        ),
        (
            {"MessageSid": SID, "MessageStatus": "delivered"},
            "message_id=1&attempt_id=ab12:1:2",
            "attempt_id",
        ),
        (
            {"MessageSid": SID, "MessageStatus": "delivered"},
            "message_id=%D9%A3&attempt_id=ab12:1",
            "message_id",
        ),
    ],
)
def test_signed_malformed_status_fields_get_400(
    engine: Engine, hooks: Hooks, now: datetime, params: dict[str, str], query: str, reason: str
) -> None:
    customer = add_customer(engine)
    mid = add_message(engine, now, customer, SID)
    path = "/twilio/status" + (f"?{query}" if query else "")
    response = hooks.post(path, params)
    assert response.status_code == 400, response.text
    assert reason in response.text
    assert len(response.text) < 200 and "\x00" not in response.text
    with transaction(engine) as session:
        row = session.get(OutboundMessage, mid)
        assert row is not None and (row.status, row.error_code) == ("sent", None)
    assert audit_rows(engine) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("From", PHONE + "\x00"),
        ("From", "+" + "8" * 40),
        ("Body", "STOP" + "\x00"),
        ("Body", "x" * 2000),
        ("MessageSid", "SM\x00" + "c" * 30),
        ("MessageSid", ""),
        ("MessageSid", "S"),
    ],
)
def test_signed_malformed_inbound_fields_get_400(
    engine: Engine, hooks: Hooks, field: str, value: str
) -> None:
    customer = add_customer(engine)
    params = {"From": PHONE, "Body": "STOP", "MessageSid": "SM" + "d" * 32, field: value}
    response = hooks.post("/twilio/inbound", params)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert PHONE not in response.text
    assert audit_rows(engine) == []
    with transaction(engine) as session:
        from crm.models import Customer

        assert session.get(Customer, customer).sms_opt_out is False  # type: ignore[union-attr]


def test_well_formed_fields_still_work(engine: Engine, hooks: Hooks, now: datetime) -> None:
    customer = add_customer(engine)
    mid = add_message(engine, now, customer, SID)
    params = {"MessageSid": SID, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert hooks.post("/twilio/status", params).status_code == 200
    with transaction(engine) as session:
        row = session.get(OutboundMessage, mid)
        assert row is not None and (row.status, row.error_code) == ("undelivered", "30003")


def test_the_signature_is_still_checked_first(engine: Engine, hooks: Hooks) -> None:
    """Field checks never run for an unsigned request: 403 whatever the fields hold."""
    params = {"MessageSid": "SM\x00", "MessageStatus": "delivered", "ErrorCode": "٣"}
    assert hooks.post("/twilio/status", params, sign=False).status_code == 403
    headers = signed_headers("/twilio/status", {"MessageSid": SID, "MessageStatus": "sent"})
    response = hooks.client.post(
        "/twilio/status", content=urlencode(params).encode(), headers=headers
    )
    assert response.status_code == 403
