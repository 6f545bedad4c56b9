"""``vipcare rules check|schema|explain|preview``: exit codes, output, and a preview that
leaves the database byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from crm.db import transaction
from crm.models import TIERS, Base, Customer, CustomerClub, Manager
from rules.schema import json_schema
from vipcare.cli import app
from vipcare.settings import get_settings

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
AS_OF = "2026-11-21"


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("VIPCARE_RULES_DIR", str(RULES_DIR))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, ["rules", *args], catch_exceptions=False)


def seed(engine: Engine) -> None:
    """Four customers: silver/gold/diamond active with a manager, one closed diamond."""
    with transaction(engine) as s:
        s.execute(
            insert(Manager),
            [{"id": 1, "external_id": "m-001", "name": "Li Na", "phone": "+8613800138000",
              "daily_call_capacity": 40}],
        )  # fmt: skip
        rows = []
        for i, (tier, status, balance) in enumerate(
            [("silver", "active", "5.00"), ("gold", "active", "-3.00"),
             ("diamond", "active", "-8.00"), ("diamond", "closed", "-1.00")],
            start=1,
        ):  # fmt: skip
            rows.append(
                {
                    "id": i,
                    "external_id": f"C{i:03d}",
                    "name": f"Customer {i}",
                    "phone": "+8613912345678",
                    "locale": "en" if i % 2 else "zh-CN",
                    "timezone": "Asia/Shanghai",
                    "birthday": date(1990, 11, 21),
                    "birth_mmdd": 1121,
                    "tier": tier,
                    "tier_rank": TIERS.index(tier),
                    "manager_id": 1,
                    "balance": Decimal(balance),
                    "credit_limit": Decimal("0.00"),
                    "status": status,
                    "sms_opt_out": False,
                    "do_not_call": False,
                    "joined_on": date(2020, 1, 1),
                }
            )
        s.execute(insert(Customer), rows)
        s.execute(insert(CustomerClub), [{"customer_id": 2, "club": "music"}])


def snapshot(engine: Engine) -> str:
    """SQLite: sha256 of the checkpointed file. PostgreSQL: every table's rows, in order."""
    if engine.dialect.name == "sqlite":
        engine.dispose()
        path = make_url(str(engine.url)).database
        assert path
        raw = sqlite3.connect(path)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    dump = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            dump.append(f"{table.name}: {[tuple(map(repr, r)) for r in rows]}")
        seqs = conn.execute(
            text("SELECT sequencename, last_value FROM pg_sequences ORDER BY sequencename")
        ).all()
        dump.append(repr(seqs))
    return "\n".join(dump)


# --- check --------------------------------------------------------------------------------


def test_check_shipped_rules_exits_0(cli: CliRunner) -> None:
    result = run(cli, "check")
    assert result.exit_code == 0, result.output
    assert "ok: 7 journey(s) and the contact policy are valid" in result.output


