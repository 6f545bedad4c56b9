"""Benchmark: "My day" and the other workspace pages at scale, through the ASGI app.

    python bench/bench_workspace.py --customers 1000000 --open-tasks 200000
    python bench/bench_workspace.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench

Seeds a fresh database with ``seed.generate`` (SQLite file in a temp dir by
default), bulk-inserts call tasks: ``--open-tasks`` open ones (ready, waiting for
their pre-call SMS, overdue; each ready/waiting one with its notice in the
outbox) spread over every manager's next working days, plus ``--done-tasks`` of
closed history and ``--audit-rows`` of hash-chained audit log about those customers
(the timeline reads it), then signs managers in and requests each page ``--requests``
times (after a warm-up), rotating over managers. Prints p50/p95/max per page.
Not a test: the numbers go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from itertools import cycle
from typing import Any
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select

from crm import accounts, audit
from crm.audit import Actor, AuditEntry
from crm.capacity import working_day_on_or_after
from crm.db import make_engine, transaction
from crm.models import CallTask, Customer, Manager, OutboundMessage
from crm.schema import upgrade
from rules import load_rules
from seed import generate
from vipcare.settings import Settings
from vipcare.web import create_app

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = "bench-password"


def seed_tasks(engine: Engine, as_of: date, open_tasks: int, done_tasks: int) -> None:
    """Open tasks over the next 15 working days (a fifth overdue, a tenth waiting for their
    SMS), closed ones over the last 90 days; bulk inserts, 10,000 rows a statement."""
    rng = random.Random(11)
    with transaction(engine) as session:
        pairs = session.execute(
            select(Customer.id, Customer.manager_id).where(Customer.manager_id.is_not(None))
        ).all()
        next_message = (session.scalar(select(func.max(OutboundMessage.id))) or 0) + 1
    days = [as_of]
    while len(days) < 15:
        days.append(working_day_on_or_after(days[-1] + timedelta(days=1)))
    at = datetime.combine(as_of, datetime.min.time(), TZ).astimezone(UTC)
    picks = rng.sample(range(len(pairs)), min(len(pairs), open_tasks + done_tasks))
    tasks: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for n, index in enumerate(picks):
        customer_id, manager_id = pairs[index]
        closed = n >= open_tasks
        if closed:
            day = as_of - timedelta(days=rng.randint(1, 90))
            status = "done"
        elif rng.random() < 0.2:
            day = as_of - timedelta(days=rng.randint(1, 10))
            status = "ready"
        else:
            day = rng.choice(days)
            status = "awaiting_notice" if rng.random() < 0.1 else "ready"
        notice_id = None
        if not closed and rng.random() < 0.9:
            notice_id = next_message
            next_message += 1
            messages.append(
                {
                    "id": notice_id,
                    "customer_id": customer_id,
                    "channel": "sms",
                    "category": "service",
                    "template": "precall",
                    "journey": "callback",
                    "occurrence": f"bench:{n}",
                    "locale": "zh-CN",
                    "to_phone": "+8613800000000",
                    "body": "尊敬的客户，您的专属客户经理将于近期与您联系，请注意接听。",
                    "scheduled_for": at,
                    "status": "queued" if status == "awaiting_notice" else "sent",
                    "attempts": 0 if status == "awaiting_notice" else 1,
                    "created_at": at,
                    "updated_at": at,
                    "sent_at": None if status == "awaiting_notice" else at,
                }
            )
        tasks.append(
            {
                "customer_id": customer_id,
                "manager_id": manager_id,
                "kind": rng.choice(("callback", "callback", "plan_fit", "grace_followup")),
                "journey": "callback",
                "occurrence": f"bench:{n}",
                "status": status,
                "priority": rng.choice((0, 0, 0, 1, 2)),
                "due_on": day,
                "scheduled_on": day,
                "no_notice": notice_id is None,
                "notice_message_id": notice_id,
                "details": {"reason": "benchmark", "due_on": day.isoformat()},
                "attempt": 1,
                "created_at": at,
                "outcome": "reached" if closed else None,
                "satisfaction": rng.randint(1, 5) if closed else None,
                "completed_at": at - timedelta(days=(as_of - day).days) if closed else None,
            }
        )
    with transaction(engine) as session:
        for start in range(0, len(messages), 10_000):
            session.execute(insert(OutboundMessage), messages[start : start + 10_000])
        for start in range(0, len(tasks), 10_000):
            session.execute(insert(CallTask), tasks[start : start + 10_000])


def seed_audit(engine: Engine, as_of: date, rows: int) -> None:
    """A realistic audit log: a few decision rows per customer with tasks, hash-chained."""
    at = datetime.combine(as_of, datetime.min.time(), TZ).astimezone(UTC)
    with transaction(engine) as session:
        customers = session.execute(
            select(Customer.id, Customer.external_id)
            .join(CallTask, CallTask.customer_id == Customer.id)
            .distinct()
        ).all()
    actions = ("journey.callback", "task.ready", "ledger.credit", "task.done")
    entries = [
        AuditEntry(
            action=actions[i % len(actions)],
            details={"bench": i},
            customer_id=customers[i % len(customers)][0],
            customer_ref=customers[i % len(customers)][1],
            entity=f"bench:{i}",
        )
        for i in range(rows)
    ]
    for start in range(0, len(entries), 20_000):
        with transaction(engine) as session:
            audit.append(session, Actor("flow", "bench"), at, entries[start : start + 20_000])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--open-tasks", type=int, default=200_000)
    parser.add_argument("--done-tasks", type=int, default=200_000)
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--managers", type=int, default=20, help="distinct managers signed in")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--as-of", default="2026-11-23")
    parser.add_argument(
        "--reuse", action="store_true", help="measure a database an earlier run seeded"
    )
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='vipcare-bench-')}/bench.db"
    engine = make_engine(url)
    upgrade(engine)
    as_of = date.fromisoformat(args.as_of)
    with transaction(engine) as session:
        existing = session.scalar(select(func.count()).select_from(Customer)) or 0
    if existing and args.reuse:
        print(f"reusing the {existing:,} customers and their tasks already in {url}")
    else:
        t0 = time.perf_counter()
        generate(engine, args.customers, 7, as_of)
        print(f"seed {args.customers:,} customers: {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        seed_tasks(engine, as_of, args.open_tasks, args.done_tasks)
        print(
            f"insert {args.open_tasks:,} open + {args.done_tasks:,} closed tasks: "
            f"{time.perf_counter() - t0:.0f}s"
        )
        t0 = time.perf_counter()
        seed_audit(engine, as_of, args.audit_rows)
        print(f"append {args.audit_rows:,} audit rows: {time.perf_counter() - t0:.0f}s")
    with engine.begin() as conn:  # committed: PostgreSQL keeps the statistics
        conn.exec_driver_sql("ANALYZE")

    results = measure_pages(engine, url, as_of, args.requests, args.managers)
    for name, page in results.items():
        print(
            f"{PAGE_TITLES[name]:28} p50 {page['p50_ms']:6.1f} ms   "
            f"p95 {page['p95_ms']:6.1f} ms   max {page['max_ms']:6.1f} ms   "
            f"({page['requests']} requests, {page['managers']} managers)"
        )


PAGE_TITLES = {
    "day": "My day (/day)",
    "tasks": "task list (/tasks, page 1)",
    "task": "task card (/tasks/ID)",
    "timeline": "customer timeline",
}


def measure_pages(
    engine: Engine,
    url: str,
    as_of: date,
    requests: int,
    managers: int,
    only: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """Sign the busiest managers in and time each page (``only`` those named): ms per request.

    Sign-in is not measured, so a light password hasher stands in while this runs.
    """
    original = accounts.hasher
    original.cache_clear()
    light = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    accounts.hasher = lambda: light  # type: ignore[assignment]
    try:
        return _measure_pages(engine, url, as_of, requests, managers, only)
    finally:
        accounts.hasher = original


def _measure_pages(
    engine: Engine,
    url: str,
    as_of: date,
    requests: int,
    managers: int,
    only: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    now = datetime.combine(as_of, datetime.min.time(), TZ).astimezone(UTC) + timedelta(hours=3)
    with transaction(engine) as session:
        busiest = [
            ref
            for ref, _n in session.execute(
                select(Manager.external_id, func.count(CallTask.id))
                .join(CallTask, CallTask.manager_id == Manager.id)
                .where(CallTask.status.in_(("ready", "awaiting_notice")))
                .group_by(Manager.external_id)
                .order_by(func.count(CallTask.id).desc())
                .limit(managers)
            )
        ]
        for ref in busiest:
            accounts.set_password(session, ref, PASSWORD, now, Actor("cli", "bench"))
    settings = Settings(_env_file=None, database_url=url)
    app = create_app(engine, settings, clock=lambda: now, ruleset=load_rules(settings.rules_dir))
    stack = ExitStack()
    clients = []
    for ref in busiest:
        client = stack.enter_context(TestClient(app))  # one event-loop thread per client
        page = client.get("/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/login", data={"login": ref, "password": PASSWORD, "csrf_token": token})
        clients.append((ref, client))
    with transaction(engine) as session:
        samples = {
            ref: session.execute(
                select(CallTask.id, Customer.external_id)
                .join(Customer, Customer.id == CallTask.customer_id)
                .join(Manager, Manager.id == CallTask.manager_id)
                .where(Manager.external_id == ref, CallTask.status == "ready")
                .limit(1)
            ).one()
            for ref in busiest
        }
    pages = {
        "day": lambda ref: "/day",
        "tasks": lambda ref: "/tasks?status=open",
        "task": lambda ref: f"/tasks/{samples[ref][0]}",
        "timeline": lambda ref: f"/customers/{samples[ref][1]}",
    }
    results: dict[str, dict[str, float]] = {}
    for name, path in pages.items():
        if only and name not in only:
            continue
        rotation = cycle(clients)
        for _ in range(min(20, requests)):  # warm-up
            ref, client = next(rotation)
            status = client.get(path(ref)).status_code
            if status != 200:
                raise RuntimeError(f"{path(ref)} answered {status} during the warm-up")
        timings = []
        for _ in range(requests):
            ref, client = next(rotation)
            start = time.perf_counter()
            response = client.get(path(ref))
            timings.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{path(ref)} answered {response.status_code}")
        results[name] = {
            "p50_ms": statistics.median(timings),
            "p95_ms": percentile(timings, 0.95),
            "max_ms": max(timings),
            "requests": requests,
            "managers": len(clients),
        }
    stack.close()
    return results


if __name__ == "__main__":
    main()
