"""A manager's work: My day, the task list and its CSV, a task card, working a task,
rescheduling, and the customer timeline.

A manager only ever reads with their own manager id in the query, so another
manager's task or customer is simply not found (404, the same page as an id
that does not exist). Supervisors read everyone's (phones masked) but do not
work calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import FormData

from crm import capacity, tasks
from crm.audit import Actor
from crm.errors import InvalidTransition, NotFound
from crm.models import TASK_KINDS, TASK_OUTCOMES, TASK_STATUSES, Manager
from crm.phones import mask
from crm.statuses import RescheduleRefusal, TaskKind, TaskOutcome, TaskStatus
from crm.timeline import customer_card, timeline
from crm.worklist import (
    TaskCursor,
    TaskFilter,
    TaskRow,
    customer_tasks,
    my_day,
    same_call,
    task_batch,
    task_card,
    task_page,
)
from vipcare.calls import reschedule_call
from vipcare.errors import describe_error
from vipcare.web import labels
from vipcare.web.csvout import csv_response
from vipcare.web.deps import (
    PageNumber,
    RowId,
    Viewer,
    WebConfig,
    checked_form,
    config,
    render,
    score,
    viewer,
)
from vipcare.web.fmt import Formatter
from vipcare.web.i18n import N_

router = APIRouter()
log = logging.getLogger(__name__)
NOTE_MAX = 2000
OPEN_FILTER = "open"
"""The task list's status filter for every task still to call (awaiting its SMS or ready)."""


def _manager_scope(web: WebConfig, who: Viewer, ref: str | None) -> tuple[int, str, str]:
    """(manager id, ref, name) whose work to show: a manager always their own; a
    supervisor anyone's (404 for an unknown id)."""
    if not who.is_supervisor or not ref:
        return who.account.manager_id, who.account.manager_ref, who.account.name
    with web.read() as session:
        found = session.execute(
            select(Manager.id, Manager.external_id, Manager.name).where(Manager.external_id == ref)
        ).first()
    if found is None:
        raise HTTPException(404)
    return int(found[0]), str(found[1]), str(found[2])


