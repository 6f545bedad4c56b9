"""CSV import: good files, idempotent re-import, every class of bad row, all-or-nothing, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from crm.audit import Actor
from crm.db import transaction
from crm.importer import HEADERS, ImportFileError, ImportReport, import_csv
from crm.models import (
    AuditLog,
    Customer,
    CustomerClub,
    Manager,
    MonthlyUsage,
    Plan,
    PlanTier,
)
from vipcare.cli import app
from vipcare.settings import get_settings

DATA = Path(__file__).parent / "data"
ACTOR = Actor("import", "test")
TZ = "Asia/Shanghai"
TABLES = (Plan, PlanTier, Manager, Customer, CustomerClub, MonthlyUsage, AuditLog)


def run(engine: Engine, kind: str, path: Path, at: datetime) -> ImportReport:
    return import_csv(engine, kind, path, ACTOR, at, TZ)


def counts(engine: Engine) -> dict[str, int]:
    with transaction(engine) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0 for m in TABLES}


def load_base(engine: Engine, at: datetime) -> None:
    for kind in ("plans", "managers", "customers"):
        run(engine, kind, DATA / f"good_{kind}.csv", at)


def csv_file(tmp_path: Path, kind: str, *rows: str, name: str | None = None) -> Path:
    path = tmp_path / (name or f"{kind}.csv")
    path.write_text(",".join(HEADERS[kind]) + "\n" + "".join(r + "\n" for r in rows), "utf-8")
    return path


def customer(engine: Engine, ref: str) -> Customer:
    with transaction(engine) as s:
        row = s.scalars(select(Customer).where(Customer.external_id == ref)).one()
        s.expunge(row)
        return row


def refused(engine: Engine, kind: str, path: Path, at: datetime) -> list[str]:
    """Import a bad file; assert nothing changed; return the issue lines."""
    before = counts(engine)
    with pytest.raises(ImportFileError) as err:
        run(engine, kind, path, at)
    assert counts(engine) == before, "a refused file must write nothing"
    return [str(i) for i in err.value.issues]


# --- good files ---------------------------------------------------------------------------


def test_good_files_import_then_reimport_updates_without_duplicates(engine, now):
    expected = {"plans": 4, "managers": 3, "customers": 5, "usage": 9, "balances": 3}
    for kind, rows in expected.items():
        report = run(engine, kind, DATA / f"good_{kind}.csv", now)
        assert report.rows == rows
        if kind == "balances":
            assert (report.inserted, report.updated) == (0, 3)
        else:
            assert (report.inserted, report.updated) == (rows, 0)
    first = counts(engine)
    assert first["customer_clubs"] == 5 and first["plan_tiers"] == 10

    for kind, rows in expected.items():
        report = run(engine, kind, DATA / f"good_{kind}.csv", now)
        if kind in ("usage", "balances"):  # facts: the same figures again are exactly a no-op
            assert (report.inserted, report.updated, report.unchanged) == (0, 0, rows)
        else:
            assert (report.inserted, report.updated, report.stale_count) == (0, rows, 0)
    again = counts(engine)
    assert {k: v for k, v in again.items() if k != "audit_log"} == {
        k: v for k, v in first.items() if k != "audit_log"
    }
    assert again["audit_log"] == first["audit_log"] + 5

    c = customer(engine, "C1002")
    assert c.phone == "+8613987654321"  # normalised to E.164
    assert c.birthday == date(1992, 2, 29) and c.birth_mmdd == 229
    assert (c.tier, c.tier_rank) == ("gold", 1)
    assert c.balance == Decimal("-12.40")  # from the balances feed
    assert c.balance_as_of == datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC)  # end of day, Shanghai
    assert customer(engine, "C1003").balance_as_of == datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    c5 = customer(engine, "C1005")
    assert (c5.manager_id, c5.credit_limit, c5.status) == (None, Decimal("0.00"), "suspended")
    assert (c5.sms_opt_out, c5.do_not_call) == (False, True)
    with transaction(engine) as s:
        rate = s.scalar(select(Plan.data_overage_per_mb).where(Plan.code == "GLB-58"))
        assert rate == Decimal("0.0050")
        row = s.scalars(select(AuditLog).order_by(AuditLog.seq.desc())).first()
        assert row is not None
        assert (row.actor_type, row.action, row.entity) == ("import", "import", "balances")
        details = json.loads(row.details)
        assert details["file"] == "good_balances.csv"
        assert (details["updated"], details["unchanged"]) == (0, 3)  # the re-import: a no-op
        assert len(details["sha256"]) == 64


def test_reimport_changes_values_and_replaces_clubs_but_empty_cells_keep_what_is_known(
    engine, now, tmp_path
):
    load_base(engine, now)
    changed = csv_file(
        tmp_path,
        "customers",
        # new name and tier, clubs replaced, birthday/plan/manager/locale empty (unknown),
        # opt-out "false" (never clears), last contact older than stored (kept).
        "C1003,李强强,+8618611112222,,,,diamond,games|film,,,,,,false,false,,2026-01-01",
        "C1001,张伟,+8613812345678,zh-CN,Asia/Shanghai,1985-11-21,diamond,,GLB-588,AM-002,"
        "999.00,300.00,active,true,false,2015-03-02,2026-11-20",
    )
    report = run(engine, "customers", changed, now)
    assert (report.inserted, report.updated) == (0, 2)
    c3 = customer(engine, "C1003")
    assert (c3.name, c3.tier, c3.tier_rank) == ("李强强", "diamond", 3)
    assert (c3.locale, c3.timezone) == ("zh-CN", "Asia/Urumqi")
    assert c3.sms_opt_out is True, "an import never clears an opt-out"
    assert c3.last_contact_on == date(2026, 1, 1)  # was empty, now known
    c1 = customer(engine, "C1001")
    assert c1.sms_opt_out is True and c1.last_contact_on == date(2026, 11, 20)
    assert c1.balance == Decimal("999.00")  # no balance feed yet: the file's balance applies
    with transaction(engine) as s:
        clubs = s.execute(
            select(Customer.external_id, CustomerClub.club)
            .join(Customer)
            .where(Customer.external_id.in_(["C1001", "C1003"]))
            .order_by(Customer.external_id, CustomerClub.club)
        ).all()
        assert [tuple(r) for r in clubs] == [("C1003", "film"), ("C1003", "games")]
        manager = s.scalar(select(Manager.external_id).where(Manager.id == c1.manager_id))
        assert manager == "AM-002"
        plan = s.scalar(select(Plan.code).where(Plan.id == c3.plan_id))
        assert plan == "GLB-288", "an empty plan_code keeps the stored plan"


def test_plans_and_managers_reimport(engine, now, tmp_path):
    load_base(engine, now)
    plans = csv_file(
        tmp_path,
        "plans",
        "GLB-58,全球通 58,68.00,250,10240,100,0.1900,0.0050,0.1000,gold",
        "NEW-1,New plan,1.50,0,0,0,0.0001,0,0,silver|diamond",
    )
    report = run(engine, "plans", plans, now)
    assert (report.inserted, report.updated) == (1, 1)
    managers = csv_file(tmp_path, "managers", "AM-001,李娜娜,+8687163301234,,45")
    assert run(engine, "managers", managers, now).updated == 1
    with transaction(engine) as s:
        glb = s.scalars(select(Plan).where(Plan.code == "GLB-58")).one()
        assert (glb.monthly_fee, glb.voice_minutes, glb.tier_names) == (
            Decimal("68.00"),
            250,
            ["gold"],
        )
        new = s.scalars(select(Plan).where(Plan.code == "NEW-1")).one()
        assert new.tier_names == ["silver", "diamond"]
        assert new.voice_overage_per_min == Decimal("0.0001")
        am = s.scalars(select(Manager).where(Manager.external_id == "AM-001")).one()
        assert (am.name, am.email, am.daily_call_capacity) == (
            "李娜娜",
            "lina@vip.example.com",  # empty email cell keeps the known address
            45,
        )


def test_utf8_bom_is_accepted(engine, now):
    load_base(engine, now)
    report = run(engine, "customers", DATA / "customers_bom.csv", now)
    assert (report.rows, report.inserted) == (1, 1)
    new = customer(engine, "B1")
    assert new.name == "赵敏"
    assert new.balance == Decimal("10.00") and new.balance_as_of is None
    assert new.credit_limit == Decimal("0.00")


def test_new_customer_empty_cells_get_defaults(engine, now, tmp_path):
    load_base(engine, now)
    path = csv_file(tmp_path, "customers", "N1,Nobody,13700000000,,,,silver,,,,,,,,,,")
    run(engine, "customers", path, now)
    c = customer(engine, "N1")
    assert (c.locale, c.timezone, c.status) == ("zh-CN", TZ, "active")
    assert (c.birthday, c.birth_mmdd, c.plan_id, c.manager_id, c.joined_on) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert (c.balance, c.sms_opt_out, c.do_not_call) == (Decimal("0.00"), False, False)


def test_points_column_is_optional_and_validated_with_line_and_column(engine, now, tmp_path):
    """Older files without ``points`` still import; a file with it sets the loyalty points."""
    load_base(engine, now)
    header = ",".join((*HEADERS["customers"], "points"))
    with_points = tmp_path / "points.csv"
    with_points.write_text(
        header + "\nP1,Points,13700000001,,,,gold,,,,,,,,,,,5200\n", encoding="utf-8"
    )
    run(engine, "customers", with_points, now)
    assert customer(engine, "P1").points == 5200
    without = csv_file(tmp_path, "customers", "P1,Points Renamed,13700000001,,,,gold,,,,,,,,,,")
    run(engine, "customers", without, now)
    assert (customer(engine, "P1").name, customer(engine, "P1").points) == ("Points Renamed", 5200)
    bad = tmp_path / "bad_points.csv"
    bad.write_text(header + "\nP1,Points,13700000001,,,,gold,,,,,,,,,,,-3\n", encoding="utf-8")
    lines = refused(engine, "customers", bad, now)
    assert lines == [f"{bad}:2: column points: '-3' is negative (expected a whole number >= 0)"]
    assert customer(engine, "P1").points == 5200


def test_managers_may_carry_a_latin_spelling_that_must_be_latin(engine, now, tmp_path):
    """``name_latin`` is optional; a re-import without it keeps it; Chinese in it is refused."""
    load_base(engine, now)
    header = ",".join((*HEADERS["managers"], "name_latin"))
    spelled = tmp_path / "managers_latin.csv"
    spelled.write_text(header + "\nAM-001,李娜,+8687163301234,,45,Li Na\n", encoding="utf-8")
    run(engine, "managers", spelled, now)
    without = csv_file(tmp_path, "managers", "AM-001,李娜,+8687163301234,,50")
    run(engine, "managers", without, now)
    with transaction(engine) as s:
        am = s.scalars(select(Manager).where(Manager.external_id == "AM-001")).one()
        assert (am.name_latin, am.daily_call_capacity) == ("Li Na", 50)
    bad = tmp_path / "managers_bad_latin.csv"
    bad.write_text(header + "\nAM-001,李娜,+8687163301234,,45,Li 娜\n", encoding="utf-8")
    lines = refused(engine, "managers", bad, now)
    assert lines == [
        f"{bad}:2: column name_latin: 'Li 娜' has '娜', not a Latin letter "
        "(expected the name in Latin letters, e.g. Wang Jing)"
    ]


def test_stale_balance_rows_are_skipped_and_reported(engine, now, tmp_path):
    load_base(engine, now)
    run(engine, "balances", DATA / "good_balances.csv", now)
    feed = csv_file(
        tmp_path,
        "balances",
        "C1001,1.00,2026-11-19",  # older than the stored 2026-11-20: stale
        "C1002,7.00,2026-11-21T08:00:00",  # naive: Shanghai time
        "C1004,-3.50,2026-11-20T23:00:00Z",  # first balance ever for C1004
    )
    report = run(engine, "balances", feed, now)
    assert (report.rows, report.updated, report.stale_count) == (3, 2, 1)
    (stale,) = report.stale
    assert (stale.line, stale.customer_id) == (2, "C1001")
    assert stale.stored_as_of == datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC)
    assert customer(engine, "C1001").balance == Decimal("1250.30")
    c2 = customer(engine, "C1002")
    assert (c2.balance, c2.balance_as_of) == (
        Decimal("7.00"),
        datetime(2026, 11, 21, 0, 0, tzinfo=UTC),
    )
    assert customer(engine, "C1004").balance == Decimal("-3.50")


def test_usage_reimport_updates_the_month(engine, now, tmp_path):
    load_base(engine, now)
    run(engine, "usage", DATA / "good_usage.csv", now)
    path = csv_file(tmp_path, "usage", "C1001,2026-10,1,2,3", "C1004,2026-10,0,0,0")
    report = run(engine, "usage", path, now)
    assert (report.inserted, report.updated) == (1, 1)
    with transaction(engine) as s:
        row = s.get(MonthlyUsage, (customer(engine, "C1001").id, date(2026, 10, 1)))
        assert row is not None and (row.voice_minutes, row.data_mb, row.sms) == (1, 2, 3)


# --- bad files: every row reported, nothing written ----------------------------------------


def test_every_bad_customer_row_is_reported_with_line_and_column(engine, now):
    load_base(engine, now)
    path = DATA / "customers_bad.csv"
    issues = refused(engine, "customers", path, now)
    f = str(path)
    assert issues == [
        f"{f}:2: column phone: '12345' is not a valid phone number "
        "(expected E.164, like +8613812345678)",
        f"{f}:3: column birthday: '2026-02-30' is not a real date (expected YYYY-MM-DD)",
        f"{f}:4: column plan_code: unknown plan 'NOPE-1' "
        "(expected a plan_code already imported; import plans first)",
        f"{f}:4: column account_manager_id: unknown manager 'AM-404' "
        "(expected a manager_id already imported; import managers first)",
        f"{f}:4: column balance: 'ten' is not an amount (expected a decimal number like 12.30)",
        f"{f}:5: column locale: 'zh_CN' is not a locale tag "
        "(expected a tag like zh-CN or en; did you mean 'zh-CN'?)",
        f"{f}:5: column timezone: 'Asia/Shangai' is not an IANA time zone "
        "(expected a name like Asia/Shanghai or Europe/London; did you mean 'Asia/Shanghai'?)",
        f"{f}:5: column tier: 'golden' is not a tier "
        "(expected one of silver, gold, platinum, diamond; did you mean 'gold'?)",
        f"{f}:5: column status: 'paused' is not a status "
        "(expected one of active, suspended, closed)",
        f"{f}:5: column sms_opt_out: 'maybe' is not a boolean "
        "(expected true/false, yes/no, 1/0 or y/n)",
        f"{f}:6: column customer_id: duplicate customer_id 'X1' "
        "(first on line 2; expected each customer_id once per file)",
        f"{f}:6: column balance: '10.001' has more than 2 decimal places "
        "(expected at most 2, like 12.30)",
        f"{f}:6: column credit_limit: '-1.00' is negative (expected an amount >= 0)",
        f"{f}:6: column last_contact_on: '2099-01-01' is in the future "
        "(expected a date on or before 2026-11-21)",
    ]


@pytest.mark.parametrize(
    ("kind", "rows", "expected"),
    [
        (
            "managers",
            ["AM-9,Neg,+8613900000009,neg@example.com,-3"],
            [
                "2: column daily_call_capacity: '-3' is negative "
                "(expected a whole number of calls >= 0)"
            ],
        ),
        (
            "managers",
            ["AM-9,Mail,+8613900000009,not-an-email,3", "AM-8,,+8613900000008,,x"],
            [
                "2: column email: 'not-an-email' is not an email address "
                "(expected name@example.com)",
                "3: column name: is empty (expected a value, at most 200 characters)",
                "3: column daily_call_capacity: 'x' is not a whole number "
                "(expected a whole number of calls >= 0)",
            ],
        ),
        (
            "plans",
            ["P1,Plan,58.001,1,2,3,0.12345,0.0050,abc,silver|gld", "P2,Plan,1,1,1,1,0,0,0,"],
            [
                "2: column monthly_fee: '58.001' has more than 2 decimal places "
                "(expected at most 2, like 12.30)",
                "2: column voice_overage_per_min: '0.12345' has more than 4 decimal places "
                "(expected at most 4, like 0.0293)",
                "2: column sms_overage: 'abc' is not an amount "
                "(expected a decimal number like 0.0293)",
                "2: column tiers: 'gld' is not a tier (expected tiers from silver, gold, "
                "platinum, diamond separated by |; did you mean 'gold'?)",
                "3: column tiers: is empty (expected tiers separated by |, like silver|gold)",
            ],
        ),
        (
            "usage",
            [
                "C1001,2026-13,1,1,1",
                "C1001,2026/10,1,1,1",
                "NOBODY,2026-10,1,1,1",
                "C1002,2026-10,1.5,1,1",
                "C1002,2026-10,1,1,1",
            ],
            [
                "2: column month: '2026-13' is not a month (expected YYYY-MM, like 2026-10)",
                "3: column month: '2026/10' is not a month (expected YYYY-MM, like 2026-10)",
                "4: column customer_id: unknown customer 'NOBODY' "
                "(expected a customer_id already imported; import customers first)",
                "5: column voice_minutes: '1.5' is not a whole number "
                "(expected a whole number >= 0)",
                "6: column customer_id: duplicate usage for customer_id 'C1002' and month "
                "'2026-10' (first on line 5; expected each customer_id and month once per file)",
            ],
        ),
        (
            "balances",
            ["C1001,abc,2026-11-20", "C1002,1.00,yesterday", "C1003,1.00,2026-11-31", "GHOST,1,"],
            [
                "2: column balance: 'abc' is not an amount (expected a decimal number like 12.30)",
                "3: column as_of: 'yesterday' is not a date or time (expected a date "
                "YYYY-MM-DD or an ISO time like 2026-11-20T18:00:00+08:00)",
                "4: column as_of: '2026-11-31' is not a real date (expected YYYY-MM-DD)",
                "5: column as_of: is empty (expected a date YYYY-MM-DD or an ISO time like "
                "2026-11-20T18:00:00+08:00)",
            ],
        ),
        (
            "customers",
            ["C9,Short,+8613900000001,zh-CN,Asia/Shanghai,,gold", "C8,Two,+86139,a,b"],
            [
                "2: row has 7 cells but the header has 17 "
                "(expected one cell per column; quote cells that contain commas)",
                "3: row has 5 cells but the header has 17 "
                "(expected one cell per column; quote cells that contain commas)",
            ],
        ),
    ],
    ids=["negative-capacity", "manager-cells", "plan-money-tiers", "usage", "balances", "widths"],
)
def test_bad_rows(engine, now, tmp_path, kind, rows, expected):
    load_base(engine, now)
    path = csv_file(tmp_path, kind, *rows)
    assert refused(engine, kind, path, now) == [f"{path}:{e}" for e in expected]


def test_wrong_header_names_missing_and_unknown_columns_with_suggestions(engine, now, tmp_path):
    path = tmp_path / "managers.csv"
    path.write_text("manager_id,Name,phon,email,email,capacity\nAM-1,x,+8613900000001,,,3\n")
    f = str(path)
    expected_header = "manager_id,name,phone,email,daily_call_capacity[,name_latin]"
    assert refused(engine, "managers", path, now) == [
        f"{f}:1: column Name: unknown column 'Name' (expected header {expected_header}; "
        "did you mean 'name'?)",
        f"{f}:1: column phon: unknown column 'phon' (expected header {expected_header}; "
        "did you mean 'phone'?)",
        f"{f}:1: column email: appears twice in the header (expected header {expected_header})",
        f"{f}:1: column capacity: unknown column 'capacity' (expected header {expected_header})",
        f"{f}:1: column name: missing column (expected header {expected_header})",
        f"{f}:1: column phone: missing column (expected header {expected_header})",
        f"{f}:1: column daily_call_capacity: missing column (expected header {expected_header})",
    ]


def test_empty_and_non_utf8_files(engine, now, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert refused(engine, "usage", empty, now) == [
        f"{empty}:1: file is empty (expected the header "
        "customer_id,month,voice_minutes,data_mb,sms)"
    ]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"customer_id,balance,as_of\nC1,1.00,2026-11-20\nC\xe9,1.00,2026-11-20\n")
    assert refused(engine, "balances", latin, now) == [
        f"{latin}:3: file is not UTF-8 text (expected UTF-8, with or without BOM)"
    ]


def test_one_bad_row_among_many_good_writes_nothing(engine, now, tmp_path):
    load_base(engine, now)
    rows = [f"G{i},Good {i},+86139{i:08d},zh-CN,,,silver,,,,,,,,,," for i in range(12_000)]
    rows[11_500] = "G11500,Bad,+8613900000000,zh-CN,,2026-02-30,silver,,,,,,,,,,"
    path = csv_file(tmp_path, "customers", *rows)
    issues = refused(engine, "customers", path, now)
    assert issues == [
        f"{path}:11502: column birthday: '2026-02-30' is not a real date (expected YYYY-MM-DD)"
    ]


def test_listing_is_capped_but_every_issue_is_carried(engine, now, tmp_path):
    path = csv_file(tmp_path, "managers", *[f"AM-{i},n,+8613900000001,,-1" for i in range(60)])
    with pytest.raises(ImportFileError) as err:
        run(engine, "managers", path, now)
    assert len(err.value.issues) == 60 and err.value.total == 60
    lines = str(err.value).splitlines()
    assert len(lines) == 52
    assert lines[49].startswith(f"{path}:51: column daily_call_capacity:")
    assert lines[50] == "... and 10 more problems"
    assert lines[51] == f"{path}: 60 problems; nothing was imported (all or nothing)"


# --- CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_import_good_then_bad_then_unknown_kind(cli, engine):
    for kind in ("plans", "managers", "customers"):
        result = cli.invoke(app, ["import", kind, str(DATA / f"good_{kind}.csv")])
        assert result.exit_code == 0, result.output
    assert "5 rows, 5 new, 0 updated" in result.stdout
    result = cli.invoke(app, ["import", "customers", str(DATA / "good_customers.csv")])
    assert result.exit_code == 0 and "5 rows, 0 new, 5 updated" in result.stdout

    before = counts(engine)
    bad = DATA / "customers_bad.csv"
    result = cli.invoke(app, ["import", "customers", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: column phone: '12345' is not a valid phone number" in result.stderr
    assert f"{bad}: 14 problems; nothing was imported (all or nothing)" in result.stderr
    assert counts(engine) == before

    result = cli.invoke(app, ["import", "widgets", str(bad)])
    assert result.exit_code == 2
    result = cli.invoke(app, ["import", "customers", "/no/such/file.csv"])
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_cli_reports_stale_balances(cli, engine, tmp_path):
    for kind in ("plans", "managers", "customers", "balances"):
        assert cli.invoke(app, ["import", kind, str(DATA / f"good_{kind}.csv")]).exit_code == 0
    feed = csv_file(tmp_path, "balances", "C1001,1.00,2026-11-19")
    result = cli.invoke(app, ["import", "balances", str(feed)])
    assert result.exit_code == 0
    assert "1 rows, 0 new, 0 updated, 1 stale skipped" in result.stdout
    assert f"{feed}:2: skipped stale balance for C1001" in result.stdout


def test_a_crash_while_writing_rolls_back_the_whole_file(engine, now, tmp_path, monkeypatch):
    import crm.importer as importer

    load_base(engine, now)
    before = counts(engine)
    rows = [
        f"K{i},Crash {i},+86137{i:08d},,,,gold,film,GLB-58,AM-001,,,,,,," for i in range(11_000)
    ]
    path = csv_file(tmp_path, "customers", *rows)
    real_write = importer._Customers.write
    calls = []

    def failing_write(self, session, chunk, ctx, report):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real_write(self, session, chunk, ctx, report)

    monkeypatch.setattr(importer._Customers, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        run(engine, "customers", path, now)
    assert calls == [5_000, 5_000, 1_000]
    assert counts(engine) == before, "two written chunks must roll back with the third"


def test_progress_reports_checking_and_writing(engine, now, tmp_path):
    rows = [
        f"P{i:05d},Name {i},+86138{i:08d},zh-CN,Asia/Shanghai,,gold,,,,1.00,0.00,active,no,no,,"
        for i in range(6_000)
    ]
    path = csv_file(tmp_path, "customers", *rows)
    seen: list[tuple[str, int]] = []
    report = import_csv(
        engine, "customers", path, ACTOR, now, TZ, progress=lambda p, n: seen.append((p, n))
    )
    assert report.rows == 6_000
    assert [n for p, n in seen if p == "checking"] == [5_000]
    assert [n for p, n in seen if p == "writing"] == [5_000, 6_000]
