"""The writer: a batch of decisions becomes rows, in the caller's transaction, through owners.

First the occurrence keys (the idempotence gate: ``INSERT … ON CONFLICT DO
NOTHING RETURNING``); then, only for the keys this writer actually inserted,
the credits (``crm.ledger``), suspensions (``crm.lines``, which also withdraw
the care that must no longer happen), messages (``notifications.outbox``), call
tasks (``crm.tasks``, planned by the capacity planner), the journey's own rows,
and the audit rows — all as bulk statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from crm import audit, ledger, lines, tasks
from crm.audit import AuditEntry
from crm.bulk import insert_ignoring_conflicts
from crm.capacity import CapacityPlanner
from crm.models import JourneyOccurrence
from crm.statuses import ReasonCode
from flows.journeys.context import RunContext
from flows.journeys.hygiene import withdraw_care
from flows.journeys.intents import Decision, JourneyReport
from flows.journeys.protocol import Journey
from notifications.outbox import queue
from notifications.policy import schedule_in_window
from rules.models import JourneyBase, PrecallNoticeRule, SendSms, SendVoice
from rules.templates import render


def apply_decisions(
    session: Session,
    ctx: RunContext,
    journey: Journey,
    rule: JourneyBase,
    decisions: Sequence[Decision],
    report: JourneyReport,
    planner: CapacityPlanner,
) -> list[Decision]:
    """Write a batch of decisions; returns those this writer won (the rest already existed)."""
    if not decisions:
        return []
    journey_id, rule_id, rule_hash = rule.journey, rule.rule_id, rule.content_hash
    # serialised once, in the audit chain's canonical form: the key row stores it, the audit
    # row hashes it
    summaries = [audit.canonical(d.summary()) for d in decisions]
    occ_rows = [
        {
            "journey": journey_id,
            "customer_id": d.customer.id,
            "occurrence": d.occurrence,
            "decided_at": ctx.at,
            "as_of": ctx.as_of,
            "rule_id": rule_id,
            "rule_hash": rule_hash,
            "run_id": ctx.run_id,
            "details": summary,
        }
        for d, summary in zip(decisions, summaries, strict=True)
    ]
    won_keys = insert_ignoring_conflicts(
        session, JourneyOccurrence, occ_rows, returning="customer_id"
    )
    won_at = [i for i, d in enumerate(decisions) if d.customer.id in won_keys]
    won = [decisions[i] for i in won_at]
    report.decided += len(won)
    report.skipped_existing += len(decisions) - len(won)
    if not won:
        return []
    if any(d.tasks or d.suspend is not None for d in won):
        planner.snapshot()  # the load as it was before this batch cancels or plans calls
    entries = _post_credits(session, ctx, rule, won, report)
    entries += _suspend(session, ctx, rule, won, report)
    _write_messages(session, ctx, journey, rule, won, report)
    _write_tasks(session, ctx, rule, won, report, planner)
    entries += journey.after_write(session, ctx, rule, won)
    action = f"journey.{journey_id}"
    entries += [
        AuditEntry(
            action=action,
            details=summaries[i],
            customer_id=decisions[i].customer.id,
            customer_ref=decisions[i].customer.external_id,
            entity=f"occurrence:{journey_id}:{decisions[i].occurrence}",
            rule_id=rule_id,
            rule_hash=rule_hash,
        )
        for i in won_at
    ]
    audit.append(session, ctx.actor, ctx.recorded_at, entries)
    return won


def _post_credits(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
) -> list[AuditEntry]:
    journey_id, rule_id, rule_hash = rule.journey, rule.rule_id, rule.content_hash
    postings = [
        ledger.Posting(
            customer_id=d.customer.id,
            customer_ref=d.customer.external_id,
            amount=credit.amount,
            kind=credit.kind,
            journey=journey_id,
            occurrence=d.occurrence,
            rule_id=rule_id,
            rule_hash=rule_hash,
        )
        for d in won
        for credit in d.credits
    ]
    entries, balances = ledger.post(session, postings, ctx.recorded_at, care_day=ctx.as_of)
    for d in won:
        d.customer.balance = balances.get(d.customer.id, d.customer.balance)
    report.counts["credits"] += len(postings)
    return entries


def _suspend(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
) -> list[AuditEntry]:
    wanted = [d for d in won if d.suspend is not None]
    if not wanted:
        return []
    reason = next(d.suspend.reason for d in wanted if d.suspend is not None)
    changed = lines.suspend(
        session,
        [
            lines.Suspension(
                customer_id=d.customer.id,
                customer_ref=d.customer.external_id,
                balance=d.customer.balance,
                entity=f"occurrence:{rule.journey}:{d.occurrence}",
                rule_id=rule.rule_id,
                rule_hash=rule.content_hash,
            )
            for d in wanted
        ],
        ctx.recorded_at,
        ctx.actor,
        reason or "suspended by the journey",
    )
    for d in wanted:
        d.customer.status = "suspended" if d.customer.id in changed else d.customer.status
    report.counts["suspended"] += len(changed)
    if changed:
        from crm.models import Customer

        counts = withdraw_care(session, ctx, Customer.id.in_(changed), "suspended")
        for key, value in counts.items():
            report.counts[key] += value
    return []


def _write_messages(
    session: Session,
    ctx: RunContext,
    journey: Journey,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
) -> None:
    rows: list[dict[str, Any]] = []
    owners: list[Decision] = []
    hashes: dict[int, str] = {}  # per rule object: pydantic's private attributes are slow
    window = ctx.policy.send_window
    for d in won:
        c = d.customer
        for m in d.messages:
            template = m.rule.template(m.template)
            rule_hash = hashes.get(id(m.rule))
            if rule_hash is None:
                rule_hash = hashes[id(m.rule)] = m.rule.content_hash
            now = ctx.recorded_at
            start = now if m.not_before is None else max(now, m.not_before)
            row = queue.new_row(
                queue.NewMessage(
                    customer_id=c.id,
                    channel=template.channel,
                    category=template.category,
                    template=m.template,
                    journey=m.rule.journey,
                    occurrence=d.occurrence,
                    locale=c.locale,
                    to_phone=c.phone,
                    body=render(m.rule, m.template, c.locale, m.variables),
                    variables=m.variables,
                    scheduled_for=schedule_in_window(start, c.timezone, window),
                    valid_until=m.valid_until,
                    rule_hash=rule_hash,
                    sms_opt_out=c.sms_opt_out,
                    do_not_call=c.do_not_call,
                ),
                ctx.recorded_at,
            )
            rows.append(row)
            owners.append(d)
            report.counts[f"messages_{row['status']}"] += 1
    ids = queue.enqueue(session, rows, with_ids=journey.links_messages)
    if journey.links_messages:
        for d, mid in zip(owners, ids, strict=True):
            d.message_ids.append(mid)


def notice_rule(ctx: RunContext) -> PrecallNoticeRule | None:
    """The pre-call notice rule, when it is on and has a message to send."""
    rule = ctx.ruleset.journeys.get("precall_notice")
    if not isinstance(rule, PrecallNoticeRule) or not rule.enabled:
        return None
    if not any(isinstance(a, SendSms | SendVoice) for a in rule.action_list):
        return None
    return rule


def _write_tasks(
    session: Session,
    ctx: RunContext,
    rule: JourneyBase,
    won: list[Decision],
    report: JourneyReport,
    planner: CapacityPlanner,
) -> None:
    """Plan and create call tasks; each waits for its pre-call notice (or is ready at once).

    The notice itself is the ``precall_notice`` journey's, which runs after the
    task-creating journeys: one notice per customer per day covers all of that
    customer's calls.
    """
    precall = notice_rule(ctx)
    planner.prefetch(d.customer.id for d in won if d.tasks)
    journey_id, rule_hash = rule.journey, rule.content_hash
    rows: list[dict[str, Any]] = []
    for d in won:
        c = d.customer
        for t in d.tasks:
            if c.do_not_call:  # never a call task, whatever the journey
                report.counts["tasks_skipped_do_not_call"] += 1
                continue
            scheduled = planner.assign(c.manager_id, c.id, t.earliest)
            row: dict[str, Any] = {
                "customer_id": c.id,
                "manager_id": c.manager_id,
                "kind": t.kind,
                "journey": journey_id,
                "occurrence": d.occurrence,
                "priority": t.priority,
                "due_on": t.due_on,
                "scheduled_on": scheduled,
                "details": audit.canonical(t.details),
                "attempt": t.attempt,
                "rule_hash": rule_hash,
                "created_at": ctx.recorded_at,
                "status": tasks.AWAITING_NOTICE,
                "no_notice": False,
                "ready_at": None,
                "notice_message_id": None,
            }
            reason = None
            if c.sms_opt_out:
                reason = f"{ReasonCode.OPT_OUT}: customer opted out of SMS"
            elif precall is None:
                reason = f"{ReasonCode.PRECALL_OFF}: the pre-call notice journey is off"
            if reason is not None:
                row.update(status=tasks.READY, no_notice=True, ready_at=ctx.recorded_at)
                row["details"] = audit.canonical({**t.details, "no_notice_reason": reason})
                report.counts["tasks_no_notice"] += 1
            rows.append(row)
            report.counts[f"tasks_{t.kind}"] += 1
    tasks.create_tasks(session, rows)
