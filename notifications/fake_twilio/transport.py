"""The fake Twilio's HTTP/1.1 server: one asyncio event loop in a background thread.

Why not ``http.server``: its thread per connection, e-mail header parser and
GIL hand-offs cap it near a thousand requests a second on this kind of
machine, so the fake became the bottleneck of the dispatch benchmark that
measures *our* side. This server parses the little HTTP the Twilio client and
the outside checks send (request line, headers, ``Content-Length`` body,
keep-alive, pipelining) and answers each request with a single write.

Requests are answered in the loop thread, one at a time (the fake's state is
behind one lock anyway). A request that may block — a held response
(:meth:`FakeTwilio.hold_next`) or a control action that posts to a webhook —
runs in its own thread instead, and that connection reads nothing more until
it is answered, so answers keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

MAX_HEAD = 64 * 1024
"""Largest request head (request line + headers) accepted."""
MAX_BODY = 16 * 1024 * 1024

REASONS: dict[int, str] = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Request:
    """One parsed request: ``target`` is the raw path with its query string."""

    method: str
    target: str
    headers: Mapping[str, str]
    """Header names as sent; look up with :meth:`header` (case-insensitive)."""
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]
    reset: bool = False
    """Answer nothing: reset the connection (TCP RST), as a provider that drops it would."""


RESET = Reply(0, b"", {}, reset=True)


class Application(Protocol):
    """What the server needs from the fake."""

    def may_block(self, request: Request) -> bool: ...

    def serve(self, request: Request) -> Reply: ...

    def http_date(self) -> str: ...


def encode_reply(reply: Reply, date: str, close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Unknown')}",
        "Server: FakeTwilio/1.0",
        f"Date: {date}",
        f"Content-Length: {len(reply.body)}",
    ]
    lines += [f"{key}: {value}" for key, value in reply.headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        """A request is being answered in a thread: parse nothing more until it is."""
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def process(self) -> None:
        while not self.busy and not self.closing and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.fail(431, "Request Header Fields Too Large")
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self.fail(400, "Bad Request")
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    self.fail(400, "Bad Request")
                    return
                headers[name.strip()] = value.strip()
            lowered = {k.lower(): v for k, v in headers.items()}
            try:
                length = int(lowered.get("content-length") or 0)
            except ValueError:
                self.fail(400, "Bad Request")
                return
            if length < 0 or length > MAX_BODY:
                self.fail(413, "Payload Too Large")
                return
            start = end + 4
            if len(self.buffer) < start + length:
                return
            body = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            connection = lowered.get("connection", "").lower()
            close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            request = Request(method.upper(), target, headers, body)
            if self.app.may_block(request):
                self.busy = True
                threading.Thread(
                    target=self._serve_in_thread,
                    args=(request, close),
                    name="fake-twilio-held",
                    daemon=True,
                ).start()
                return
            self.answer(self.app.serve(request), close)

    def answer(self, reply: Reply, close: bool) -> None:
        if self.transport is None:
            return  # the client gave up (a timeout test): nothing to answer
        if reply.reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.closing = True
            self.transport.abort()
            return
        self.transport.write(encode_reply(reply, self.app.http_date(), close))
        if close:
            self.closing = True
            self.transport.close()

    def _serve_in_thread(self, request: Request, close: bool) -> None:
        reply = self.app.serve(request)
        self.server.call_soon(self._resume, reply, close)

    def _resume(self, reply: Reply, close: bool) -> None:
        self.busy = False
        self.answer(reply, close)
        self.process()

    def fail(self, status: int, text: str) -> None:
        self.answer(Reply(status, text.encode(), {"Content-Type": "text/plain"}), close=True)


class HttpServer:
    """Serves ``app`` on ``host:port`` (0: a free port) from a daemon thread."""

    def __init__(self, app: Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and serve; returns the bound port."""
        ready = threading.Event()
        failure: list[OSError] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Connection(self), self.host, self.port, backlog=1024
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:  # the port is taken: reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-twilio", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self.port

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # stopped meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        def shutdown() -> None:
            server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            loop.call_soon(loop.stop)

        self.call_soon(shutdown)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop = self._server = self._thread = None
