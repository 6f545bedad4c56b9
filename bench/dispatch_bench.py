"""Benchmark: dispatch N queued messages through the real Twilio adapter to the local fake.

    python -m bench.dispatch_bench --messages 100000 [--rate 500] [--database-url URL]

One run, in this order:

1. **Seed** N customers and one queued, due SMS each (service category, every
   customer's send window open at the dispatch instant), in bulk.
2. **Start the fake Twilio** in its own process (``python -m notifications.fake_twilio``),
   as an outside provider would be.
3. **Baseline: the fake alone.** A raw load generator (pre-built HTTP/1.1 requests
   on keep-alive connections, no client library) posts the same number of
   creates; its rate is what the fake can take on this machine *now*, so the
   dispatch figure can be read against it. The fake is then reset.
4. **Dispatch** with :func:`notifications.dispatcher.dispatch` and the real
   ``TwilioSMSBackend`` (the unmodified ``twilio`` client, ``client.api.base_url``
   pointed at the fake), unlimited or at ``rate``.
5. **Check** that every message is ``sent`` exactly once: the outbox has N sent
   rows and nothing left in ``sending``; the fake holds N messages to N
   distinct numbers.

Figures: ``achieved_rate`` is sent messages over the whole dispatch (claims,
write-backs, audit and all); with a rate, ``send_rate`` is measured between the
first and the last send start the limiter granted, and ``max_in_any_second``
is the most starts in any one-second window (never above the rate).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, select

from crm.db import make_engine, transaction
from crm.models import Customer, OutboundMessage
from crm.schema import upgrade
from notifications.config import NotificationConfig
from notifications.dispatcher import dispatch
from notifications.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from notifications.ratelimit import RateLimiter, SenderLimits
from rules import load_rules

RULES = Path(__file__).resolve().parent.parent / "rules"
AT = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
"""The dispatch instant: 11:00 in Asia/Shanghai, inside the shipped 09:00-20:00 window."""
FROM_NUMBER = "+15005550006"
CONCURRENCY = 64
SEED_BATCH = 10_000


class BenchError(Exception):
    """The benchmark could not run or its result is wrong (one line, no traceback)."""


# -- seeding ---------------------------------------------------------------------
def seed(engine: Engine, messages: int) -> None:
    """N customers and one queued due SMS each, inserted in batches through the driver."""
    with transaction(engine) as session:
        queued = session.scalar(
            select(func.count())
            .select_from(OutboundMessage)
            .where(OutboundMessage.status == "queued")
        )
    if queued:
        raise BenchError(
            f"the outbox already holds {queued} queued messages; use an empty database"
        )
    token = uuid.uuid4().hex[:8]
    created = AT - timedelta(hours=1)
    done = 0
    while done < messages:
        n = min(SEED_BATCH, messages - done)
        refs = [f"bench-{token}-{done + i}" for i in range(n)]
        with transaction(engine) as session:
            session.execute(
                insert(Customer),
                [
                    {
                        "external_id": ref,
                        "name": f"Bench {ref}",
                        "phone": _phone(done + i),
                        "locale": "zh-CN",
                        "timezone": "Asia/Shanghai",
                        "tier": "gold",
                        "tier_rank": 1,
                    }
                    for i, ref in enumerate(refs)
                ],
            )
            ids = dict(
                session.execute(
                    select(Customer.external_id, Customer.id).where(Customer.external_id.in_(refs))
                )
                .tuples()
                .all()
            )
            session.execute(
                insert(OutboundMessage),
                [
                    {
                        "customer_id": ids[ref],
                        "channel": "sms",
                        "category": "service",
                        "template": "bench_notice",
                        "journey": "bench",
                        "occurrence": f"bench:{token}",
                        "locale": "zh-CN",
                        "to_phone": _phone(done + i),
                        "body": "尊敬的客户，您的专属客户经理将于近日与您联系。",
                        "scheduled_for": created,
                        "valid_until": AT + timedelta(days=1),
                        "status": "queued",
                        "attempts": 0,
                        "created_at": created,
                        "updated_at": created,
                    }
                    for i, ref in enumerate(refs)
                ],
            )
        done += n


def _phone(n: int) -> str:
    return f"+86139{n:08d}"


# -- the fake, in its own process ----------------------------------------------------
class FakeProcess:
    """``python -m notifications.fake_twilio`` on a free port, stopped on exit."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> FakeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "notifications.fake_twilio", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("fake Twilio listening on "):
            raise BenchError(f"the fake Twilio did not start: {first.strip()!r}")
        self.base_url = first.rsplit(" ", 1)[1].strip()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def cpu_seconds(self) -> float | None:
        """CPU time the fake's process has used so far (Linux ``/proc``; None elsewhere)."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def control(self, action: str, data: dict[str, str] | None = None) -> Any:
        body = urlencode(data or {}).encode() if data is not None else None
        request = urllib.request.Request(f"{self.base_url}/_fake/{action}", data=body)
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())


def fake_alone_rate(base_url: str, requests: int, connections: int = CONCURRENCY) -> float:
    """Creates per second the fake answers to a raw load generator (pre-built requests)."""
    return asyncio.run(_load(base_url, requests, connections))


async def _load(base_url: str, requests: int, connections: int) -> float:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    auth = base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode()).decode()
    path = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    left = iter(range(requests))

    def request(n: int) -> bytes:
        form = urlencode(
            {
                "To": f"+86137{n:08d}",
                "From": FROM_NUMBER,
                "Body": "尊敬的客户，您的专属客户经理将于近日与您联系。",
                "StatusCallback": f"https://care.example.com/twilio/status?message_id={n}",
                "ValidityPeriod": "36000",
            }
        ).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
            f"Content-Length: {len(form)}\r\n\r\n"
        )
        return head.encode() + form

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in left:
                writer.write(request(n))
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if not status.startswith(b"HTTP/1.1 201"):
                    raise BenchError(f"the fake answered {status.decode().strip()!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return requests / (time.perf_counter() - start)


# -- dispatch --------------------------------------------------------------------------
class _StampingLimiter(RateLimiter):
    """Keeps every slot it hands out (cheap: only ``reserve`` is extended)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.slots: list[int] = []

    def reserve(self) -> int:
        slot = super().reserve()
        self.slots.append(slot)
        return slot


