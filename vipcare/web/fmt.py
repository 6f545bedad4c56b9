"""How values read on a page, in the viewer's language and time zone: times, dates,
money and numbers (through Babel's CLDR data), the labels of coded values, and the
one-line "why" of a call and its pre-call SMS."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import NumberPattern, parse_pattern

from crm.phones import mask, readable
from crm.statuses import (
    GRACE_ACTION_PREFIX,
    JOURNEY_ACTION_PREFIX,
    AccountRole,
    ActorType,
    AuditAction,
    Channel,
    Club,
    GraceStatus,
    LineStatus,
    MessageStatus,
    NoticeState,
    QaCriterion,
    ReasonCode,
    SignInNotice,
    TaskKind,
    TaskOutcome,
    TaskStatus,
    Tier,
    reason_code,
)
from crm.timeline import Entry
from crm.worklist import TaskRow
from vipcare.web import labels
from vipcare.web.i18n import babel_locale, known, translations

DAY = "yyyy-MM-dd"
"""Dates in lists, cards and forms: compact, sortable and the same as the CSVs (and what a
date input holds); headings use the locale's full date."""
TIME = "yyyy-MM-dd HH:mm"
MONEY = parse_pattern("#,##0.00")
"""Yuan with two decimals; the ``¥`` is part of each sentence."""


@cache
def _decimal_pattern(places: int) -> NumberPattern:
    return parse_pattern("#,##0" + ("." + "0" * places if places else ""))


# Babel formats each distinct value once per process: a page repeats the same days, times,
# amounts and shares many times, and the cached text is all a page needs.
@lru_cache(maxsize=8192)
def _money(locale: str, amount: Decimal) -> str:
    return MONEY.apply(amount, babel_locale(locale))


@lru_cache(maxsize=8192)
def _time(locale: str, tz: ZoneInfo, value: datetime) -> str:
    return format_datetime(value, TIME, tzinfo=tz, locale=babel_locale(locale))


@lru_cache(maxsize=4096)
def _label(locale: str, enum: type[StrEnum], value: str) -> str:
    try:
        member = enum(value)
    except ValueError:
        return value
    return translations(locale).gettext(labels.key(enum, member.value))


@lru_cache(maxsize=4096)
def _day(locale: str, value: date) -> str:
    return format_date(value, DAY, locale=babel_locale(locale))


@cache
def _month(locale: str, month: int) -> str:
    return format_date(date(2000, month, 1), "MMM", locale=babel_locale(locale))


@lru_cache(maxsize=4096)
def _percent(locale: str, whole: int) -> str:
    """A whole percentage in the locale's percent format (a page shows hundreds of them)."""
    cldr = babel_locale(locale)
    return cldr.percent_formats[None].apply(Decimal(whole) / 100, cldr)


