"""The CRM side of the workspace: capacity, rescheduling, the QA sample and reviews,
accounts and the login limit, and the read models (My day, lists, timeline, reports)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from crm import accounts, capacity, qa, reports, worklist
from crm.accounts import AccountError, LoginLimits, LoginThrottled
from crm.audit import Actor
from crm.db import transaction
from crm.errors import InvalidTransition, NotFound
from crm.models import AuditLog, CallTask, Customer, QaSample, StaffAccount
from crm.tasks import RescheduleError, TaskInputError, complete, open_statuses, reschedule
from crm.timeline import timeline
from tests.builders import SHANGHAI
from tests.web_support import AS_OF, NAMES, local

pytest_plugins = ["tests.web_support"]  # the world and cheap_argon2 fixtures

M1 = Actor("manager", "M1")


def _add_tasks(engine, manager_id: int, customer_id: int, day: date, n: int, status="ready"):
    """n calls on ``day``: the first for ``customer_id``, the others each for a new customer
    (capacity counts calls, i.e. customers, not tasks)."""
    with transaction(engine) as s:
        for i in range(n):
            if i:
                extra = Customer(
                    external_id=f"LOAD-{day}-{i}-{status}-{customer_id}",
                    name="Load",
                    phone="+8613900000000",
                    tier="gold",
                    tier_rank=1,
                    manager_id=manager_id,
                )
                s.add(extra)
                s.flush()
            s.add(
                CallTask(
                    customer_id=customer_id if i == 0 else extra.id,
                    manager_id=manager_id,
                    kind="callback",
                    journey="callback",
                    occurrence=f"load:{day}:{i}:{status}",
                    status=status,
                    due_on=day,
                    scheduled_on=day,
                    created_at=local(AS_OF, 8),
                )
            )


# --- capacity -----------------------------------------------------------------------------


def test_capacity_counts_only_open_tasks_on_working_days(world):
    m1 = world.crm.manager_id("M1")
    customer = world.crm.get("A").id
    tuesday, wednesday = AS_OF + timedelta(days=1), AS_OF + timedelta(days=2)
    _add_tasks(world.engine, m1, customer, tuesday, 10)
    _add_tasks(world.engine, m1, customer, wednesday, 9)
    _add_tasks(world.engine, m1, customer, wednesday, 5, status="done")
    friday = AS_OF + timedelta(days=4)
    _add_tasks(world.engine, m1, customer, friday, 9)
    with transaction(world.engine) as s:
        assert capacity.load_by_day(s, m1, AS_OF, wednesday) == {
            AS_OF: 4,
            tuesday: 10,
            wednesday: 9,
        }
        assert capacity.next_day_with_room(s, m1, 10, tuesday) == wednesday
        assert capacity.next_day_with_room(s, m1, 9, tuesday) == AS_OF + timedelta(days=3)
        assert capacity.next_day_with_room(s, m1, 9, friday) == AS_OF + timedelta(days=7)
        assert capacity.next_day_with_room(s, m1, 0, tuesday) is None
        assert capacity.next_day_with_room(s, m1, 10, AS_OF, skip=AS_OF) == wednesday
        assert not capacity.has_room(s, m1, 10, AS_OF + timedelta(days=5))  # a Saturday


def test_two_tasks_of_one_customer_on_one_day_are_one_call(world):
    m1 = world.crm.manager_id("M1")
    thursday = AS_OF + timedelta(days=3)
    customer = world.crm.get("A").id
    with transaction(world.engine) as s:
        for kind in ("callback", "plan_fit"):
            s.add(
                CallTask(
                    customer_id=customer, manager_id=m1, kind=kind, journey=kind,
                    occurrence=f"both:{kind}", status="ready", due_on=thursday,
                    scheduled_on=thursday, created_at=local(AS_OF, 8),
                )
            )  # fmt: skip
    with transaction(world.engine) as s:
        assert capacity.load_by_day(s, m1, thursday, thursday) == {thursday: 1}


# --- rescheduling -------------------------------------------------------------------------


def _reschedule(world, ref: str, to: date, reason: str = "customer asked", manager="M1"):
    with transaction(world.engine) as s:
        return reschedule(
            s, world.tasks[ref], to, reason, world.clock(), AS_OF, M1, manager_ref=manager
        )


def test_reschedule_moves_the_task_and_audits_the_reason(world):
    moved = _reschedule(world, "D", AS_OF + timedelta(days=1), "  in a meeting  ")
    assert (moved.from_day, moved.to_day, moved.reason) == (
        AS_OF,
        AS_OF + timedelta(days=1),
        "in a meeting",
    )
    task = world.task("D")
    assert task.scheduled_on == AS_OF + timedelta(days=1) and task.due_on != task.scheduled_on
    with transaction(world.engine) as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "task.rescheduled")).one()
    assert (row.actor_id, row.customer_ref, row.entity) == ("M1", "D", f"task:{task.id}")
    assert json.loads(row.details) == {
        "task_id": task.id,
        "kind": "callback",
        "from": AS_OF.isoformat(),
        "to": (AS_OF + timedelta(days=1)).isoformat(),
        "reason": "in a meeting",
    }


@pytest.mark.parametrize(
    ("offset", "reason", "code"),
    [
        (1, "   ", "reason"),
        (1, "x" * 501, "reason"),
        (-1, "ok", "past"),
        (0, "ok", "same_day"),
        (5, "ok", "weekend"),
        (91, "ok", "too_far"),
    ],
)
def test_reschedule_refusals_say_why(world, offset, reason, code):
    with pytest.raises(RescheduleError) as err:
        _reschedule(world, "D", AS_OF + timedelta(days=offset), reason)
    assert err.value.code == code
    assert world.task("D").scheduled_on == AS_OF
    with transaction(world.engine) as s:
        assert not s.scalar(select(func.count()).where(AuditLog.action == "task.rescheduled"))


def test_a_full_day_is_refused_with_the_next_day_that_has_room(world):
    m1 = world.crm.manager_id("M1")
    tuesday = AS_OF + timedelta(days=1)
    _add_tasks(world.engine, m1, world.crm.get("A").id, tuesday, 10)
    with pytest.raises(RescheduleError) as err:
        _reschedule(world, "D", tuesday)
    assert err.value.code == "full" and err.value.next_free == AS_OF + timedelta(days=2)
    assert "10 of 10 calls" in str(err.value) and "2026-11-25" in str(err.value)
    weekend = AS_OF + timedelta(days=5)
    with pytest.raises(RescheduleError) as err:
        _reschedule(world, "D", weekend)
    assert err.value.next_free == AS_OF + timedelta(days=7)


def test_only_open_tasks_of_ones_own_can_be_rescheduled(world):
    assert open_statuses() == ("awaiting_notice", "ready")
    with pytest.raises(TaskInputError, match="another manager"):
        _reschedule(world, "C", AS_OF + timedelta(days=1))
    with transaction(world.engine) as s:
        complete(s, world.tasks["A"], "reached", world.clock(), AS_OF, M1, 5)
    with pytest.raises(InvalidTransition, match="done task is closed"):
        _reschedule(world, "A", AS_OF + timedelta(days=1))
    with pytest.raises(NotFound), transaction(world.engine) as s:
        reschedule(s, 999_999, AS_OF, "x", world.clock(), AS_OF, M1)
    moved = _reschedule(world, "E", AS_OF + timedelta(days=2))  # waiting for its SMS: fine
    assert moved.to_day == AS_OF + timedelta(days=2)


# --- call QA ------------------------------------------------------------------------------


def _calls(world, n: int, outcome: str = "reached") -> list[int]:
    """n completed calls of M1 on AS_OF (fresh customers, ready tasks)."""
    m1 = world.crm.manager_id("M1")
    ids = []
    for i in range(n):
        ref = f"Q{outcome}{i}"
        cid = world.crm.customer(ref, name=f"Quinn {ref}", manager_id=m1)
        _add_tasks(world.engine, m1, cid, AS_OF, 1)
        with transaction(world.engine) as s:
            task_id = s.scalar(select(func.max(CallTask.id)))
            complete(
                s,
                task_id,
                outcome,
                local(AS_OF, 10, i % 50),
                AS_OF,
                M1,
                3 if outcome == "reached" else None,
            )
        ids.append(task_id)
    return ids


def _draw(world, day=AS_OF, share="0.10", seed="s1", outcomes=("reached",)):
    with transaction(world.engine) as s:
        return qa.draw_sample(
            s,
            day,
            share=Decimal(share),
            seed=seed,
            outcomes=outcomes,
            tz=SHANGHAI,
            at=world.clock(),
            actor=Actor("cli", "test"),
            rule_hash="h",
        )


def _sampled(world) -> set[int]:
    with transaction(world.engine) as s:
        return set(s.scalars(select(QaSample.task_id)))


def test_the_sample_is_a_reproducible_tenth_and_drawing_again_adds_nothing(world):
    calls = _calls(world, 23)
    first = _draw(world)
    assert (first.calls, first.target, first.drawn, first.sampled) == (23, 3, 3, 3)
    chosen = _sampled(world)
    expected = sorted(calls, key=lambda t: qa.sample_key("s1", AS_OF, t))[:3]
    assert chosen == set(expected)
    again = _draw(world)
    assert (again.drawn, again.sampled) == (0, 3) and _sampled(world) == chosen
    with transaction(world.engine) as s:
        rows = list(s.scalars(select(AuditLog).where(AuditLog.action == "qa.sample_drawn")))
    assert len(rows) == 1 and json.loads(rows[0].details)["task_ids"] == sorted(chosen)


def test_the_sample_takes_only_that_days_calls_with_a_sampled_outcome(world):
    _calls(world, 4)
    _calls(world, 6, outcome="no_answer")
    result = _draw(world, share="0.5")
    assert (result.calls, result.target) == (4, 2)
    assert _draw(world, day=AS_OF - timedelta(days=1)).calls == 0
    assert _draw(world, day=AS_OF, share="1", seed="s2").sampled == 4
    with pytest.raises(qa.QaError):
        _draw(world, share="0")


def test_a_review_scores_each_criterion_once_and_is_audited(world):
    _calls(world, 1)
    _draw(world)
    with transaction(world.engine) as s:
        (sample,), total = qa.list_samples(s)
    assert total == 1 and sample.scores is None
    s1 = world.crm.manager_id("S1")
    missing = {"accuracy": 5, "courtesy": 4}
    for bad in (missing, {**missing, "proactive_offer": 6}):
        with pytest.raises(qa.QaError), transaction(world.engine) as s:
            qa.review(s, sample.sample_id, s1, bad, None, world.clock(), Actor("manager", "S1"))
    scores = {"accuracy": 5, "courtesy": 4, "proactive_offer": 2}
    with transaction(world.engine) as s:
        qa.review(s, sample.sample_id, s1, scores, " good ", world.clock(), Actor("manager", "S1"))
    with pytest.raises(qa.QaError, match="already"), transaction(world.engine) as s:
        qa.review(s, sample.sample_id, s1, scores, None, world.clock(), Actor("manager", "S1"))
    with transaction(world.engine) as s:
        row = qa.get_sample(s, sample.sample_id)
        results = qa.per_manager(s, AS_OF, AS_OF)
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "qa.reviewed")).one()
    assert row.scores == scores and row.review_note == "good" and row.reviewer_ref == "S1"
    assert row.average == Decimal("3.7")
    (m1,) = results
    assert (m1.manager_ref, m1.sampled, m1.reviewed, m1.averages["courtesy"]) == (
        "M1",
        1,
        1,
        Decimal("4.0"),
    )
    assert audit.actor_id == "S1" and json.loads(audit.details)["scores"] == scores


# --- accounts -----------------------------------------------------------------------------


def test_passwords_are_argon2_hashes_and_too_short_ones_are_refused(world):
    with transaction(world.engine) as s:
        stored = s.scalars(select(StaffAccount.password_hash)).all()
    assert all(h.startswith("$argon2id$") for h in stored)
    assert not any("password" in h for h in stored)
    with pytest.raises(AccountError, match="at least 8"), transaction(world.engine) as s:
        accounts.set_password(s, "M1", "short", world.clock(), M1)
    with pytest.raises(NotFound), transaction(world.engine) as s:
        accounts.set_password(s, "m1", "long-enough-1", world.clock(), M1)


def test_authenticate_counts_failures_and_throttles(world):
    limits = LoginLimits(window=timedelta(minutes=10), per_login=3, per_client=100)
    at = world.clock()
    for _ in range(3):
        with transaction(world.engine) as s:
            assert accounts.authenticate(s, "M1", "nope", "1.2.3.4", at, limits) is None
        at += timedelta(minutes=1)
    with pytest.raises(LoginThrottled) as err, transaction(world.engine) as s:
        accounts.authenticate(s, "M1", "li-na-password", "1.2.3.4", at, limits)
    assert err.value.retry_after == 7 * 60  # the first failure leaves the window in 7 min
    at += timedelta(minutes=7)
    with transaction(world.engine) as s:
        account = accounts.authenticate(s, " M1 ", "li-na-password", "1.2.3.4", at, limits)
    assert account is not None and account.manager_ref == "M1" and account.role == "manager"


def test_the_signing_secret_is_made_once_per_database(world):
    with transaction(world.engine) as s:
        first = accounts.signing_secret(s, "session", world.clock())
    with transaction(world.engine) as s:
        assert accounts.signing_secret(s, "session", world.clock()) == first
    assert len(first) >= 40


# --- read models --------------------------------------------------------------------------


def test_my_day_sections_order_and_counts(world):
    m1 = world.crm.manager_id("M1")
    with transaction(world.engine) as s:
        s.execute(
            CallTask.__table__.update()
            .where(CallTask.id == world.tasks["D"])
            .values(priority=2, scheduled_on=AS_OF - timedelta(days=3))
        )
    with transaction(world.engine) as s:
        day = worklist.my_day(s, m1, AS_OF, limit=1)
    assert day.ready.total == 2 and len(day.ready.rows) == 1
    assert [r.customer_ref for r in day.overdue.rows] == ["D"] and day.overdue.total == 1
    assert [r.customer_ref for r in day.waiting.rows] == ["E"]
    with transaction(world.engine) as s:
        full = worklist.my_day(s, m1, AS_OF)
    a = next(r for r in full.ready.rows if r.customer_ref == "A")
    assert a.clubs == ["film", "music"] and len(a.usage) == 3 and a.allowance is not None
    assert a.notice_state == "no_notice"
    assert next(r for r in full.ready.rows if r.customer_ref == "B").notice_state == "sent"


def test_task_list_pages_and_the_export_agree(world):
    m1 = world.crm.manager_id("M1")
    _add_tasks(world.engine, m1, world.crm.get("A").id, AS_OF + timedelta(days=1), 7)
    flt = worklist.TaskFilter(manager_id=m1, open_only=True)
    with transaction(world.engine) as s:
        page1, total = worklist.task_page(s, flt, AS_OF, limit=5)
        page2, _ = worklist.task_page(s, flt, AS_OF, limit=5, offset=5)
        exported = list(worklist.iter_tasks(s, flt, batch=3))
    assert total == 11 == len(exported)
    assert [r.id for r in page1 + page2] == [r.id for r in exported][:10]
    assert {r.manager_id for r in exported} == {m1}


def test_the_timeline_is_newest_first_with_message_texts(world):
    with transaction(world.engine) as s:
        complete(s, world.tasks["B"], "reached", world.clock(), AS_OF, M1, 5, "liked it")
    b = world.crm.get("B")
    with transaction(world.engine) as s:
        entries = timeline(s, b.id, "B")
    kinds = [e.kind for e in entries]
    assert kinds[0] == "task.done" and "message" in kinds
    assert entries[0].journey == "callback"  # which of the customer's calls it was
    assert all(not k.startswith("message.") for k in kinds)
    assert entries == sorted(entries, key=lambda e: e.at, reverse=True)
    message = next(e for e in entries if e.kind == "message")
    assert message.status == "sent" and NAMES["B"].split()[0] in (message.text or "")


def test_reports_group_by_the_readers_day(world):
    with transaction(world.engine) as s:
        complete(s, world.tasks["A"], "reached", local(AS_OF, 10), AS_OF, M1, 5)
        complete(s, world.tasks["B"], "declined", local(AS_OF, 23, 30), AS_OF, M1, 2)
    with transaction(world.engine) as s:
        shanghai = dict(reports.completed_per_day(s, AS_OF + timedelta(days=1), SHANGHAI, 3))
        utc = dict(reports.completed_per_day(s, AS_OF + timedelta(days=1), ZoneInfo("UTC"), 3))
        tiers = reports.satisfaction_by(s, AS_OF, SHANGHAI, "tier")
        journeys = reports.satisfaction_by(s, AS_OF, SHANGHAI, "journey")
        team = {r.manager_ref: r for r in reports.team(s, AS_OF)}
        days, by_status = reports.messages_per_day(s, AS_OF, SHANGHAI, 7)
    assert shanghai[AS_OF] == 2 and shanghai[AS_OF + timedelta(days=1)] == 0
    assert utc[AS_OF] == 2  # 10:00 and 23:30 Shanghai are 02:00 and 15:30 UTC
    assert tiers == [("diamond", Decimal("3.50"), 2)]
    assert journeys == [("callback", Decimal("3.50"), 2)]
    m1 = team["M1"]
    assert (m1.open_tasks, m1.overdue, m1.due_in_window, m1.done_in_window) == (2, 0, 4, 2)
    assert m1.completion_rate == Decimal("0.500") and "S1" not in team
    assert days[-1] == AS_OF and sum(by_status["sent"]) >= 3


def test_a_grace_follow_up_card_carries_the_credit_and_its_deadline(world):
    m1 = world.crm.manager_id("M1")
    world.crm.customer("G", tier="diamond", balance=Decimal("-200.00"), manager_id=m1)
    world.crm.run(AS_OF, "grace_credit")
    world.crm.dispatch(local(AS_OF, 10))  # the grace notice reaches the customer
    deadline = AS_OF + timedelta(days=3)
    suspended_on = deadline + timedelta(days=1)  # the day after the deadline
    world.crm.run(suspended_on, "grace_credit")
    with transaction(world.engine) as s:
        day = worklist.my_day(s, m1, suspended_on)
        rows = [r for r in day.ready.rows + day.waiting.rows if r.customer_ref == "G"]
        (row,) = rows
        card = worklist.task_card(s, row.id, suspended_on, m1)
    assert row.kind == "grace_followup" and row.grace is not None
    assert (row.grace.amount, row.grace.deadline, row.grace.status) == (
        Decimal("50.00"),
        deadline,
        "suspended",
    )
    # the 50.00 advance was taken back when the grace ended
    assert row.balance == Decimal("-200.00") and card is not None and card.grace == row.grace


def test_a_waiting_pre_call_notice_follows_its_rescheduled_call(world):
    from crm.models import OutboundMessage
    from vipcare.calls import reschedule_call

    window = world.crm.ruleset.contact_policy.send_window
    thursday = AS_OF + timedelta(days=3)
    with transaction(world.engine) as s:
        reschedule_call(
            s, world.tasks["E"], thursday, "asked for Thursday", world.clock(), AS_OF, M1, window
        )
    notice = world.task("E").notice_message_id
    with transaction(world.engine) as s:
        message = s.get(OutboundMessage, notice)
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "message.deferred")).one()
    assert message.status == "queued" and message.scheduled_for == local(thursday, 9)
    assert json.loads(audit.details)["reason"] == "call moved to 2026-11-26"
    # a notice that already went out stays as it was; only the task moves
    sent = world.task("B").notice_message_id
    with transaction(world.engine) as s:
        before = s.get(OutboundMessage, sent).scheduled_for
        reschedule_call(s, world.tasks["B"], thursday, "later", world.clock(), AS_OF, M1, window)
    with transaction(world.engine) as s:
        assert s.get(OutboundMessage, sent).scheduled_for == before
    assert world.task("B").scheduled_on == thursday
