"""The fake Twilio itself: error shapes, control API, signed auto-callbacks, standalone runner."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from twilio.request_validator import RequestValidator

from notifications.backends.twilio import TwilioSMSBackend
from notifications.base import OutgoingMessage
from notifications.errors import PermanentSendError
from notifications.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from notifications.fake_twilio.chaos import Chaos, ChaosRates

pytest_plugins = ["plugins.fake_twilio"]

TO = "+8613812345678"


def sms(n: int, to: str = TO) -> OutgoingMessage:
    return OutgoingMessage(n, "sms", to, f"notice {n}", "en", f"att-{n}")


def backend(fake: FakeTwilio, public_url: str = "") -> TwilioSMSBackend:
    return TwilioSMSBackend(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number="+15005550006",
        public_url=public_url,
        api_base=fake.base_url,
        sleep=lambda _s: None,
    )


def http(
    url: str, data: dict[str, str] | None = None, auth: tuple[str, str] | None = None
) -> tuple[int, Any]:
    body = None if data is None else "&".join(f"{k}={v}" for k, v in data.items()).encode()
    request = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
    if auth:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_auth_and_unknown_resources_answer_in_twilios_error_shape(fake_twilio: FakeTwilio) -> None:
    base = f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}"
    status, body = http(f"{base}/Messages.json", {"To": TO, "From": "+1", "Body": "x"})
    assert status == 401
    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    auth = (fake_twilio.account_sid, fake_twilio.auth_token)
    status, body = http(f"{base}/Messages/SM{'0' * 32}.json", auth=auth)
    assert (status, body["code"]) == (404, 20404)
    other = f"{fake_twilio.base_url}/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    assert http(other, auth=auth)[0] == 404
    status, body = http(f"{base}/Messages.json", {"To": TO, "From": "+15005550006"}, auth)
    assert (status, body["code"]) == (400, 21602)
    assert fake_twilio.messages == []


def test_message_json_is_realistic_and_fetchable(fake_twilio: FakeTwilio) -> None:
    sender = backend(fake_twilio)
    result = sender.send(sms(1))
    fetched = sender.client.messages(result.provider_message_id).fetch()
    assert fetched.sid == result.provider_message_id
    assert fetched.status == "queued" and fetched.direction == "outbound-api"
    assert fetched.date_created is not None and fetched.date_created.tzinfo is not None
    assert fetched.num_segments == "1" and fetched.error_code is None
    raw = result.raw
    assert raw["api_version"] == "2010-04-01" and raw["date_created"].endswith("+0000")


def test_concurrent_sends_are_all_recorded(fake_twilio: FakeTwilio) -> None:
    sender = backend(fake_twilio)
    with ThreadPoolExecutor(max_workers=8) as pool:
        sids = list(pool.map(lambda n: sender.send(sms(n)).provider_message_id, range(40)))
    assert len(set(sids)) == 40
    assert len(fake_twilio.messages) == 40
    assert len(fake_twilio.api_requests("POST")) == 40


def test_control_api_drives_faults_for_outside_checks(fake_twilio: FakeTwilio) -> None:
    base = fake_twilio.base_url
    assert http(f"{base}/_fake/fail_number", {"to": "%2B8613912345678", "code": "21614"})[0] == 200
    with pytest.raises(PermanentSendError) as caught:
        backend(fake_twilio).send(sms(1, to="+8613912345678"))
    assert caught.value.code == "21614"
    assert http(f"{base}/_fake/fault", {"status": "500", "method": "POST"})[0] == 200
    backend(fake_twilio).send(sms(2))
    status, recorded = http(f"{base}/_fake/requests")
    assert status == 200
    assert [r["status"] for r in recorded if r["method"] == "POST"] == [400, 500, 201]
    assert http(f"{base}/_fake/reset", {})[0] == 200
    assert http(f"{base}/_fake/messages")[1] == []


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], str]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        params = dict(parse_qsl(self.rfile.read(length).decode()))
        self.received.append((self.path, params, self.headers.get("X-Twilio-Signature", "")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], str]]]]:
    received: list[tuple[str, dict[str, str], str]] = []
    handler = type("Recv", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_auto_delivery_posts_signed_callbacks(
    receiver: tuple[str, list[tuple[str, dict[str, str], str]]],
) -> None:
    url, received = receiver
    with FakeTwilio(auto_deliver=True) as fake:
        fake.undeliverable("+8613912345678", 30005)
        sender = backend(fake, public_url=url)
        ok = sender.send(sms(1)).provider_message_id
        bad = sender.send(sms(2, to="+8613912345678")).provider_message_id
        assert fake.join_callbacks(timeout=10)
    validator = RequestValidator(DEFAULT_AUTH_TOKEN)
    for path, params, signature in received:
        assert path == "/twilio/status"
        assert validator.validate(url + path, params, signature)
    by_sid: dict[str, list[tuple[str, str | None]]] = {}
    for _path, params, _sig in received:
        by_sid.setdefault(params["MessageSid"], []).append(
            (params["MessageStatus"], params.get("ErrorCode"))
        )
    assert by_sid[ok] == [("sent", None), ("delivered", None)]
    assert by_sid[bad] == [("sent", None), ("undelivered", "30005")]


def test_inbound_through_the_control_api_is_signed_as_twilio_signs(
    receiver: tuple[str, list[tuple[str, dict[str, str], str]]], fake_twilio: FakeTwilio
) -> None:
    url, received = receiver
    target = f"{url}/twilio/inbound?source=sms"
    form = {"url": target, "from": "+8613912345678", "body": "退订 STOP &=%+"}
    body = urlencode(form).encode()
    with urllib.request.urlopen(f"{fake_twilio.base_url}/_fake/inbound", body, 5) as response:
        assert json.loads(response.read())["status"] == 200
    [(path, params, signature)] = received
    assert path == "/twilio/inbound?source=sms"
    assert (params["From"], params["Body"], params["To"]) == (
        "+8613912345678",
        "退订 STOP &=%+",
        "+15005550006",
    )
    assert params["MessageSid"] == params["SmsSid"] and params["SmsStatus"] == "received"
    assert RequestValidator(fake_twilio.auth_token).validate(target, params, signature)
    assert not RequestValidator("another-token").validate(target, params, signature)


def test_runs_standalone_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifications.fake_twilio", "--port", "0", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("fake Twilio listening on http://127.0.0.1:")
        base = first.rsplit(" ", 1)[1].strip()
        fake = FakeTwilio(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        fake.host, fake.port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        assert http(f"{base}/_fake/latency") == (200, {"ok": True, "latency": 0.01})
        result = backend(fake).send(sms(1))
        status, messages = http(f"{base}/_fake/messages")
        assert status == 200 and [m["sid"] for m in messages] == [result.provider_message_id]
        unsubscribed = {"to": "%2B8613912345678", "code": "21610"}
        assert http(f"{base}/_fake/fail_number", unsubscribed)[0] == 200
        with pytest.raises(PermanentSendError):
            backend(fake).send(sms(2, to="+8613912345678"))
        assert [r["status"] for r in http(f"{base}/_fake/requests")[1]] == [201, 400]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def _raw_exchange(fake: FakeTwilio, payload: bytes) -> bytes:
    import socket

    with socket.create_connection((fake.host, fake.port), timeout=5) as conn:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_pipelined_keep_alive_requests_are_answered_in_order(fake_twilio: FakeTwilio) -> None:
    import base64

    token = base64.b64encode(f"{fake_twilio.account_sid}:{fake_twilio.auth_token}".encode())
    path = f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"

    def create(to: str, last: bool = False) -> bytes:
        form = f"To=%2B{to}&From=%2B15005550006&Body=hi+there".encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token.decode()}\r\n"
            f"Content-Length: {len(form)}\r\n" + ("Connection: close\r\n" if last else "") + "\r\n"
        )
        return head.encode() + form

    answer = _raw_exchange(
        fake_twilio, create("8613800000001") + create("8613800000002", last=True)
    )
    assert answer.count(b"HTTP/1.1 201 Created\r\n") == 2
    assert answer.index(b"+8613800000001") < answer.index(b"+8613800000002")
    assert b"Connection: close" in answer
    assert [m["body"] for m in fake_twilio.messages] == ["hi there", "hi there"]


def test_a_malformed_request_gets_400_and_the_connection_closes(fake_twilio: FakeTwilio) -> None:
    answer = _raw_exchange(fake_twilio, b"NONSENSE\r\n\r\n")  # read until the fake closes
    # No version could be read from the request line, so aiohttp answers in HTTP/1.0.
    assert re.match(rb"HTTP/1\.[01] 400 Bad Request\r\n", answer), answer[:40]
    assert fake_twilio.requests == []


def _create_request(fake: FakeTwilio, to: str, *, close: bool = True) -> bytes:
    import base64

    token = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    form = f"To=%2B{to}&From=%2B15005550006&Body=hi".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
        f"Content-Length: {len(form)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + form


def _chaos(**rates: float) -> Chaos:
    """Seeded chaos that injects only ``rates`` (every other rate 0)."""
    quiet = {f.name: 0.0 for f in dataclasses.fields(ChaosRates)}
    return Chaos(seed=1, rates=ChaosRates(**{**quiet, **rates}))


@pytest.mark.parametrize(("kind", "created"), [("reset_before", 0), ("reset_after", 1)])
def test_the_chaos_resets_the_connection_before_or_after_creating(
    fake_twilio: FakeTwilio, kind: str, created: int
) -> None:
    fake_twilio.chaos = _chaos(**{kind: 1.0})
    with pytest.raises(ConnectionResetError):  # a TCP RST, not an answer or a clean close
        _raw_exchange(fake_twilio, _create_request(fake_twilio, "8613800000001"))
    assert len(fake_twilio.messages) == created
    assert fake_twilio.chaos.injected[kind] == 1
    fake_twilio.chaos = None
    answer = _raw_exchange(fake_twilio, _create_request(fake_twilio, "8613800000002"))
    assert answer.startswith(b"HTTP/1.1 201 Created\r\n")


def test_early_reports_reach_the_webhook_before_the_create_is_answered(
    receiver: tuple[str, list[tuple[str, dict[str, str], str]]],
) -> None:
    url, received = receiver
    with FakeTwilio() as fake:
        fake.chaos = _chaos(early=1.0)
        sid = backend(fake, public_url=url).send(sms(1)).provider_message_id
        statuses = [params["MessageStatus"] for _p, params, _s in received]  # when answered
    assert sorted(statuses) == ["delivered", "sent"]
    assert {params["MessageSid"] for _p, params, _s in received} == {sid}
    assert fake.chaos.injected["report_early"] == 2


def test_latency_delays_every_answer_without_holding_the_others() -> None:
    import socket

    clients, latency = 200, 0.5
    with FakeTwilio(latency=latency) as fake:
        connections = [socket.create_connection((fake.host, fake.port)) for _ in range(clients)]
        try:
            started = time.monotonic()
            for n, conn in enumerate(connections):
                conn.sendall(_create_request(fake, f"86138{n:08d}", close=False))
            first = connections[0].recv(65536)
            waited = time.monotonic() - started
            # A fake that waited request by request would have seen one request by now.
            assert len(fake.api_requests("POST")) == clients
            assert waited >= latency
            answers = [first] + [conn.recv(65536) for conn in connections[1:]]
        finally:
            for conn in connections:
                conn.close()
    assert all(a.startswith(b"HTTP/1.1 201 Created\r\n") for a in answers)
    assert len(fake.messages) == clients


def test_latency_is_set_through_the_control_api_and_refused_when_nonsense(
    fake_twilio: FakeTwilio,
) -> None:
    base = f"{fake_twilio.base_url}/_fake"
    assert http(f"{base}/latency", {"seconds": "0.25"}) == (200, {"ok": True, "latency": 0.25})
    assert fake_twilio.latency == 0.25
    assert http(f"{base}/latency") == (200, {"ok": True, "latency": 0.25})
    status, body = http(f"{base}/latency", {"seconds": "-1"})
    assert status == 400 and "latency must be a finite number of seconds >= 0" in body["error"]
    assert http(f"{base}/latency", {"seconds": "soon"})[1] == {
        "error": "/_fake/latency: seconds='soon' is not a number"
    }
    assert fake_twilio.latency == 0.25
    with pytest.raises(ValueError, match="latency"):
        FakeTwilio(latency=float("inf"))


def test_bad_control_requests_say_which_field_is_wrong(fake_twilio: FakeTwilio) -> None:
    base = f"{fake_twilio.base_url}/_fake"
    assert http(f"{base}/fail_number", {"code": "21614"}) == (
        400,
        {"error": "/_fake/fail_number: the field 'to' is required"},
    )
    status, body = http(f"{base}/fail_number", {"to": "+8613912345678", "code": "21614"})
    assert status == 400 and "is not an E.164 number" in body["error"]  # '+' sent unquoted
    assert http(f"{base}/fault", {"status": "five hundred"})[1] == {
        "error": "/_fake/fault: status='five hundred' is not a whole number"
    }
    status, body = http(f"{base}/callback", {"sid": f"SM{'0' * 32}", "status": "sent"})
    assert status == 404 and "no message or call" in body["error"]
    assert http(f"{base}/nothing", {})[0] == 404
    assert fake_twilio.api_requests() == []
