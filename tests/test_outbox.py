"""The outbox state machine: legal and illegal moves, provider status, task readiness."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from test_dispatcher_support import (
    add_customer,
    add_message,
    add_task,
    connect,
    message,
    task,
)

from crm import audit, tasks
from crm.audit import Actor
from crm.db import transaction
from crm.errors import InvalidTransition, NotFound
from crm.models import AuditLog
from notifications import outbox

OPERATOR = Actor("cli", "test")


# -- the transition table (no database) ---------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "sending"),
        ("queued", "suppressed"),
        ("sending", "sent"),
        ("sending", "queued"),
        ("sending", "failed"),
        ("sent", "delivered"),
        ("sent", "undelivered"),
        ("sent", "failed"),
    ],
)
def test_allowed_moves(current: str, target: str) -> None:
    assert outbox.transition_reason(current, target) is None
    outbox.check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target", "reason_part"),
    [
        ("queued", "sent", "must be claimed (sending)"),
        ("queued", "delivered", "has not been sent yet"),
        ("queued", "failed", "only a send attempt can fail"),
        ("sending", "suppressed", "already with the provider"),
        ("sent", "queued", "would double-send"),
        ("sent", "sending", "would double-send"),
        ("delivered", "sent", "delivered is final"),
        ("failed", "queued", "failed is final"),
        ("suppressed", "sending", "suppressed is final"),
        ("sent", "sent", "already sent"),
        ("queued", "bogus", "unknown status 'bogus'"),
    ],
)
def test_illegal_moves_say_why(current: str, target: str, reason_part: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        outbox.check_transition(current, target, "message 7")
    err = info.value
    assert (err.current, err.target) == (current, target)
    assert reason_part in err.reason
    assert str(err).startswith(f"message 7: cannot go from {current!r} to {target!r}: ")


# -- single-row moves on the database -----------------------------------------


def _one(engine: Engine, now: datetime, **kw: object) -> tuple[int, int]:
    with connect(engine) as conn:
        cid = add_customer(conn, "VIP001", 1)
        mid = add_message(conn, cid, now, n=1, **kw)  # type: ignore[arg-type]
    return cid, mid


def test_move_refuses_illegal_and_changes_nothing(engine: Engine, now: datetime) -> None:
    _, mid = _one(engine, now)
    with pytest.raises(InvalidTransition, match="must be claimed"), transaction(engine) as s:
        outbox.move(s, mid, "sent", now, OPERATOR)
    assert message(engine, mid).status == "queued"
    with transaction(engine) as s:
        outbox.move(s, mid, "sending", now, OPERATOR)
        outbox.move(s, mid, "sent", now, OPERATOR)
    row = message(engine, mid)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 1, now)
    with pytest.raises(InvalidTransition, match="double-send"), transaction(engine) as s:
        outbox.move(s, mid, "queued", now, OPERATOR)
    with pytest.raises(NotFound), transaction(engine) as s:
        outbox.move(s, 99999, "sending", now, OPERATOR)


def test_provider_status_moves_forward_and_ignores_late_reports(
    engine: Engine, now: datetime
) -> None:
    _, mid = _one(
        engine, now, status="sent", provider="mock", provider_message_id="SM1", sent_at=now
    )
    later = now + timedelta(minutes=1)
    with transaction(engine) as s:
        got = outbox.apply_provider_status(s, "SM1", "delivered", None, later)
        assert got.id == mid
    with transaction(engine) as s:  # duplicate and out-of-order callbacks: no-ops
        assert outbox.apply_provider_status(s, "SM1", "sent", None, later).status == "delivered"
        assert (
            outbox.apply_provider_status(s, "SM1", "delivered", None, later).status == "delivered"
        )
        assert outbox.apply_provider_status(s, "SM1", "queued", None, later).status == "delivered"
    row = message(engine, mid)
    assert (row.status, row.delivered_at) == ("delivered", later)
    with transaction(engine) as s:
        actions = [r.action for r in audit.list_rows(s)]
    assert actions == ["message.delivered"]  # ignored callbacks write nothing


def test_provider_status_unknown_id_and_never_sent(engine: Engine, now: datetime) -> None:
    _, mid = _one(engine, now, status="suppressed", provider_message_id="SMX")
    with pytest.raises(NotFound, match="SM-nope"), transaction(engine) as s:
        outbox.apply_provider_status(s, "SM-nope", "delivered", None, now)
    with pytest.raises(InvalidTransition, match="never accepted"), transaction(engine) as s:
        outbox.apply_provider_status(s, "SMX", "delivered", None, now)
    with (
        pytest.raises(InvalidTransition, match="unknown provider status"),
        transaction(engine) as s,
    ):
        outbox.apply_provider_status(s, "SMX", "read", None, now)
    assert message(engine, mid).status == "suppressed"


def test_undelivered_report_readies_task_without_notice(engine: Engine, now: datetime) -> None:
    cid, mid = _one(
        engine, now, status="sent", provider="mock", provider_message_id="SM2", sent_at=now
    )
    with connect(engine) as conn:
        tid = add_task(conn, cid, mid, now)
    later = now + timedelta(minutes=3)
    with transaction(engine) as s:
        outbox.apply_provider_status(s, "SM2", "undelivered", "30003", later)
    row = message(engine, mid)
    assert (row.status, row.error_code) == ("undelivered", "30003")
    assert "unreachable handset" in row.status_reason
    t = task(engine, tid)
    assert (t.status, t.no_notice, t.ready_at) == ("ready", True, later)
    assert "undelivered" in t.details["no_notice_reason"]
    assert t.details["why"] == "callback due"  # existing details kept
    with transaction(engine) as s:
        rows = audit.list_rows(s)
        assert audit.verify(s).ok
    assert [r.action for r in rows] == ["message.undelivered", "task.ready"]
    assert rows[0].customer_ref == "VIP001" and rows[0].rule_hash == "f" * 64


# -- tasks ----------------------------------------------------------------------


def test_set_ready_at_then_promote(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        cid = add_customer(conn, "VIP001", 1)
        m1 = add_message(conn, cid, now, n=1, occurrence="a")
        m2 = add_message(conn, cid, now, n=1, occurrence="b")
        t1 = add_task(conn, cid, m1, now)
        t2 = add_task(conn, cid, m2, now)
    lead = timedelta(hours=2)
    with transaction(engine) as s:
        assert tasks.schedule_ready(s, {m1: now, m2: now + timedelta(hours=1)}, lead) == 2
    assert task(engine, t1).ready_at == now + lead
    assert task(engine, t1).status == "awaiting_notice"
    with transaction(engine) as s:
        assert tasks.promote_ready(s, now + lead - timedelta(seconds=1)) == 0
        assert tasks.promote_ready(s, now + lead) == 1
    assert (task(engine, t1).status, task(engine, t2).status) == ("ready", "awaiting_notice")
    with transaction(engine) as s:
        assert tasks.promote_ready(s, now + lead) == 0  # idempotent
        assert tasks.promote_ready(s, now + 2 * lead, batch=1) == 1
        ready = s.scalars(select(AuditLog).where(AuditLog.action == "task.ready")).all()
    assert [json.loads(r.details)["task_id"] for r in ready] == [t1, t2]
    assert task(engine, t2).no_notice is False


def test_list_messages_masks_phone_and_filters(engine: Engine, now: datetime) -> None:
    with connect(engine) as conn:
        a = add_customer(conn, "VIP-A", 1)
        b = add_customer(conn, "VIP-B", 2)
        add_message(conn, a, now, n=1, occurrence="x")
        add_message(conn, b, now, n=2, occurrence="y", status="suppressed")
    with transaction(engine) as s:
        everything = outbox.list_messages(s)
        only_b = outbox.list_messages(s, customer_ref="VIP-B")
        queued = outbox.list_messages(s, status="queued")
        with pytest.raises(ValueError, match="unknown status"):
            outbox.list_messages(s, status="lost")
    assert len(everything) == 2
    assert [m.customer_id for m in only_b] == ["VIP-B"]
    assert [m.customer_id for m in queued] == ["VIP-A"]
    view = queued[0].as_dict()
    assert view["to"] == "+86138****0001"
    assert view["scheduled_for"] == now


def test_callback_before_write_back_finds_row_by_message_and_attempt(
    engine: Engine, now: datetime
) -> None:
    _, mid = _one(engine, now, status="sending", attempt_id="tok:1", sending_at=now, attempts=1)
    with pytest.raises(NotFound), transaction(engine) as s:  # wrong attempt: not ours
        outbox.apply_provider_status(
            s, "SM9", "sent", None, now, message_id=mid, attempt_id="old:1"
        )
    with transaction(engine) as s:
        outbox.apply_provider_status(
            s, "SM9", "delivered", None, now, message_id=mid, attempt_id="tok:1"
        )
    row = message(engine, mid)
    assert (row.status, row.provider_message_id, row.sent_at, row.delivered_at) == (
        "delivered",
        "SM9",
        now,
        now,
    )
    with transaction(engine) as s:
        assert [r.action for r in audit.list_rows(s)] == ["message.sent", "message.delivered"]
