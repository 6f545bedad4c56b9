"""An ASGI app served by uvicorn on a real local socket, for tests whose fake Twilio posts to it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def served(app: Any, log_level: str = "warning", **options: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and a random port; yields its base URL.

    ``options`` are more ``uvicorn.Config`` options (``vipcare web`` passes
    ``vipcare.web.serve.server_options``). The socket listens before the thread
    starts, so early connections wait in the backlog: nothing to poll for.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        thread.start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


class LazyApp:
    """An ASGI app set after the socket exists: the app's public URL must name the port."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
