"""Twilio webhooks on SQLite and PostgreSQL: signed status callbacks and inbound STOP/START."""

from __future__ import annotations

import socket
import threading
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from test_dispatcher_support import add_task, connect, task

with warnings.catch_warnings():
    # Starlette 1.x nags about httpx vs httpx2 at import; httpx is what we ship.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from crm.db import transaction
from crm.models import AuditLog, Customer, OutboundMessage
from notifications.backends.twilio import TwilioSMSBackend
from notifications.base import OutgoingMessage
from notifications.config import NotificationConfig
from notifications.errors import ConfigurationError, NotificationError
from notifications.fake_twilio import FakeTwilio
from notifications.inbound import KeywordMatcher
from notifications.webhooks import EMPTY_TWIML, create_app
from vipcare.settings import Settings

pytest_plugins = ["plugins.fake_twilio"]

PUBLIC = "https://care.example.com"
PHONE = "+8613812345678"
STATUS_URL = PUBLIC + "/twilio/status"
INBOUND_URL = PUBLIC + "/twilio/inbound"


@pytest.fixture
def settings(fake_twilio: FakeTwilio) -> NotificationConfig:
    return Settings(
        _env_file=None,
        sms_backend="twilio",
        public_url=PUBLIC,
        twilio_api_base=fake_twilio.base_url,
        twilio_account_sid=SecretStr(fake_twilio.account_sid),
        twilio_auth_token=SecretStr(fake_twilio.auth_token),
        twilio_from_number="+15005550006",
    ).notifications()


@pytest.fixture
def client(engine: Engine, settings: NotificationConfig, now: datetime) -> Iterator[TestClient]:
    with TestClient(create_app(engine, settings, clock=lambda: now)) as test_client:
        yield test_client


def add_customer(engine: Engine, now: datetime, ref: str = "C001", phone: str = PHONE) -> int:
    with transaction(engine) as session:
        customer = Customer(
            external_id=ref,
            name="Wang Fang",
            phone=phone,
            tier="gold",
            tier_rank=1,
            locale="zh-CN",
            timezone="Asia/Shanghai",
        )
        session.add(customer)
        session.flush()
        return customer.id


def add_message(
    engine: Engine,
    now: datetime,
    customer_id: int,
    sid: str | None,
    status: str = "sent",
    **overrides: Any,
) -> int:
    with transaction(engine) as session:
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
            scheduled_for=now,
            status=status,
            provider="twilio",
            provider_message_id=sid,
            attempt_id="att-1",
            attempts=1,
            created_at=now,
            updated_at=now,
            sent_at=now if status == "sent" else None,
        )
        values.update(overrides)
        row = OutboundMessage(**values)
        session.add(row)
        session.flush()
        return row.id


def message(engine: Engine, message_id: int) -> OutboundMessage:
    with transaction(engine) as session:
        row = session.get(OutboundMessage, message_id)
        assert row is not None
        return row


def opted_out(engine: Engine, customer_id: int) -> bool:
    with transaction(engine) as session:
        return bool(session.scalar(select(Customer.sms_opt_out).where(Customer.id == customer_id)))


def audit_actions(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(AuditLog.action).order_by(AuditLog.seq)))


def sent_through_fake(settings: NotificationConfig) -> str:
    """Send one SMS with the real adapter to the fake; return Twilio's sid."""
    backend = TwilioSMSBackend.from_settings(settings)
    result = backend.send(OutgoingMessage(1, "sms", PHONE, "尊敬的客户", "zh-CN", "att-1"))
    return result.provider_message_id


def post(client: TestClient, signed: tuple[str, dict[str, str], dict[str, str]]) -> Any:
    url, params, headers = signed
    return client.post(url.removeprefix(PUBLIC), data=params, headers=headers)