class _StampingLimits(SenderLimits):
    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.sms = _StampingLimiter(rate)

    def for_sender(self, sender: str) -> RateLimiter:
        if sender != "sms":
            raise BenchError(f"the benchmark sends SMS only, not {sender}")
        return self.sms


def max_in_any_second(slots: list[int]) -> int:
    ordered = sorted(slots)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + 1_000_000_000:
            j += 1
        best = max(best, j - i)
    return best


def measure_dispatch(
    database_url: str,
    messages: int,
    rate: float | None,
    workdir: Path,
    *,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    """Seed, baseline the fake alone, dispatch through Twilio, check; returns the figures.

    ``rate`` None: unlimited. ``workdir`` holds nothing but may be used for scratch files.
    """
    if messages < 1:
        raise BenchError("messages must be at least 1")
    workdir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        t = time.perf_counter()
        seed(engine, messages)
        seed_seconds = time.perf_counter() - t
        ruleset = load_rules(RULES)
        target = rate if rate is not None else math.inf
        limits = _StampingLimits(target)
        with FakeProcess() as fake:
            fake_cpu0 = fake.cpu_seconds()
            baseline = fake_alone_rate(fake.base_url, messages)
            fake_cpu1 = fake.cpu_seconds()
            fake.control("reset", {})
            settings = NotificationConfig(
                sms_backend="twilio",
                voice_backend="twilio",
                send_rate_per_second=target,
                dispatch_concurrency=concurrency,
                batch_size=5000,
                public_url="https://care.example.com",
                twilio_api_base=fake.base_url,
                twilio_account_sid=SecretStr(DEFAULT_ACCOUNT_SID),
                twilio_auth_token=SecretStr(DEFAULT_AUTH_TOKEN),
                twilio_from_number=FROM_NUMBER,
            )
            fake_cpu2 = fake.cpu_seconds()
            cpu = time.process_time()
            t = time.perf_counter()
            summary = dispatch(
                engine,
                settings,
                ruleset.contact_policy,
                AT,
                lead_time=ruleset.precall_lead_time,
                limits=limits,
                wall_clock=lambda: datetime.now(UTC),
            )
            seconds = time.perf_counter() - t
            cpu = time.process_time() - cpu
            fake_cpu3 = fake.cpu_seconds()
            at_fake = fake.control("messages")
        _check(engine, messages, summary.sent, at_fake)
    finally:
        engine.dispose()
    slots = limits.sms.slots
    span = (max(slots) - min(slots)) / 1e9 if len(slots) > 1 else 0.0
    send_rate = (len(slots) - 1) / span if span else None
    achieved = summary.sent / seconds
    result: dict[str, Any] = {
        "database": database_url.split(":", 1)[0].split("+", 1)[0],
        "messages": messages,
        "seconds": round(seconds, 2),
        "achieved_rate": round(achieved, 1),
        "target_rate": rate,
        "rate_error_pct": None if rate is None else round((achieved - rate) / rate * 100, 2),
        "send_rate": None if send_rate is None else round(send_rate, 2),
        "send_rate_error_pct": (
            None if rate is None or send_rate is None else round((send_rate - rate) / rate * 100, 3)
        ),
        "max_in_any_second": max_in_any_second(slots),
        "sent": summary.sent,
        "failed": summary.failed,
        "concurrency": concurrency,
        "fake_alone_rate": round(baseline, 1),
        "vs_fake_alone": round(achieved / baseline, 3),
        "seed_seconds": round(seed_seconds, 2),
        # CPU per message: robust on a busy machine, where wall-clock rates swing.
        "dispatch_cpu_us_per_message": round(cpu / messages * 1e6),
        "fake_cpu_us_per_message": _per_message(fake_cpu2, fake_cpu3, messages),
        "fake_alone_cpu_us_per_request": _per_message(fake_cpu0, fake_cpu1, messages),
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    return result


def _per_message(start: float | None, end: float | None, n: int) -> int | None:
    return None if start is None or end is None else round((end - start) / n * 1e6)


def _check(engine: Engine, messages: int, sent: int, at_fake: list[dict[str, Any]]) -> None:
    """Every message sent exactly once: in the outbox and at the provider."""
    with transaction(engine) as session:
        counts = dict(
            session.execute(
                select(OutboundMessage.status, func.count())
                .where(OutboundMessage.journey == "bench")
                .group_by(OutboundMessage.status)
            )
            .tuples()
            .all()
        )
    if sent != messages or counts.get("sending") or counts.get("queued"):
        raise BenchError(f"not every message was sent once: summary sent={sent}, outbox {counts}")
    numbers = [m["to"] for m in at_fake]
    if len(numbers) != messages or len(set(numbers)) != messages:
        raise BenchError(
            f"the fake holds {len(numbers)} messages to {len(set(numbers))} numbers, "
            f"expected {messages} to {messages}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second; unlimited when absent"
    )
    parser.add_argument(
        "--database-url", default="", help="default: a new SQLite file in a temp dir"
    )
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vipcare-dispatch-bench-"))
    url = args.database_url or f"sqlite:///{workdir / 'dispatch.db'}"
    try:
        figures = measure_dispatch(
            url, args.messages, args.rate, workdir, concurrency=args.concurrency
        )
    except (BenchError, ValueError, OSError) as exc:
        sys.stderr.write(f"dispatch bench: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            sys.stdout.write(f"{key:<{width}}  {value}\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    raise SystemExit(main())
