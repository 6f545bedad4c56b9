"""Crash harness: the care day and its dispatch rounds SIGKILLed at random points, then resumed.

A child process runs the day (``tests/crash_driver.py``: the journeys without
Prefect, then hourly dispatch rounds through the mock provider whose store
survives the child). The parent kills it with SIGKILL — the child kills itself
at a chosen event (between journey batches, before a batch commits, after a
claim, after the N-th provider accept, after a write-back) or the parent kills
it after a random delay — and starts it again on the same day, until the day is
complete. At least :data:`KILLS` kills per database per run.

The children fork from a warm forkserver (``tests/crash_zygote.py`` preloads
the imports and the rules), so a restart costs milliseconds, not the seconds
of a fresh interpreter.

The final state must equal that of one uninterrupted run of the same day on an
identical database: decisions, credits, graces, messages (and when each went
out, within one dispatch interval), tasks and the content of the audit trail
(without ids and timestamps; a crash adds nothing but the rows that say a
message was reconciled). Then the invariants hold and the provider accepted
each message exactly once.

The seed is printed; ``VIPCARE_CRASH_SEED=N`` repeats a run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import signal
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from crm.db import make_engine
from crm.models import AuditLog, CreditLedger, JobRun, OutboundMessage
from notifications.backends.mock import MockStore
from tests.conftest import PG_ADMIN_URL
from tests.crash_driver import COMPLETE, DayPlan, child_main, events_of, warm
from tests.crash_driver import run as run_day
from tests.crm_twins import snapshot, twin_database
from tests.harness_day import DAY, INTERVAL, LAST, balances, plan, seed_day
from tests.invariants import assert_invariants

KILLS = 24
"""Kills aimed at per database per run; at least 20 must land (the issue's minimum)."""
MAX_CHILDREN = 120
JOURNEY_KILLS = (("batch", 2, 5), ("batchw", 1, 4), ("timer", 50, 500))
DISPATCH_KILLS = (("claim", 1, 2), ("accept", 1, 3), ("flush", 1, 2), ("timer", 20, 250))
"""(kind, low, high): the N of the N-th event, or the timer's milliseconds."""
VOLATILE = re.compile(r"(^|_)(id|ids|at|tasks)$|^(attempts|via)$")
"""Detail keys that differ between two runs of one day: ids, instants, and how a send
was recorded (``via`` reconcile after a crash, after how many claims)."""
RECOVERY = {"message.reconciled"}
"""Audit actions only a crash adds: the reconciliation of a dead run's claims."""


def _seed() -> int:
    found = os.environ.get("VIPCARE_CRASH_SEED")
    return int(found) if found else random.SystemRandom().randrange(2**31)


def _forkserver() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.crash_zygote", "tests.concurrency_driver"])
    return ctx


def _phase(day: DayPlan) -> str:
    try:
        state = json.loads(Path(day.progress).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "journeys"
    return "dispatch" if state.get("journeys") else "journeys"


def _left(day: DayPlan, accepts: int) -> dict[str, int]:
    """Dispatch events certain to happen in the rest of the day (whatever killed it so far).

    The day ends as the uninterrupted reference did, each message accepted exactly
    once: the accepts still to come are the reference's less those the provider has.
    Each of them is claimed first and written back after, at most ``chunk_size`` to a
    claim and to a write-back, so at least this many claims and write-backs remain.
    """
    accepted = len({r.message_id for r in MockStore(day.store).records()})
    left = max(0, accepts - accepted)
    chunks = -(-left // day.chunk_size)
    return {"accept": left, "claim": chunks, "flush": chunks}


def _event(rng: random.Random, left: dict[str, int], kind: str | None = None) -> str:
    """A dispatch kill point that is certain to come: ``kind:N`` within what is left."""
    kinds = [k for k, low, _ in DISPATCH_KILLS if k != "timer" and left[k] >= low]
    if kind is None or kind not in kinds:
        kind = rng.choice(kinds)
    low, high = next((lo, hi) for k, lo, hi in DISPATCH_KILLS if k == kind)
    return f"{kind}:{rng.randint(low, min(high, left[kind]))}"


def _crash_until_complete(
    day: DayPlan, rng: random.Random, reference: dict[str, int]
) -> tuple[Counter[str], int]:
    """Run children until the day is complete, killing the first :data:`KILLS`.

    Every kill point is chosen from the work that remains (``reference``: the events
    an uninterrupted run of the same day saw), so a child given one always dies: by
    its own hand at that event or, for a timer, by ours at a random instant if that
    comes first. Returns the kills by kind and how many children ran.
    """
    ctx = _forkserver()
    kills: Counter[str] = Counter()
    log: list[str] = []
    in_journeys = 0
    for children in range(1, MAX_CHILDREN + 1):
        spec, kind, delay, phase = "", "none", 0.0, _phase(day)
        left = _left(day, reference.get("accept", 0))
        if sum(kills.values()) < KILLS and left["claim"]:
            if phase == "journeys" and in_journeys >= KILLS // 2:
                phase = "dispatch"  # half the kills at least for the dispatch and its provider
            in_journeys += phase == "journeys"
            kinds = JOURNEY_KILLS if phase == "journeys" else DISPATCH_KILLS
            kind, low, high = rng.choice(kinds)
            if phase == "journeys" and not kills["batch"] and reference.get("batch", 0) >= 2:
                # every run has a mid-journey kill: the first child's journeys run as the
                # reference's did, so a batch no later than the reference's last one comes
                kind, low, high = "batch", 2, min(5, reference["batch"])
            if kind == "timer":
                delay = rng.uniform(low, high) / 1000
            elif phase == "journeys":
                spec = f"{kind}:{rng.randint(low, high)}"
            # the dispatch point: the kill itself, or where the child dies if its journeys
            # finish first or the timer has not fired by then
            wanted = kind if phase == "dispatch" and kind != "timer" else None
            if phase == "dispatch" and not kills["accept"]:
                wanted = "accept"  # every run has a kill right after a provider accept
            point = _event(rng, left, wanted)
            spec = ",".join(p for p in (spec, point) if p)
            if kind != "timer" and phase == "dispatch":
                kind = point.split(":")[0]
        child = ctx.Process(target=child_main, args=(day, spec))
        child.start()
        timed_out = False
        if kind == "timer":
            child.join(delay)  # a random instant, whatever the child is doing
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                timed_out = True
        child.join(120)
        assert child.exitcode is not None, "a child hung"
        if child.exitcode == -signal.SIGKILL:
            if kind == "timer" and timed_out:
                fired = "timer"
                log.append(f"timer:{round(delay * 1000)}ms")
            else:
                fired = _killed_by(day, spec)
                log.append(spec)
            kills[fired] += 1
            continue
        assert child.exitcode == 0, f"child failed with exit code {child.exitcode}"
        assert not spec, f"a child given the kill point {spec!r} completed the day"
        print("kills:", " ".join(log))
        return kills, children
    raise AssertionError(f"the day did not complete in {MAX_CHILDREN} children: {kills}")


def _killed_by(day: DayPlan, spec: str) -> str:
    """Which of a child's kill points fired: the journeys' own while they were unfinished."""
    first = spec.split(",")[0].split(":")[0]
    if first in ("batch", "batchw") and _phase(day) == "journeys":
        return first
    return spec.split(",")[-1].split(":")[0]


def _detail(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _detail(v) for k, v in sorted(value.items()) if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [_detail(v) for v in value]
    return value


def _entity(entity: str | None) -> str | None:
    """``message:12`` → ``message``: row ids differ between runs (a killed batch burns ids)."""
    kind = (entity or "").split(":")[0]
    return kind if kind in ("message", "task", "grace") else entity


def audit_content(engine: Engine) -> Counter[tuple[Any, ...]]:
    """The audit rows without seq, hashes, timestamps, ids and run ids."""
    with engine.connect() as conn:
        rows = conn.execute(select(AuditLog).where(AuditLog.action != "seed")).all()
    return Counter(
        (
            a.action,
            a.actor_type,
            a.customer_ref,
            _entity(a.entity),
            a.rule_id,
            a.rule_hash,
            json.dumps(_detail(json.loads(a.details)), sort_keys=True),
        )
        for a in rows
    )


def sent_times(engine: Engine) -> dict[tuple[Any, ...], datetime | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                OutboundMessage.customer_id,
                OutboundMessage.journey,
                OutboundMessage.occurrence,
                OutboundMessage.template,
                OutboundMessage.sent_at,
            )
        ).all()
    return {tuple(r[:4]): r.sent_at for r in rows}


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_day(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    seed = _seed()
    print(f"\ncrash harness seed {seed} (repeat with VIPCARE_CRASH_SEED={seed})")
    rules = warm()
    started = time.monotonic()

    # The reference: one uninterrupted day on an identical database.
    with twin_database(db_url, PG_ADMIN_URL) as twin_url:
        twin = make_engine(twin_url)
        try:
            seed_day(twin)
            reference = plan(twin_url, tmp_path / "reference")
            assert run_day(reference, ruleset=rules) == COMPLETE
            want, want_audit, want_times = snapshot(twin), audit_content(twin), sent_times(twin)
        finally:
            twin.dispose()
    events = events_of(reference)
    assert events["accept"] == len({r.message_id for r in MockStore(reference.store).records()})

    seed_day(engine)
    openings = balances(engine)
    day = plan(db_url, tmp_path / "crashed")
    kills, children = _crash_until_complete(day, random.Random(seed), events)
    total = sum(kills.values())

    got, got_audit, got_times = snapshot(engine), audit_content(engine), sent_times(engine)
    for table in ("customers", "occurrences", "ledger", "graces", "messages", "tasks"):
        assert got[table] == want[table], table
    assert want["messages"] and want["ledger"] and want["tasks"]
    late = {
        key: (want_times[key], got_times[key])
        for key in want_times
        if (want_times[key] is None) != (got_times[key] is None)
        or (
            want_times[key] is not None and abs(got_times[key] - want_times[key]) > INTERVAL  # type: ignore[operator]
        )
    }
    assert not late, f"messages sent more than one dispatch interval apart: {late}"
    recovered = Counter({k: n for k, n in got_audit.items() if k[0] in RECOVERY})
    with engine.connect() as conn:
        via_reconcile = sum(
            1
            for (details,) in conn.execute(
                select(AuditLog.details).where(AuditLog.action == "message.sent")
            )
            if json.loads(details).get("via") == "reconcile"
        )
    assert got_audit - recovered == want_audit, (
        f"missing {want_audit - got_audit}, extra {got_audit - recovered - want_audit}"
    )
    provider = Counter(r.message_id for r in MockStore(day.store).records())
    duplicates = sum(n - 1 for n in provider.values() if n > 1)
    assert duplicates == 0
    assert_invariants(engine, rules, now=LAST, opening_balances=openings)
    assert total >= 20 and kills["batch"] and kills["accept"], kills
    print(
        f"crash harness [{engine.dialect.name}] seed {seed}: {total} SIGKILLs survived "
        f"({', '.join(f'{k} {n}' for k, n in sorted(kills.items()))}), {children} children, "
        f"{sum(provider.values())} messages accepted once each, "
        f"{via_reconcile} found sent by reconciliation, duplicates 0, "
        f"{time.monotonic() - started:.1f} s"
    )


# -- an outage: the scheduler down for days while billing keeps sending -----------------------


def test_an_outage_with_late_repeated_and_out_of_order_feeds_catches_up_honestly(
    db_url: str, engine: Engine, tmp_path: Path, prefect_harness: None
) -> None:
    """The scheduler runs a day, is down 3–10 days while balances files keep arriving (late,
    twice, out of order), comes back and catches up, then runs four more days. Then: no
    line was suspended without a grace the customer was told about in time, every
    balance is the latest fed value plus vipcare's postings since (to the cent, from what
    billing sent), and every invariant holds. ``VIPCARE_CRASH_SEED`` repeats a run."""
    from crm.grace import MIN_TOPUP_WINDOW, deadline_end
    from crm.models import Customer as CustomerRow
    from crm.models import GracePeriod
    from tests.outage import Billing, Scheduler, at
    from vipcare.health import collect
    from vipcare.scheduler import days as job_days
    from vipcare.scheduler.schedule import CARE_DAY

    seed = _seed()
    rng = random.Random(seed)
    down = rng.randint(3, 10)
    print(f"\noutage seed {seed} (repeat with VIPCARE_CRASH_SEED={seed}): down {down} days")
    rules = warm()
    started = time.monotonic()
    seed_day(engine)
    billing = Billing.opened(engine, tmp_path, rng)
    scheduler = Scheduler.on(engine, db_url, tmp_path / "provider.jsonl")
    first = DAY
    job_days.mark_completed(engine, CARE_DAY, first - timedelta(days=1), at(first, 0))

    def a_day(day: Any, up_at: int | None, until: int = 24) -> None:
        """Files arrive before 08:00; the scheduler, when up, runs the care day at ``up_at``
        (08:00 as scheduled, or when it comes back) and dispatches every hour after it,
        around the clock (each customer's window, in any zone)."""
        if up_at is not None and up_at <= 8:  # up since the evening before: the small hours
            for hour in range(0, 8):
                scheduler.dispatch(at(day, hour, 1))
        billing.deliver(at(day, 7, 59))
        if up_at is not None:
            scheduler.care(at(day, up_at, 0) + timedelta(seconds=30))
            for hour in range(max(9, up_at), until):
                scheduler.dispatch(at(day, hour, 1))
        billing.day_passes(day)

    a_day(first, 8)
    for n in range(1, down + 1):  # the scheduler is down; billing is not
        a_day(first + timedelta(days=n), None)
    back = first + timedelta(days=down + 1)
    a_day(back, 10)  # it comes back at 10:00 and catches up
    for n in range(1, 4):
        a_day(back + timedelta(days=n), 8)
    a_day(back + timedelta(days=4), 8, until=22)
    last = at(back + timedelta(days=4), 21, 1)

    # The catch-up: the days within VIPCARE_CATCH_UP_DAYS ran, each late and said so; older
    # ones were recorded as never run.
    health = collect(engine, scheduler.runtime.schedule, last, escalate_after_days=None)
    window = scheduler.runtime.schedule.catch_up_days
    missed = [first + timedelta(days=n) for n in range(1, down + 2)]
    ran_late = missed[-window:]
    with engine.connect() as conn:
        failed = conn.execute(select(JobRun.name, JobRun.error).where(JobRun.status == "failed"))
        assert not (bad := failed.all()), f"jobs failed: {bad}"
    assert job_days.last_completed(engine, CARE_DAY) == back + timedelta(days=4)
    assert health.catch_up["late_days"] == ran_late, health.catch_up
    never = missed[:-window]
    assert [(g["from"], g["to"]) for g in health.catch_up["days_not_run"]] == (
        [(never[0], never[-1])] if never else []
    )

    # No suspension without a grace window and a notice that reached the customer in time.
    with engine.connect() as conn:
        graces = conn.execute(
            select(
                GracePeriod, CustomerRow.timezone, CustomerRow.external_id, CustomerRow.sms_opt_out
            ).join(CustomerRow, CustomerRow.id == GracePeriod.customer_id)
        ).all()
        notices = {
            (m.customer_id, m.occurrence): m
            for m in conn.execute(
                select(OutboundMessage).where(OutboundMessage.template == "grace_notice")
            )
        }
        ended = {
            (r.customer_id, r.occurrence): r.created_at
            for r in conn.execute(select(CreditLedger).where(CreditLedger.kind == "grace_expired"))
        }
    suspended = [g for g in graces if g.status == "suspended"]
    for g in suspended:
        notice = notices[(g.customer_id, g.occurrence)]
        end = deadline_end(g.deadline, g.timezone)
        told = notice.status in ("sent", "delivered") and notice.sent_at <= end - MIN_TOPUP_WINDOW
        chose_none = notice.status == "suppressed" and g.sms_opt_out  # the customer opted out
        assert told or chose_none, (g.external_id, notice.status, notice.sent_at, end)
        month = g.occurrence.split(":", 1)[1]
        assert ended[(g.customer_id, f"grace-deadline:{month}")] >= end
    for g in graces:  # a notice the outage kept from the customer never ends in a suspension
        notice = notices[(g.customer_id, g.occurrence)]
        if notice.status not in ("sent", "delivered") and not g.sms_opt_out:
            assert g.status != "suspended", (g.external_id, notice.status, notice.status_reason)
    statuses = Counter(g.status for g in graces)
    assert statuses["suspended"] and statuses["repaid"], statuses  # the scenario did both

    # The ledger balances to the cent against what billing sent.
    want = billing.expected_balances()
    got = balances(engine)
    wrong = {ref: (got[ref], want[ref]) for ref in want if got[ref] != want[ref]}
    assert not wrong, f"{len(wrong)} balances off: {dict(list(wrong.items())[:5])}"
    assert_invariants(engine, rules, now=last)
    assert health.invariants["ok"], health.invariants
    skipped = health.catch_up["skipped"]
    print(
        f"outage [{engine.dialect.name}] seed {seed}: down {down} days, caught up "
        f"{len(ran_late)} late, {len(never)} never run; {billing.files} balances files "
        f"({len(billing.sent)} rows, late, repeated, out of order); graces {dict(statuses)}; "
        f"late days skipped {skipped}; {len(want)} balances exact to the cent; "
        f"{time.monotonic() - started:.1f} s"
    )
