"""Fault matrix: a whole care day dispatched through a misbehaving Twilio, on SQLite and PostgreSQL.

The real pieces: the journeys queue the day; the dispatcher sends through the
production Twilio adapter (the unmodified ``twilio`` client) to the fake Twilio
over HTTP; status reports are posted, signed, to the webhook app served by
uvicorn. The fake's chaos (``notifications/fake_twilio/chaos.py``) injects, per
request, 429 / 500 / 503, connection resets before and after creating the
message, and answers slower than the client's timeout (about 22 % of requests
in all); some numbers fail permanently (invalid, landline, unsubscribed), some
end undelivered; reports come late, twice and out of order, several at once.

Hourly dispatch rounds run until nothing is left to send. Then: the invariants
hold; the provider accepted each message at most once; every report the
provider made reached its row (the final state is the provider's); retries
stayed bounded (attempts per message at most ``Backoff.max_attempts``, create
requests at most that times the adapter's in-call tries). The seed is printed;
``VIPCARE_FAULT_SEED=N`` repeats a run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from plugins.fake_twilio import twilio_config
from sqlalchemy import Engine, select
from test_dispatcher_support import FakeClock

from crm.models import OutboundMessage
from notifications.backends import get_backend
from notifications.base import RetryPolicy
from notifications.config import NotificationConfig
from notifications.dispatcher import Backoff, dispatch
from notifications.fake_twilio import FakeTwilio
from notifications.fake_twilio.chaos import Chaos, ChaosRates
from notifications.webhooks import create_app
from tests.crash_driver import DayPlan, warm
from tests.crash_driver import run as run_day
from tests.harness_day import INTERVAL, ROUNDS, balances, plan, seed_day
from tests.invariants import assert_invariants
from tests.served_app import LazyApp, served

CLIENT_TIMEOUT = 0.4
"""The adapter's HTTP timeout here; the chaos holds "too late" answers for 1 s."""
MAX_ROUNDS = 48
PERMANENT = (21211, 21614, 21610)
"""Invalid number, not a mobile, unsubscribed at the carrier."""


def _seed() -> int:
    found = os.environ.get("VIPCARE_FAULT_SEED")
    return int(found) if found else random.SystemRandom().randrange(2**31)


def _rates() -> ChaosRates:
    """The default rates, times ``VIPCARE_FAULT_SCALE`` (e.g. 3 for an on-demand storm)."""
    scale = float(os.environ.get("VIPCARE_FAULT_SCALE", "1"))
    base = ChaosRates()
    request_faults = ("http_429", "http_500", "http_503", "reset_before", "reset_after", "too_late")
    return dataclasses.replace(
        base, **{k: min(0.16, getattr(base, k) * scale) for k in request_faults}
    )


class Wired:
    """The fake Twilio with its chaos, the served webhooks, and the clock they share."""

    def __init__(self, fake: FakeTwilio, settings: NotificationConfig) -> None:
        self.fake = fake
        self.settings = settings
        self.now = ROUNDS[0]


@contextmanager
def wired(engine: Engine, chaos: Chaos) -> Iterator[Wired]:
    lazy = LazyApp()
    holder: dict[str, Wired] = {}
    fake = FakeTwilio(clock=lambda: holder["w"].now)
    fake.chaos = chaos
    with fake, served(lazy) as public_url:
        settings = twilio_config(
            fake, public_url, send_rate_per_second=1000.0, dispatch_concurrency=4, batch_size=100
        )
        holder["w"] = Wired(fake, settings)
        lazy.app = create_app(
            engine,
            settings,
            clock=lambda: holder["w"].now + timedelta(seconds=30),
            lead_time=warm().precall_lead_time,
        )
        try:
            yield holder["w"]
        finally:
            chaos.release()


def _messages(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(OutboundMessage.__table__)).all())


def _pick(rng: random.Random, phones: list[str], share: float) -> list[str]:
    return rng.sample(phones, max(1, round(len(phones) * share)))


