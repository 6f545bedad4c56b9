"""Random faults for the fake Twilio, at chosen rates, reproducible from a seed (the fault matrix).

Set ``fake.chaos = Chaos(...)`` and every API request (creating a message, listing
messages) may, at its rate:

- answer **429** (with ``Retry-After``), **500** or **503** without creating anything;
- **reset the connection** before creating anything, or after creating the message
  (the client sees an error, the provider has the message: the ambiguous case);
- **answer too late**: create the message, then hold the answer longer than the
  client's timeout;
- report **early**: create the message and post its status reports before answering
  (they reach the webhook before the dispatcher has written the send back).

:meth:`Chaos.fail_numbers` makes chosen numbers fail permanently (Twilio error codes
per number), :meth:`Chaos.undeliverable` chosen numbers end ``undelivered``. Status
callbacks are not posted as messages are created: :meth:`Chaos.report` posts, for
every message the fake has accepted since, its ``sent`` and final report — some
**late** (held for a later call), some **duplicated**, some **out of order** (final
before ``sent``), in shuffled order and several at once, signed, to the webhook.

``injected`` counts every fault by kind. Nothing here reads the clock but the
"too late" wait, which is real time on purpose (it is what the client's timeout
measures).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notifications.fake_twilio.server import API, CallbackResult, json_reply, twilio_error
from notifications.fake_twilio.web import RESET, Reply

if TYPE_CHECKING:
    from notifications.fake_twilio.server import FakeTwilio, RecordedRequest

HTTP_FAULTS = ("http_429", "http_500", "http_503")
CONNECTION_FAULTS = ("reset_before", "reset_after", "too_late")


@dataclass(frozen=True)
class ChaosRates:
    """Probability of each fault per API request, and per status report."""

    http_429: float = 0.05
    http_500: float = 0.04
    http_503: float = 0.04
    reset_before: float = 0.03
    reset_after: float = 0.03
    too_late: float = 0.03
    late: float = 0.2
    """A report held back to a later :meth:`Chaos.report` call."""
    duplicate: float = 0.2
    """A report posted twice."""
    out_of_order: float = 0.3
    """A message's final report posted before its ``sent``."""
    early: float = 0.15
    """A message's reports posted before the create request is answered (they beat
    the dispatcher's own write-back, and find the row through the callback URL)."""

    def __post_init__(self) -> None:
        total = sum(getattr(self, k) for k in (*HTTP_FAULTS, *CONNECTION_FAULTS))
        if not 0 <= total <= 1:
            raise ValueError(f"request fault rates must add up to at most 1, not {total}")


@dataclass
class _Report:
    sid: str
    status: str
    error_code: int | None
    round_due: int


