"""The dispatcher's send loop: one asyncio event loop in a thread, for one dispatch run.

Why a loop: a thread per in-flight request (the old pool) spends most of its
time in the GIL and in the sync HTTP stack; one loop with many requests in
flight through an async client is several times cheaper per message. The
database work stays in the caller's thread, so claims and write-backs overlap
with sending.

The loop's default executor has ``workers`` threads: backends without an async
client (the mock, tests' backends) run their blocking ``send`` there, with the
same bound on concurrency as before. ``on_close`` runs on the loop before it
stops (the backends close their connections).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class SendLoop:
    """Start with ``with``; :meth:`run` schedules a coroutine and returns its future."""

    def __init__(self, workers: int, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.workers = workers
        self.on_close = on_close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> SendLoop:
        loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="send")
        loop.set_default_executor(self._executor)
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="dispatch-send-loop", daemon=True
        )
        self._thread.start()
        return self

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the send loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop soon (thread-safe, in call order)."""
        if self._loop is None:
            raise RuntimeError("the send loop is not running")
        self._loop.call_soon_threadsafe(callback, *args)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self.on_close is not None:
                close = self.on_close

                async def closing() -> None:
                    await close()

                asyncio.run_coroutine_threadsafe(closing(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            loop.close()