def test_send_then_signed_delivered_callback(
    engine: Engine,
    settings: NotificationConfig,
    client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
) -> None:
    sid = sent_through_fake(settings)
    customer = add_customer(engine, now)
    mid = add_message(engine, now, customer, sid)
    [request] = fake_twilio.api_requests("POST")
    assert request.value("StatusCallback") == STATUS_URL

    assert post(client, fake_twilio.status_callback(sid, "sent")).status_code == 200
    response = post(client, fake_twilio.status_callback(sid, "delivered"))
    assert response.status_code == 200
    row = message(engine, mid)
    assert row.status == "delivered" and row.delivered_at == now
    assert "message.delivered" in audit_actions(engine)
    # A late 'sent' after 'delivered' is accepted and ignored, not an error.
    assert post(client, fake_twilio.status_callback(sid, "sent")).status_code == 200
    assert message(engine, mid).status == "delivered"


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (30003, "undelivered", "unreachable handset"),
        (30004, "undelivered", "blocked"),
        (30005, "undelivered", "unknown handset"),
        (30006, "undelivered", "landline"),
        (30007, "undelivered", "spam"),
        (30008, "failed", "unknown delivery error"),
    ],
)
def test_delivery_failures_from_callbacks(
    engine: Engine,
    client: TestClient,
    fake_twilio: FakeTwilio,
    settings: NotificationConfig,
    now: datetime,
    code: int,
    status: str,
    words: str,
) -> None:
    sid = sent_through_fake(settings)
    mid = add_message(engine, now, add_customer(engine, now), sid)
    response = post(client, fake_twilio.status_callback(sid, status, error_code=code))
    assert response.status_code == 200
    row = message(engine, mid)
    assert row.status == status
    assert row.error_code == str(code)
    assert words in (row.status_reason or "")


def test_unsubscribed_callback_fails_message_and_opts_customer_out(
    engine: Engine,
    client: TestClient,
    fake_twilio: FakeTwilio,
    settings: NotificationConfig,
    now: datetime,
) -> None:
    sid = sent_through_fake(settings)
    customer = add_customer(engine, now)
    mid = add_message(engine, now, customer, sid)
    assert post(client, fake_twilio.status_callback(sid, "failed", 21610)).status_code == 200
    assert message(engine, mid).status == "failed"
    assert opted_out(engine, customer)
    assert "customer.sms_opt_out" in audit_actions(engine)


def test_voice_call_completed_counts_as_delivered(
    engine: Engine, client: TestClient, fake_twilio: FakeTwilio, now: datetime
) -> None:
    customer = add_customer(engine, now)
    sid = "CA" + "1" * 32
    mid = add_message(engine, now, customer, sid)
    params = {"CallSid": sid, "CallStatus": "completed", "AccountSid": fake_twilio.account_sid}
    response = client.post(
        "/twilio/status", data=params, headers=fake_twilio.signed_headers(STATUS_URL, params)
    )
    assert response.status_code == 200
    assert message(engine, mid).status == "delivered"


@pytest.mark.parametrize("attack", ["missing", "bad", "replayed", "wrong_url", "wrong_token"])
def test_unsigned_or_tampered_callbacks_get_403_and_change_nothing(
    engine: Engine,
    client: TestClient,
    fake_twilio: FakeTwilio,
    settings: NotificationConfig,
    now: datetime,
    attack: str,
) -> None:
    sid = sent_through_fake(settings)
    mid = add_message(engine, now, add_customer(engine, now), sid)
    before = audit_actions(engine)
    url, params, headers = fake_twilio.status_callback(sid, "undelivered", 30003)
    if attack == "missing":
        del headers["X-Twilio-Signature"]
    elif attack == "bad":
        headers["X-Twilio-Signature"] = "bm90IGEgc2lnbmF0dXJl"
    elif attack == "replayed":
        params = {**params, "MessageStatus": "delivered"}  # same signature, changed params
    elif attack == "wrong_url":
        headers = fake_twilio.signed_headers("http://testserver/twilio/status", params)
    else:
        other = FakeTwilio(auth_token="another-accounts-token-000")
        headers = other.signed_headers(url, params)
    response = client.post("/twilio/status", data=params, headers=headers)
    assert response.status_code == 403
    row = message(engine, mid)
    assert row.status == "sent" and row.error_code is None
    assert audit_actions(engine) == before


def test_inbound_signature_is_checked_too(
    engine: Engine, client: TestClient, fake_twilio: FakeTwilio, now: datetime
) -> None:
    customer = add_customer(engine, now)
    _url, params, headers = fake_twilio.inbound_message(INBOUND_URL, PHONE, "STOP")
    forged = {**params, "From": "+8613912345678"}
    assert client.post("/twilio/inbound", data=forged, headers=headers).status_code == 403
    assert client.post("/twilio/inbound", data=params).status_code == 403
    assert not opted_out(engine, customer)


