"""The fake Twilio itself: error shapes, control API, signed auto-callbacks, standalone runner."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from notifications.backends.twilio import TwilioSMSBackend
from notifications.base import OutgoingMessage
from notifications.errors import PermanentSendError
from notifications.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio

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


def test_runs_standalone_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifications.fake_twilio", "--port", "0"],
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
        result = backend(fake).send(sms(1))
        status, messages = http(f"{base}/_fake/messages")
        assert status == 200 and [m["sid"] for m in messages] == [result.provider_message_id]
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
    answer = _raw_exchange(fake_twilio, b"NONSENSE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert fake_twilio.requests == []


def test_the_transport_can_answer_with_a_connection_reset() -> None:
    import socket

    from notifications.fake_twilio.transport import RESET, HttpServer, Reply, Request

    class Resetting:
        def may_block(self, request: Request) -> bool:
            return request.target == "/slow"

        def serve(self, request: Request) -> Reply:
            return (
                RESET
                if request.target.startswith("/reset") or request.target == "/slow"
                else (Reply(200, b"ok", {}))
            )

        def http_date(self) -> str:
            return "Tue, 01 Dec 2026 00:00:00 GMT"

    server = HttpServer(Resetting(), "127.0.0.1", 0)
    port = server.start()
    try:
        for target in ("/reset", "/slow"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                with pytest.raises(ConnectionResetError):
                    while conn.recv(1024):
                        pass
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        server.stop()
