"""Time and money stay honest with real feeds (issue 16, items 1–4 and 15), from the CLI.

An operator's week, command by command, with the command line's clock (its edge,
the one place that reads it) set by the test: late and repeated balance files, a
future ``as_of``, back-dated runs, dispatches at the wrong hour and a scheduler
that comes back after a week. Every test failed before its fix; each says how.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from crm.db import transaction
from crm.models import AuditLog, CallTask, CreditLedger, GracePeriod, OutboundMessage
from tests.cli_clock import Wall, set_cli_clock
from vipcare.cli import app
from vipcare.settings import get_settings

SHANGHAI = "Asia/Shanghai"
PLANS = (
    "plan_code,name,monthly_fee,voice_minutes,data_mb,sms,voice_overage_per_min,"
    "data_overage_per_mb,sms_overage,tiers\n"
    "P58,Plan 58,58.00,200,10240,100,0.1900,0.0050,0.1000,silver|gold|platinum|diamond\n"
)
MANAGERS = "manager_id,name,phone,email,daily_call_capacity\nAM-1,Li Na,+8613800009999,,40\n"
CUSTOMER_HEADER = (
    "customer_id,name,phone,locale,timezone,birthday,tier,clubs,plan_code,"
    "account_manager_id,balance,credit_limit,status,sms_opt_out,do_not_call,joined_on,"
    "last_contact_on\n"
)


def local(text: str) -> datetime:
    """An operator-local time, e.g. ``2026-12-01T09:05``."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(SHANGHAI)).astimezone(UTC)


class LocalWall(Wall):
    """The command line's wall clock, moved by the test in operator-local time."""

    def at(self, text: str) -> None:
        self.now = local(text)


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> LocalWall:
    clock = LocalWall(local("2026-11-30T20:00"))
    set_cli_clock(monkeypatch, clock)
    return clock


@pytest.fixture
def vip(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wall: LocalWall
) -> Iterator[Any]:
    """``vip("run", "--date", ...)``: the CLI on the test database; returns the Result."""
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("VIPCARE_TIMEZONE", SHANGHAI)
    monkeypatch.setenv("VIPCARE_SMS_BACKEND", "mock")
    monkeypatch.setenv("VIPCARE_VOICE_BACKEND", "mock")
    monkeypatch.setenv("VIPCARE_MOCK_STORE", str(tmp_path / "provider.jsonl"))
    monkeypatch.setenv("VIPCARE_SEND_RATE_PER_SECOND", "1000")
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    runner = CliRunner()

    def vip(*args: str, expect: int | None = 0) -> Result:
        result = runner.invoke(app, list(args))
        if expect is not None:
            assert result.exit_code == expect, (args, result.output)
        return result

    yield vip
    get_settings.cache_clear()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def crm(vip: Any, tmp_path: Path, customers: list[str]) -> None:
    """Plans, one manager and ``customers`` (CSV lines), imported the way an operator does."""
    vip("import", "plans", write(tmp_path, "plans.csv", PLANS))
    vip("import", "managers", write(tmp_path, "managers.csv", MANAGERS))
    vip(
        "import",
        "customers",
        write(tmp_path, "customers.csv", CUSTOMER_HEADER + "".join(customers)),
    )


def customer(
    ref: str,
    tier: str,
    phone: str,
    *,
    birthday: str = "",
    balance: str = "",
    last_contact: str = "2026-11-01",
) -> str:
    return (
        f"{ref},Customer {ref},{phone},en,{SHANGHAI},{birthday},{tier},,P58,AM-1,{balance},"
        f"0.00,active,false,false,2020-01-01,{last_contact}\n"
    )


def balances(vip: Any, tmp_path: Path, name: str, rows: str, expect: int = 0) -> Result:
    return vip(
        "import",
        "balances",
        write(tmp_path, name, "customer_id,balance,as_of\n" + rows),
        expect=expect,
    )


def customers_by_ref(vip: Any) -> dict[str, dict[str, Any]]:
    return {c["customer_id"]: c for c in json.loads(vip("customers", "list", "--json").stdout)}


def ledger(vip: Any, ref: str) -> list[tuple[str, str, str]]:
    rows = json.loads(vip("ledger", "list", "--customer", ref, "--json").stdout)
    return [(r["kind"], r["amount"], r["balance_after"]) for r in rows]


def status(vip: Any) -> dict[str, Any]:
    out = vip("status", "--json", expect=None)
    assert out.exit_code in (0, 3), out.output
    found: dict[str, Any] = json.loads(out.stdout)
    return found


# -- 2: a balances file stamped before a grant never wipes the advance ------------------------


