"""How values read on a page: times in the viewer's zone, money, coded labels, and the
one-line "why" of a call and its pre-call SMS, in the viewer's language."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm.phones import mask, readable
from crm.timeline import Entry
from crm.worklist import TaskRow
from vipcare.web.i18n import MESSAGES, label, translate


class Formatter:
    """Bound to one viewer's language and time zone; templates call it as ``f``."""

    def __init__(self, locale: str, tz: ZoneInfo) -> None:
        self.locale = locale
        self.tz = tz

    def t(self, key: str, **values: Any) -> str:
        return translate(self.locale, key, **values)

    # --- values --------------------------------------------------------------------------
    def dt(self, value: datetime | None) -> str:
        if value is None:
            return ""
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def iso(self, value: datetime | None) -> str:
        """Machine-readable local time, for ``<time datetime=...>`` and CSV."""
        if value is None:
            return ""
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(self.tz).isoformat(timespec="seconds")

    def day(self, value: date | str | None) -> str:
        if value is None:
            return ""
        return value if isinstance(value, str) else value.isoformat()

    def weekday(self, value: date) -> str:
        return self.t(f"weekday_{value.weekday()}")

    def money(self, value: Decimal | str | None) -> str:
        if value is None or value == "":
            return ""
        amount = Decimal(str(value))
        return f"{amount:,.2f}"

    def pct(self, value: Decimal | None) -> str:
        return "–" if value is None else f"{value * 100:.0f}%"

    def num(self, value: Decimal | None) -> str:
        return "–" if value is None else str(value)

    # --- coded values --------------------------------------------------------------------
    def tier(self, value: str | None) -> str:
        return label(self.locale, "tier", value)

    def kind(self, value: str | None) -> str:
        return label(self.locale, "kind", value)

    def outcome(self, value: str | None) -> str:
        return label(self.locale, "outcome", value)

    def status(self, value: str | None) -> str:
        return label(self.locale, "status", value)

    def msg_status(self, value: str | None) -> str:
        return label(self.locale, "msg_status", value)

    def journey(self, value: str | None) -> str:
        return label(self.locale, "journey", value)

    def club(self, value: str) -> str:
        return label(self.locale, "club", value)

    def clubs(self, values: list[str]) -> str:
        sep = "、" if self.locale == "zh-CN" else ", "
        return sep.join(self.club(c) for c in values) if values else self.t("no_clubs")

    def customer_status(self, value: str) -> str:
        return label(self.locale, "customer_status", value)

    def criterion(self, value: str) -> str:
        return label(self.locale, "criterion", value)

    def grace_status(self, value: str) -> str:
        return label(self.locale, "grace", value)

    def role(self, value: str) -> str:
        return label(self.locale, "role", value)

    # --- tasks ---------------------------------------------------------------------------
    def phone(self, phone: str, whole: bool) -> str:
        return readable(phone) if whole else mask(phone)

    def actor(self, actor: str) -> str:
        kind, _, ident = actor.partition(":")
        if kind == "manager":
            return ident
        if kind in ("flow", "system", "webhook", "import", "cli"):
            return self.t(f"actor_{kind}")
        return actor

    def why(self, task: TaskRow) -> str:
        d = task.details
        if task.kind == "plan_fit":
            return self.t(
                "why_plan_fit",
                current=d.get("current_plan", "?"),
                suggested=d.get("suggested_plan", "?"),
                current_cost=self.money(d.get("current_monthly_cost")),
                suggested_cost=self.money(d.get("suggested_monthly_cost")),
                saving=self.money(d.get("monthly_saving")),
            )
        if task.kind == "callback":
            if task.attempt > 1:
                return self.t("why_callback_retry", n=task.attempt)
            return self.t("why_callback", due=d.get("due_on", self.day(task.due_on)))
        if task.kind == "birthday":
            return self.t("why_birthday", day=d.get("birthday_on", self.day(task.due_on)))
        if task.kind == "grace_followup":
            return self.t("why_grace", balance=self.money(d.get("balance")))
        return str(d.get("reason", ""))

    def notice(self, task: TaskRow) -> str:
        state = task.notice_state
        if state == "no_notice":
            reason = task.details.get("no_notice_reason") or task.notice_reason
            if reason:
                return self.t("notice_no_notice", reason=str(reason).split(":", 1)[0])
            return self.t("notice_no_notice_plain")
        if state == "waiting":
            return self.t("notice_waiting", at=self.dt(task.notice_scheduled_for))
        if state in ("sent", "delivered"):
            return self.t(f"notice_{state}", at=self.dt(task.notice_sent_at))
        return self.t(f"notice_{state}") if f"notice_{state}" in MESSAGES else state

    def usage_points(self, task: TaskRow) -> list[tuple[str, tuple[float, float, float]]]:
        allowance = task.allowance
        if allowance is None:
            return []

        def share(used: int, allowed: int) -> float:
            return used / allowed if allowed else 0.0

        return [
            (
                f"{u.month:%m}" + ("月" if self.locale == "zh-CN" else ""),
                (
                    share(u.voice_minutes, allowance.voice_minutes),
                    share(u.data_mb, allowance.data_mb),
                    share(u.sms, allowance.sms),
                ),
            )
            for u in task.usage
        ]

    def usage_desc(self, task: TaskRow) -> str:
        parts = [
            self.t(
                "usage_desc",
                month=label_,
                voice=f"{v * 100:.0f}",
                data=f"{d * 100:.0f}",
                sms=f"{s * 100:.0f}",
            )
            for label_, (v, d, s) in self.usage_points(task)
        ]
        return "; ".join(parts) if parts else self.t("usage_none")

    # --- timeline ------------------------------------------------------------------------
    def event(self, entry: Entry) -> str:
        text = self._event(entry)
        if entry.kind.startswith("task.") and entry.journey:
            text += f" · {self.journey(entry.journey)}"  # which of the customer's calls
        return text

    def _event(self, entry: Entry) -> str:
        d = entry.details
        if entry.kind == "message":
            return self.t(
                "message_entry",
                channel=self.t(f"channel_{entry.channel}"),
                template=label(self.locale, "template", entry.template),
                status=self.msg_status(entry.status),
            )
        key = f"ev_{entry.kind}"
        if entry.kind == "task.done":
            text = self.t(key, outcome=self.outcome(d.get("outcome")))
            if d.get("satisfaction"):
                text += f" · {self.t('satisfaction')}: {d['satisfaction']}"
            return text
        if entry.kind == "task.rescheduled":
            return self.t(
                key, **{"from": d.get("from"), "to": d.get("to"), "reason": d.get("reason")}
            )
        if entry.kind == "task.retry_scheduled":
            return self.t(key, due_on=d.get("due_on"))
        if entry.kind == "ledger.credit":
            return self.t(
                key,
                amount=self.money(d.get("amount")),
                balance_after=self.money(d.get("balance_after")),
            )
        if entry.kind.startswith("journey."):
            return self.t("ev_journey", journey=self.journey(entry.kind.split(".", 1)[1]))
        if entry.kind.startswith("grace."):
            return self.t(
                "ev_grace", status=label(self.locale, "grace", entry.kind.split(".", 1)[1])
            )
        if key in MESSAGES:
            return self.t(key)
        return self.t("ev_other", action=entry.kind)