@router.get("/day", response_model=None)
def day_page(
    request: Request,
    manager: str | None = None,
    msg: str | None = None,
    id: int | None = None,
    on: str | None = None,
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> Response:
    if who.is_supervisor and not manager:
        return RedirectResponse("/team", status_code=303)
    manager_id, ref, name = _manager_scope(web, who, manager)
    with web.read() as session:
        day = my_day(session, manager_id, who.today, web.page_size)
        capacity_n = session.connection().scalar(
            select(Manager.daily_call_capacity).where(Manager.id == manager_id)
        )
    return render(
        request,
        "day.html",
        who,
        day=day,
        manager_ref=ref,
        manager_name=name,
        capacity=capacity_n or 0,
        read_only=not who.owns(manager_id),
        flash=_flash(who, msg, id, on),
    )


def _flash(who: Viewer, msg: str | None, task_id: int | None, on: str | None) -> str | None:
    fmt = Formatter(who.locale, who.tz)
    if msg == "done" and task_id:
        return fmt.t("msg_task_done", id=task_id)
    if msg == "retry" and task_id and on:
        return fmt.t("msg_task_retry", id=task_id, day=on[:10])
    if msg == "rescheduled" and task_id and on:
        return fmt.t("msg_task_rescheduled", id=task_id, day=on[:10])
    return None


# --- the task list ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    status: str | None
    kind: str | None
    since: date | None
    until: date | None
    manager: str | None
    page: int

    def params(self, **override: Any) -> str:
        values = {
            "status": self.status,
            "kind": self.kind,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "manager": self.manager,
            "page": self.page,
        }
        values.update(override)
        return urlencode({k: v for k, v in values.items() if v not in (None, "", 1)})


def _date_param(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, detail="bad date") from None


def list_query(
    status: str | None = None,
    kind: str | None = None,
    since: str | None = None,
    until: str | None = None,
    manager: str | None = None,
    page: PageNumber = 1,
) -> ListQuery:
    """The task list's filters from the query string (the page and its CSV share them)."""
    if status and status not in (*TASK_STATUSES, OPEN_FILTER):
        raise HTTPException(400, detail="bad status")
    if kind and kind not in TASK_KINDS:
        raise HTTPException(400, detail="bad kind")
    return ListQuery(
        status or None,
        kind or None,
        _date_param(since),
        _date_param(until),
        manager or None,
        max(1, page),
    )


def _filter(web: WebConfig, who: Viewer, q: ListQuery) -> TaskFilter:
    manager_id: int | None = who.account.manager_id
    if who.is_supervisor:
        manager_id = _manager_scope(web, who, q.manager)[0] if q.manager else None
    return TaskFilter(
        manager_id=manager_id,
        status=None if q.status == OPEN_FILTER else q.status,
        open_only=q.status == OPEN_FILTER,
        kind=q.kind,
        since=q.since,
        until=q.until,
    )


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(
    request: Request,
    q: ListQuery = Depends(list_query),
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    flt = _filter(web, who, q)
    size = web.page_size
    with web.read() as session:
        rows, total = task_page(session, flt, who.today, size, (q.page - 1) * size)
        managers = (
            session.execute(
                select(Manager.external_id, Manager.name).order_by(Manager.external_id)
            ).all()
            if who.is_supervisor
            else []
        )
    return render(
        request,
        "tasks.html",
        who,
        rows=rows,
        total=total,
        q=q,
        first=(q.page - 1) * size + 1 if rows else 0,
        last=(q.page - 1) * size + len(rows),
        has_next=q.page * size < total,
        open_filter=OPEN_FILTER,
        statuses=list(TaskStatus),
        kinds=list(TaskKind),
        managers=managers,
    )


TASK_CSV_HEADER = (
    "task_id",
    "scheduled_on",
    "due_on",
    "priority",
    "kind",
    "status",
    "customer_id",
    "customer_name",
    "phone",
    "tier",
    "clubs",
    "plan_code",
    "balance",
    "last_contact_on",
    "why",
    "pre_call_sms",
    "outcome",
    "satisfaction",
    "note",
    "completed_at",
    "manager_id",
)


EXPORT_BATCH = 1000


@router.get("/tasks.csv")
def tasks_csv(
    q: ListQuery = Depends(list_query),
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> StreamingResponse:
    """Every task matching the list's filters (all pages), streamed in batches.

    Each batch is read in its own short transaction and the connection goes back to
    the pool before a byte of it is sent: a download that stalls (a slow line, a
    client that stopped reading) holds no connection, so it cannot starve the other
    requests. The first batch is read before the answer starts, so a database that
    is down gives the error page, not a broken file.
    """
    flt = _filter(web, who, q)
    fmt = Formatter(who.locale, who.tz)

    def read(after: TaskCursor | None) -> tuple[list[TaskRow], TaskCursor | None]:
        with web.read() as session:
            return task_batch(session, flt, after, EXPORT_BATCH)

    first = read(None)

    def rows() -> Iterator[list[Any]]:
        batch, after = first
        while True:
            for r in batch:
                yield _csv_row(who, fmt, r)
            if after is None:
                return
            last = after
            try:
                batch, after = read(last)
            except SQLAlchemyError as exc:  # the answer has started: say so in the file
                log.warning("/tasks.csv stopped after task %s: %s", last[2], describe_error(exc))
                yield [fmt.t("export_interrupted")]
                return

    return csv_response(f"tasks-{who.today.isoformat()}.csv", TASK_CSV_HEADER, rows())


def _csv_row(who: Viewer, fmt: Formatter, r: TaskRow) -> list[Any]:
    """One task as an export row. Access follows the customer's manager *now*: the whole
    number goes only to them, and a call a manager worked for a customer since moved to
    someone else stays in their history without that customer's current details."""
    theirs = who.owns(r.customer_manager_id)
    details = theirs or who.is_supervisor
    return [
        r.id,
        r.scheduled_on,
        r.due_on,
        r.priority,
        r.kind,
        r.status,
        r.customer_ref,
        r.customer_name,
        r.phone if theirs else mask(r.phone),
        r.tier if details else "",
        "|".join(r.clubs) if details else "",
        (r.plan_code or "") if details else "",
        r.balance if details else "",
        (r.last_contact_on or "") if details else "",
        fmt.why(r),
        fmt.notice(r),
        r.outcome or "",
        r.satisfaction or "",
        r.note or "",
        fmt.iso(r.completed_at),
        r.manager_ref or "",
    ]


# --- one task -----------------------------------------------------------------------------


def _load_task(web: WebConfig, who: Viewer, task_id: int) -> TaskRow:
    with web.read() as session:
        row = task_card(
            session, task_id, who.today, None if who.is_supervisor else who.account.manager_id
        )
    if row is None:
        raise HTTPException(404)
    return row


def _task_page(
    request: Request,
    web: WebConfig,
    who: Viewer,
    row: TaskRow,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    next_free = None
    with web.read() as session:
        also = same_call(session, row) if row.is_open else []
        if row.is_open and row.manager_id is not None:
            cap = session.scalar(
                select(Manager.daily_call_capacity).where(Manager.id == row.manager_id)
            )
            next_free = capacity.next_day_with_room(
                session, row.manager_id, cap or 0, who.today, skip=row.scheduled_on
            )
        recent = timeline(session, row.customer_key, row.customer_ref, limit=8)
    return render(
        request,
        "task.html",
        who,
        status_code=status_code,
        task=row,
        can_work=who.owns(row.manager_id) and row.is_open,
        whole_phone=who.owns(row.customer_manager_id),
        outcomes=list(TaskOutcome),
        reached=tasks.REACHED,
        next_free=next_free,
        recent=recent,
        also=also,
        flash=flash,
        errors=errors or {},
        values=values or {},
    )


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_detail(
    request: Request,
    task_id: RowId,
    msg: str | None = None,
    id: int | None = None,
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    flash = _flash(who, msg, id, None)
    return _task_page(request, web, who, _load_task(web, who, task_id), flash=flash)


def _own_open_task(web: WebConfig, who: Viewer, task_id: int) -> TaskRow:
    if who.is_supervisor:
        row = _load_task(web, who, task_id)
        if not who.owns(row.manager_id):
            raise HTTPException(403, detail=N_("supervisor_read_only"))
        return row
    return _load_task(web, who, task_id)


@router.post("/tasks/{task_id}/complete", response_model=None)
def complete_task(
    request: Request,
    task_id: RowId,
    form: FormData = Depends(checked_form),
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> Response:
    row = _own_open_task(web, who, task_id)
    outcome = str(form.get("outcome", ""))
    raw_sat = str(form.get("satisfaction", "")).strip()
    note = str(form.get("note", "")).strip()
    values = {"outcome": outcome, "satisfaction": raw_sat, "note": note}
    errors: dict[str, str] = {}
    satisfaction: int | None = None
    if outcome not in TASK_OUTCOMES:
        errors["outcome"] = N_("err_outcome")
    if raw_sat:
        satisfaction = score(raw_sat)
        if satisfaction is not None:
            if outcome in TASK_OUTCOMES and outcome not in tasks.REACHED:
                errors["satisfaction"] = N_("err_satisfaction_reached")
        else:
            errors["satisfaction"] = N_("err_satisfaction")
    if len(note) > NOTE_MAX:
        errors["note"] = N_("err_note_long")
    if not errors:
        try:
            with web.write() as session:
                done = tasks.complete(
                    session,
                    task_id,
                    outcome,
                    web.clock(),
                    who.today,
                    Actor("manager", who.account.manager_ref),
                    satisfaction,
                    note or None,
                    web.retry_policy(),
                    manager_ref=who.account.manager_ref,
                )
        except InvalidTransition as exc:
            errors["form"] = (
                N_("not_ready_yet")
                if exc.current == TaskStatus.AWAITING_NOTICE
                else N_("err_task_changed")
            )
        except NotFound:
            raise HTTPException(404) from None
        else:
            if done.retry_task_id is not None:
                with web.read() as session:
                    retry = task_card(session, done.retry_task_id, who.today, row.manager_id)
                on = retry.scheduled_on.isoformat() if retry else ""
                return RedirectResponse(f"/day?msg=retry&id={task_id}&on={on}", status_code=303)
            following: list[TaskRow] = []
            if outcome in tasks.REACHED:
                with web.read() as session:
                    following = [
                        t
                        for t in same_call(session, row)
                        if t.status == "ready" and t.scheduled_on <= who.today
                    ]
            if following:  # the customer is still on the line: their next topic
                return RedirectResponse(
                    f"/tasks/{following[0].id}?msg=done&id={task_id}", status_code=303
                )
            return RedirectResponse(f"/day?msg=done&id={task_id}", status_code=303)
    fresh = _load_task(web, who, task_id)
    code = 409 if "form" in errors else 400
    return _task_page(request, web, who, fresh, code, errors, values)


@router.post("/tasks/{task_id}/reschedule", response_model=None)
def reschedule_task(
    request: Request,
    task_id: RowId,
    form: FormData = Depends(checked_form),
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> Response:
    _own_open_task(web, who, task_id)
    raw_day = str(form.get("to", "")).strip()
    reason = str(form.get("reason", "")).strip()
    values = {"to": raw_day, "reason": reason}
    errors: dict[str, str] = {}
    try:
        to = date.fromisoformat(raw_day)
    except ValueError:
        errors["to"] = N_("err_date")
    else:
        try:
            with web.write() as session:
                reschedule_call(
                    session,
                    task_id,
                    to,
                    reason,
                    web.clock(),
                    who.today,
                    Actor("manager", who.account.manager_ref),
                    web.ruleset.contact_policy.send_window,
                    manager_ref=who.account.manager_ref,
                )
        except tasks.RescheduleError as exc:
            refusal = RescheduleRefusal(exc.code)
            field = "reason" if refusal == RescheduleRefusal.REASON else "to"
            errors[field] = labels.key(RescheduleRefusal, refusal)
        except InvalidTransition:
            errors["form"] = N_("err_task_changed")
        except NotFound:
            raise HTTPException(404) from None
        else:
            return RedirectResponse(
                f"/day?msg=rescheduled&id={task_id}&on={to.isoformat()}", status_code=303
            )
    fresh = _load_task(web, who, task_id)
    return _task_page(request, web, who, fresh, 409 if "form" in errors else 400, errors, values)


# --- the customer timeline ----------------------------------------------------------------


@router.get("/customers/{ref}", response_class=HTMLResponse)
def customer_page(
    request: Request,
    ref: str,
    who: Viewer = Depends(viewer),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    with web.read() as session:
        card = customer_card(session, ref, None if who.is_supervisor else who.account.manager_id)
        if card is None:
            raise HTTPException(404)
        entries = timeline(session, card.key, card.ref, limit=200)
        recent_tasks = customer_tasks(session, card.key)
    return render(
        request,
        "customer.html",
        who,
        card=card,
        entries=entries,
        recent_tasks=recent_tasks,
        whole_phone=who.owns(card.manager_id),
    )
