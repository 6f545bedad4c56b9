"""Supervisors: the team report with its charts, and call QA (sample, review, results)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.datastructures import FormData

from crm import qa, reports
from crm.audit import Actor
from crm.errors import NotFound
from crm.models import QA_CRITERIA, Manager
from vipcare.web import charts
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
    supervisor,
)
from vipcare.web.fmt import Formatter
from vipcare.web.i18n import N_

router = APIRouter()
WINDOW_DAYS = 30


def _page_of(items: list[Any], page: int, size: int) -> tuple[list[Any], int]:
    page = max(1, page)
    return items[(page - 1) * size : page * size], page


@router.get("/team", response_class=HTMLResponse)
def team_page(
    request: Request,
    page: PageNumber = 1,
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    fmt = Formatter(who.locale, who.tz)
    today = who.today
    first = today - timedelta(days=WINDOW_DAYS - 1)
    with web.read() as session:
        stats = reports.team(session, today, WINDOW_DAYS)
        qa_results = {r.manager_ref: r for r in qa.per_manager(session, first, today)}
        completed = reports.completed_per_day(session, today, who.tz, WINDOW_DAYS)
        days, by_status = reports.messages_per_day(session, today, who.tz, WINDOW_DAYS)
        by_tier = reports.satisfaction_by(session, today, who.tz, "tier", WINDOW_DAYS)
        by_journey = reports.satisfaction_by(session, today, who.tz, "journey", WINDOW_DAYS)
    shown, page = _page_of(stats, page, web.page_size)
    total_done = sum(n for _, n in completed)
    status_labels = {s: fmt.msg_status(s) for s in by_status}
    return render(
        request,
        "team.html",
        who,
        stats=shown,
        total=len(stats),
        page=page,
        first=(page - 1) * web.page_size + 1 if shown else 0,
        last=(page - 1) * web.page_size + len(shown),
        has_next=page * web.page_size < len(stats),
        qa_results=qa_results,
        window=WINDOW_DAYS,
        completed=completed,
        completed_chart=charts.daily_bars(
            completed,
            fmt.t("chart_completed"),
            f"{total_done} · {fmt.day(first)} – {fmt.day(today)}",
        ),
        message_days=days,
        by_status=by_status,
        status_labels=status_labels,
        messages_chart=charts.stacked_daily_bars(
            days,
            {status_labels[s]: v for s, v in by_status.items()},
            fmt.t("chart_messages"),
            ", ".join(f"{status_labels[s]} {sum(v)}" for s, v in by_status.items()),
            colours={status_labels[s]: charts.status_colour(s) for s in by_status},
        ),
        by_tier=by_tier,
        tier_chart=charts.horizontal_bars(
            [(fmt.tier(g), a, n) for g, a, n in by_tier],
            fmt.t("chart_sat_tier"),
            ", ".join(f"{fmt.tier(g)} {a}" for g, a, _ in by_tier),
        ),
        by_journey=by_journey,
        journey_chart=charts.horizontal_bars(
            [(fmt.journey(g), a, n) for g, a, n in by_journey],
            fmt.t("chart_sat_journey"),
            ", ".join(f"{fmt.journey(g)} {a}" for g, a, _ in by_journey),
        ),
    )


TEAM_CSV_HEADER = (
    "manager_id",
    "name",
    "daily_call_capacity",
    "open_tasks",
    "overdue",
    "planned_last_30_days",
    "done_last_30_days",
    "completion_rate",
    "avg_satisfaction",
    "rated_calls",
    "qa_sampled",
    "qa_reviewed",
    "qa_accuracy",
    "qa_courtesy",
    "qa_proactive_offer",
)


@router.get("/team.csv")
def team_csv(who: Viewer = Depends(supervisor), web: WebConfig = Depends(config)) -> Response:
    today = who.today
    first = today - timedelta(days=WINDOW_DAYS - 1)
    with web.read() as session:
        stats = reports.team(session, today, WINDOW_DAYS)
        results = {r.manager_ref: r for r in qa.per_manager(session, first, today)}
    rows = []
    for s in stats:
        r = results.get(s.manager_ref)
        rows.append(
            [
                s.manager_ref,
                s.name,
                s.capacity,
                s.open_tasks,
                s.overdue,
                s.due_in_window,
                s.done_in_window,
                s.completion_rate,
                s.satisfaction,
                s.rated,
                r.sampled if r else 0,
                r.reviewed if r else 0,
                *((r.averages[c] if r else None) for c in QA_CRITERIA),
            ]
        )
    return csv_response(f"team-{today.isoformat()}.csv", TEAM_CSV_HEADER, rows)


# --- call QA ------------------------------------------------------------------------------


def _qa_filters(
    web: WebConfig, day: str | None, manager: str | None, reviewed: str | None
) -> tuple[date | None, int | None, bool | None]:
    when = None
    if day:
        try:
            when = date.fromisoformat(day)
        except ValueError:
            raise HTTPException(400, detail="bad date") from None
    manager_id = None
    if manager:
        with web.read() as session:
            manager_id = session.scalar(select(Manager.id).where(Manager.external_id == manager))
        if manager_id is None:
            raise HTTPException(404)
    state = {"yes": True, "no": False}.get(reviewed or "")
    return when, manager_id, state


@router.get("/qa", response_class=HTMLResponse)
def qa_page(
    request: Request,
    day: str | None = None,
    manager: str | None = None,
    reviewed: str | None = None,
    page: PageNumber = 1,
    msg: str | None = None,
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    when, manager_id, state = _qa_filters(web, day, manager, reviewed)
    page = max(1, page)
    size = web.page_size
    today = who.today
    with web.read() as session:
        rows, total = qa.list_samples(
            session,
            first=when,
            last=when,
            manager_id=manager_id,
            reviewed=state,
            limit=size,
            offset=(page - 1) * size,
        )
        results = qa.per_manager(session, today - timedelta(days=WINDOW_DAYS - 1), today)
        managers = session.execute(
            select(Manager.external_id, Manager.name).order_by(Manager.external_id)
        ).all()
    params = {"day": day, "manager": manager, "reviewed": reviewed}
    query = urlencode({k: v for k, v in params.items() if v})
    fmt = Formatter(who.locale, who.tz)
    flash = None
    if msg == "reviewed":
        flash = fmt.t("msg_qa_reviewed", id=request.query_params.get("id", ""))
    elif msg == "drawn":
        qp = request.query_params
        flash = fmt.t(
            "msg_qa_drawn",
            day=qp.get("on", ""),
            calls=qp.get("calls", "0"),
            drawn=qp.get("drawn", "0"),
            sampled=qp.get("sampled", "0"),
        )
    return render(
        request,
        "qa.html",
        who,
        rows=rows,
        total=total,
        page=page,
        first=(page - 1) * size + 1 if rows else 0,
        last=(page - 1) * size + len(rows),
        has_next=page * size < total,
        results=results,
        managers=managers,
        day=day or "",
        manager=manager or "",
        reviewed=reviewed or "",
        query=query,
        share=fmt.pct(web.ruleset.call_qa.share),
        yesterday=(today - timedelta(days=1)).isoformat(),
        criteria=QA_CRITERIA,
        flash=flash,
    )


QA_CSV_HEADER = (
    "sample_id",
    "day",
    "task_id",
    "manager_id",
    "customer_id",
    "customer_name",
    "kind",
    "outcome",
    "satisfaction",
    "reviewed_at",
    "reviewer_id",
    *QA_CRITERIA,
    "average",
    "review_note",
)


@router.get("/qa.csv")
def qa_csv(
    day: str | None = None,
    manager: str | None = None,
    reviewed: str | None = None,
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> StreamingResponse:
    when, manager_id, state = _qa_filters(web, day, manager, reviewed)
    fmt = Formatter(who.locale, who.tz)

    def rows() -> Iterator[list[Any]]:
        offset, size = 0, 1000
        while True:
            with web.read() as session:
                page, _total = qa.list_samples(
                    session,
                    first=when,
                    last=when,
                    manager_id=manager_id,
                    reviewed=state,
                    limit=size,
                    offset=offset,
                )
            for r in page:
                yield [
                    r.sample_id,
                    r.day,
                    r.task_id,
                    r.manager_ref or "",
                    r.customer_ref,
                    r.customer_name,
                    r.kind,
                    r.outcome or "",
                    r.satisfaction or "",
                    fmt.iso(r.reviewed_at),
                    r.reviewer_ref or "",
                    *((r.scores or {}).get(c, "") for c in QA_CRITERIA),
                    r.average if r.average is not None else "",
                    r.review_note or "",
                ]
            if len(page) < size:
                return
            offset += size

    return csv_response(f"call-qa-{who.today.isoformat()}.csv", QA_CSV_HEADER, rows())


@router.post("/qa/draw")
def qa_draw(
    form: FormData = Depends(checked_form),
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> RedirectResponse:
    try:
        day = date.fromisoformat(str(form.get("day", "")))
    except ValueError:
        raise HTTPException(400, detail="bad date") from None
    if day > who.today:
        raise HTTPException(400, detail="future day")
    rule = web.ruleset.call_qa
    with web.write() as session:
        result = qa.draw_sample(
            session,
            day,
            share=rule.share,
            seed=rule.seed,
            outcomes=tuple(rule.outcomes),
            tz=web.operator_tz,
            at=web.clock(),
            actor=Actor("manager", who.account.manager_ref),
            rule_hash=rule.content_hash or None,
        )
    query = urlencode(
        {
            "msg": "drawn",
            "on": day.isoformat(),
            "calls": result.calls,
            "drawn": result.drawn,
            "sampled": result.sampled,
            "day": day.isoformat(),
        }
    )
    return RedirectResponse(f"/qa?{query}", status_code=303)


def _review_page(
    request: Request,
    web: WebConfig,
    who: Viewer,
    sample_id: RowId,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    with web.read() as session:
        row = qa.get_sample(session, sample_id)
    if row is None:
        raise HTTPException(404)
    return render(
        request,
        "qa_review.html",
        who,
        status_code=status_code,
        row=row,
        criteria=QA_CRITERIA,
        error=error,
        values=values or {},
    )


@router.get("/qa/{sample_id}", response_class=HTMLResponse)
def qa_review_form(
    request: Request,
    sample_id: RowId,
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> HTMLResponse:
    return _review_page(request, web, who, sample_id)


@router.post("/qa/{sample_id}", response_model=None)
def qa_review(
    request: Request,
    sample_id: RowId,
    form: FormData = Depends(checked_form),
    who: Viewer = Depends(supervisor),
    web: WebConfig = Depends(config),
) -> Response:
    values = {c: str(form.get(c, "")) for c in QA_CRITERIA}
    values["note"] = str(form.get("note", "")).strip()
    scores = {c: s for c in QA_CRITERIA if (s := score(values[c])) is not None}
    if len(scores) != len(QA_CRITERIA):
        return _review_page(request, web, who, sample_id, 400, N_("err_scores"), values)
    if len(values["note"]) > 2000:
        return _review_page(request, web, who, sample_id, 400, N_("err_note_long"), values)
    try:
        with web.write() as session:
            qa.review(
                session,
                sample_id,
                who.account.manager_id,
                scores,
                values["note"],
                web.clock(),
                Actor("manager", who.account.manager_ref),
            )
    except NotFound:
        raise HTTPException(404) from None
    except qa.QaError:
        return _review_page(request, web, who, sample_id, 409, N_("err_qa_done"), values)
    return RedirectResponse(f"/qa?msg=reviewed&id={sample_id}", status_code=303)
