"""Hostile CSV cells: control characters are refused by line and column, on both databases.

Defect 7 of issue 12: a NUL byte in a text cell passed validation and crashed
the PostgreSQL write with an 88-line traceback showing the whole row, phone
number included. Also: names with terminal escape codes were printed raw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from crm.audit import Actor
from crm.db import transaction
from crm.importer import HEADERS, CsvImportError, ImportFileError, import_csv
from crm.models import AuditLog, Customer, Manager, Plan
from vipcare.cli import app
from vipcare.settings import get_settings

DATA = Path(__file__).parent / "data"
ACTOR = Actor("import", "test")
PHONE = "+8613812345678"


def csv_file(tmp_path: Path, kind: str, *rows: str) -> Path:
    path = tmp_path / f"{kind}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(HEADERS[kind]) + "\n" + "".join(r + "\n" for r in rows))
    return path


def customer_row(name: str = "Wang Fang", ref: str = "C9001", phone: str = PHONE) -> str:
    return f"{ref},{name},{phone},zh-CN,Asia/Shanghai,,gold,,,,1.00,0.00,active,no,no,,"


def counts(engine: Engine) -> tuple[int, int, int, int]:
    with transaction(engine) as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Customer, Manager, Plan, AuditLog)
        )


@pytest.mark.parametrize(
    ("cell", "char"),
    [
        ("Wang\x00Fang", "U+0000"),
        ("Wang\x1b[2JFang", "U+001B"),
        ('"Wang\nFang"', "U+000A"),
        ("Wang\x7fFang", "U+007F"),
        ("Wang\x9bFang", "U+009B"),
        ("Wang\u202eFang", "U+202E"),
        ("Wang\u2066Fang", "U+2066"),
    ],
)
def test_control_characters_in_a_cell_are_refused_by_line_and_column(
    engine: Engine, now: datetime, tmp_path: Path, cell: str, char: str
) -> None:
    path = csv_file(tmp_path, "customers", customer_row(ref="C9000"), customer_row(cell))
    before = counts(engine)
    with pytest.raises(ImportFileError) as err:
        import_csv(engine, "customers", path, ACTOR, now, "UTC")
    [issue] = err.value.issues
    assert (issue.line, issue.column) == (3, "name")
    assert char in issue.message and "character 5" in issue.message
    assert counts(engine) == before


def test_tabs_and_ordinary_unicode_are_fine(engine: Engine, now: datetime, tmp_path: Path) -> None:
    rows = customer_row("Wang\tFang"), customer_row("王芳", "C9002")
    path = csv_file(tmp_path, "customers", *rows)
    report = import_csv(engine, "customers", path, ACTOR, now, "UTC")
    assert report.inserted == 2


@pytest.mark.parametrize(
    ("kind", "row", "column"),
    [
        ("plans", "P1,Gold\x00,58.00,100,1024,100,0.15,0.0293,0.10,gold", "name"),
        ("managers", "M1,Li\x00,+8613900000001,li@example.com,20", "name"),
        ("managers", "M1,Li,+8613900000001\x00,li@example.com,20", "phone"),
        ("customers", customer_row(phone=PHONE + "\x00"), "phone"),
        ("customers", customer_row(ref="C\x009"), "customer_id"),
    ],
)
def test_every_kind_and_column_is_checked(
    engine: Engine, now: datetime, tmp_path: Path, kind: str, row: str, column: str
) -> None:
    path = csv_file(tmp_path, kind, row)
    with pytest.raises(ImportFileError) as err:
        import_csv(engine, kind, path, ACTOR, now, "UTC")
    assert [(i.line, i.column) for i in err.value.issues] == [(2, column)]
    assert counts(engine) == (0, 0, 0, 0)


def test_invalid_phone_numbers_are_shown_masked(
    engine: Engine, now: datetime, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, "customers", customer_row(phone="+861381234567899"))
    with pytest.raises(ImportFileError) as err:
        import_csv(engine, "customers", path, ACTOR, now, "UTC")
    assert "+861381234567899" not in str(err.value)
    assert "+86138" in str(err.value) and "7899" in str(err.value)


def test_huge_numbers_are_a_cell_problem_not_a_crash(
    engine: Engine, now: datetime, tmp_path: Path
) -> None:
    digits = "9" * 5000  # int() refuses more than 4300 digits with a ValueError
    path = csv_file(tmp_path, "managers", f"M1,Li,+8613900000001,,{digits}")
    with pytest.raises(ImportFileError) as err:
        import_csv(engine, "managers", path, ACTOR, now, "UTC")
    [issue] = err.value.issues
    assert issue.column == "daily_call_capacity" and "too large" in issue.message
    assert len(str(issue)) < 300


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_at_the_edge_of_the_calendar_are_a_cell_problem(
    engine: Engine, now: datetime, tmp_path: Path, as_of: str
) -> None:
    for kind in ("plans", "managers", "customers"):
        import_csv(engine, kind, DATA / f"good_{kind}.csv", ACTOR, now, "UTC")
    path = csv_file(tmp_path, "balances", f"C1001,1.00,{as_of}")
    with pytest.raises(ImportFileError) as err:
        import_csv(engine, "balances", path, ACTOR, now, "UTC")
    assert [i.column for i in err.value.issues] == ["as_of"]


def test_an_unreadable_file_is_a_clear_error(
    engine: Engine, now: datetime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied (this suite may run as root, so the OS error is injected)."""
    path = csv_file(tmp_path, "customers", customer_row())
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(CsvImportError, match="cannot read the file: Permission denied"):
        import_csv(engine, "customers", path, ACTOR, now, "UTC")


# -- the CLI: no traceback, no full phone number, no raw escape codes ----------------


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_import_with_a_nul_prints_the_cell_not_a_traceback(
    cli: CliRunner, engine: Engine, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, "customers", customer_row("Wang\x00Fang"))
    result = cli.invoke(app, ["import", "customers", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert PHONE not in result.output
    assert f"{path}:2: column name: contains the control character U+0000" in result.stderr
    assert counts(engine) == (0, 0, 0, 0)


def test_cli_tables_and_json_never_print_raw_control_characters(
    cli: CliRunner, engine: Engine
) -> None:
    evil = "Evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eName"
    with transaction(engine) as session:
        session.add(
            Customer(
                external_id="C\x1b[1mX",
                name=evil,
                phone=PHONE,
                tier="gold",
                tier_rank=1,
                locale="zh-CN",
                timezone="Asia/Shanghai",
            )
        )
    table = cli.invoke(app, ["customers", "list"])
    assert table.exit_code == 0, table.output
    assert "Evil" in table.stdout and "Name" in table.stdout
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in table.stdout
    listed = cli.invoke(app, ["customers", "list", "--json"])
    assert listed.exit_code == 0
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in listed.stdout
    # The JSON still carries the exact name (escaped), for programs that read it.
    assert json.loads(listed.stdout)[0]["name"] == evil
