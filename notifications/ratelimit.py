"""An exact send-rate limiter: at most ``rate`` starts in any one-second window, per sender.

Carriers and Twilio throttle per sender number, and a limiter that is only
"roughly" right gets messages queued or dropped at the carrier. This one hands
out start *slots* spaced exactly ``1/rate`` apart on an integer-nanosecond
schedule, so there is no float drift and no burst: with ``rate`` r, any
half-open window ``[t, t + 1s)`` holds at most r slots. It never saves up
unused capacity, so an idle period cannot be followed by a burst.

Clock and sleep are injected: tests use a fake clock and verify the schedule
exactly without waiting. It is thread-safe: slots are assigned under a lock
and the waiting happens outside it. :meth:`RateLimiter.acquire_async` waits
for the same slots on an event loop (the dispatcher's async send path).

A rate of ``math.inf`` means unlimited: every slot is "now".
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from fractions import Fraction

NANOS = 1_000_000_000


class RateLimiter:
    """Hands out start times ``interval`` apart; :meth:`acquire` waits for the caller's slot."""

    def __init__(
        self,
        rate_per_second: float,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate must be positive, got {rate_per_second}")
        self.rate = rate_per_second
        # ceil: never a nanosecond too early, so never rate + 1 sends in a second.
        self.interval_ns = (
            0
            if math.isinf(rate_per_second)
            else math.ceil(Fraction(NANOS) / Fraction(rate_per_second))
        )
        self._clock = clock_ns
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_ns: int | None = None

    def reserve(self) -> int:
        """Claim the next slot (monotonic ns) without waiting for it."""
        with self._lock:
            now = self._clock()
            slot = now if self._next_ns is None else max(now, self._next_ns)
            self._next_ns = slot + self.interval_ns
            return slot

    def acquire(self) -> int:
        """Block until this caller's slot has come; returns the slot (monotonic ns)."""
        slot = self.reserve()
        while True:
            wait = slot - self._clock()
            if wait <= 0:
                return slot
            self._sleep(wait / NANOS)

    async def acquire_async(self) -> int:
        """:meth:`acquire` for a coroutine: waits for the slot without blocking the loop.

        A subclass that adds blocking work to :meth:`acquire` (a shared limit
        taken over the network) is run in a worker thread instead. An injected
        ``sleep`` (a test's fake clock) is called as is: it returns at once.
        """
        if type(self).acquire is not RateLimiter.acquire:
            return await asyncio.to_thread(self.acquire)
        slot = self.reserve()
        while True:
            wait = slot - self._clock()
            if wait <= 0:
                return slot
            if self._sleep is time.sleep:
                await asyncio.sleep(wait / NANOS)
            else:
                self._sleep(wait / NANOS)

    def pause(self, seconds: float) -> None:
        """Start no new send for ``seconds`` (the provider said 429 Retry-After)."""
        with self._lock:
            resume = self._clock() + math.ceil(seconds * NANOS)
            if self._next_ns is None or self._next_ns < resume:
                self._next_ns = resume


class SenderLimits:
    """One :class:`RateLimiter` per sender (channel), created on first use."""

    def __init__(
        self,
        rate_per_second: float,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate_per_second
        self._clock = clock_ns
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limiters: dict[str, RateLimiter] = {}

    def for_sender(self, sender: str) -> RateLimiter:
        with self._lock:
            limiter = self._limiters.get(sender)
            if limiter is None:
                limiter = RateLimiter(self.rate, clock_ns=self._clock, sleep=self._sleep)
                self._limiters[sender] = limiter
            return limiter
