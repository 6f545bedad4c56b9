"""The dispatcher: drains the outbox through the contact policy and the channel backends.

One run (:func:`dispatch`):

1. **Reconcile** rows stuck in ``sending`` by a crashed run: ask the provider
   whether it has the attempt (``find_previous_attempt``). Accepted → ``sent``;
   not accepted → ``queued`` (sent again below), or ``failed`` when that was the
   last try the retry budget allows; provider unreachable → left for the next
   run. A claim is a lease (owner + wall-clock ``claimed_at``,
   renewed while its dispatcher works): only abandoned claims are touched, i.e.
   those of an owner known to be dead (same host) or whose lease is older than
   ``reconcile_grace`` (5 minutes) by the *wall clock*, so a second dispatcher
   that is still working on its rows is left alone, and a rerun with the same
   ``--at`` after a crash still finds the dead run's rows. ``reconcile_all``
   takes every ``sending`` row (use it only when no other dispatcher runs).
2. **Expire** queued messages past their ``valid_until``: never sent late.
3. **Claim** due rows in chunks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
   a serialised ``BEGIN IMMEDIATE`` transaction on SQLite), expire the ones no
   longer valid (past ``valid_until``, a pre-call notice whose call is off, a
   message whose next send window opens after its validity), re-check the
   contact policy for the rest (suppress / defer / send), and mark the rest
   ``sending`` with a fresh attempt id, **committed before any provider call**.
4. **Send** from one event loop (:class:`notifications.sendloop.SendLoop`)
   with at most ``settings.dispatch_concurrency`` sends in flight, under an
   exact per-sender rate limit (``settings.send_rate_per_second``;
   ``math.inf``: unlimited). Backends with an async client (Twilio) send
   without threads; the others run in a pool of that many threads. Outcomes
   are written back in bulk while the loop keeps sending (guarded by status
   and attempt id), with one audit append per flush.
5. **Promote** pre-call tasks whose lead time has passed.

Time: ``at`` is the dispatch instant; later instants are ``at`` plus the
elapsed time of the injected monotonic ``clock``, so a test with a fake clock
is fully deterministic. Leases need the real time, which the caller injects as
``wall_clock`` (the CLI and the scheduler pass the system clock; without one
the run's own ``at + elapsed`` is used). The code never reads a clock itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine

from crm import process, tasks
from crm.audit import Actor
from crm.db import transaction
from crm.phones import mask
from notifications import outbox
from notifications.base import ChannelBackend, OutgoingMessage, SendResult
from notifications.config import NotificationConfig
from notifications.errors import (
    NotificationError,
    OptedOutError,
    PermanentSendError,
    TransientSendError,
)
from notifications.outbox import (
    Abandoned,
    DueMessage,
    ExpiredOutcome,
    FailedOutcome,
    RetryOutcome,
    SentOutcome,
    WriteBack,
)
from notifications.policy import WEEK, CapCounter, Recipient, policy_ref, precheck
from notifications.ratelimit import SenderLimits
from notifications.sendloop import SendLoop
from rules.models import ContactPolicy

log = logging.getLogger(__name__)

DISPATCHER = Actor("system", "dispatcher")
STATUS_PATH = "/twilio/status"
"""Where ``notifications.webhooks`` takes status callbacks (below ``settings.public_url``)."""
RECONCILE_MARGIN = timedelta(minutes=5)
"""How far before ``sending_at`` the provider is searched when reconciling."""
FLUSH_EVERY = 500
"""Outcomes written back per transaction (fewer, larger write-backs are cheaper)."""
PREFETCH_MIN_CHUNK = 100
"""Chunks at least this big are claimed while the previous one is still sending."""
RENEW_EVERY = timedelta(seconds=30)
"""How often, by the wall clock, a run renews the leases of the rows it holds in ``sending``:
well inside the 5-minute grace after which another run may reclaim them."""


@dataclass(frozen=True)
class Backoff:
    """The dispatcher's *long* retry: exponential backoff with equal jitter, bounded.

    Try n (1-based) that failed transiently is retried after
    ``min(cap, base * 2**(n-1))`` seconds, jittered into ``[d/2, d]``, and at
    least the provider's ``Retry-After``. After ``max_attempts`` tries the
    message is ``failed``.
    """

    max_attempts: int = 5
    base: timedelta = timedelta(seconds=60)
    cap: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> timedelta:
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** (attempts - 1))
        seconds = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        return timedelta(seconds=seconds)


@dataclass
class DispatchSummary:
    """What one dispatch run did; every count is of rows actually moved."""

    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    retried: int = 0
    reconciled: int = 0
    """Stuck ``sending`` rows resolved (``reconciled_sent`` + ``reconciled_requeued``)."""
    reconciled_sent: int = 0
    reconciled_requeued: int = 0
    unresolved: int = 0
    """Rows left in ``sending`` because the outcome is unknown (provider unreachable)."""
    lost: int = 0
    """Rows another process moved while this one held them (not written back)."""
    tasks_ready: int = 0
    claimed: int = 0
    expired: int = 0
    """Messages that ended ``expired`` instead of being sent late (see ``expired_reasons``)."""
    halted: str | None = None
    """Why the run stopped early (bad credentials, missing sender): fix it and dispatch again."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    suppressed_reasons: dict[str, int] = field(default_factory=dict)
    expired_reasons: dict[str, int] = field(default_factory=dict)
    stopped: bool = False
    """The caller asked the run to stop (``should_stop``): it ended after a whole chunk."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------
# Outcomes of one provider call (built in worker threads, written by the main one)
# ---------------------------------------------------------------------------


@dataclass
class _Unknown:
    message: DueMessage
    reason: str


_Outcome = SentOutcome | RetryOutcome | FailedOutcome | ExpiredOutcome | _Unknown


def _exhausted(m: DueMessage, last_error: str, provider: str | None = None) -> FailedOutcome:
    """The retry budget is spent (``Backoff.max_attempts`` tries, whatever ended them)."""
    return FailedOutcome(
        m,
        "retries_exhausted",
        f"gave up after {m.attempts} attempts; last error: {last_error}",
        provider,
    )


def _count(reasons: dict[str, int], reason: str) -> None:
    code = reason.split(":", 1)[0]
    reasons[code] = reasons.get(code, 0) + 1


class _Feed:
    """Claimed messages waiting for a send worker, in claim order (lives on the send loop)."""

    def __init__(self) -> None:
        self._batches: deque[Iterator[DueMessage]] = deque()
        self._closed = False
        self._more = asyncio.Event()

    def add(self, batch: Sequence[DueMessage]) -> None:
        self._batches.append(iter(batch))
        self._more.set()

    def close(self) -> None:
        """No more batches: the workers end once the last one is taken."""
        self._closed = True
        self._more.set()

    async def next(self) -> DueMessage | None:
        while True:
            while self._batches:
                m = next(self._batches[0], None)
                if m is not None:
                    return m
                self._batches.popleft()
            if self._closed:
                return None
            self._more.clear()
            await self._more.wait()


class _Run:
    """State of one dispatch run; keeps :func:`dispatch` readable."""

    def __init__(
        self,
        engine: Engine,
        settings: NotificationConfig,
        policy: ContactPolicy,
        at: datetime,
        backends: Mapping[str, ChannelBackend] | None,
        lead_time: timedelta,
        sleep: Callable[[float], None],
        clock: Callable[[], int],
        backoff: Backoff,
        rng: random.Random,
        actor: Actor,
        limits: SenderLimits | None,
        chunk_size: int | None,
        wall_clock: Callable[[], datetime] | None,
        owner: process.Owner,
        owner_dead: Callable[[str], bool],
    ) -> None:
        if at.tzinfo is None:
            raise ValueError("dispatch time must be timezone-aware")
        self.wall_clock = wall_clock or self.now
        self.owner = owner
        self.owner_dead = owner_dead
        self.engine = engine
        self.settings = settings
        self.policy = policy
        self.policy_ref = policy_ref(policy)
        self.at = at
        self.lead_time = lead_time
        self.clock = clock
        self.t0 = clock()
        self.backoff = backoff
        self.rng = rng
        self.actor = actor
        self.limits = limits or SenderLimits(
            settings.send_rate_per_second, clock_ns=clock, sleep=sleep
        )
        self._backends: dict[str, ChannelBackend] = dict(backends or {})
        rate = settings.send_rate_per_second
        # A chunk is about a minute of sending, so rows never sit in 'sending'
        # for long and a claim's window check stays true while it is sent.
        minute = settings.batch_size if math.isinf(rate) else math.ceil(rate * 60)
        self.chunk = chunk_size or min(
            settings.batch_size, max(settings.dispatch_concurrency, minute)
        )
        self.flush_every = max(1, min(self.chunk, FLUSH_EVERY))
        # Claim the next chunk when this few sends of the current one are left. Small
        # chunks are claimed quickly: they go strictly one after another (claim, send,
        # write back), as every chunk did before.
        self.refill_at = (
            0
            if self.chunk < PREFETCH_MIN_CHUNK
            else min(self.chunk // 2, max(2 * settings.dispatch_concurrency, self.chunk // 5))
        )
        self.renewed_at: datetime | None = None
        base = settings.public_url.rstrip("/")
        self.status_callback_base = f"{base}{STATUS_PATH}" if base else None
        self.summary = DispatchSummary(started_at=at)
        self.progress: Callable[[DispatchSummary], None] | None = None
        self.due_by: datetime | None = None

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.summary)

    def now(self) -> datetime:
        return self.at + timedelta(microseconds=(self.clock() - self.t0) // 1000)

    def halt(self, reason: str) -> None:
        """Stop sending: the first reason wins (worker threads may race to set it)."""
        if self.summary.halted is None:
            self.summary.halted = reason
            log.error("dispatch halted: %s", reason)

    def backend(self, channel: str) -> ChannelBackend:
        found = self._backends.get(channel)
        if found is None:
            from notifications.backends import get_backend

            found = get_backend(self.settings, channel)
            self._backends[channel] = found
        return found

    def outgoing(self, m: DueMessage) -> OutgoingMessage:
        assert m.attempt_id is not None
        valid_for = None
        if m.valid_until is not None:
            valid_for = max(1, int((m.valid_until - self.now()).total_seconds()))
        return OutgoingMessage(
            message_id=m.id,
            channel=m.channel,  # type: ignore[arg-type]
            to=m.to_phone,
            body=m.body,
            locale=m.locale,
            attempt_id=m.attempt_id,
            status_callback=self.status_callback(m),
            valid_for=valid_for,
        )

    def status_callback(self, m: DueMessage) -> str | None:
        """The callback URL, naming the row and attempt: a callback may beat our write-back."""
        if self.status_callback_base is None or m.attempt_id is None:
            return None
        query = urlencode({"message_id": m.id, "attempt_id": m.attempt_id})
        return f"{self.status_callback_base}?{query}"

    # -- 1. reconcile ---------------------------------------------------------
    def abandoned(self, grace: timedelta) -> Abandoned:
        """Which claims in ``sending`` are abandoned now (see :class:`outbox.Abandoned`)."""
        with transaction(self.engine) as session:
            owners = outbox.sending_owners(session)
        return Abandoned(
            claimed_before=self.wall_clock() - grace,
            sending_before=self.now() - grace,
            dead_owners=frozenset(o for o in owners if self.owner_dead(o)),
        )

    def reconcile(self, pool: ThreadPoolExecutor, reconcile_all: bool, grace: timedelta) -> None:
        after = 0
        abandoned = None if reconcile_all else self.abandoned(grace)
        while True:
            with transaction(self.engine) as session:
                stuck = outbox.stuck_sending(session, abandoned, self.chunk, after)
            if not stuck:
                return
            after = stuck[-1].id
            found = list(pool.map(self._lookup, stuck))
            sent: list[SentOutcome] = []
            requeued: list[DueMessage] = []
            exhausted: list[FailedOutcome] = []
            for m, result in zip(stuck, found, strict=True):
                if isinstance(result, SendResult):
                    sent.append(
                        SentOutcome(
                            m,
                            result.provider,
                            result.provider_message_id,
                            m.sending_at or self.now(),
                            via="reconcile",
                        )
                    )
                elif result is None and m.attempts >= self.backoff.max_attempts:
                    # Never reached the provider, but it was the last try the budget allows.
                    exhausted.append(_exhausted(m, "its outcome was unknown and it never arrived"))
                elif result is None:
                    requeued.append(m)
                else:
                    self.summary.unresolved += 1
                    log.warning("message %s left in sending: %s", m.id, result)
            with transaction(self.engine) as session:
                done = outbox.write_back(
                    session,
                    self.now(),
                    self.actor,
                    sent=sent,
                    requeued=requeued,
                    failed=exhausted,
                    lead_time=self.lead_time,
                )
            self.summary.failed += done.failed
            moved_sent = done.sent
            moved_requeued = len(requeued) - len(set(done.lost) & {m.id for m in requeued})
            self.summary.reconciled_sent += moved_sent
            self.summary.reconciled_requeued += moved_requeued
            self.summary.reconciled += moved_sent + moved_requeued
            self.summary.lost += len(done.lost)

    def _lookup(self, m: DueMessage) -> SendResult | str | None:
        """The provider's record of ``m``'s attempt, ``None``, or why we cannot tell."""
        since = (m.sending_at or self.now()) - RECONCILE_MARGIN
        try:
            return self.backend(m.channel).find_previous_attempt(self.outgoing(m), since=since)
        except TransientSendError as exc:
            return f"provider could not be asked: {exc.reason}"
        except NotImplementedError:
            return "backend cannot look up previous attempts"

    # -- 2. expire --------------------------------------------------------------
    def expire_overdue(self) -> None:
        """Every queued message past its validity ends ``expired`` (never sent late)."""
        while True:
            with transaction(self.engine) as session:
                moved = outbox.expire_overdue(session, self.now(), self.actor, self.chunk)
            self.summary.expired += moved
            if moved:
                reasons = self.summary.expired_reasons
                reasons["valid_until"] = reasons.get("valid_until", 0) + moved
            if moved < self.chunk:
                return

    # -- 3. claim ---------------------------------------------------------------
    def claim(self, limit: int) -> tuple[int, list[DueMessage]]:
        """One claim transaction: policy decisions, suppress/defer, mark the rest sending.

        Returns how many due rows were taken and those now ``sending`` (ours to send).
        """
        claim_at = self.now()
        with transaction(self.engine) as session:
            due = outbox.claim_due(session, claim_at, limit, due_by=self.due_by)
            if not due:
                return 0, []
            history = outbox.accepted_counts(
                session, (m.customer_id for m in due), claim_at - WEEK - timedelta(days=1)
            )
            caps = CapCounter(self.policy, history)
            notices = outbox.notice_tasks(session, (m.id for m in due))
            to_send: list[DueMessage] = []
            suppressed: list[tuple[DueMessage, str]] = []
            deferred: list[tuple[DueMessage, datetime, str]] = []
            expired: list[tuple[DueMessage, str]] = []
            for m in due:
                if m.valid_until is not None and m.valid_until <= claim_at:
                    expired.append((m, outbox.past_validity(m)))
                    continue
                if notices.get(m.id) is False:  # every call it announced is closed
                    expired.append((m, outbox.CALL_NO_LONGER_PLANNED))
                    continue
                r = Recipient(
                    customer_id=m.customer_id,
                    channel=m.channel,
                    category=m.category,
                    locale=m.locale,
                    body=m.body,
                    timezone=m.timezone,
                    sms_opt_out=m.sms_opt_out,
                    do_not_call=m.do_not_call,
                )
                decision = precheck(self.policy, r, claim_at)
                if decision.kind == "send":
                    decision = caps.decide(r, claim_at)
                if decision.kind == "send":
                    to_send.append(m)
                elif decision.kind == "defer":
                    assert decision.until is not None
                    if m.valid_until is not None and decision.until >= m.valid_until:
                        expired.append((m, outbox.window_after_validity(m, decision.until)))
                    else:
                        deferred.append((m, decision.until, decision.text))
                else:
                    suppressed.append((m, decision.text))
                    reasons = self.summary.suppressed_reasons
                    reasons[decision.code] = reasons.get(decision.code, 0) + 1
            self.summary.suppressed += outbox.suppress(
                session, suppressed, claim_at, self.actor, self.policy_ref
            )
            self.summary.deferred += outbox.defer(session, deferred, claim_at, self.actor)
            self.summary.expired += outbox.expire(session, expired, claim_at, self.actor)
            for _, reason in expired:
                _count(self.summary.expired_reasons, reason)
            for channel in sorted({m.channel for m in to_send}):
                # A backend that cannot be built (missing credentials) fails the run
                # here, before anything is marked sending: the claim rolls back.
                self.backend(channel)
            sending = outbox.begin_sending(
                session,
                to_send,
                uuid.uuid4().hex,
                claim_at,
                owner=self.owner.ident,
                claimed_at=self.wall_clock(),
            )
        self.summary.claimed += len(due)
        return len(due), sending

    # -- 4. send ------------------------------------------------------------------
    async def attempt(self, m: DueMessage) -> _Outcome:
        """One provider call for ``m`` (on the send loop; no database here)."""
        if self.summary.halted is not None:
            return RetryOutcome(m, self.now(), f"not sent: {self.summary.halted}", refund=True)
        if m.valid_until is not None and self.now() >= m.valid_until:
            return ExpiredOutcome(m, outbox.past_validity(m))
        backend = self.backend(m.channel)
        limiter = self.limits.for_sender(m.channel)
        msg = self.outgoing(m)
        try:
            # Inside the try: a shared limiter that cannot be reached (a configuration
            # problem, NotificationError) halts the run with nothing sent.
            await limiter.acquire_async()
            result = await backend.send_async(msg)
        except OptedOutError as exc:
            return FailedOutcome(m, exc.code, exc.reason, backend.provider, opted_out=True)
        except PermanentSendError as exc:
            return FailedOutcome(m, exc.code, exc.reason, backend.provider)
        except TransientSendError as exc:
            if exc.retry_after:
                limiter.pause(exc.retry_after)
            if exc.maybe_accepted:
                # It may have reached the provider: ask before ever sending it again.
                since = (m.sending_at or self.now()) - RECONCILE_MARGIN
                try:
                    previous = await backend.find_previous_attempt_async(msg, since=since)
                except TransientSendError as again:
                    return _Unknown(m, f"{exc.reason}; and the provider cannot say: {again.reason}")
                if previous is not None:
                    return SentOutcome(
                        m,
                        previous.provider,
                        previous.provider_message_id,
                        self.now(),
                        via="reconcile",
                    )
            return self._transient(m, exc)
        except NotificationError as exc:  # configuration trouble: nothing was sent
            # Every later send would fail the same way: stop the run, keep the try.
            self.halt(str(exc))
            return RetryOutcome(m, self.now(), f"not sent: {exc}", refund=True)
        except Exception as exc:
            log.exception(
                "message %s to %s: unexpected error from %s",
                m.id,
                mask(m.to_phone),
                backend.provider,
            )
            return _Unknown(m, f"unexpected {type(exc).__name__} from the backend")
        return SentOutcome(m, result.provider, result.provider_message_id, self.now())

    def _transient(self, m: DueMessage, exc: TransientSendError) -> RetryOutcome | FailedOutcome:
        if m.attempts >= self.backoff.max_attempts:
            return _exhausted(m, exc.reason, exc.provider or None)
        delay = self.backoff.delay(m.attempts, exc.retry_after, self.rng)
        return RetryOutcome(m, self.now() + delay, f"attempt {m.attempts} failed: {exc.reason}")

    def send_all(
        self,
        sender: SendLoop,
        claim_next: Callable[[], list[DueMessage] | None],
    ) -> None:
        """Claim, send on the loop and write back until ``claim_next`` says there is no more.

        ``claim_next`` returns the next chunk to send (empty when every row it
        took was suppressed, deferred or expired) or ``None`` when nothing more is
        to be claimed. The next chunk is claimed while the current one is still
        sending (when no more than ``refill_at`` are in flight), so the loop and
        the rate limiter are never left idle during a claim; the loop keeps
        sending while this (the main) thread writes a flush back.
        """
        outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        feed = _Feed()
        done = sender.run(self._send_workers(feed, outcomes.put))
        buffer: list[_Outcome] = []
        in_flight = 0
        exhausted = False
        try:
            while True:
                if not exhausted and in_flight <= self.refill_at:
                    batch = claim_next()
                    if batch is None:
                        exhausted = True
                        sender.call(feed.close)
                    elif batch:
                        sender.call(feed.add, batch)
                        in_flight += len(batch)
                    continue
                if not in_flight:
                    break
                try:
                    buffer.append(outcomes.get(timeout=1.0))
                except queue.Empty:
                    if done.done():
                        done.result()  # the loop failed: raise rather than wait forever
                    continue
                in_flight -= 1
                if len(buffer) >= self.flush_every or not in_flight:
                    self.flush(buffer)
                    buffer = []
            self.flush(buffer)
        except BaseException:
            # A write-back failed (or we were interrupted): start no further send. Rows
            # whose outcome was not written stay 'sending' for reconciliation.
            done.cancel()
            raise
        done.result()

    async def _send_workers(self, feed: _Feed, put: Callable[[_Outcome], None]) -> None:
        """``dispatch_concurrency`` workers take messages in claim order from ``feed``."""

        async def worker() -> None:
            while (m := await feed.next()) is not None:
                try:
                    outcome = await self.attempt(m)
                except Exception as exc:  # a bug: leave the row in sending, never resend it
                    log.exception("message %s: dispatcher error while sending", m.id)
                    outcome = _Unknown(m, f"dispatcher error {type(exc).__name__}")
                put(outcome)

        await asyncio.gather(*(worker() for _ in range(self.settings.dispatch_concurrency)))

    async def close_backends(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()

    def flush(self, outcomes: Iterable[_Outcome]) -> None:
        sent: list[SentOutcome] = []
        retried: list[RetryOutcome] = []
        failed: list[FailedOutcome] = []
        expired: list[ExpiredOutcome] = []
        for o in outcomes:
            if isinstance(o, SentOutcome):
                sent.append(o)
            elif isinstance(o, RetryOutcome):
                retried.append(o)
            elif isinstance(o, FailedOutcome):
                failed.append(o)
            elif isinstance(o, ExpiredOutcome):
                expired.append(o)
            else:
                self.summary.unresolved += 1
                log.warning(
                    "message %s left in sending for reconciliation: %s", o.message.id, o.reason
                )
        if not (sent or retried or failed or expired):
            return
        with transaction(self.engine) as session:
            done: WriteBack = outbox.write_back(
                session,
                self.now(),
                self.actor,
                sent=sent,
                retried=retried,
                failed=failed,
                expired=expired,
                lead_time=self.lead_time,
            )
            # A heartbeat: the rows still in flight stay visibly ours.
            wall = self.wall_clock()
            if self.renewed_at is None or wall - self.renewed_at >= RENEW_EVERY:
                outbox.renew_claims(session, self.owner.ident, wall)
                self.renewed_at = wall
        self.summary.sent += done.sent
        self.summary.retried += done.retried
        self.summary.failed += done.failed
        self.summary.expired += done.expired
        for o in expired:
            _count(self.summary.expired_reasons, o.reason)
        self.summary.lost += len(done.lost)
        self.report()


def dispatch(
    engine: Engine,
    settings: NotificationConfig,
    policy: ContactPolicy,
    at: datetime,
    *,
    lead_time: timedelta,
    backends: Mapping[str, ChannelBackend] | None = None,
    limit: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], int] = time.monotonic_ns,
    reconcile_all: bool = False,
    reconcile_grace: timedelta = timedelta(minutes=5),
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    actor: Actor = DISPATCHER,
    limits: SenderLimits | None = None,
    chunk_size: int | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[DispatchSummary], None] | None = None,
    owner: process.Owner | None = None,
    owner_dead: Callable[[str], bool] = process.is_dead,
    due_by: datetime | None = None,
) -> DispatchSummary:
    """Send what is due at ``at``; see the module docstring for the steps.

    ``due_by`` sends only messages scheduled by then (an operator draining what was
    due at an earlier time); every judgement (send window, caps, validity) and every
    stamp still use the run's own instants, ``at`` onwards.

    ``settings`` is the typed notification config (built at the edge),
    ``policy`` the contact policy. ``backends`` maps channel → backend (default:
    from ``settings``).
    ``limit`` caps how many due rows this run claims. ``sleep``/``clock``
    (monotonic nanoseconds) drive the rate limiter and the run's notion of
    elapsed time. ``lead_time`` is how long after its pre-call notice a call task
    becomes ready (``RuleSet.precall_lead_time``); it has no default, so a caller
    can never silently drop the rule's value. Safe to run concurrently.

    ``wall_clock`` (aware UTC) stamps the claims' leases; ``owner`` names this
    run on them (a fresh :func:`crm.process.new_owner` by default) and
    ``owner_dead`` says whether another claim's owner is certainly gone.
    ``should_stop`` is asked after each chunk (a graceful shutdown finishes the
    chunk in flight, then returns); ``progress`` gets the running summary after
    each chunk's write-back.
    """
    own_owner = owner is None
    run_owner = owner or process.new_owner()
    try:
        return _dispatch_run(
            _Run(
                engine,
                settings,
                policy,
                at,
                backends,
                lead_time,
                sleep,
                clock,
                backoff or Backoff(),
                rng or random.Random(),
                actor,
                limits,
                chunk_size,
                wall_clock,
                run_owner,
                owner_dead,
            ),
            limit=limit,
            reconcile_all=reconcile_all,
            reconcile_grace=reconcile_grace,
            should_stop=should_stop,
            progress=progress,
            due_by=due_by,
        )
    finally:
        if own_owner:
            process.retire(run_owner)


def _dispatch_run(
    run: _Run,
    *,
    limit: int | None,
    reconcile_all: bool,
    reconcile_grace: timedelta,
    should_stop: Callable[[], bool] | None,
    progress: Callable[[DispatchSummary], None] | None,
    due_by: datetime | None = None,
) -> DispatchSummary:
    """The steps of one run (see the module docstring)."""
    run.progress = progress
    run.due_by = due_by
    with (
        ThreadPoolExecutor(
            max_workers=run.settings.dispatch_concurrency, thread_name_prefix="dispatch"
        ) as pool,
        SendLoop(run.settings.dispatch_concurrency, run.close_backends) as sender,
    ):
        run.reconcile(pool, reconcile_all, reconcile_grace)
        run.expire_overdue()
        left = [limit]
        claims = [0]

        def claim_next() -> list[DueMessage] | None:
            remaining = left[0]
            if run.summary.halted is not None or (remaining is not None and remaining <= 0):
                return None
            if claims[0] and should_stop is not None and should_stop():
                run.summary.stopped = True  # asked to stop: the chunks in flight are done
                return None
            claims[0] += 1
            n = run.chunk if remaining is None else min(run.chunk, remaining)
            taken, to_send = run.claim(n)
            if not taken:
                return None
            if remaining is not None:
                left[0] = remaining - taken
            run.report()
            return to_send

        run.send_all(sender, claim_next)
    with transaction(run.engine) as session:
        run.summary.tasks_ready += tasks.promote_ready(session, run.now(), run.actor)
    run.summary.finished_at = run.now()
    log.info("dispatch finished: %s", {k: v for k, v in run.summary.as_dict().items() if v})
    return run.summary