def test_check_lists_every_error_and_exits_1(cli: CliRunner, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    birthday = rules / "birthday.yaml"
    birthday.write_text(
        birthday.read_text("utf-8").replace("tier: {gte: gold}", "teir: {gte: gold}"), "utf-8"
    )
    callback = rules / "callback.yaml"
    callback.write_text(callback.read_text("utf-8").replace("gold: 90", "gld: 90"), "utf-8")
    result = run(cli, "check", str(rules))
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines == [
        f"{birthday}:9:7: unknown field 'teir'; expected one of: tier, status, clubs, plan,"
        " manager, locale, timezone, balance, credit_limit, points, tenure_days, tenure_months,"
        " age, days_since_contact, sms_opt_out, do_not_call, has_birthday (or all, any, not)"
        " (did you mean 'tier'?)",
        f"{callback}:10:45: 'gld' is not allowed here; expected one of: silver, gold, platinum,"
        " diamond (did you mean 'gold'?)",
    ]
    assert "2 problems" in result.output


def test_check_a_single_file_and_a_missing_path(cli: CliRunner, tmp_path: Path) -> None:
    assert run(cli, "check", str(RULES_DIR / "grace_credit.yaml")).exit_code == 0
    missing = run(cli, "check", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert "no such file or directory" in missing.output


def test_usage_errors_exit_2(cli: CliRunner) -> None:
    assert run(cli, "check", "--bogus").exit_code == 2
    assert run(cli, "explain", "birthday", "C001", "--date", "21/11/2026").exit_code == 2


def test_schema_to_a_file_and_to_stdout(cli: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "rules.schema.json"
    assert run(cli, "schema", "--output", str(target)).exit_code == 0
    assert json.loads(target.read_text("utf-8")) == json_schema()
    printed = run(cli, "schema")
    assert printed.exit_code == 0
    assert json.loads(printed.stdout)["$defs"]["Condition"]["properties"]["tier"]


# --- explain -------------------------------------------------------------------------------


def test_explain_says_why_out(cli: CliRunner, engine: Engine) -> None:
    seed(engine)
    result = run(cli, "explain", "birthday", "C001", "--date", AS_OF)
    assert result.exit_code == 0, result.output
    assert "OUT the audience" in result.output
    assert "✔ status = active  (actual: active)" in result.output
    assert "✘ tier >= gold  (actual: silver)" in result.output


def test_explain_json_for_a_diamond(cli: CliRunner, engine: Engine) -> None:
    seed(engine)
    result = run(cli, "explain", "birthday", "C003", "--date", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["in_audience"] is True and data["customer_id"] == "C003"
    assert (
        data["rule_hash"] == hashlib.sha256((RULES_DIR / "birthday.yaml").read_bytes()).hexdigest()
    )
    assert [c["condition"] for c in data["audience"]["children"]] == [
        "status = active",
        "tier >= gold",
        "has_birthday = true",
    ]
    assert [(a["action"], a["applies"]) for a in data["actions"]] == [
        ("send_sms greeting", True),
        ("grant_credit 20.00", True),
        ("create_task birthday", True),
    ]
    assert data["would_act"] is True
    assert data["decision"] == [
        "send greeting",
        "grant credit 20.00 (birthday_perk)",
        "call task birthday (birthday)",
    ]
    assert data["actions"][1]["when"] == {
        "condition": "tier = diamond",
        "passed": True,
        "actual": "diamond",
    }
    gold = json.loads(run(cli, "explain", "birthday", "C002", "--date", AS_OF, "--json").stdout)
    assert [(a["action"], a["applies"]) for a in gold["actions"]] == [
        ("send_sms greeting", True),
        ("grant_credit 20.00", False),
        ("create_task birthday", False),
    ]


def test_explain_unknown_customer_or_journey_exits_1(cli: CliRunner, engine: Engine) -> None:
    seed(engine)
    unknown = run(cli, "explain", "birthday", "C999", "--date", AS_OF)
    assert unknown.exit_code == 1 and "no customer with customer_id 'C999'" in unknown.output
    typo = run(cli, "explain", "birthdy", "C001", "--date", AS_OF)
    assert typo.exit_code == 1 and "did you mean 'birthday'?" in typo.output


# --- preview -------------------------------------------------------------------------------


def test_preview_headlines_who_the_journey_acts_on_beside_the_audience(
    cli: CliRunner, engine: Engine
) -> None:
    """grace_credit: 2 in the audience (active, gold+, negative); both would get the advance."""
    seed(engine)
    before = snapshot(engine)
    result = run(cli, "preview", "grace_credit", "--date", AS_OF, "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["audience_count"], data["acting_count"], data["limit"]) == (2, 2, 1)
    (first,) = data["customers"]
    assert first["customer_id"] == "C002"
    assert first["actions"] == ["send grace_notice", "grant credit 10.00 (grace_advance)"]
    assert first["texts"]["grace_notice"] == (
        "尊敬的Customer 2，您的账户余额为-3.00元。我们已为您临时垫付10.00元，您的号码将保持畅通至"
        "2026-11-24。请于2026-11-24前充值至少3.00元，以免暂停服务。如有疑问请致电10086。"
    )
    # the totals cover everyone acted on, not just the customers listed
    assert data["totals"] == {
        "messages": {"grace_notice": 2},
        "tasks": {},
        "credits": {"count": 2, "total": "60.00"},  # 10.00 gold, 50.00 diamond
        "suspensions": 0,
    }
    assert list(data["samples"]["grace_notice"]) == ["zh-CN", "en"]  # every language read
    text_mode = run(cli, "preview", "grace_credit", "--date", AS_OF)
    assert text_mode.exit_code == 0
    assert "would act on 2 customer(s) on 2026-11-21 (2 in the audience)" in text_mode.output
    assert "in all: 2 × grace_notice, 2 credit(s) totalling 60.00" in text_mode.output
    assert snapshot(engine) == before


def test_preview_of_the_pre_call_notice_counts_only_customers_with_calls_waiting(
    cli: CliRunner, engine: Engine
) -> None:
    """Not the whole customer base: only those with a call planned today that waits for it."""
    seed(engine)
    data = json.loads(run(cli, "preview", "precall_notice", "--date", AS_OF, "--json").stdout)
    assert (data["audience_count"], data["acting_count"]) == (4, 0)


def test_preview_with_the_installed_journeys_changes_nothing(
    cli: CliRunner, engine: Engine
) -> None:
    seed(engine)
    before = snapshot(engine)
    for journey in (
        "birthday",
        "grace_credit",
        "plan_fit",
        "callback",
        "precall_notice",
        "points_reminder",
        "club_event",
    ):
        result = run(cli, "preview", journey, "--date", AS_OF, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["journey"] == journey
    assert snapshot(engine) == before


def test_preview_unknown_journey_exits_1(cli: CliRunner) -> None:
    result = run(cli, "preview", "birthdai", "--date", AS_OF)
    assert result.exit_code == 1
    assert "did you mean 'birthday'?" in result.output
