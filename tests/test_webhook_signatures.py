"""No webhook request without a valid signature changes anything (issue 12, "Security
checks"), on SQLite and PostgreSQL.

The webhook routes are read from the app (``app.routes``); each needs a legitimate
signed request below that *does* change the database (a delivery status, an inbound
STOP), so the test proves that the signature, and nothing else, stood in the way. Each
attack then bends that request: no signature, a wrong one, one made with another
account's token, one for another URL (path, host, scheme, query), or the right
signature with other parameters (changed, added, removed, repeated). Every attack must
answer 403 and leave every table (audit log included) exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine
from starlette.routing import Route
from twilio.request_validator import RequestValidator
from webhook_support import (
    ACCOUNT_SID,
    PHONE,
    PUBLIC,
    TOKEN,
    add_customer,
    add_message,
    hook_settings,
    make_client,
)

from tests.db_snapshot import changed_rows, snapshot

SID = "SM" + "b" * 32
INBOUND_SID = "SM" + "c" * 32
FROM = "+15005550006"


@dataclass(frozen=True)
class Request:
    """One POST: path (with query), the form pairs sent, and the URL and pairs signed."""

    path: str
    sent: list[tuple[str, str]]
    signed_url: str | None  # None: no X-Twilio-Signature header at all
    signed: dict[str, str]
    token: str = TOKEN
    signature: str | None = None  # a literal header value instead of a computed one

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.signature is not None:
            headers["X-Twilio-Signature"] = self.signature
        elif self.signed_url is not None:
            validator = RequestValidator(self.token)
            headers["X-Twilio-Signature"] = validator.compute_signature(
                self.signed_url, self.signed
            )
        return headers


def legitimate(path: str, params: dict[str, str]) -> Request:
    return Request(path, list(params.items()), PUBLIC + path, dict(params))


def status_request(message_id: int) -> Request:
    return legitimate(
        "/twilio/status",
        {"AccountSid": ACCOUNT_SID, "MessageSid": SID, "MessageStatus": "delivered"},
    )


def inbound_request(message_id: int) -> Request:
    return legitimate(
        "/twilio/inbound",
        {
            "AccountSid": ACCOUNT_SID,
            "MessageSid": INBOUND_SID,
            "From": PHONE,
            "To": FROM,
            "Body": "STOP",
        },
    )


# Every webhook route: its legitimate request (given the sent message's id).
LEGITIMATE: dict[str, Callable[[int], Request]] = {
    "/twilio/status": status_request,
    "/twilio/inbound": inbound_request,
}
# A value that would change something else, per route (an opt-out code, an opt-in).
TAMPERED = {
    "/twilio/status": ("MessageStatus", "undelivered"),
    "/twilio/inbound": ("Body", "START"),
}
EXTRA = {"/twilio/status": ("ErrorCode", "21610"), "/twilio/inbound": ("Body", "STOP")}


def _other_path(r: Request) -> Request:
    other = next(p for p in LEGITIMATE if p != r.path)
    return replace(r, signed_url=PUBLIC + other)


def _changed(r: Request) -> Request:
    name, value = TAMPERED[r.path]
    return replace(r, sent=[(k, value if k == name else v) for k, v in r.sent])


def _added(r: Request) -> Request:
    name, value = EXTRA[r.path]
    sent = [(k, v) for k, v in r.sent if k != name] + [(name, value)]
    if name in r.signed:  # the route already has it: add a parameter Twilio never sends
        sent.append(("OptOutType", "STOP"))
    return replace(r, sent=sent)


def _repeated(r: Request) -> Request:
    name, value = TAMPERED[r.path]
    return replace(r, sent=[*r.sent, (name, value)])


ATTACKS: dict[str, Callable[[Request], Request]] = {
    "no signature": lambda r: replace(r, signed_url=None),
    "empty signature": lambda r: replace(r, signature=""),
    "garbage signature": lambda r: replace(r, signature="bm90IGEgc2lnbmF0dXJl"),
    "a valid signature for nothing": lambda r: replace(
        r, signature=RequestValidator(TOKEN).compute_signature(PUBLIC, {})
    ),
    "another account's token": lambda r: replace(r, token="another-accounts-token-9876543210"),
    "signed for the other webhook": _other_path,
    "signed for another host": lambda r: replace(r, signed_url="https://evil.example" + r.path),
    "signed over http": lambda r: replace(r, signed_url="http://care.example.com" + r.path),
    "signed with a trailing slash": lambda r: replace(r, signed_url=PUBLIC + r.path + "/"),
    "a query added after signing": lambda r: replace(
        r, path=r.path + "?message_id=1&attempt_id=ab12:1"
    ),
    "a signed query dropped": lambda r: replace(r, signed_url=PUBLIC + r.path + "?message_id=1"),
    "a parameter changed": _changed,
    "a parameter added": _added,
    "a parameter removed": lambda r: (
        replace(r, sent=[(k, v) for k, v in r.sent if k != "To"])
        if any(k == "To" for k, _ in r.sent)
        else replace(r, sent=[(k, v) for k, v in r.sent if k != "AccountSid"])
    ),
    "a parameter repeated": _repeated,
    "signed for other parameters": lambda r: replace(
        r, signed={**r.signed, **dict([TAMPERED[r.path]])}
    ),
}


def webhook_routes(app: Any) -> set[str]:
    paths = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route {route!r}"
        assert route.methods == {"POST"}, f"{route.path} answers {route.methods}"
        paths.add(route.path)
    return paths


@dataclass
class Setup:
    engine: Engine
    client: Any
    message_id: int
    customer_id: int

    def post(self, request: Request) -> Any:
        return self.client.post(
            request.path, content=urlencode(request.sent).encode(), headers=request.headers()
        )


@pytest.fixture
def hooks(engine: Engine, now: datetime) -> Iterator[Setup]:
    customer = add_customer(engine)
    message = add_message(engine, now, customer, SID)
    with make_client(engine, lambda: now) as client:
        yield Setup(engine, client, message, customer)


def test_every_webhook_route_has_a_legitimate_request(engine: Engine, now: datetime) -> None:
    from notifications.webhooks import create_app

    app = create_app(engine, hook_settings(), clock=lambda: now)
    assert webhook_routes(app) == set(LEGITIMATE)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_unsigned_or_badly_signed_webhook_changes_nothing(hooks: Setup, attack: str) -> None:
    routes = webhook_routes(hooks.client.app)
    for path in sorted(routes):
        request = ATTACKS[attack](LEGITIMATE[path](hooks.message_id))
        assert request != LEGITIMATE[path](hooks.message_id), "the attack changed nothing"
        before = snapshot(hooks.engine)
        response = hooks.post(request)
        assert response.status_code == 403, (path, response.status_code, response.text)
        assert "Traceback" not in response.text
        assert changed_rows(before, snapshot(hooks.engine)) == {}, path


def test_the_legitimate_requests_do_change_the_database(hooks: Setup) -> None:
    """The other half of the proof: what the attacks bent was a request that works."""
    for path in sorted(LEGITIMATE):
        before = snapshot(hooks.engine)
        response = hooks.post(LEGITIMATE[path](hooks.message_id))
        assert response.status_code == 200, (path, response.text)
        diff = changed_rows(before, snapshot(hooks.engine))
        assert "audit_log" in diff, path
        assert ("outbound_messages" if path.endswith("status") else "customers") in diff, path
