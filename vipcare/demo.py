"""``vipcare demo``: a whole care day on the embedded default, told as a story.

init → seed → the daily care flow at 09:00 (journeys, then dispatch through the
mock SMS/voice backends) → a second dispatch at 11:05, when the pre-call notices'
lead time has passed → a summary with examples and what to try next.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.panel import Panel
from sqlalchemy import func, literal, select
from sqlalchemy.engine import make_url

from crm.audit import Actor
from crm.db import make_engine, transaction
from crm.models import CallTask, CreditLedger, Customer, Manager, OutboundMessage
from crm.phones import mask
from notifications.dispatcher import DispatchSummary
from vipcare.console import console, print_care_day, print_table
from vipcare.settings import Settings


def _reset_sqlite(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise ValueError("--reset only deletes a SQLite database; drop other databases yourself")
    for suffix in ("", "-wal", "-shm"):
        Path(parsed.database + suffix).unlink(missing_ok=True)


def run_demo(cfg: Settings, as_of: date, customers: int, seed_value: int, reset: bool) -> None:
    from crm.schema import upgrade
    from flows.journeys.context import care_day_instant
    from seed import generate
    from vipcare.operations import dispatch_due, live_rules, run_care_day

    if reset:
        _reset_sqlite(cfg.database_url)
    engine = make_engine(cfg.database_url)
    console.rule("[bold]vipcare demo")
    _before, after = upgrade(engine)
    console.print(f"1. database ready at revision {after} ({cfg.database_url.split('?')[0]})")
    with transaction(engine) as session:
        existing = session.scalar(select(func.count()).select_from(Customer)) or 0
    if existing:
        console.print(
            f"2. {existing} customers already here: not seeding again (use --reset to start over)"
        )
    else:
        summary = generate(engine, customers, seed_value, as_of, operator_tz=cfg.timezone)
        console.print(
            f"2. seeded {summary.customers} customers, {summary.managers_created} account "
            f"managers, {summary.plans_created} plans and {summary.usage_rows} months of usage "
            f"(seed {seed_value})"
        )
    morning = care_day_instant(as_of, cfg.tz)
    console.print(f"3. running the daily care flow for {as_of} at 09:00 {cfg.timezone} (Prefect)…")
    print_care_day(run_care_day(cfg, as_of, morning))
    console.print("4. dispatching what is due at 09:00…")
    _print_dispatch(dispatch_due(cfg, morning, engine=engine))
    ruleset = live_rules(cfg, engine, morning).require()
    later = morning + ruleset.precall_lead_time + timedelta(minutes=5)
    console.print(
        f"5. dispatching again at {later.astimezone(cfg.tz):%H:%M}, after the pre-call notices'"
        f" lead time ({ruleset.precall_lead_time}), so their calls become ready…"
    )
    _print_dispatch(dispatch_due(cfg, later, ruleset=ruleset, engine=engine))
    _story(engine, as_of)
    _workspace_logins(engine, as_of, later)
    _next_steps()


def _print_dispatch(summary: DispatchSummary) -> None:
    data = summary.as_dict()
    print_table(
        "dispatch",
        ["outcome", "count"],
        ((k, v) for k, v in data.items() if isinstance(v, int) and v),
    )


def _story(engine: Any, as_of: date) -> None:
    with transaction(engine) as session:
        by_status = dict(
            session.execute(
                select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
            )
            .tuples()
            .all()
        )
        tasks = dict(
            session.execute(select(CallTask.kind, func.count()).group_by(CallTask.kind))
            .tuples()
            .all()
        )
        ready = (
            session.scalar(
                select(func.count(func.distinct(CallTask.customer_id))).where(
                    CallTask.status == "ready"
                )
            )
            or 0
        )
        credits = session.execute(select(func.count(), func.sum(CreditLedger.amount))).one()
        samples = session.execute(
            select(
                OutboundMessage.template,
                OutboundMessage.to_phone,
                OutboundMessage.body,
                OutboundMessage.status,
            )
            .where(
                OutboundMessage.id.in_(  # the first sent message of each template
                    select(func.min(OutboundMessage.id))
                    .where(OutboundMessage.status.in_(("sent", "delivered")))
                    .group_by(OutboundMessage.template)
                )
            )
            .order_by(OutboundMessage.id)
        ).all()
        plan_fit = session.execute(
            select(CallTask.details, Customer.external_id, Customer.name)
            .join(Customer, Customer.id == CallTask.customer_id)
            .where(CallTask.kind == "plan_fit")
            .order_by(CallTask.id)
            .limit(1)
        ).first()
    total_credit = credits[1] or Decimal("0.00")
    console.rule("[bold]what happened")
    console.print(
        f"messages: {json.dumps(by_status)}\n"
        f"call tasks: {json.dumps(tasks)} ({ready} calls ready for managers now)\n"
        f"credits granted: {credits[0]} totalling {total_credit}"
    )
    seen: set[str] = set()
    rows = []
    for template, phone, body, status in samples:
        if template in seen:
            continue
        seen.add(template)
        rows.append([template, mask(phone), status, body])
    print_table("example messages sent (mock SMS)", ["template", "to", "status", "text"], rows)
    if plan_fit is not None:
        details, ref, name = plan_fit
        console.print(
            Panel(
                f"{name} ({ref}) pays about {details.get('current_monthly_cost')}/month on "
                f"{details.get('current_plan')}; {details.get('suggested_plan')} would cost "
                f"{details.get('suggested_monthly_cost')}: "
                f"a saving of {details.get('monthly_saving')}/month.",
                title="example plan-fit call",
            )
        )


SUPERVISOR_REF = "SUP01"


def _workspace_logins(engine: Any, as_of: date, at: datetime) -> None:
    """Passwords for the manager with the most calls ready today and for a supervisor."""
    import secrets

    from crm.accounts import add_staff, set_password

    actor = Actor("cli", "demo")
    calls = func.count(func.distinct(CallTask.customer_id))  # a call per customer, not per task
    with transaction(engine) as session:
        busiest = session.execute(
            select(Manager.external_id, Manager.name, calls)
            .join(CallTask, CallTask.manager_id == Manager.id)
            .where(CallTask.status == "ready", CallTask.scheduled_on == as_of)
            .group_by(Manager.external_id, Manager.name)
            .order_by(calls.desc(), Manager.external_id)
            .limit(1)
        ).first()
        if busiest is None:
            busiest = session.execute(
                select(Manager.external_id, Manager.name, literal(0))
                .where(Manager.daily_call_capacity > 0)
                .order_by(Manager.external_id)
            ).first()
        add_staff(session, SUPERVISOR_REF, "王主管", "+8613800138000", at, actor)
        logins = []
        if busiest is not None:
            password = secrets.token_urlsafe(9)
            set_password(session, busiest[0], password, at, actor, role="manager")
            logins.append(
                ("manager", busiest[0], password, f"{busiest[1]}, {busiest[2]} calls ready")
            )
        password = secrets.token_urlsafe(9)
        set_password(session, SUPERVISOR_REF, password, at, actor, role="supervisor")
        logins.append(("supervisor", SUPERVISOR_REF, password, "王主管, sees the team and call QA"))
    console.rule("[bold]the account-manager workspace")
    console.print("start it with [bold]vipcare web[/] and open [bold]http://127.0.0.1:8000/[/]")
    print_table(
        "demo sign-ins (new passwords each time the demo runs)",
        ["role", "manager id", "password", ""],
        [list(row) for row in logins],
    )


def _next_steps() -> None:
    console.rule("[bold]try next")
    console.print(
        "vipcare web                                # the workspace: My day, team, call QA\n"
        "vipcare tasks list --status ready          # the managers' work list\n"
        "vipcare tasks show ID --manager MANAGER_ID # one call: why, the number, the SMS\n"
        "vipcare tasks done ID --outcome reached --satisfaction 5\n"
        "vipcare messages list --status sent --json\n"
        "vipcare ledger list\n"
        "vipcare rules preview birthday --date YYYY-MM-DD\n"
        "vipcare rules explain grace_credit CUSTOMER_ID --date YYYY-MM-DD\n"
        "vipcare run                                # run again: nothing is duplicated\n"
        "vipcare qa sample --date YYYY-MM-DD        # draw the day's call-QA sample\n"
        "vipcare audit verify                       # the hash-chained audit log"
    )
