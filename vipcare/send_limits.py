"""The send rate shared by every dispatcher on Prefect workers: a Prefect global concurrency limit.

One dispatcher keeps to ``VIPCARE_SEND_RATE_PER_SECOND`` with its own exact
limiter. N dispatchers on N workers would each do so, N times the rate; so on
workers every send also takes a slot of the Prefect global concurrency limit
``vipcare-send-<channel>`` (created by ``vipcare deploy``), whose slots decay at
the configured rate. It is taken with ``strict=True``: a missing limit is an
error that stops the dispatch before anything is sent, never a silent
"unlimited".
"""

from __future__ import annotations

import math
from collections.abc import Callable

from notifications.errors import ConfigurationError
from notifications.ratelimit import RateLimiter, SenderLimits

PREFIX = "vipcare-send-"
CHANNELS = ("sms", "voice")


def limit_name(channel: str) -> str:
    return f"{PREFIX}{channel}"


def burst(rate: float) -> int:
    """Slots a limit holds: a tenth of a second of sending (at least one)."""
    return max(1, math.ceil(rate / 10))


class _Shared(RateLimiter):
    """This process's exact pacing, plus a slot of the shared Prefect limit per send."""

    def __init__(self, name: str, rate: float, take: Callable[[str], None]) -> None:
        super().__init__(rate)
        self.name = name
        self._take = take

    def acquire(self) -> int:
        slot = super().acquire()
        self._take(self.name)
        return slot


def _take_prefect_slot(name: str) -> None:
    from prefect.concurrency.sync import rate_limit

    try:
        rate_limit(name, occupy=1, strict=True)
    except Exception as exc:
        raise ConfigurationError(
            f"the Prefect concurrency limit {name!r} could not be taken ({type(exc).__name__}: "
            f"{exc}); create it with `vipcare deploy`"
        ) from exc


class SharedSendLimits(SenderLimits):
    """A :class:`SenderLimits` whose limiters also hold the global Prefect limit."""

    def __init__(
        self, rate_per_second: float, take: Callable[[str], None] = _take_prefect_slot
    ) -> None:
        super().__init__(rate_per_second)
        self._take = take
        self._shared: dict[str, RateLimiter] = {}

    def for_sender(self, sender: str) -> RateLimiter:
        with self._lock:
            found = self._shared.get(sender)
            if found is None:
                found = _Shared(limit_name(sender), self.rate, self._take)
                self._shared[sender] = found
            return found


def ensure_limits(rate: float) -> list[dict[str, object]]:
    """Create or update ``vipcare-send-<channel>`` on the Prefect server (``vipcare deploy``)."""
    from prefect.client.orchestration import get_client

    made: list[dict[str, object]] = []
    with get_client(sync_client=True) as client:
        for channel in CHANNELS:
            name = limit_name(channel)
            client.upsert_global_concurrency_limit_by_name(
                name, burst(rate), slot_decay_per_second=rate
            )
            found = client.read_global_concurrency_limit_by_name(name)
            made.append(
                {"name": name, "limit": found.limit, "per_second": found.slot_decay_per_second}
            )
    return made


def check_limits() -> None:
    """Fail before claiming anything when the shared limits are missing (strict)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for channel in CHANNELS:
            try:
                found = client.read_global_concurrency_limit_by_name(limit_name(channel))
            except Exception as exc:
                raise ConfigurationError(
                    f"the Prefect concurrency limit {limit_name(channel)!r} is missing; "
                    "run `vipcare deploy` against this Prefect server"
                ) from exc
            if not found.active or not found.slot_decay_per_second:
                raise ConfigurationError(
                    f"the Prefect concurrency limit {limit_name(channel)!r} is not an active "
                    "rate limit; run `vipcare deploy` again"
                )
