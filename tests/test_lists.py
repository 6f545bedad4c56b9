"""``vipcare customers|plans|managers list``: JSON uses CSV names, external ids, exact money."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from crm.audit import Actor
from crm.db import transaction
from crm.errors import NotFound
from crm.importer import HEADERS, OPTIONAL, import_csv
from crm.queries import iter_customers
from vipcare.cli import app
from vipcare.settings import get_settings

DATA = Path(__file__).parent / "data"


@pytest.fixture
def loaded(engine: Engine, now: datetime) -> Engine:
    for kind in ("plans", "managers", "customers"):
        import_csv(engine, kind, DATA / f"good_{kind}.csv", Actor("import", "t"), now, "UTC")
    return engine


@pytest.fixture
def cli(db_url: str, loaded: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def as_json(cli: CliRunner, *args: str) -> list[dict[str, object]]:
    result = cli.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def test_customers_json_uses_csv_names_external_ids_and_exact_money(cli):
    rows = as_json(cli, "customers", "list")
    assert [r["customer_id"] for r in rows] == ["C1001", "C1002", "C1003", "C1004", "C1005"]
    csv_columns = set(HEADERS["customers"]) | set(OPTIONAL["customers"])
    for row in rows:
        assert csv_columns <= set(row) and set(row) - csv_columns == {"balance_as_of"}
        assert "id" not in row
    wang = rows[1]
    assert wang == {
        "customer_id": "C1002",
        "name": "王芳",
        "phone": "+8613987654321",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "birthday": "1992-02-29",
        "tier": "gold",
        "clubs": ["film"],
        "plan_code": "GLB-58",
        "account_manager_id": "AM-001",
        "balance": "-5.00",
        "balance_as_of": None,
        "credit_limit": "50.00",
        "status": "active",
        "sms_opt_out": False,
        "do_not_call": False,
        "joined_on": "2019-07-15",
        "last_contact_on": "2026-05-30",
        "points": 0,
    }
    zhang, li, oliver = rows[0], rows[2], rows[4]
    assert zhang["clubs"] == ["music", "travel"] and zhang["balance"] == "1280.50"
    assert li["birthday"] is None and li["last_contact_on"] is None and li["clubs"] == []
    assert li["sms_opt_out"] is True
    assert oliver["account_manager_id"] is None and oliver["do_not_call"] is True
    assert oliver["credit_limit"] == "0.00"


def test_customers_filters_and_limit(cli):
    assert [r["customer_id"] for r in as_json(cli, "customers", "list", "--tier", "gold")] == [
        "C1002",
        "C1005",
    ]
    by_manager = as_json(cli, "customers", "list", "--manager", "AM-001")
    assert [r["customer_id"] for r in by_manager] == ["C1001", "C1002"]
    limited = as_json(cli, "customers", "list", "--limit", "2")
    assert [r["customer_id"] for r in limited] == ["C1001", "C1002"]
    assert as_json(cli, "customers", "list", "--tier", "diamond", "--manager", "AM-003") == []

    unknown = cli.invoke(app, ["customers", "list", "--manager", "AM-404"])
    assert unknown.exit_code == 1 and "unknown manager 'AM-404'" in unknown.stderr
    assert cli.invoke(app, ["customers", "list", "--tier", "bronze"]).exit_code == 2


def test_customers_table_masks_phones(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # Rich reads the width at print time
    result = cli.invoke(app, ["customers", "list"])
    assert result.exit_code == 0
    assert "C1001" in result.stdout and "+86138****5678" in result.stdout
    assert "+8613812345678" not in result.stdout


def test_plans_json(cli):
    plans = as_json(cli, "plans", "list")
    assert [p["plan_code"] for p in plans] == ["GLB-128", "GLB-288", "GLB-58", "GLB-588"]
    assert plans[2] == {
        "plan_code": "GLB-58",
        "name": "全球通 58元套餐",
        "monthly_fee": "58.00",
        "voice_minutes": 200,
        "data_mb": 10240,
        "sms": 100,
        "voice_overage_per_min": "0.1900",
        "data_overage_per_mb": "0.0050",
        "sms_overage": "0.1000",
        "tiers": ["silver", "gold"],
    }
    assert plans[1]["tiers"] == ["gold", "platinum", "diamond"]


def test_managers_json(cli):
    managers = as_json(cli, "managers", "list")
    assert managers == [
        {
            "manager_id": "AM-001",
            "name": "李娜",
            "phone": "+8687163301234",
            "email": "lina@vip.example.com",
            "daily_call_capacity": 40,
            "customers": 2,
            "name_latin": None,
        },
        {
            "manager_id": "AM-002",
            "name": "王强",
            "phone": "+8613987100002",
            "email": None,
            "daily_call_capacity": 30,
            "customers": 1,
            "name_latin": None,
        },
        {
            "manager_id": "AM-003",
            "name": "Emily Chen",
            "phone": "+8687163305678",
            "email": "emily.chen@vip.example.com",
            "daily_call_capacity": 25,
            "customers": 1,
            "name_latin": None,
        },
    ]


def test_iter_customers_pages_by_keyset_and_respects_limit(loaded):
    with transaction(loaded) as s:
        paged = [r.customer_id for r in iter_customers(s, batch=2)]
        assert paged == ["C1001", "C1002", "C1003", "C1004", "C1005"]
        assert [r.customer_id for r in iter_customers(s, batch=2, limit=3)] == [
            "C1001",
            "C1002",
            "C1003",
        ]
        with pytest.raises(NotFound):
            list(iter_customers(s, manager="nobody"))


def test_empty_database_lists_are_empty_arrays(engine, db_url, monkeypatch):
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        for group in ("customers", "plans", "managers"):
            result = runner.invoke(app, [group, "list", "--json"])
            assert result.exit_code == 0 and json.loads(result.stdout) == []
    finally:
        get_settings.cache_clear()


def test_table_shows_at_most_1000_rows_without_limit(engine, db_url, monkeypatch):
    from datetime import date

    from seed import generate

    generate(engine, 1_003, seed=1, as_of=date(2026, 11, 21))
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(app, ["customers", "list"])
        assert result.exit_code == 0
        assert "showing 1000 of 1003 customers; use --limit or --json" in result.stdout
        assert "C000001000" in result.stdout and "C000001001" not in result.stdout
        assert len(json.loads(runner.invoke(app, ["customers", "list", "--json"]).stdout)) == 1003
    finally:
        get_settings.cache_clear()
