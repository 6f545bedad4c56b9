"""Small, explicit CRM fixtures for journey tests (a handful of rows, written with the ORM)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crm.db import session_factory
from crm.models import TIERS, Base, Customer, Manager, MonthlyUsage, Plan, PlanTier
from flows.journeys.context import RunContext, care_day_instant
from flows.journeys.day import run_day
from flows.journeys.engine import run_journey
from flows.journeys.registry import journey_for
from rules import RuleSet, load_rules

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
SHANGHAI = ZoneInfo("Asia/Shanghai")
_phones = itertools.count(13800000001)


def default_rules() -> RuleSet:
    return load_rules(RULES_DIR)


@dataclass
class Crm:
    """A test CRM: builds rows and runs journeys as of a given care day."""

    engine: Engine
    ruleset: RuleSet = field(default_factory=default_rules)

    def session(self) -> Session:
        return session_factory(self.engine)()

    def plan(
        self,
        code: str = "P128",
        fee: str = "128.00",
        voice: int = 500,
        data: int = 10240,
        sms: int = 100,
        voice_rate: str = "0.15",
        data_rate: str = "0.0300",
        sms_rate: str = "0.10",
        tiers: tuple[str, ...] = TIERS,
    ) -> int:
        with self.session() as s, s.begin():
            plan = Plan(
                code=code,
                name=f"Plan {code}",
                monthly_fee=Decimal(fee),
                voice_minutes=voice,
                data_mb=data,
                sms=sms,
                voice_overage_per_min=Decimal(voice_rate),
                data_overage_per_mb=Decimal(data_rate),
                sms_overage=Decimal(sms_rate),
            )
            plan.tiers = [PlanTier(tier=t) for t in tiers]
            s.add(plan)
            s.flush()
            return plan.id

    def manager(
        self,
        ref: str = "M1",
        capacity: int = 40,
        name: str = "Li Na",
        name_latin: str | None = None,
    ) -> int:
        with self.session() as s, s.begin():
            m = Manager(
                external_id=ref,
                name=name,
                name_latin=name_latin,
                phone="+8613900000001",
                email=None,
                daily_call_capacity=capacity,
            )
            s.add(m)
            s.flush()
            return m.id

    def customer(self, ref: str, **kw: Any) -> int:
        values: dict[str, Any] = {
            "name": f"Customer {ref}",
            "phone": f"+86{next(_phones)}",
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
            "birthday": date(1980, 6, 15),
            "tier": "gold",
            "balance": Decimal("50.00"),
            "credit_limit": Decimal("0.00"),
            "status": "active",
            "sms_opt_out": False,
            "do_not_call": False,
            "joined_on": date(2020, 1, 1),
            "last_contact_on": None,
        }
        values.update(kw)
        values["tier_rank"] = TIERS.index(values["tier"])
        bday = values["birthday"]
        values["birth_mmdd"] = bday.month * 100 + bday.day if bday else None
        with self.session() as s, s.begin():
            if "manager_id" not in values:
                values["manager_id"] = s.scalar(select(func.min(Manager.id)))
            c = Customer(external_id=ref, **values)
            s.add(c)
            s.flush()
            return c.id

    def usage(
        self,
        customer_id: int,
        months: list[date],
        voice: int,
        data: int,
        sms: int,
        received_at: datetime | None = None,
    ) -> None:
        with self.session() as s, s.begin():
            for m in months:
                s.add(
                    MonthlyUsage(
                        customer_id=customer_id,
                        month=m,
                        voice_minutes=voice,
                        data_mb=data,
                        sms=sms,
                        received_at=received_at,
                    )
                )

    def update(self, ref: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            c = s.scalars(select(Customer).where(Customer.external_id == ref)).one()
            for k, v in values.items():
                setattr(c, k, v)

    def get_ref(self, customer_id: int) -> str:
        with self.session() as s:
            customer = s.get(Customer, customer_id)
            assert customer is not None
            return customer.external_id

    def manager_id(self, ref: str) -> int:
        with self.session() as s:
            return s.scalars(select(Manager.id).where(Manager.external_id == ref)).one()

    def get(self, ref: str) -> Customer:
        with self.session() as s:
            return s.scalars(select(Customer).where(Customer.external_id == ref)).one()

    def context(
        self, as_of: date, at: datetime | None = None, run_id: str = "test-run"
    ) -> RunContext:
        return RunContext(
            as_of=as_of,
            at=at or care_day_instant(as_of, SHANGHAI),
            run_id=run_id,
            ruleset=self.ruleset,
            operator_tz=SHANGHAI,
            batch_size=100,
        )

    def run(
        self, as_of: date, *journeys: str, at: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """A care day: every journey in run order (after hygiene), or just ``journeys``."""
        ctx = self.context(as_of, at)
        if not journeys:
            return {r.journey: r.as_dict() for r in run_day(self.engine, ctx)}
        return {
            j: run_journey(self.engine, ctx, journey_for(self.ruleset, j)).as_dict()
            for j in journeys
        }

    def dispatch(self, at: datetime) -> tuple[Any, Any]:
        """Send what is due at ``at`` through mock SMS/voice; (summary, the mock's store)."""
        from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
        from notifications.config import NotificationConfig
        from notifications.dispatcher import dispatch

        store = MockStore()
        ticks = [0]  # monotonic ns that move only when the rate limiter sleeps

        def sleep(seconds: float) -> None:
            ticks[0] += max(0, round(seconds * 1e9))

        summary = dispatch(
            self.engine,
            NotificationConfig(send_rate_per_second=1000),
            self.ruleset.contact_policy,
            at,
            lead_time=self.ruleset.precall_lead_time,
            backends={"sms": MockSMSBackend(store=store), "voice": MockVoiceBackend(store=store)},
            sleep=sleep,
            clock=lambda: ticks[0],
        )
        return summary, store

    def rows(self, model: type[Base], **where: Any) -> list[Any]:
        with self.session() as s:
            stmt = select(model)
            for k, v in where.items():
                stmt = stmt.where(getattr(model, k) == v)
            return list(s.scalars(stmt.order_by(*model.__table__.primary_key.columns)).all())

    def counts(self) -> dict[str, int]:
        """Rows per CRM table; the operations log (``job_runs``: every run adds one) is left out."""
        with self.engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables
                if t.name not in OPERATIONS_LOG
            }


OPERATIONS_LOG = frozenset({"job_runs"})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def months_before(as_of: date, n: int = 3) -> list[date]:
    out, day = [], as_of.replace(day=1)
    for _ in range(n):
        day = (day - timedelta(days=1)).replace(day=1)
        out.append(day)
    return sorted(out)


def crm_tmp_csv(text: str) -> Path:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".csv")
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(name)


def all_day_rules(dest: Path) -> Path:
    """A copy of the shipped rules whose send window is open all day (for wall-clock tests)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in RULES_DIR.glob("*.yaml"):
        text = f.read_text(encoding="utf-8")
        if f.name == "contact_policy.yaml":
            text = text.replace('start: "09:00"', 'start: "00:00"').replace(
                'end: "20:00"', 'end: "23:59"'
            )
            assert '"00:00"' in text and '"23:59"' in text
        (dest / f.name).write_text(text, encoding="utf-8")
    return dest
