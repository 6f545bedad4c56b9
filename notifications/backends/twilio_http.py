"""HTTP clients for the unmodified ``twilio.rest.Client``: the stock one, and an async one.

Both remember the last response *per thread and per asyncio task* (a context
variable), because ``TwilioRestException`` drops the headers and the backend
needs ``Retry-After`` and the provider's ``Date``.

The async client exists for throughput: the dispatcher sends from one event
loop with many requests in flight, and the twilio client's ``*_async`` calls
go through it. It uses aiohttp (twilio's own async dependency), one session
per event loop (a dispatch run has its own loop), a keep-alive pool of
``pool_size`` connections, and the same (connect, read) timeout as the stock
client. It builds the Basic authorisation header itself rather than through
aiohttp's deprecated ``BasicAuth``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.http import AsyncHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

LAST_RESPONSE: ContextVar[Response | None] = ContextVar("twilio_last_response", default=None)
"""The last response this thread or task received from Twilio (``None``: none, or no answer)."""


def last_response() -> Response | None:
    return LAST_RESPONSE.get()


class RememberingHttpClient(TwilioHttpClient):
    """The stock (requests) HTTP client, plus :data:`LAST_RESPONSE`."""

    def __init__(self, timeout: float, logger: logging.Logger) -> None:
        super().__init__(timeout=timeout, logger=logger)

    def request(self, *args: Any, **kwargs: Any) -> Response:
        LAST_RESPONSE.set(None)
        response = super().request(*args, **kwargs)
        LAST_RESPONSE.set(response)
        return response

    @property
    def last_response(self) -> Response | None:
        return LAST_RESPONSE.get()


class AsyncRememberingHttpClient(AsyncHttpClient):
    """An aiohttp client for ``client.messages.create_async`` and friends."""

    def __init__(self, timeout: float, logger: logging.Logger, pool_size: int = 100) -> None:
        super().__init__(logger, True, timeout)
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session belongs to the loop it was made on; a new run has a new loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout
                ),
            )
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        LAST_RESPONSE.set(None)
        session = self._session_here()
        sent_headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            sent_headers["Authorization"] = f"Basic {token}"
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request(
                {"method": method, "url": uri, "params": params, "headers": sent_headers}
            )
        body: bytes | None = None
        if data:
            # Encoded here: aiohttp's FormData costs a uuid4 and a multipart writer per request.
            body = urlencode(data, doseq=True).encode()
            sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=timeout, sock_read=timeout
            )
        async with session.request(
            method.upper(),
            uri,
            params=params,  # type: ignore[arg-type]
            data=body,
            headers=sent_headers,
            allow_redirects=allow_redirects,
            **options,
        ) as answer:
            text = await answer.text()
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, answer)
        response = Response(answer.status, text, answer.headers)
        LAST_RESPONSE.set(response)
        return response

    async def close(self) -> None:
        """Close this loop's session (call from the loop that used it)."""
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