@pytest.mark.parametrize("stop", [" stop ", "Td", "退订", "STOP", "\u3000ＴＤ\n"])
def test_stop_variants_then_start(
    engine: Engine, client: TestClient, fake_twilio: FakeTwilio, now: datetime, stop: str
) -> None:
    customer = add_customer(engine, now)
    other = add_customer(engine, now, ref="C002", phone="+8613912345678")
    response = post(client, fake_twilio.inbound_message(INBOUND_URL, PHONE, stop))
    assert response.status_code == 200
    assert response.text == EMPTY_TWIML
    assert response.headers["content-type"].startswith("text/xml")
    assert opted_out(engine, customer) and not opted_out(engine, other)
    # The same keyword again changes nothing and writes no second audit row.
    post(client, fake_twilio.inbound_message(INBOUND_URL, PHONE, stop))
    assert audit_actions(engine) == ["customer.sms_opt_out"]
    assert (
        post(client, fake_twilio.inbound_message(INBOUND_URL, PHONE, " start")).status_code == 200
    )
    assert not opted_out(engine, customer)
    assert audit_actions(engine) == ["customer.sms_opt_out", "customer.sms_opt_in"]
    with transaction(engine) as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.seq)).all()
        assert [(r.actor_type, r.actor_id, r.customer_ref) for r in rows] == [
            ("webhook", "twilio", "C001"),
            ("webhook", "twilio", "C001"),
        ]
        assert PHONE not in rows[0].details


def test_ordinary_replies_and_unknown_senders_change_nothing(
    engine: Engine, client: TestClient, fake_twilio: FakeTwilio, now: datetime
) -> None:
    customer = add_customer(engine, now)
    for body in ("please stop calling me", "thanks", ""):
        response = post(client, fake_twilio.inbound_message(INBOUND_URL, PHONE, body))
        assert response.status_code == 200
    response = post(client, fake_twilio.inbound_message(INBOUND_URL, "+8613700000000", "STOP"))
    assert response.status_code == 200
    assert not opted_out(engine, customer)
    assert audit_actions(engine) == []


def test_keywords_come_from_the_contact_policy(
    engine: Engine, settings: NotificationConfig, fake_twilio: FakeTwilio, now: datetime
) -> None:
    customer = add_customer(engine, now)
    app = create_app(
        engine, settings, clock=lambda: now, opt_out_keywords=["QUIT"], opt_in_keywords=["BACK"]
    )
    with TestClient(app) as custom:
        post(custom, fake_twilio.inbound_message(INBOUND_URL, PHONE, "stop"))
        assert not opted_out(engine, customer)
        post(custom, fake_twilio.inbound_message(INBOUND_URL, PHONE, "quit"))
        assert opted_out(engine, customer)
    with pytest.raises(NotificationError, match="both opt out and opt in"):
        KeywordMatcher(["STOP"], ["stop"])


def _signed(fake: FakeTwilio, path: str, params: dict[str, str]) -> dict[str, str]:
    return fake.signed_headers(PUBLIC + path, params)


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/twilio/status", {"MessageStatus": "delivered"}, 400),
        ("/twilio/status", {"MessageSid": "SM" + "0" * 32}, 400),
        ("/twilio/status", {"MessageSid": "SM" + "0" * 32, "MessageStatus": "exploded"}, 400),
        ("/twilio/status", {"MessageSid": "SM" + "0" * 32, "MessageStatus": "received"}, 400),
        (
            "/twilio/status",
            {"MessageSid": "SM" + "0" * 32, "MessageStatus": "failed", "ErrorCode": "x1"},
            400,
        ),
        ("/twilio/status", {"MessageSid": "SMunknown", "MessageStatus": "delivered"}, 404),
        ("/twilio/inbound", {"Body": "STOP"}, 400),
        ("/twilio/inbound", {"From": "+861", "Body": "STOP"}, 400),
        ("/twilio/inbound", {"From": PHONE}, 400),
    ],
)
def test_malformed_or_unknown_get_4xx_never_500(
    engine: Engine,
    client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
    path: str,
    params: dict[str, str],
    expected: int,
) -> None:
    add_customer(engine, now)
    response = client.post(path, data=params, headers=_signed(fake_twilio, path, params))
    assert response.status_code == expected, response.text
    assert response.text  # a reason an operator can read