def test_a_day_through_a_faulty_provider_keeps_every_invariant(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    seed = _seed()
    print(f"\nfault matrix seed {seed} (repeat with VIPCARE_FAULT_SEED={seed})")
    started = time.monotonic()
    rules = warm()
    seed_day(engine)
    openings = balances(engine)
    journeys_only = DayPlan(**{**plan(db_url, tmp_path).__dict__, "rounds": ()})
    run_day(journeys_only, ruleset=rules)

    rng = random.Random(seed)
    phones = sorted({m.to_phone for m in _messages(engine)})
    chaos = Chaos(seed, _rates(), too_late_seconds=1.0)
    clock = FakeClock()
    with wired(engine, chaos) as w:
        failing = _pick(rng, phones, 0.12)
        chaos.fail_numbers(w.fake, failing, PERMANENT)
        chaos.undeliverable(_pick(rng, [p for p in phones if p not in failing], 0.10))
        backend = get_backend(
            w.settings, "sms", timeout=CLIENT_TIMEOUT, sleep=clock.sleep, rng=random.Random(seed)
        )
        at = ROUNDS[0]
        rounds = 0
        for rounds in range(1, MAX_ROUNDS + 1):
            at = ROUNDS[0] + (rounds - 1) * INTERVAL
            w.now = at
            dispatch(
                engine,
                w.settings,
                rules.contact_policy,
                at,
                lead_time=rules.precall_lead_time,
                backends={"sms": backend},
                sleep=clock.sleep,
                clock=clock,
                rng=random.Random(seed + rounds),
            )
            chaos.report(w.fake)
            open_rows = [m for m in _messages(engine) if m.status in ("queued", "sending")]
            if rounds >= len(ROUNDS) and not open_rows and not chaos.pending:
                break
        chaos.report(w.fake, everything=True)
        accepted = w.fake.messages
        creates = Counter(
            (r.value("To"), r.value("Body")) for r in w.fake.api_requests("POST", "Messages.json")
        )
        answered = Counter(r.status for r in w.fake.api_requests())

    rows = _messages(engine)
    by_sid = {m.provider_message_id: m for m in rows if m.provider_message_id}
    # The provider accepted each message at most once, and each it accepted is ours.
    per_message = Counter((m["to"], m["body"]) for m in accepted)
    duplicates = sum(n - 1 for n in per_message.values() if n > 1)
    assert duplicates == 0, [k for k, n in per_message.items() if n > 1]
    assert all(m["sid"] in by_sid for m in accepted), "an accepted message is unknown to us"
    # Every report reached its row: the final status is the provider's.
    wrong = {
        m["sid"]: (chaos.final_status(m["to"]), by_sid[m["sid"]].status)
        for m in accepted
        if by_sid[m["sid"]].status != chaos.final_status(m["to"])
    }
    assert not wrong, f"reports lost: {wrong}"
    assert 500 not in chaos.answers and set(chaos.answers) <= {200}, chaos.answers
    # Retries stay bounded.
    max_attempts = Backoff().max_attempts
    in_call = RetryPolicy().max_attempts
    assert max(m.attempts for m in rows) <= max_attempts, sorted(m.attempts for m in rows)[-5:]
    assert max(creates.values()) <= max_attempts * in_call, creates.most_common(3)
    statuses = Counter(m.status for m in rows)
    assert statuses["delivered"] and statuses["failed"] and statuses["undelivered"], statuses
    assert_invariants(engine, rules, now=at, opening_balances=openings)
    faults = {k: n for k, n in sorted(chaos.injected.items()) if not k.startswith("report_p")}
    share = sum(chaos.injected[k] for k in ("http_429", "http_500", "http_503")) + sum(
        chaos.injected[k] for k in ("reset_before", "reset_after", "too_late")
    )
    print(
        f"fault matrix [{engine.dialect.name}] seed {seed}: {sum(answered.values())} API "
        f"requests, {share} faulted ({100 * share / max(1, sum(answered.values())):.0f} %): "
        f"{', '.join(f'{k} {n}' for k, n in faults.items())}; "
        f"{chaos.injected['report_posted']} reports posted, webhook answers "
        f"{dict(chaos.answers)}; {len(rows)} messages {dict(statuses)}; attempts max "
        f"{max(m.attempts for m in rows)} (bound {max_attempts}), creates per message max "
        f"{max(creates.values())} (bound {max_attempts * in_call}); {rounds} rounds; "
        f"duplicates 0; {time.monotonic() - started:.1f} s"
    )
