"""The send-rate limit is exact: verified on a fake clock, alone, under threads and in dispatch."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import Engine
from test_dispatcher_support import OPEN_POLICY, FakeClock, make_settings, seed_simple

from notifications.backends.mock import MockSMSBackend
from notifications.base import OutgoingMessage, SendResult
from notifications.dispatcher import dispatch
from notifications.ratelimit import NANOS, RateLimiter, SenderLimits

LEAD = timedelta(hours=2)
"""The pre-call lead time these tests dispatch with."""


def max_in_any_second(stamps: list[int]) -> int:
    """The most starts in any half-open one-second window (windows start at a stamp)."""
    ordered = sorted(stamps)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + NANOS:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.parametrize(
    ("rate", "interval"), [(10, 100_000_000), (3, 333_333_334), (0.5, 2 * NANOS)]
)
def test_starts_are_spaced_exactly(rate: float, interval: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock_ns=clock, sleep=clock.sleep)
    assert limiter.interval_ns == interval
    t0 = clock()
    starts = []
    for _ in range(25):
        limiter.acquire()
        starts.append(clock())
    assert starts == [t0 + k * interval for k in range(25)]
    assert max_in_any_second(starts) == max(1, int(rate))
    assert clock.sleeps[0] == interval / NANOS  # the first send did not wait


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock_ns=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.advance(10)
    starts = []
    for _ in range(3):
        limiter.acquire()
        starts.append(clock())
    assert [b - a for a, b in pairwise(starts)] == [100_000_000] * 2


def test_pause_delays_the_next_start() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock_ns=clock, sleep=clock.sleep)
    limiter.acquire()
    t = clock()
    limiter.pause(2.5)
    limiter.acquire()
    assert clock() - t == 2_500_000_000


def test_invalid_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


class RecordingLimiter(RateLimiter):
    """Records every slot it hands out (the moment a send may start)."""

    slots: list[int]

    def acquire(self) -> int:
        slot = super().acquire()
        with self._lock:
            self.slots.append(slot)
        return slot


class RecordingLimits(SenderLimits):
    def __init__(self, rate: float, clock: FakeClock) -> None:
        super().__init__(rate, clock_ns=clock, sleep=clock.sleep)
        self.made: dict[str, RecordingLimiter] = {}

    def for_sender(self, sender: str) -> RateLimiter:
        with self._lock:
            if sender not in self.made:
                limiter = RecordingLimiter(self.rate, clock_ns=self._clock, sleep=self._sleep)
                limiter.slots = []
                self.made[sender] = limiter
            return self.made[sender]


def test_thread_safe_under_contention() -> None:
    clock = FakeClock()
    limits = RecordingLimits(7, clock)
    limiter = limits.for_sender("sms")
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait(timeout=30)
        for _ in range(40):
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    slots = sorted(limits.made["sms"].slots)
    assert len(slots) == 320 and len(set(slots)) == 320  # nobody shared a slot
    gaps = {b - a for a, b in pairwise(slots)}
    assert gaps == {limiter.interval_ns}  # exactly 1/7 s apart, no burst, no hole
    assert max_in_any_second(slots) == 7


class TimedSMS(MockSMSBackend):
    """Records the fake-clock instant of every provider call."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.started: list[int] = []

    def send(self, msg: OutgoingMessage) -> SendResult:
        self.started.append(self.clock())
        return super().send(msg)


def test_dispatch_keeps_the_rate_exactly(engine: Engine, now: datetime) -> None:
    ids = seed_simple(engine, now, 25)
    clock = FakeClock()
    sms = TimedSMS(clock)
    settings = make_settings(send_rate_per_second=10, dispatch_concurrency=1)
    summary = dispatch(
        engine,
        settings,
        OPEN_POLICY,
        now,
        lead_time=LEAD,
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
    )
    assert summary.sent == 25
    gaps = {b - a for a, b in pairwise(sms.started)}
    assert gaps == {100_000_000}
    assert max_in_any_second(sms.started) == 10
    # the run's own clock moved with the limiter: 24 gaps of 0.1 s
    assert summary.finished_at is not None
    assert (summary.finished_at - now).total_seconds() == pytest.approx(2.4)
    assert Counter(r.message_id for r in sms.sent) == Counter(dict.fromkeys(ids, 1))


def test_dispatch_with_a_thread_pool_shares_one_limiter_per_sender(
    engine: Engine, now: datetime
) -> None:
    ids = seed_simple(engine, now, 30)
    clock = FakeClock()
    limits = RecordingLimits(10, clock)
    sms = MockSMSBackend()
    settings = make_settings(send_rate_per_second=10, dispatch_concurrency=4)
    summary = dispatch(
        engine,
        settings,
        OPEN_POLICY,
        now,
        lead_time=LEAD,
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
        limits=limits,
        chunk_size=8,
    )
    assert summary.sent == 30
    slots = sorted(limits.made["sms"].slots)
    assert len(slots) == 30
    assert {b - a for a, b in pairwise(slots)} == {100_000_000}
    assert max_in_any_second(slots) == 10
    assert Counter(r.message_id for r in sms.sent) == Counter(dict.fromkeys(ids, 1))


def test_async_acquire_keeps_the_same_exact_schedule_under_many_tasks() -> None:
    clock = FakeClock()
    limiter = RateLimiter(7, clock_ns=clock, sleep=clock.sleep)
    starts: list[int] = []

    async def task() -> None:
        for _ in range(10):
            await limiter.acquire_async()
            starts.append(clock())

    async def main() -> None:
        await asyncio.gather(*(task() for _ in range(16)))

    asyncio.run(main())
    ordered = sorted(starts)
    assert len(ordered) == 160 and len(set(ordered)) == 160
    assert {b - a for a, b in pairwise(ordered)} == {limiter.interval_ns}
    assert max_in_any_second(ordered) == 7


def test_a_subclass_that_blocks_in_acquire_keeps_its_extra_work_on_the_async_path() -> None:
    clock = FakeClock()
    limits = RecordingLimits(5, clock)
    limiter = limits.for_sender("sms")

    async def main() -> None:
        for _ in range(6):
            await limiter.acquire_async()

    asyncio.run(main())
    assert isinstance(limiter, RecordingLimiter)
    assert [b - a for a, b in pairwise(limiter.slots)] == [200_000_000] * 5


def test_an_infinite_rate_is_unlimited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(math.inf, clock_ns=clock, sleep=clock.sleep)
    t0 = clock()
    for _ in range(1000):
        limiter.acquire()
    assert clock() == t0 and clock.sleeps == []
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(math.nan)


def test_dispatch_unlimited_sends_everything_without_waiting(engine: Engine, now: datetime) -> None:
    ids = seed_simple(engine, now, 12)
    clock = FakeClock()
    sms = TimedSMS(clock)
    settings = make_settings(send_rate_per_second=math.inf, dispatch_concurrency=3)
    summary = dispatch(
        engine,
        settings,
        OPEN_POLICY,
        now,
        lead_time=LEAD,
        backends={"sms": sms},
        sleep=clock.sleep,
        clock=clock,
    )
    assert summary.sent == 12 and clock.sleeps == []
    assert Counter(r.message_id for r in sms.sent) == Counter(dict.fromkeys(ids, 1))