def test_non_form_bodies_and_queued_messages_are_refused(
    engine: Engine, client: TestClient, fake_twilio: FakeTwilio, now: datetime
) -> None:
    customer = add_customer(engine, now)
    response = client.post(
        "/twilio/status", content=b'{"MessageSid": 1}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 415
    sid = "SM" + "2" * 32
    mid = add_message(engine, now, customer, sid, status="queued")
    params = {"MessageSid": sid, "MessageStatus": "delivered"}
    response = client.post(
        "/twilio/status", data=params, headers=_signed(fake_twilio, "/twilio/status", params)
    )
    assert response.status_code == 409
    assert message(engine, mid).status == "queued"
    assert client.get("/twilio/status").status_code == 405


def test_app_refuses_to_start_without_token_or_public_url(
    engine: Engine, settings: NotificationConfig, now: datetime
) -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN"):
        create_app(engine, settings.with_changes(twilio_auth_token=None), clock=lambda: now)
    with pytest.raises(ConfigurationError, match="VIPCARE_PUBLIC_URL"):
        create_app(engine, settings.with_changes(public_url=""), clock=lambda: now)


# -- callbacks that beat the dispatcher's write-back ------------------------------

ATTEMPT = "9f2c41d0:1"  # the dispatcher's shape: <token hex>:<message id>
LEAD = timedelta(hours=3)


def early_url(message_id: int, attempt_id: str = ATTEMPT) -> str:
    """The StatusCallback URL the dispatcher gives Twilio (``notifications.dispatcher``)."""
    return f"{STATUS_URL}?{urlencode({'message_id': message_id, 'attempt_id': attempt_id})}"


def sending_notice(engine: Engine, now: datetime) -> tuple[int, int, int]:
    """A pre-call notice claimed by a dispatcher (``sending``, no provider id yet) and its task."""
    customer = add_customer(engine, now)
    mid = add_message(
        engine,
        now,
        customer,
        None,
        status="sending",
        provider=None,
        attempt_id=ATTEMPT,
        sending_at=now,
        occurrence="grace:early",
    )
    with connect(engine) as conn:
        tid = add_task(conn, customer, mid, now)
    return customer, mid, tid


@pytest.fixture
def later_client(
    engine: Engine, settings: NotificationConfig, now: datetime
) -> Iterator[TestClient]:
    """The app a minute after ``now``, with a 3-hour pre-call lead time."""
    app = create_app(engine, settings, clock=lambda: now + timedelta(minutes=1), lead_time=LEAD)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("first", ["sent", "delivered"])
def test_callback_before_the_write_back_finds_the_sending_row_by_attempt(
    engine: Engine,
    settings: NotificationConfig,
    later_client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
    first: str,
) -> None:
    sid = sent_through_fake(settings)
    _customer, mid, tid = sending_notice(engine, now)
    at = now + timedelta(minutes=1)

    response = post(later_client, fake_twilio.status_callback(sid, first, url=early_url(mid)))

    assert response.status_code == 200, response.text
    row = message(engine, mid)
    assert (row.status, row.provider_message_id, row.provider) == (first, sid, "twilio")
    assert (row.attempt_id, row.sent_at) == (ATTEMPT, at)
    assert row.delivered_at == (at if first == "delivered" else None)
    expected = ["message.sent"] + (["message.delivered"] if first == "delivered" else [])
    assert audit_actions(engine) == expected
    # The pre-call task is scheduled as the dispatcher would have, with the rule's lead time.
    waiting = task(engine, tid)
    assert (waiting.status, waiting.ready_at, waiting.no_notice) == (
        "awaiting_notice",
        at + LEAD,
        False,
    )
    # Later callbacks find the row by its sid alone; a repeat changes nothing.
    assert post(later_client, fake_twilio.status_callback(sid, "delivered")).status_code == 200
    assert (
        post(later_client, fake_twilio.status_callback(sid, first, url=early_url(mid))).status_code
        == 200
    )
    assert message(engine, mid).status == "delivered"
    assert audit_actions(engine) == ["message.sent", "message.delivered"]


@pytest.mark.parametrize(("word", "code"), [("undelivered", 30003), ("failed", 30008)])
def test_early_delivery_failure_releases_the_task_without_notice(
    engine: Engine,
    settings: NotificationConfig,
    later_client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
    word: str,
    code: int,
) -> None:
    sid = sent_through_fake(settings)
    _customer, mid, tid = sending_notice(engine, now)
    response = post(later_client, fake_twilio.status_callback(sid, word, code, url=early_url(mid)))
    assert response.status_code == 200, response.text
    row = message(engine, mid)
    assert (row.status, row.error_code, row.provider_message_id) == (word, str(code), sid)
    released = task(engine, tid)
    assert (released.status, released.no_notice) == ("ready", True)
    assert audit_actions(engine)[:2] == ["message.sent", f"message.{word}"]


def test_early_callback_for_another_attempt_or_row_is_unknown(
    engine: Engine,
    settings: NotificationConfig,
    client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
) -> None:
    sid = sent_through_fake(settings)
    _customer, mid, _tid = sending_notice(engine, now)
    other = add_message(
        engine,
        now,
        add_customer(engine, now, "C002"),
        None,
        status="sending",
        provider=None,
        attempt_id="0e4a:2",
        occurrence="grace:other",
    )
    for url in (
        early_url(mid, "7b3e:1"),  # an older attempt of the same row
        early_url(other),  # the right attempt id on another row
        STATUS_URL,  # no query: only the sid, which nobody has recorded yet
        f"{STATUS_URL}?message_id={mid}",  # half a pair names no attempt
    ):
        response = post(client, fake_twilio.status_callback(sid, "delivered", url=url))
        assert response.status_code == 404, url
    for row_id in (mid, other):
        row = message(engine, row_id)
        assert (row.status, row.provider_message_id) == ("sending", None)
    assert audit_actions(engine) == []


def test_callback_query_is_signed_and_validated(
    engine: Engine,
    settings: NotificationConfig,
    client: TestClient,
    fake_twilio: FakeTwilio,
    now: datetime,
) -> None:
    sid = sent_through_fake(settings)
    _customer, mid, _tid = sending_notice(engine, now)
    url, params, headers = fake_twilio.status_callback(sid, "delivered", url=early_url(mid))
    # The signature covers the query: pointing it at another row is a forgery.
    forged = url.replace(f"message_id={mid}", f"message_id={mid + 1}")
    response = client.post(forged.removeprefix(PUBLIC), data=params, headers=headers)
    assert response.status_code == 403
    assert message(engine, mid).status == "sending"
    # Signed but malformed query values are the sender's mistake: 400, never 500.
    for query in ("message_id=abc&attempt_id=x", f"message_id={mid}&attempt_id={'x' * 65}"):
        signed = fake_twilio.status_callback(sid, "delivered", url=f"{STATUS_URL}?{query}")
        assert post(client, signed).status_code == 400, query
    long_sid = {"MessageSid": "SM" + "0" * 70, "MessageStatus": "delivered"}
    response = client.post(
        "/twilio/status", data=long_sid, headers=_signed(fake_twilio, "/twilio/status", long_sid)
    )
    assert response.status_code == 400
    assert message(engine, mid).status == "sending"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_fake_posts_real_signed_callbacks_to_a_served_app(
    engine: Engine, settings: NotificationConfig, fake_twilio: FakeTwilio, now: datetime
) -> None:
    """Over real HTTP: uvicorn serves the app, the fake posts the callback itself."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    public = f"http://127.0.0.1:{port}"
    served = settings.with_changes(public_url=public)
    app = create_app(engine, served, clock=lambda: now)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        # The socket already listens: connections queue in the backlog until
        # uvicorn accepts them, so there is nothing to wait for.
        sid = sent_through_fake(served)
        mid = add_message(engine, now, add_customer(engine, now), sid)
        result = fake_twilio.post_status_callback(sid, "delivered")
        assert (result.status, result.error) == (200, None)
        assert message(engine, mid).status == "delivered"
        inbound = fake_twilio.post(
            *fake_twilio.inbound_message(public + "/twilio/inbound", PHONE, "TD")
        )
        assert inbound.status == 200 and inbound.body == EMPTY_TWIML
        with transaction(engine) as session:
            assert session.scalar(select(func.count()).where(Customer.sms_opt_out.is_(True))) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
