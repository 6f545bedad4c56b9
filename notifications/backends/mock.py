"""Mock SMS and voice backends: the default, so the demo and the tests send nothing real.

They go through the same pipeline as Twilio (:class:`~notifications.base.ChannelBackend`),
record every accepted message with a provider-style id (``SM``/``CA`` + 32 hex),
simulate delivery reports, and can be told to fail:

* ``fail_number(to, code)``: sends to ``to`` fail permanently with that code
  (``21610`` raises :class:`~notifications.errors.OptedOutError`);
* ``undeliverable(to, code)``: sends succeed, the delivery report says undelivered;
* ``transient_rate`` / ``timeout_rate`` / ``accepted_timeout_rate``: a share of
  sends errors, times out before the provider got it, or times out *after* the
  provider accepted it (the ambiguous case reconciliation exists for), drawn
  from a seeded RNG;
* ``fail_next(n, kind)``: the next ``n`` sends fail that way, deterministically.

With a store path (setting ``mock_store`` / env ``VIPCARE_MOCK_STORE``) every
accepted send is appended to a JSON-lines file *before* ``send`` returns, so a
second process sees the sends of one that was SIGKILLed.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from crm.phones import mask
from notifications.base import (
    FINAL_STATUSES,
    NO_RETRY,
    STATUSES,
    Channel,
    ChannelBackend,
    DeliveryReport,
    OutgoingMessage,
    RetryPolicy,
    SendResult,
)
from notifications.errors import (
    ERROR_CODES,
    NotificationError,
    OptedOutError,
    PermanentSendError,
    TransientSendError,
    describe_code,
)

try:  # POSIX: serialise appends from several processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FailureKind = Literal["error", "timeout", "accepted_timeout", "rate_limited"]
OPTED_OUT_CODE = "21610"


@dataclass
class MockRecord:
    """One message the mock provider accepted, as a provider would keep it."""

    sid: str
    channel: str
    message_id: int
    attempt_id: str
    to: str
    body: str
    locale: str
    status: str
    error_code: str | None = None
    status_callback: str | None = None

    def result(self) -> SendResult:
        return SendResult(
            provider="mock",
            provider_message_id=self.sid,
            status=self.status,
            raw=asdict(self),
            error_code=self.error_code,
        )


class MockStore:
    """The mock provider's memory: a list in this process, or a shared JSON-lines file.

    File lines are ``{"op": "add", ...record}`` or ``{"op": "status", "sid", "status",
    "error_code"}``; replaying them in order gives the current state. A torn last
    line (process killed mid-write) is ignored.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._records: dict[str, MockRecord] = {}

    def add(self, record: MockRecord) -> None:
        with self._lock:
            if self.path is None:
                self._records[record.sid] = record
            else:
                self._append({"op": "add", **asdict(record)})

    def set_status(self, sid: str, status: str, error_code: str | None = None) -> MockRecord:
        with self._lock:
            records = self._load()
            if sid not in records:
                raise NotificationError(f"mock provider has no message {sid}")
            record = records[sid]
            record.status = status
            record.error_code = error_code
            if self.path is not None:
                self._append(
                    {"op": "status", "sid": sid, "status": status, "error_code": error_code}
                )
            return record

    def records(self) -> list[MockRecord]:
        """Every accepted message, oldest first (re-read from the file if there is one)."""
        with self._lock:
            return list(self._load().values())

    def _load(self) -> dict[str, MockRecord]:
        if self.path is None:
            return self._records
        out: dict[str, MockRecord] = {}
        if not self.path.exists():
            return out
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn write of a killed process: it never returned
                op = entry.pop("op", None)
                if op == "add":
                    out[entry["sid"]] = MockRecord(**entry)
                elif op == "status" and entry.get("sid") in out:
                    out[entry["sid"]].status = entry["status"]
                    out[entry["sid"]].error_code = entry.get("error_code")
        return out

    def _append(self, entry: dict[str, Any]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            with _file_lock(fd):
                os.write(fd, line)  # one write: visible to other processes once it returns
        finally:
            os.close(fd)


@contextmanager
def _file_lock(fd: int) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class MockBackend(ChannelBackend):
    """Shared behaviour of the mock SMS and voice backends."""

    provider: ClassVar[str] = "mock"
    sid_prefix: ClassVar[str] = "SM"

    def __init__(
        self,
        *,
        store: MockStore | None = None,
        store_path: Path | str | None = None,
        seed: int | None = 0,
        transient_rate: float = 0.0,
        timeout_rate: float = 0.0,
        accepted_timeout_rate: float = 0.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # The mock does not retry in-call by default: tests of the dispatcher's
        # retry see every injected failure.
        super().__init__(
            retry=retry if retry is not None else NO_RETRY,
            sleep=sleep if sleep is not None else _no_sleep,
            rng=rng,
        )
        if store is not None and store_path is not None:
            raise ValueError("give either store or store_path, not both")
        self.store = store if store is not None else MockStore(store_path)
        for name, rate in (
            ("transient_rate", transient_rate),
            ("timeout_rate", timeout_rate),
            ("accepted_timeout_rate", accepted_timeout_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        self.transient_rate = transient_rate
        self.timeout_rate = timeout_rate
        self.accepted_timeout_rate = accepted_timeout_rate
        self.failure_rng = random.Random(seed)
        self._failing: dict[str, str] = {}
        self._undeliverable: dict[str, str] = {}
        self._next_failures: deque[FailureKind] = deque()
        self._lock = threading.Lock()
        self.calls = 0
        """How many times the provider was called (including failed calls)."""

    # -- failure injection ----------------------------------------------------
    def fail_number(self, to: str, code: str | int = "21211") -> None:
        """Every send to ``to`` fails permanently with provider error ``code``."""
        self._failing[to] = str(code)

    def undeliverable(self, to: str, code: str | int = "30003") -> None:
        """Sends to ``to`` are accepted, but their delivery report is a failure with ``code``."""
        self._undeliverable[to] = str(code)

    def fail_next(self, count: int = 1, kind: FailureKind = "error") -> None:
        """The next ``count`` sends fail transiently in the given way."""
        with self._lock:
            self._next_failures.extend([kind] * count)

    # -- inspection -----------------------------------------------------------
    @property
    def sent(self) -> list[MockRecord]:
        """Every message this provider accepted on this channel, oldest first."""
        return [r for r in self.store.records() if r.channel == self.channel]

    def sent_to(self, to: str) -> list[MockRecord]:
        return [r for r in self.sent if r.to == to]

    # -- delivery reports -----------------------------------------------------
    def report(self, sid: str, status: str, error_code: str | int | None = None) -> DeliveryReport:
        """Record a delivery report for ``sid`` and return it (for the outbox to apply)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        code = None if error_code is None else str(error_code)
        record = self.store.set_status(sid, status, code)
        return DeliveryReport(
            provider_message_id=sid,
            status=status,
            error_code=code,
            reason=describe_code(code) if code else None,
            raw={"sid": sid, "to": record.to, "status": status, "error_code": code},
        )

    def simulate_delivery(self, default: str = "delivered") -> list[DeliveryReport]:
        """Settle pending messages: ``default``, or the failure set by :meth:`undeliverable`."""
        reports = []
        for record in self.sent:
            if record.status in FINAL_STATUSES:
                continue
            code = self._undeliverable.get(record.to)
            if code is None:
                reports.append(self.report(record.sid, default))
            else:
                status = ERROR_CODES.get(code, ("undelivered", ""))[0]
                reports.append(self.report(record.sid, status, code))
        return reports

    # -- hooks ----------------------------------------------------------------
    def _send(self, msg: OutgoingMessage) -> SendResult:
        with self._lock:
            self.calls += 1
            kind: FailureKind | None = (
                self._next_failures.popleft() if self._next_failures else None
            )
            if kind is None:
                draw = self.failure_rng.random()
                if draw < self.transient_rate:
                    kind = "error"
                elif draw < self.transient_rate + self.timeout_rate:
                    kind = "timeout"
                elif draw < self.transient_rate + self.timeout_rate + self.accepted_timeout_rate:
                    kind = "accepted_timeout"
        code = self._failing.get(msg.to)
        if code is not None:
            reason = describe_code(code)
            response = {"code": int(code) if code.isdigit() else code, "message": reason}
            error = OptedOutError if code == OPTED_OUT_CODE else PermanentSendError
            raise error(code, f"{reason} ({mask(msg.to)})", response, provider=self.provider)
        if kind == "error":
            raise TransientSendError(
                "mock provider error (HTTP 500)",
                maybe_accepted=False,
                provider=self.provider,
                provider_response={"status": 500, "message": "injected error"},
            )
        if kind == "rate_limited":
            raise TransientSendError(
                "mock provider rate limit (HTTP 429)",
                retry_after=1.0,
                provider=self.provider,
                provider_response={"status": 429, "code": 20429, "message": "Too Many Requests"},
            )
        if kind == "timeout":
            raise TransientSendError(
                "mock provider timed out before accepting", provider=self.provider
            )
        record = MockRecord(
            sid=self.sid_prefix + uuid.uuid4().hex,
            channel=self.channel,
            message_id=msg.message_id,
            attempt_id=msg.attempt_id,
            to=msg.to,
            body=msg.body,
            locale=msg.locale,
            status="queued",
            status_callback=msg.status_callback,
        )
        self.store.add(record)
        if kind == "accepted_timeout":
            raise TransientSendError(
                "mock provider timed out after accepting the message",
                maybe_accepted=True,
                provider=self.provider,
            )
        return record.result()

    def _find_previous(self, msg: OutgoingMessage, since: datetime | None) -> SendResult | None:
        # The mock keeps the attempt id, so the match is exact (Twilio's is not).
        for record in reversed(self.store.records()):
            if record.attempt_id == msg.attempt_id and record.channel == msg.channel:
                return record.result()
        return None


class MockSMSBackend(MockBackend):
    """Mock SMS: ``SM…`` ids."""

    channel: Channel = "sms"
    sid_prefix: ClassVar[str] = "SM"


class MockVoiceBackend(MockBackend):
    """Mock voice notices: ``CA…`` ids."""

    channel: Channel = "voice"
    sid_prefix: ClassVar[str] = "CA"


def _no_sleep(_seconds: float) -> None:
    """The mock has nothing to wait for."""