def test_a_repeated_or_late_balances_file_never_wipes_the_advance(
    vip: Any, wall: LocalWall, tmp_path: Path, engine: Engine, prefect_harness: None
) -> None:
    """Before the fix: the re-import set C1002 back to -12.40 and the grace's close took the
    advance a second time (-22.40); the late file did the same to C1006."""
    wall.at("2026-12-01T07:00")
    crm(
        vip,
        tmp_path,
        [
            customer("C1002", "gold", "+8613900000002"),
            customer("C1006", "gold", "+8613900000006"),
        ],
    )
    balances(vip, tmp_path, "b1130.csv", "C1002,-12.40,2026-11-30\nC1006,-12.40,2026-11-29\n")
    wall.at("2026-12-01T09:05")
    vip("run", "--date", "2026-12-01", "--json")
    assert {r: c["balance"] for r, c in customers_by_ref(vip).items()} == {
        "C1002": "-2.40",
        "C1006": "-2.40",
    }
    wall.at("2026-12-01T10:00")
    vip("dispatch")  # the grace notices reach both customers

    wall.at("2026-12-01T12:00")  # billing sends the same daily file again
    again = balances(
        vip, tmp_path, "b1130.csv", "C1002,-12.40,2026-11-30\nC1006,-12.40,2026-11-29\n"
    )
    assert "0 updated, 2 unchanged" in again.stdout
    wall.at("2026-12-01T13:00")  # and a late file for C1006, stamped before the grant
    balances(vip, tmp_path, "late.csv", "C1006,-12.40,2026-11-30\n")
    assert {r: c["balance"] for r, c in customers_by_ref(vip).items()} == {
        "C1002": "-2.40",  # before the fix: -12.40
        "C1006": "-2.40",  # before the fix: -12.40
    }

    wall.at("2026-12-05T09:05")  # deadline 12-04 passed without a top-up
    vip("run", "--date", "2026-12-05", "--json")
    final = customers_by_ref(vip)
    assert (final["C1002"]["balance"], final["C1002"]["status"]) == ("-12.40", "suspended")
    assert (final["C1006"]["balance"], final["C1006"]["status"]) == ("-12.40", "suspended")
    assert ledger(vip, "C1002") == [
        ("grace_advance", "10.00", "-2.40"),
        ("grace_expired", "-10.00", "-12.40"),  # before the fix: -22.40
    ]
    verified = vip("audit", "verify")
    assert "money and state invariants hold" in verified.stdout
    assert status(vip)["invariants"]["ok"] is True


# -- 3: a future as_of is refused with its line and column -------------------------------------


def test_a_future_as_of_is_refused_and_a_real_top_up_then_repays(
    vip: Any, wall: LocalWall, tmp_path: Path, prefect_harness: None
) -> None:
    """Before the fix: 2062-11-20 was stored, froze the balance, the real top-up was "skipped
    stale" and the line was suspended anyway."""
    wall.at("2026-11-21T07:00")
    crm(vip, tmp_path, [customer("C2001", "gold", "+8613900002001")])
    balances(vip, tmp_path, "b1120.csv", "C2001,-8.00,2026-11-20\n")
    wall.at("2026-11-21T09:05")
    vip("run", "--date", "2026-11-21", "--json")
    wall.at("2026-11-21T10:00")
    vip("dispatch")

    wall.at("2026-11-21T18:00")
    typo = balances(vip, tmp_path, "typo.csv", "C2001,-8.00,2062-11-20\n", expect=1)
    assert "typo.csv:2: column as_of: '2062-11-20' is in the future" in typo.output
    assert "nothing was imported" in typo.output
    wall.at("2026-11-23T08:00")  # the customer paid 100 on the 22nd
    topup = balances(vip, tmp_path, "b1122.csv", "C2001,102.00,2026-11-22\n")
    assert "stale" not in topup.stdout
    wall.at("2026-11-25T09:05")
    vip("run", "--date", "2026-11-25", "--json")
    after = customers_by_ref(vip)["C2001"]
    assert (after["status"], after["balance"]) == ("active", "92.00")  # the advance back
    assert [k for k, _, _ in ledger(vip, "C2001")] == ["grace_advance", "grace_repaid"]


# -- 4: back-dated runs need --force and post today --------------------------------------------