class Formatter:
    """Bound to one viewer's language and time zone; templates call it as ``f``."""

    def __init__(self, locale: str, tz: ZoneInfo) -> None:
        self.locale = locale
        self.tz = tz
        self._text = translations(locale)
        self._cldr = babel_locale(locale)

    def t(self, key: str, **values: Any) -> str:
        text = self._text.gettext(key)
        return text.format(**values) if values else text

    # --- values --------------------------------------------------------------------------
    def _aware(self, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def dt(self, value: datetime | None) -> str:
        if value is None:
            return ""
        return _time(self.locale, self.tz, self._aware(value))

    def iso(self, value: datetime | None) -> str:
        """Machine-readable local time, for ``<time datetime=...>`` and CSV."""
        if value is None:
            return ""
        return self._aware(value).astimezone(self.tz).isoformat(timespec="seconds")

    def day(self, value: date | str | None) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return _day(self.locale, value)

    def iso_day(self, value: date | None) -> str:
        """A date as a form field holds it (``<input type="date">`` wants ISO 8601)."""
        return value.isoformat() if value is not None else ""

    def long_day(self, value: date) -> str:
        """A heading's date with its weekday (``2026年11月23日星期一``)."""
        return format_date(value, "full", locale=self._cldr)

    def month(self, value: date) -> str:
        """A chart's month: ``8月``, ``Aug``."""
        return _month(self.locale, value.month)

    def money(self, value: Decimal | str | None) -> str:
        if value is None or value == "":
            return ""
        return _money(self.locale, Decimal(str(value)))

    def pct(self, value: Decimal | float | None) -> str:
        """A share as a whole percentage: ``0.856`` → ``86%``."""
        if value is None:
            return "–"
        return _percent(self.locale, int(f"{value * 100:.0f}"))  # half to even

    def num(self, value: Decimal | int | None) -> str:
        """A number with the digits it was computed to (an average of 4.50 stays 4.50)."""
        if value is None:
            return "–"
        number = Decimal(value)
        exponent = number.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return _decimal_pattern(places).apply(number, self._cldr)

    # --- coded values --------------------------------------------------------------------
    def label(self, enum: type[StrEnum], value: str | None) -> str:
        """``value``'s label in the viewer's language; a value this version does not know
        (a future one, or a club the operator imported) is shown as stored."""
        if value is None or value == "":
            return ""
        return _label(self.locale, enum, str(value))

    def _named(self, prefix: str, name: str | None) -> str:
        """A journey's or template's label; one a rule file added later shows its name."""
        if not name:
            return ""
        return self.t(prefix + name) if known(prefix + name) else name

    def tier(self, value: str | None) -> str:
        return self.label(Tier, value)

    def kind(self, value: str | None) -> str:
        return self.label(TaskKind, value)

    def outcome(self, value: str | None) -> str:
        return self.label(TaskOutcome, value)

    def status(self, value: str | None) -> str:
        return self.label(TaskStatus, value)

    def msg_status(self, value: str | None) -> str:
        return self.label(MessageStatus, value)

    def journey(self, value: str | None) -> str:
        return self._named(labels.JOURNEY_PREFIX, value)

    def template(self, value: str | None) -> str:
        return self._named(labels.TEMPLATE_PREFIX, value)

    def club(self, value: str) -> str:
        return self.label(Club, value)

    def clubs(self, values: list[str]) -> str:
        sep = "、" if self.locale == "zh-CN" else ", "
        return sep.join(self.club(c) for c in values) if values else self.t("no_clubs")

    def customer_status(self, value: str) -> str:
        return self.label(LineStatus, value)

    def criterion(self, value: str) -> str:
        return self.label(QaCriterion, value)

    def grace_status(self, value: str) -> str:
        return self.label(GraceStatus, value)

    def role(self, value: str) -> str:
        return self.label(AccountRole, value)

    def signin_notice(self, value: str) -> str:
        return self.label(SignInNotice, value)

    def reason(self, text: str | None, status: str | None = None) -> str:
        """A stored ``code: text`` reason as a label. Without a code this version knows,
        the status says enough: a provider error, an expired validity, or nothing recorded."""
        code = reason_code(text)
        if code is None:
            head = (text or "").split(":", 1)[0].strip()
            word = head.removeprefix("notice ").strip() if head.startswith("notice ") else status
            if word in (MessageStatus.FAILED, MessageStatus.UNDELIVERED):
                code = ReasonCode.PROVIDER_ERROR
            elif word == MessageStatus.EXPIRED:
                code = ReasonCode.VALID_UNTIL
            else:
                return self.t("reason_unknown")
        return self.label(ReasonCode, code)

    # --- tasks ---------------------------------------------------------------------------
    def phone(self, phone: str, whole: bool) -> str:
        return readable(phone) if whole else mask(phone)

    def actor(self, actor: str) -> str:
        kind, _, ident = actor.partition(":")
        if kind == ActorType.MANAGER:
            return ident  # a manager is shown by their id
        try:
            return self.label(ActorType, ActorType(kind))
        except ValueError:
            return actor

    def why(self, task: TaskRow) -> str:
        d = task.details
        if task.kind == TaskKind.PLAN_FIT:
            return self.t(
                "why_plan_fit",
                current=d.get("current_plan", "?"),
                suggested=d.get("suggested_plan", "?"),
                current_cost=self.money(d.get("current_monthly_cost")),
                suggested_cost=self.money(d.get("suggested_monthly_cost")),
                saving=self.money(d.get("monthly_saving")),
            )
        if task.kind == TaskKind.CALLBACK:
            if task.attempt > 1:
                return self.t("why_callback_retry", n=task.attempt)
            return self.t("why_callback", due=d.get("due_on", self.day(task.due_on)))
        if task.kind == TaskKind.BIRTHDAY:
            return self.t("why_birthday", day=d.get("birthday_on", self.day(task.due_on)))
        if task.kind == TaskKind.GRACE_FOLLOWUP:
            return self.t("why_grace", balance=self.money(d.get("balance")))
        return self._local_text(d.get("reason_text"), d.get("reason"))

    def _local_text(self, texts: Any, fallback: Any) -> str:
        """A rule file's text per locale (a care task's reason) in the viewer's language."""
        if isinstance(texts, Mapping) and texts:
            for candidate in (self.locale, self.locale.split("-")[0]):
                if candidate in texts:
                    return str(texts[candidate])
        return str(fallback or "")

    def notice(self, task: TaskRow) -> str:
        state = task.notice_state
        if state == NoticeState.NO_NOTICE:
            reason = task.details.get("no_notice_reason") or task.notice_reason
            if reason:
                return self.t("notice_no_notice", reason=self.reason(str(reason)))
            return self.t("notice_no_notice_plain")
        if state == NoticeState.WAITING:
            return self.t("notice_waiting", at=self.dt(task.notice_scheduled_for))
        if state in (NoticeState.SENT, NoticeState.DELIVERED):
            return self.t(labels.key(NoticeState, state), at=self.dt(task.notice_sent_at))
        return self.label(NoticeState, state)

    def usage_points(self, task: TaskRow) -> list[tuple[str, tuple[float, float, float]]]:
        allowance = task.allowance
        if allowance is None:
            return []

        def share(used: int, allowed: int) -> float:
            return used / allowed if allowed else 0.0

        return [
            (
                self.month(u.month),
                (
                    share(u.voice_minutes, allowance.voice_minutes),
                    share(u.data_mb, allowance.data_mb),
                    share(u.sms, allowance.sms),
                ),
            )
            for u in task.usage
        ]

    def usage_desc(self, points: list[tuple[str, tuple[float, float, float]]]) -> str:
        """The usage chart's description for a screen reader (``usage_points``' numbers)."""
        parts = [
            self.t("usage_desc", month=label_, voice=self.pct(v), data=self.pct(d), sms=self.pct(s))
            for label_, (v, d, s) in points
        ]
        return "; ".join(parts) if parts else self.t("usage_none")

    # --- timeline ------------------------------------------------------------------------
    def event(self, entry: Entry) -> str:
        text = self._event(entry)
        if entry.kind.startswith("task.") and entry.journey:
            text += f" · {self.journey(entry.journey)}"  # which of the customer's calls
        return text

    def message_reason(self, entry: Entry) -> str:
        """Why a message on the timeline was not sent or not delivered ("" when it was)."""
        failed = entry.status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
        if not entry.reason and not failed:
            return ""
        text = self.reason(entry.reason, entry.status)
        if entry.error_code and reason_code(entry.reason) is None:
            return self.t("reason_with_code", reason=text, code=entry.error_code)
        return text

    def _event(self, entry: Entry) -> str:
        d = entry.details
        if entry.kind == "message":
            return self.t(
                "message_entry",
                channel=self.label(Channel, entry.channel),
                template=self.template(entry.template),
                status=self.msg_status(entry.status),
            )
        if entry.kind.startswith(JOURNEY_ACTION_PREFIX):
            name = entry.kind.removeprefix(JOURNEY_ACTION_PREFIX)
            return self.t("ev_journey", journey=self.journey(name))
        if entry.kind.startswith(GRACE_ACTION_PREFIX):
            status = entry.kind.removeprefix(GRACE_ACTION_PREFIX)
            return self.t("ev_grace", status=self.grace_status(status))
        try:
            action = AuditAction(entry.kind)
        except ValueError:
            return self.t("ev_other", action=entry.kind)
        key = labels.key(AuditAction, action)
        if action == AuditAction.TASK_DONE:
            text = self.t(key, outcome=self.outcome(d.get("outcome")))
            if d.get("satisfaction"):
                text += f" · {self.t('satisfaction')}: {d['satisfaction']}"
            return text
        if action == AuditAction.TASK_RESCHEDULED:
            return self.t(
                key, **{"from": d.get("from"), "to": d.get("to"), "reason": d.get("reason")}
            )
        if action == AuditAction.TASK_RETRY_SCHEDULED:
            return self.t(key, due_on=d.get("due_on"))
        if action in (AuditAction.LEDGER_CREDIT, AuditAction.LEDGER_REVERSAL):
            return self.t(
                key,
                amount=self.money(d.get("amount")),
                balance_after=self.money(d.get("balance_after")),
            )
        return self.t(key)