@dataclass
class Chaos:
    """The fault injector (see the module docstring); thread-safe."""

    seed: int
    rates: ChaosRates = field(default_factory=ChaosRates)
    too_late_seconds: float = 1.0
    """How long a "too late" answer is held: longer than the client's timeout."""
    retry_after: float = 1.0
    injected: Counter[str] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)
    """What the webhook answered to the reports posted."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._reported: set[str] = set()
        self._pending: list[_Report] = []
        self._undeliverable: dict[str, int] = {}
        self._round = 0

    # -- set-up ------------------------------------------------------------------
    def fail_numbers(self, fake: FakeTwilio, numbers: Iterable[str], codes: Iterable[int]) -> None:
        """Each number fails permanently with one of ``codes`` (cycled), HTTP 400."""
        pool = list(codes)
        for i, number in enumerate(sorted(numbers)):
            fake.fail_number(number, pool[i % len(pool)])
            self.injected["permanent_number"] += 1

    def undeliverable(self, numbers: Iterable[str], code: int = 30003) -> None:
        for number in numbers:
            self._undeliverable[number] = code
            self.injected["undeliverable_number"] += 1

    def final_status(self, to: str) -> str:
        """The last word the provider reports for a message to ``to``."""
        return "undelivered" if to in self._undeliverable else "delivered"

    def release(self) -> None:
        """Answer every held "too late" response now (on shutdown)."""
        self._released.set()

    # -- the server hook -----------------------------------------------------------
    def intercept(
        self,
        fake: FakeTwilio,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        recorded: RecordedRequest,
    ) -> Reply | None:
        """Maybe inject a fault into this authorised request: the answer, or None to go on.

        Runs in a thread of its own (``FakeTwilio.may_block``), so holding an answer
        blocks only its connection.
        """
        if not path.startswith(API):
            return None
        kind = self._draw()
        if kind is None:
            return self._early(fake, method, path, query, form, recorded)
        self._count(kind)
        if kind in HTTP_FAULTS:
            status = int(kind[-3:])
            headers = {"Retry-After": str(int(self.retry_after))} if status == 429 else {}
            code = 20429 if status == 429 else 20500
            recorded.status = status
            return json_reply(status, twilio_error(code, status, "chaos"), headers)
        if kind == "reset_before":
            recorded.status = 0
            return RESET
        status, body, extra = fake.handle(method, path, query, form)  # created
        recorded.status = status
        if kind == "reset_after":
            return RESET
        self._released.wait(self.too_late_seconds)
        return json_reply(status, body, extra)  # the client stopped listening

    def _early(
        self,
        fake: FakeTwilio,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        recorded: RecordedRequest,
    ) -> Reply | None:
        """Maybe create the message and post its reports before answering the create."""
        if method != "POST" or not path.endswith("/Messages.json"):
            return None
        with self._lock:
            early = self._rng.random() < self.rates.early
        if not early:
            return None
        status, body, extra = fake.handle(method, path, query, form)
        recorded.status = status
        if status == 201:
            record = fake.message(body["sid"])
            with self._lock:
                self._reported.add(record["sid"])
                reports = self._reports_for(record, may_be_late=False)
                self.injected["report_early"] += len(reports)
            results = [self._post(fake, r) for r in reports]
            with self._lock:
                self.answers.update(r.status for r in results)
                self.injected["report_posted"] += len(results)
        return json_reply(status, body, extra)

    def _draw(self) -> str | None:
        with self._lock:
            r = self._rng.random()
        for kind in (*HTTP_FAULTS, *CONNECTION_FAULTS):
            rate = getattr(self.rates, kind)
            if r < rate:
                return kind
            r -= rate
        return None

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.injected[kind] += n

    # -- status callbacks ------------------------------------------------------------
    def report(self, fake: FakeTwilio, *, everything: bool = False, workers: int = 4) -> None:
        """Post the reports due now for the messages accepted so far (see the module doc).

        ``everything`` posts every held report too (the end of a test).
        """
        with self._lock:
            self._round += 1
            for record in fake.messages:
                if record["sid"] in self._reported or not record.get("_status_callback"):
                    continue
                self._reported.add(record["sid"])
                self._pending.extend(self._reports_for(record))
            due = [r for r in self._pending if everything or r.round_due <= self._round]
            self._pending = [r for r in self._pending if r not in due]
            self._rng.shuffle(due)
        # Several at once: reports of one message race each other at the webhook.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chaos-cb") as pool:
            results = list(pool.map(lambda r: self._post(fake, r), due))
        with self._lock:
            self.answers.update(r.status for r in results)
            self.injected["report_posted"] += len(results)

    def _reports_for(self, record: dict[str, Any], *, may_be_late: bool = True) -> list[_Report]:
        code = self._undeliverable.get(record["to"])
        final = ("delivered", None) if code is None else ("undelivered", code)
        reports = [
            _Report(record["sid"], "sent", None, self._round),
            _Report(record["sid"], final[0], final[1], self._round),
        ]
        if self._rng.random() < self.rates.out_of_order:
            reports.reverse()
            self.injected["report_out_of_order"] += 1
        for report in list(reports):
            if self._rng.random() < self.rates.duplicate:
                reports.append(dataclasses.replace(report))
                self.injected["report_duplicated"] += 1
        for report in reports if may_be_late else ():
            if self._rng.random() < self.rates.late:
                report.round_due = self._round + self._rng.randint(1, 3)
                self.injected["report_late"] += 1
        return reports

    @staticmethod
    def _post(fake: FakeTwilio, report: _Report) -> CallbackResult:
        url, params, headers = fake.status_callback(report.sid, report.status, report.error_code)
        return fake.post(url, params, headers)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