def test_a_run_older_than_the_catch_up_window_needs_force_and_credits_no_stale_birthday(
    vip: Any, wall: LocalWall, tmp_path: Path, prefect_harness: None
) -> None:
    """Before the fix: --date 2019, 2025 and 2026 each credited the diamond customer's 20.00
    birthday perk today, dated 2019 and 2025 in the ledger and the audit."""
    wall.at("2026-12-07T22:12")
    crm(
        vip,
        tmp_path,
        [customer("D1", "diamond", "+8613900003001", birthday="1980-12-07", balance="100.00")],
    )
    refused = vip("run", "--date", "2019-12-07", expect=1)
    assert "older than the catch-up window (VIPCARE_CATCH_UP_DAYS=7)" in refused.output
    assert "--force" in refused.output
    for day in ("2019-12-07", "2025-12-07"):
        forced = json.loads(vip("run", "--date", day, "--force", "--json").stdout)
        birthday = next(j for j in forced["journeys"] if j["journey"] == "birthday")
        assert (birthday["decided"], birthday["skipped_too_late"]) == (0, 1)
    wall.at("2026-12-07T09:30")
    vip("run", "--date", "2026-12-07", "--json")  # the birthday itself: greeted, perk once
    assert [k for k, _, _ in ledger(vip, "D1")] == ["birthday_perk"]


