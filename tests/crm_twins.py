"""Comparing two CRMs by natural keys, and making a twin database to compare against."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from crm.db import make_engine
from crm.models import (
    AuditLog,
    CallTask,
    CreditLedger,
    Customer,
    GracePeriod,
    JourneyOccurrence,
    OutboundMessage,
)
from crm.schema import upgrade


def snapshot(engine: Engine) -> dict[str, Any]:
    """The CRM by natural keys: surrogate ids, run ids and audit order are left out."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        ref = dict(conn.execute(sql_select(Customer.id, Customer.external_id)).all())
        messages = conn.execute(sql_select(OutboundMessage)).all()
        key = {m.id: (ref[m.customer_id], m.journey, m.occurrence, m.template) for m in messages}
        out["customers"] = sorted(
            (c.external_id, str(c.balance), c.status)
            for c in conn.execute(sql_select(Customer)).all()
        )
        out["occurrences"] = sorted(
            (o.journey, ref[o.customer_id], o.occurrence, o.as_of, o.decided_at, o.rule_hash)
            for o in conn.execute(sql_select(JourneyOccurrence)).all()
        )
        out["ledger"] = sorted(
            (ref[e.customer_id], e.kind, e.occurrence, str(e.amount), str(e.balance_after))
            for e in conn.execute(sql_select(CreditLedger)).all()
        )
        out["graces"] = sorted(
            (ref[g.customer_id], g.occurrence, str(g.amount), g.deadline, g.status)
            for g in conn.execute(sql_select(GracePeriod)).all()
        )
        out["messages"] = sorted(
            (*key[m.id], m.status, m.status_reason, m.scheduled_for, m.valid_until, m.body)
            for m in messages
        )
        out["tasks"] = sorted(
            (
                ref[t.customer_id],
                t.kind,
                t.occurrence,
                t.status,
                t.priority,
                t.due_on,
                t.scheduled_on,
                t.no_notice,
                key.get(t.notice_message_id) if t.notice_message_id else None,
                json.dumps(t.details, sort_keys=True),
            )
            for t in conn.execute(sql_select(CallTask)).all()
        )
        out["audit"] = Counter(  # the rule set's acceptance is stamped with the wall clock
            (
                a.action,
                a.customer_ref,
                (a.entity or "").split(":")[0],
                a.rule_id,
                None if a.action.startswith("rules.") else a.at,
            )
            for a in conn.execute(sql_select(AuditLog)).all()
        )
    return out


@contextmanager
def twin_database(url: str, admin_url: str) -> Iterator[str]:
    """An empty, migrated database of the same kind as ``url`` (dropped afterwards)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = f"{parsed.database}.twin"
        twin = f"sqlite:///{path}"
        engine = make_engine(twin)
        upgrade(engine)
        engine.dispose()
        yield twin
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        return
    name = f"{parsed.database}_twin"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    twin = parsed.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(twin)
    upgrade(engine)
    engine.dispose()
    try:
        yield twin
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
