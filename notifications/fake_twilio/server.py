"""A local fake of the slice of Twilio's REST API vipcare uses, for tests and outside checks.

It speaks ``/2010-04-01/Accounts/{Sid}/Messages.json``, ``Messages/{Sid}.json``,
``Calls.json`` and ``Calls/{Sid}.json`` with basic auth, answers in Twilio's JSON
shapes (errors as ``{code, message, more_info, status}``), records every request,
and can inject faults: queued HTTP errors (429 with ``Retry-After``, 500, 503),
error codes per destination number, slow responses held on an event, and a
latency on every answer (awaited, so a slow fake still serves hundreds of
requests at once). It can post **signed** status callbacks and inbound messages
to a webhook URL. HTTP is ``aiohttp.web``'s (:mod:`notifications.fake_twilio.web`).

The unmodified ``twilio.rest.Client`` talks to it once ``client.api.base_url``
is set to :attr:`FakeTwilio.base_url`. A tiny unauthenticated control API under
``/_fake/`` lets a separate process (an outside check) drive the same features.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from twilio.request_validator import RequestValidator

from notifications.fake_twilio.web import Reply, Request, WebServer

if TYPE_CHECKING:
    from notifications.fake_twilio.chaos import Chaos

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_INSTANCE = re.compile(r"(Messages|Calls)/((?:SM|CA)[0-9a-f]{32})\.json")
DEFAULT_ACCOUNT_SID = "AC" + "f" * 32
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token-0123456789"

ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21205: "Url parameter is required.",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


@dataclass
class RecordedRequest:
    """One request the fake received (the Authorization header is never kept)."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]
    authorized: bool
    status: int = 0

    def value(self, name: str) -> str | None:
        """First value of a form (or query) field."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else None


@dataclass
class _Fault:
    status: int
    retry_after: float | None
    path_contains: str | None
    code: int | None
    method: str | None


@dataclass
class _Hold:
    event: threading.Event
    max_wait: float
    after_create: bool
    path_contains: str | None
    method: str | None


@dataclass
class CallbackResult:
    """What a webhook answered to a callback the fake posted."""

    url: str
    params: dict[str, str]
    status: int
    body: str = ""
    error: str | None = None


@dataclass
class _State:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    callbacks: list[CallbackResult] = field(default_factory=list)
    faults: deque[_Fault] = field(default_factory=deque)
    holds: deque[_Hold] = field(default_factory=deque)
    number_codes: dict[str, tuple[int, int]] = field(default_factory=dict)
    delivery_codes: dict[str, int] = field(default_factory=dict)


def twilio_error(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    """Twilio's JSON error body."""
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, f"Error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class FakeTwilio:
    """The fake server. Use as a context manager or call :meth:`start` / :meth:`stop`.

    ``clock`` stamps ``date_created``; ``auto_deliver`` makes every accepted
    message post ``sent`` then ``delivered`` (or its undeliverable code) to its
    ``StatusCallback`` from a background thread, for end-to-end outside checks.
    ``latency`` (seconds, also settable later) delays every API answer, as a
    distant provider would; the request takes effect when it arrives.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        auto_deliver: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.clock = clock or (lambda: datetime.now(UTC))
        self.auto_deliver = auto_deliver
        self.latency = latency
        self.validator = RequestValidator(auth_token)
        self._lock = threading.RLock()
        self._state = _State()
        self._server: WebServer | None = None
        self._workers: list[threading.Thread] = []
        self.chaos: Chaos | None = None
        """Random faults for the fault matrix (:mod:`notifications.fake_twilio.chaos`)."""

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> FakeTwilio:
        self._server = WebServer(self, self.host, self.port)
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for hold in self._state.holds:
                hold.event.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def latency(self) -> float:
        """Seconds every API answer waits (not the ``/_fake/`` control API's); 0: none."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {seconds!r}")
        self._latency = float(seconds)

    @property
    def base_url(self) -> str:
        """Set ``client.api.base_url`` (or ``VIPCARE_TWILIO_API_BASE``) to this."""
        return f"http://{self.host}:{self.port}"

    # -- fault injection -------------------------------------------------------
    def fail_number(self, to: str, code: int, status: int = 400) -> None:
        """Creating a message or call to ``to`` answers HTTP ``status`` with Twilio ``code``."""
        with self._lock:
            self._state.number_codes[to] = (code, status)

    def undeliverable(self, to: str, code: int = 30003) -> None:
        """Messages to ``to`` are accepted; their automatic delivery report carries ``code``."""
        with self._lock:
            self._state.delivery_codes[to] = code

    def queue_fault(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        path_contains: str | None = None,
        method: str | None = None,
        code: int | None = None,
    ) -> None:
        """The next ``count`` matching API requests answer ``status`` (e.g. 429, 500, 503).

        ``path_contains`` and ``method`` narrow which requests match.
        """
        with self._lock:
            for _ in range(count):
                self._state.faults.append(_Fault(status, retry_after, path_contains, code, method))

    def hold_next(
        self,
        *,
        max_wait: float = 5.0,
        after_create: bool = True,
        path_contains: str | None = None,
        method: str | None = None,
    ) -> threading.Event:
        """Hold the next matching response until the returned event is set (at most ``max_wait`` s).

        With ``after_create`` the message is created first, so a client that
        times out meanwhile sees the ambiguous case: accepted, but no answer.
        """
        event = threading.Event()
        with self._lock:
            self._state.holds.append(_Hold(event, max_wait, after_create, path_contains, method))
        return event

    def reset(self) -> None:
        """Forget every message, request, fault and number rule (settings such as
        ``latency`` and ``auto_deliver`` stay)."""
        with self._lock:
            for hold in self._state.holds:
                hold.event.set()
            self._state = _State()

    def join_callbacks(self, timeout: float = 10.0) -> bool:
        """Wait for the automatic callbacks posted so far; True when all have finished."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout)
        return not any(w.is_alive() for w in workers)

    # -- inspection ------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def api_requests(self, method: str | None = None, suffix: str = "") -> list[RecordedRequest]:
        """Recorded API requests, optionally by method and path ending."""
        return [
            r
            for r in self.requests
            if r.path.startswith(API)
            and (method is None or r.method == method)
            and r.path.endswith(suffix)
        ]

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._state.messages.values()]

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._state.calls.values()]

    @property
    def callbacks(self) -> list[CallbackResult]:
        with self._lock:
            return list(self._state.callbacks)

    def message(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._state.messages[sid])

    # -- callbacks -------------------------------------------------------------
    def set_status(self, sid: str, status: str, error_code: int | None = None) -> dict[str, Any]:
        """Move a message or call to ``status`` as the carrier would."""
        with self._lock:
            record = self._state.messages.get(sid) or self._state.calls.get(sid)
            if record is None:
                raise KeyError(f"fake Twilio has no message or call {sid}")
            record["status"] = status
            record["date_updated"] = _rfc2822(self.clock())
            if sid.startswith("SM"):
                if status in {"sent", "delivered", "undelivered"} and not record["date_sent"]:
                    record["date_sent"] = record["date_updated"]
                record["error_code"] = error_code
                record["error_message"] = ERROR_MESSAGES.get(error_code) if error_code else None
            return dict(record)

    def status_callback(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        url: str | None = None,
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        """Update ``sid`` and build its signed callback: ``(url, form params, headers)``."""
        record = self.set_status(sid, status, error_code)
        target = url or record.get("_status_callback")
        if not target:
            raise ValueError(f"{sid} has no StatusCallback and no url was given")
        if sid.startswith("SM"):
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": "2010-04-01",
                "From": record["from"] or "",
                "To": record["to"],
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
            }
            if record.get("messaging_service_sid"):
                params["MessagingServiceSid"] = record["messaging_service_sid"]
        else:
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": "2010-04-01",
                "CallSid": sid,
                "CallStatus": status,
                "Direction": "outbound-api",
                "From": record["from"] or "",
                "To": record["to"],
            }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return target, params, self.signed_headers(target, params)

    def inbound_message(
        self, url: str, from_: str, body: str, to: str = "+15005550006"
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        """A signed inbound SMS as Twilio would post it to ``url``."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": from_,
            "To": to,
            "MessageSid": "SM" + uuid.uuid4().hex,
            "SmsSid": "",
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
        }
        params["SmsSid"] = params["MessageSid"]
        return url, params, self.signed_headers(url, params)

    def signed_headers(self, url: str, params: dict[str, str]) -> dict[str, str]:
        return {
            "X-Twilio-Signature": self.validator.compute_signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
        }

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> CallbackResult:
        """POST a (signed) callback for real and record what the webhook answered."""
        request = urllib.request.Request(
            url, data=urlencode(params).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result = CallbackResult(url, params, response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            result = CallbackResult(url, params, exc.code, exc.read().decode(errors="replace"))
        except OSError as exc:
            result = CallbackResult(url, params, 0, error=str(exc))
        with self._lock:
            self._state.callbacks.append(result)
        return result

    def post_status_callback(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> CallbackResult:
        return self.post(*self.status_callback(sid, status, error_code, url))

    # -- the API itself --------------------------------------------------------
    def _create_message(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to, body = form.get("To", ""), form.get("Body")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not to:
            return 400, twilio_error(21604, 400)
        if not sender and not service:
            return 400, twilio_error(21603, 400)
        if not body:
            return 400, twilio_error(21602, 400)
        if len(body) > 1600:
            return 400, twilio_error(21617, 400)
        if not E164.match(to):
            return 400, twilio_error(
                21211, 400, f"The 'To' number {to} is not a valid phone number."
            )
        rule = self._state.number_codes.get(to)
        if rule is not None:
            return rule[1], twilio_error(rule[0], rule[1])
        sid = "SM" + uuid.uuid4().hex
        now = _rfc2822(self.clock())
        record: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(1 + len(body) // 160),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {
                "media": f"{API}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": to,
            "uri": f"{API}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "_status_callback": form.get("StatusCallback"),
            "_created": self.clock(),
        }
        self._state.messages[sid] = record
        if self.auto_deliver and record["_status_callback"]:
            code = self._state.delivery_codes.get(to)
            worker = threading.Thread(
                target=self._auto_deliver, args=(sid, code), name="fake-twilio-cb", daemon=True
            )
            self._workers.append(worker)
            worker.start()
        return 201, _public(record)

    def _auto_deliver(self, sid: str, code: int | None) -> None:
        self.post_status_callback(sid, "sent")
        if code is None:
            self.post_status_callback(sid, "delivered")
        else:
            self.post_status_callback(sid, "failed" if code == 30008 else "undelivered", code)

    def _create_call(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to, sender = form.get("To", ""), form.get("From")
        if not to:
            return 400, twilio_error(21201, 400, "No 'To' number is specified")
        if not sender:
            return 400, twilio_error(21213, 400, "No 'From' number is specified")
        if not form.get("Twiml") and not form.get("Url") and not form.get("ApplicationSid"):
            return 400, twilio_error(21205, 400)
        if not E164.match(to):
            message = f"The phone number you are attempting to call, {to}, is not valid."
            return 400, twilio_error(13224, 400, message)
        rule = self._state.number_codes.get(to)
        if rule is not None:
            return rule[1], twilio_error(rule[0], rule[1])
        sid = "CA" + uuid.uuid4().hex
        now = _rfc2822(self.clock())
        record: dict[str, Any] = {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": sender,
            "from_formatted": sender,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {},
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": f"{API}/Accounts/{self.account_sid}/Calls/{sid}.json",
            "queue_time": "0",
            "_twiml": form.get("Twiml"),
            "_status_callback": form.get("StatusCallback"),
            "_created": self.clock(),
        }
        self._state.calls[sid] = record
        return 201, _public(record)

    def _list(
        self, kind: str, query: dict[str, list[str]], path: str
    ) -> tuple[int, dict[str, Any]]:
        store = self._state.messages if kind == "messages" else self._state.calls
        rows = sorted(store.values(), key=lambda r: r["_created"], reverse=True)
        to = _first(query, "To")
        if to:
            rows = [r for r in rows if r["to"] == to]
        field_name = "DateSent" if kind == "messages" else "StartTime"
        for suffix, keep in ((">", lambda a, b: a >= b), ("<", lambda a, b: a <= b)):
            bound = _first(query, field_name + suffix)
            if bound:
                limit = _parse_bound(bound)
                if limit is None:
                    return 400, twilio_error(20001, 400, f"Invalid {field_name}{suffix}")
                rows = [r for r in rows if keep(r["_created"], limit)]
        page_size = int(_first(query, "PageSize") or 50)
        page = rows[:page_size]
        uri = path
        return 200, {
            kind: [_public(r) for r in page],
            "end": max(len(page) - 1, 0),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], form: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Route one authorised API request; returns (status, JSON body, extra headers)."""
        prefix = f"{API}/Accounts/"
        if not path.startswith(prefix):
            return 404, twilio_error(20404, 404), {}
        rest = path[len(prefix) :]
        account, _, resource = rest.partition("/")
        if account != self.account_sid:
            return 404, twilio_error(20404, 404), {}
        flat = {k: v[0] for k, v in form.items() if v}
        with self._lock:
            fault = self._take_fault(method, path)
            if fault is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = _fmt_seconds(fault.retry_after)
                code = fault.code or (20429 if fault.status == 429 else 20500)
                message = "Too Many Requests" if fault.status == 429 else "Internal Server Error"
                return fault.status, twilio_error(code, fault.status, message), headers
            if resource == "Messages.json" and method == "POST":
                status, body = self._create_message(flat)
            elif resource == "Messages.json" and method == "GET":
                status, body = self._list("messages", query, path)
            elif resource == "Calls.json" and method == "POST":
                status, body = self._create_call(flat)
            elif resource == "Calls.json" and method == "GET":
                status, body = self._list("calls", query, path)
            elif (
                m := re.fullmatch(r"(Messages|Calls)/((?:SM|CA)[0-9a-f]{32})\.json", resource)
            ) and (method == "GET"):
                store = self._state.messages if m.group(1) == "Messages" else self._state.calls
                found = store.get(m.group(2))
                status, body = (200, _public(found)) if found else (404, twilio_error(20404, 404))
            else:
                status, body = 404, twilio_error(20404, 404)
        return status, body, {}

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._state.faults:
            if (fault.path_contains is None or fault.path_contains in path) and (
                fault.method is None or fault.method == method
            ):
                self._state.faults.remove(fault)
                return fault
        return None

    def _take_hold(self, method: str, path: str) -> _Hold | None:
        with self._lock:
            for hold in self._state.holds:
                if (hold.path_contains is None or hold.path_contains in path) and (
                    hold.method is None or hold.method == method
                ):
                    self._state.holds.remove(hold)
                    return hold
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._state.requests.append(request)

    # -- serving (the web server calls these) ----------------------------------
    def http_date(self) -> str:
        """The ``Date`` header follows the fake's clock, as Twilio's follows its own."""
        return format_datetime(self.clock().astimezone(UTC), usegmt=True)

    def may_block(self, request: Request) -> bool:
        """Held responses, the chaos and the control API (which may post to a webhook) are
        answered in a thread; everything else on the event loop."""
        if request.target.startswith("/_fake/") or self.chaos is not None:
            return True  # chaos may hold an answer past the timeout, or post reports first
        with self._lock:
            return bool(self._state.holds)

    def serve(self, request: Request) -> Reply:
        """Answer one HTTP request: control API, authentication, holds, then :meth:`handle`."""
        parts = urlsplit(request.target)
        form = _parse_qs(request.body.decode("utf-8", "replace"))
        if parts.path.startswith("/_fake/"):
            status, payload = self.control(
                parts.path[len("/_fake/") :], {k: v[0] for k, v in form.items()}
            )
            return json_reply(status, payload, {})
        reply = self._serve_api(request, parts.path, _parse_qs(parts.query), form)
        latency = self._latency
        return dataclasses.replace(reply, delay=reply.delay + latency) if latency else reply

    def _serve_api(
        self,
        request: Request,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
    ) -> Reply:
        """An API request: recorded, authenticated, maybe faulted by the chaos or held."""
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        method = request.method
        authorized = _authorized(
            request.headers.get("Authorization", ""), self.account_sid, self.auth_token
        )
        recorded = RecordedRequest(method, path, query, form, headers, authorized)
        self._record(recorded)
        if not authorized:
            recorded.status = 401
            return json_reply(
                401, twilio_error(20003, 401), {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        chaos = self.chaos
        if chaos is not None:
            injected = chaos.intercept(self, method, path, query, form, recorded)
            if injected is not None:
                return injected
        hold = self._take_hold(method, path)
        if hold is not None and not hold.after_create:
            hold.event.wait(hold.max_wait)
        status, body, extra = self.handle(method, path, query, form)
        recorded.status = status
        if hold is not None and hold.after_create:
            hold.event.wait(hold.max_wait)
        return json_reply(status, body, extra)

    def control(self, action: str, form: dict[str, str]) -> tuple[int, Any]:
        """The ``/_fake/`` control API for outside processes; bad input answers 400 and says why."""
        fields = _Fields(form)
        try:
            return self._control(action, fields)
        except _BadControl as exc:
            return 400, {"error": f"/_fake/{action}: {exc}"}
        except KeyError as exc:  # a callback for a sid the fake never saw
            return 404, {"error": f"/_fake/{action}: {exc.args[0]}"}

    def _control(self, action: str, fields: _Fields) -> tuple[int, Any]:
        if action == "requests":
            return 200, [
                {k: v for k, v in r.__dict__.items() if k != "headers"} for r in self.requests
            ]
        if action == "messages":
            return 200, [_public(m) for m in self.messages]
        if action == "calls":
            return 200, [_public(c) for c in self.calls]
        if action == "reset":
            self.reset()
            return 200, {"ok": True}
        if action == "latency":
            if fields.has("seconds"):
                try:
                    self.latency = fields.number("seconds")
                except ValueError as exc:
                    raise _BadControl(str(exc)) from None
            return 200, {"ok": True, "latency": self.latency}
        if action == "fail_number":
            self.fail_number(
                fields.phone("to"), fields.integer("code"), fields.integer("status", 400)
            )
            return 200, {"ok": True}
        if action == "undeliverable":
            self.undeliverable(fields.phone("to"), fields.integer("code", 30003))
            return 200, {"ok": True}
        if action == "fault":
            self.queue_fault(
                fields.integer("status"),
                count=fields.integer("count", 1),
                retry_after=fields.number("retry_after") if fields.has("retry_after") else None,
                path_contains=fields.optional("path_contains"),
                method=fields.optional("method"),
                code=fields.integer("code") if fields.has("code") else None,
            )
            return 200, {"ok": True}
        if action == "callback":
            result = self.post_status_callback(
                fields.text("sid"),
                fields.text("status"),
                fields.integer("error_code") if fields.has("error_code") else None,
                fields.optional("url"),
            )
            return 200, {"status": result.status, "body": result.body, "error": result.error}
        if action == "inbound":
            inbound = self.inbound_message(
                fields.text("url"), fields.text("from"), fields.text("body")
            )
            result = self.post(*inbound)
            return 200, {"status": result.status, "body": result.body, "error": result.error}
        return 404, {"error": f"unknown control action {action!r}"}


class _BadControl(Exception):
    """A control request's field is missing or malformed (answered 400)."""


class _Fields:
    """The form of a control request, read field by field with a clear error."""

    def __init__(self, form: dict[str, str]) -> None:
        self.form = form

    def has(self, name: str) -> bool:
        return bool(self.form.get(name))

    def optional(self, name: str) -> str | None:
        return self.form.get(name) or None

    def text(self, name: str) -> str:
        value = self.form.get(name)
        if not value:
            raise _BadControl(f"the field {name!r} is required")
        return value

    def phone(self, name: str) -> str:
        value = self.text(name)
        if not E164.match(value):
            raise _BadControl(
                f"{name}={value!r} is not an E.164 number such as +8613800000001"
                " (a '+' in a form is sent as %2B: curl --data-urlencode)"
            )
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        if default is not None and not self.has(name):
            return default
        value = self.text(name)
        try:
            return int(value)
        except ValueError:
            raise _BadControl(f"{name}={value!r} is not a whole number") from None

    def number(self, name: str) -> float:
        value = self.text(name)
        try:
            return float(value)
        except ValueError:
            raise _BadControl(f"{name}={value!r} is not a number") from None


def _authorized(header: str, account_sid: str, auth_token: str) -> bool:
    import base64
    import binascii

    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return user == account_sid and password == auth_token


def _parse_qs(text: str) -> dict[str, list[str]]:
    """``parse_qs(text, keep_blank_values=True)``, skipping the unquoting of plain pairs (speed)."""
    out: dict[str, list[str]] = {}
    if not text:
        return out
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        out.setdefault(name, []).append(value)
    return out


def json_reply(status: int, payload: Any, extra: dict[str, str]) -> Reply:
    headers = {"Content-Type": "application/json; charset=utf-8", **extra}
    return Reply(status, json.dumps(payload).encode(), headers)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _rfc2822(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=True).replace("GMT", "+0000")


def _parse_bound(text: str) -> datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