def test_a_forced_back_dated_posting_is_stamped_with_the_real_time_and_its_care_day(
    vip: Any,
    wall: LocalWall,
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> None:
    """Before the fix: the ledger and audit rows of a run for 2025-06-02 were dated 2025."""
    rules = tmp_path / "rules"
    rules.mkdir()
    from tests.builders import RULES_DIR

    for src in RULES_DIR.glob("*.yaml"):
        (rules / src.name).write_bytes(src.read_bytes())
    (rules / "loyalty_bonus.yaml").write_text(
        "journey: loyalty_bonus\nkind: generic\ndescription: a yearly bonus, no text\n"
        "enabled: true\naudience: {all: [{tier: diamond}]}\n"
        "trigger: {condition: {points: {gte: 0}}}\n"
        'actions:\n  - grant_credit: {amount: "5.00"}\nlimits: {once_per: year}\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("VIPCARE_RULES_DIR", str(rules))
    wall.at("2026-12-07T22:12")
    crm(vip, tmp_path, [customer("D2", "diamond", "+8613900003002", balance="10.00")])
    vip("run", "--date", "2025-06-02", "--force", "--json")
    with transaction(engine) as s:
        (posted,) = s.scalars(select(CreditLedger)).all()
        audited = s.scalars(select(AuditLog).where(AuditLog.action == "ledger.credit")).one()
    assert posted.created_at == local("2026-12-07T22:12")  # before the fix: 2025-06-02 09:00
    assert posted.care_day == date(2025, 6, 2)
    assert audited.at == local("2026-12-07T22:12")
    assert json.loads(audited.details)["care_day"] == "2025-06-02"


# -- 4 and 15: dispatch sends only in the real window, never ahead of time ---------------------


def _queue_grace_notice(vip: Any, wall: LocalWall, tmp_path: Path) -> None:
    """A grace notice, and a callback waiting for its pre-call notice, queued on 12-07."""
    wall.at("2026-12-07T07:00")
    crm(
        vip,
        tmp_path,
        [customer("C3001", "platinum", "+8613900004001", last_contact="2026-01-05")],
    )
    balances(vip, tmp_path, "b1206.csv", "C3001,-5.00,2026-12-06\n")
    wall.at("2026-12-07T09:05")
    vip("run", "--date", "2026-12-07", "--json")


def test_a_past_at_never_sends_outside_the_real_window(
    vip: Any, wall: LocalWall, tmp_path: Path, engine: Engine, prefect_harness: None
) -> None:
    """Before the fix: run at 22:12 with --at 10:00, it sent at once and recorded 10:00."""
    _queue_grace_notice(vip, wall, tmp_path)
    wall.at("2026-12-07T22:12")
    out = json.loads(vip("dispatch", "--at", "2026-12-07T10:00", "--json").stdout)
    assert (out["sent"], out["deferred"]) == (0, 2)  # the grace and the pre-call notice
    with transaction(engine) as s:
        notices = s.scalars(select(OutboundMessage)).all()
    assert {(n.status, n.sent_at) for n in notices} == {("queued", None)}
    assert {n.scheduled_for for n in notices} == {local("2026-12-08T09:00")}  # the next window
    wall.at("2026-12-08T09:01")
    vip("dispatch")
    with transaction(engine) as s:
        notices = s.scalars(select(OutboundMessage)).all()
    assert {n.status for n in notices} == {"sent"}
    for n in notices:  # recorded when they really went out
        assert n.sent_at is not None
        assert timedelta(0) <= n.sent_at - local("2026-12-08T09:01") < timedelta(minutes=1)


def test_a_future_at_is_refused_and_sends_nothing(
    vip: Any, wall: LocalWall, tmp_path: Path, engine: Engine, prefect_harness: None
) -> None:
    """Before the fix: --at 2026-12-08T10:00 at 22:45 on 12-07 sent at once, recorded sent_at
    in the future and made calls ready early."""
    _queue_grace_notice(vip, wall, tmp_path)
    wall.at("2026-12-07T22:45")
    refused = vip("dispatch", "--at", "2026-12-08T10:00", expect=1)
    assert "--at 2026-12-08T10:00 is in the future" in refused.output
    with transaction(engine) as s:
        notices = s.scalars(select(OutboundMessage)).all()
        calls = s.scalars(select(CallTask)).all()
    assert {(n.status, n.sent_at) for n in notices} == {("queued", None)} and len(notices) == 2
    assert [c.status for c in calls] == ["awaiting_notice"]  # before the fix: ready early


# -- 1: the scheduler comes back after a week ----------------------------------------------


@pytest.mark.slow
def test_a_catch_up_never_suspends_without_a_grace_the_customer_could_use(
    vip: Any, wall: LocalWall, tmp_path: Path, engine: Engine, db_url: str, prefect_harness: None
) -> None:
    """Before the fix: the days 12-01..12-07 replayed against today's balances; every negative
    gold+ customer was granted "on 12-01" and suspended "on 12-05" within seconds, both texts
    expired, the customers never told."""
    from crm import process
    from tests.test_dispatcher_support import FakeClock
    from vipcare.scheduler import days, jobs
    from vipcare.scheduler.schedule import CARE_DAY, Schedule
    from vipcare.settings import Settings

    wall.at("2026-11-30T07:00")
    crm(
        vip,
        tmp_path,
        [customer(f"G{i}", "gold" if i % 2 else "platinum", f"+861390000510{i}") for i in range(4)],
    )
    balances(
        vip, tmp_path, "b1129.csv", "".join(f"G{i},-{5 + i}.00,2026-11-29\n" for i in range(4))
    )
    wall.at("2026-12-02T07:00")  # while the scheduler is down, billing keeps sending files
    balances(vip, tmp_path, "b1201.csv", "G0,50.00,2026-12-01\n")  # G0 paid on 12-01
    wall.at("2026-12-06T07:00")
    balances(vip, tmp_path, "b1201.csv", "G0,50.00,2026-12-01\n")  # repeated
    balances(vip, tmp_path, "b1129.csv", "G1,-6.00,2026-11-29\n")  # late and repeated

    settings = Settings(_env_file=None, database_url=db_url, timezone=SHANGHAI)  # type: ignore[call-arg]
    days.mark_completed(engine, CARE_DAY, date(2026, 11, 30), local("2026-11-30T08:01"))
    back = local("2026-12-07T10:00")  # the scheduler comes back
    fake = FakeClock()
    rt = jobs.Runtime(
        settings=settings,
        engine=engine,
        schedule=Schedule.from_settings(settings),
        clock=lambda: back,
        owner=process.new_owner(),
        dispatch_options={"sleep": fake.sleep, "clock": fake},
    )
    assert jobs.run_job(rt, CARE_DAY)
    assert days.last_completed(engine, CARE_DAY) == date(2026, 12, 7)

    with transaction(engine) as s:
        graces = s.scalars(select(GracePeriod).order_by(GracePeriod.customer_id)).all()
        notices = s.scalars(
            select(OutboundMessage).where(OutboundMessage.journey == "grace_credit")
        ).all()
    # Nobody is suspended; the three still negative get a grace today, with the whole window
    # and a notice that can still arrive. G0, who paid meanwhile, gets none.
    assert all(c["status"] == "active" for c in customers_by_ref(vip).values())
    assert [(g.granted_on, g.deadline, g.status) for g in graces] == [
        (date(2026, 12, 7), date(2026, 12, 10), "open")
    ] * 3
    assert {n.status for n in notices} == {"queued"}
    assert all(n.valid_until and n.valid_until > back + timedelta(days=3) for n in notices)
    wall.at("2026-12-07T10:05")
    report = status(vip)
    catch_up = report["catch_up"]
    assert catch_up["late_days"] == [f"2026-12-0{d}" for d in range(1, 8)]
    assert catch_up["skipped"]["grace_credit"]["too_late"] >= 3  # what the late days did not do
    assert report["invariants"]["ok"] is True
    shown = vip("status", expect=None).stdout
    assert "last catch-up: care days 2026-12-01 to 2026-12-07 run late" in shown
    assert "its text could no longer arrive in time" in shown
    assert Decimal(customers_by_ref(vip)["G0"]["balance"]) == Decimal("50.00")
