"""The fake Twilio's HTTP side: an ``aiohttp.web`` server on an event loop of its own thread.

aiohttp does the HTTP/1.1 (its C parser, keep-alive, pipelining, one write per
answer, ``TCP_NODELAY`` on every connection, so no 40 ms Nagle stall). This
module only adapts it to the fake: it turns each request into a :class:`Request`,
asks the application for a :class:`Reply`, and honours what a reply can ask for
beyond an ordinary answer — a **delay** (injected latency, awaited on the loop so
other requests go on meanwhile) and a **reset** (the connection dropped with a
TCP RST, as a provider that drops it would).

Requests are answered on the loop, one connection's requests in order (the
fake's state is behind one lock anyway). A request that may block — a held
response (:meth:`FakeTwilio.hold_next`), the chaos, or a control action that posts
to a webhook — is answered from a thread of its own instead, so it holds only
its own connection.
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

from aiohttp import web
from multidict import CIMultiDictProxy

SERVER = "FakeTwilio/1.0"
STOP_SECONDS = 0.25
"""How long stopping waits for answers in flight before it drops their connections."""


@dataclass(frozen=True)
class Request:
    """One request: ``target`` is the raw path with its query string."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    """As sent (names keep their case; look-ups ignore it)."""
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]
    reset: bool = False
    """Answer nothing: reset the connection (TCP RST), as a provider that drops it would."""
    delay: float = 0.0
    """Seconds to wait before answering (injected latency); other requests go on meanwhile."""


RESET = Reply(0, b"", {}, reset=True)


class Application(Protocol):
    """What the server needs from the fake."""

    def may_block(self, request: Request) -> bool: ...

    def serve(self, request: Request) -> Reply: ...

    def http_date(self) -> str: ...


class WebServer:
    """Serves ``app`` on ``host:port`` (0: a free port) from a daemon thread's event loop."""

    def __init__(self, app: Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and serve; returns the bound port (an ``OSError`` when it is taken)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run, args=(loop,), name="fake-twilio", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._listen(), loop).result()
        except BaseException:
            self.stop()
            raise
        return self.port

    async def _listen(self) -> int:
        # The low-level server: one handler for every path, no router or middlewares to run.
        server = web.Server(self._answer, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=STOP_SECONDS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        incoming = Request(request.method, request.raw_path, request.headers, await request.read())
        if self.app.may_block(incoming):
            reply = await _in_thread(self.app.serve, incoming)
        else:
            reply = self.app.serve(incoming)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.reset:
            _reset(request.transport)
            return web.Response()  # never written: the connection is gone
        headers = {"Server": SERVER, "Date": self.app.http_date(), **reply.headers}
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def stop(self) -> None:
        """Stop listening, drop the connections (answers in flight get ``STOP_SECONDS``)."""
        loop, runner, thread = self._loop, self._runner, self._thread
        self._loop = self._runner = self._thread = None
        if loop is None:
            return
        if runner is not None:
            with contextlib.suppress(RuntimeError, TimeoutError):  # the loop is gone already
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=5)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)


def _run(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    finally:
        loop.close()


async def _in_thread(serve: Callable[[Request], Reply], request: Request) -> Reply:
    """``serve(request)`` in a daemon thread of its own (a held answer may wait for minutes).

    Not the loop's default executor: its few workers would queue held answers behind
    each other. A daemon thread also never delays the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[Reply] = loop.create_future()

    def run() -> None:
        try:
            outcome: Reply | Exception = serve(request)
        except Exception as exc:  # noqa: BLE001 - raised again in the handler, on the loop
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the server stopped and its loop closed
            loop.call_soon_threadsafe(_settle, answered, outcome)

    threading.Thread(target=run, name="fake-twilio-held", daemon=True).start()
    return await answered


def _settle(future: asyncio.Future[Reply], outcome: Reply | Exception) -> None:
    if future.done():
        return  # cancelled: the server stopped meanwhile
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _reset(transport: asyncio.Transport | None) -> None:
    """Drop the connection with a TCP RST: linger 0, then abort (no FIN, nothing flushed)."""
    if transport is None:
        return  # the client went away first
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
