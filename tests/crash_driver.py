"""One care day, journeys then dispatch rounds, resumable: the process the crash harness kills.

The day runs without Prefect (``flows.journeys.day.run_day``, the same journeys the
flow's tasks call), so a child starts in milliseconds when forked from a warm
forkserver. Progress is kept the way the scheduler keeps it: the journeys are
marked done after they all finished, each dispatch round after it returned, in a
small JSON file replaced atomically. A restarted child resumes at the first
unfinished step and so, like the scheduler after a crash, runs the same round
(the same ``--at``) again.

Kill points (``kill``, counted within one child, several joined by commas):

- ``batch:N``: as it starts writing the N-th batch of decisions (the earlier
  batches are committed: mid-journey);
- ``batchw:N``: right after writing it, before its commit;
- ``claim:N``: after marking the N-th chunk ``sending``, before its commit;
- ``accept:N``: right after the provider accepted the N-th message (it is in the
  provider's store, not yet in ours);
- ``flush:N``: after the N-th write-back, before its commit.

The process kills itself with a real SIGKILL: nothing runs after it.

The provider is the mock backend with a JSON-lines store shared by every child,
so a restarted dispatcher can ask it what the dead one sent. Time is fixed: each
round dispatches at its own instant with a fake monotonic clock (it moves only
when the rate limiter sleeps); leases use the real wall clock, and the claims of
a dead process are taken over at once (same host, its pid is gone).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from crm.db import make_engine
from flows.journeys import engine as journey_engine
from flows.journeys.context import RunContext
from flows.journeys.day import run_day
from notifications import outbox
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from notifications.base import OutgoingMessage, SendResult
from notifications.config import NotificationConfig
from notifications.dispatcher import dispatch
from rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
COMPLETE = "day complete"


@dataclass(frozen=True)
class DayPlan:
    """Everything one care day of the harness depends on (the same for every child)."""

    url: str
    day: date
    at: datetime
    rounds: tuple[datetime, ...]
    store: str
    progress: str
    batch_size: int = 5
    chunk_size: int = 6
    run_id: str = "crash-harness"


@dataclass
class _Counter:
    """Counts hook events in this process and SIGKILLs it at a chosen one."""

    kill_at: dict[str, int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def parse(cls, spec: str) -> _Counter:
        """``kind:N[,kind:N...]``: die at the N-th event of any kind listed."""
        points = [p.partition(":") for p in spec.split(",") if p]
        return cls({kind: int(n) for kind, _, n in points})

    def hit(self, kind: str) -> None:
        with self.lock:
            self.seen[kind] = self.seen.get(kind, 0) + 1
            if self.kill_at.get(kind) == self.seen[kind]:
                os.kill(os.getpid(), signal.SIGKILL)


class _FakeClock:
    """Monotonic nanoseconds that move only when the rate limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0, round(seconds * 1e9))


def _accepting(cls: type[MockSMSBackend] | type[MockVoiceBackend], counter: _Counter) -> Any:
    class Accepting(cls):  # type: ignore[valid-type,misc]
        def send(self, msg: OutgoingMessage) -> SendResult:
            result: SendResult = super().send(msg)
            counter.hit("accept")
            return result

    return Accepting


def _install_hooks(counter: _Counter) -> Callable[[], None]:
    """Wrap the write points the kill specs name; returns an undo (for in-process runs)."""
    apply = journey_engine.apply_decisions
    begin, write_back = outbox.begin_sending, outbox.write_back

    def apply_hooked(*args: Any, **kwargs: Any) -> Any:
        counter.hit("batch")
        out = apply(*args, **kwargs)
        counter.hit("batchw")
        return out

    def begin_hooked(*args: Any, **kwargs: Any) -> Any:
        out = begin(*args, **kwargs)
        counter.hit("claim")
        return out

    def write_back_hooked(*args: Any, **kwargs: Any) -> Any:
        out = write_back(*args, **kwargs)
        counter.hit("flush")
        return out

    journey_engine.apply_decisions = apply_hooked  # type: ignore[assignment]
    outbox.begin_sending = begin_hooked  # type: ignore[assignment]
    outbox.write_back = write_back_hooked  # type: ignore[assignment]

    def undo() -> None:
        journey_engine.apply_decisions = apply
        outbox.begin_sending = begin  # type: ignore[assignment]
        outbox.write_back = write_back  # type: ignore[assignment]

    return undo


def _read_progress(path: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        return found
    except FileNotFoundError:
        return {"journeys": False, "round": 0, "children": 0}


def _write_progress(path: str, state: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


_WARM: dict[str, RuleSet] = {}


def warm() -> RuleSet:
    """The shipped rules, loaded once per process (the forkserver loads them before forking)."""
    if "rules" not in _WARM:
        _WARM["rules"] = load_rules(RULES_DIR)
    return _WARM["rules"]


def settings() -> NotificationConfig:
    return NotificationConfig(
        send_rate_per_second=1000.0, dispatch_concurrency=1, batch_size=100, public_url=""
    )


def run(plan: DayPlan, kill: str = "", ruleset: RuleSet | None = None) -> str:
    """Run (or resume) the day; returns :data:`COMPLETE`. ``kill`` as in the module doc."""
    counter = _Counter.parse(kill)
    undo = _install_hooks(counter)
    try:
        rules = ruleset or warm()
        engine = make_engine(plan.url)
        state = _read_progress(plan.progress)
        state["children"] = state.get("children", 0) + 1
        _write_progress(plan.progress, state)
        if not state["journeys"]:
            ctx = RunContext(
                as_of=plan.day,
                at=plan.at,
                run_id=plan.run_id,
                ruleset=rules,
                operator_tz=ZoneInfo("Asia/Shanghai"),
                batch_size=plan.batch_size,
            )
            run_day(engine, ctx)
            state["journeys"] = True
            _write_progress(plan.progress, state)
        store = MockStore(plan.store)
        backends = {
            "sms": _accepting(MockSMSBackend, counter)(store=store),
            "voice": _accepting(MockVoiceBackend, counter)(store=store),
        }
        while state["round"] < len(plan.rounds):
            clock = _FakeClock()
            dispatch(
                engine,
                settings(),
                rules.contact_policy,
                plan.rounds[state["round"]],
                lead_time=rules.precall_lead_time,
                backends=backends,
                sleep=clock.sleep,
                clock=clock,
                chunk_size=plan.chunk_size,
                wall_clock=lambda: datetime.now(UTC),
            )
            state["round"] += 1
            _write_progress(plan.progress, state)
        # What this child saw (an uninterrupted reference run saw the whole day's events).
        state["events"] = dict(counter.seen)
        _write_progress(plan.progress, state)
        engine.dispose()
        return COMPLETE
    finally:
        undo()


def events_of(plan: DayPlan) -> dict[str, int]:
    """The hook events the last completed run of ``plan`` saw (per kind)."""
    found: dict[str, int] = _read_progress(plan.progress).get("events", {})
    return found


def child_main(plan: DayPlan, kill: str) -> None:
    """Entry point of a forked child: run, and say so on exit code 0."""
    run(plan, kill)


def rounds(day: date, first_utc_hour: int, count: int, every: timedelta) -> tuple[datetime, ...]:
    start = datetime(day.year, day.month, day.day, first_utc_hour, tzinfo=UTC)
    return tuple(start + i * every for i in range(count))
