"""Invisible and formatting characters in ids and names are refused by line and column
(issue 16, item 12), on SQLite and PostgreSQL.

Before the fix ``G8`` and ``G8`` + U+200B (zero width space) were imported as two
customers that print the same; U+2060 (word joiner) and U+FEFF (zero width no-break
space) passed the same way, in ids and in names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from crm.db import transaction
from crm.models import Customer, Manager, Plan
from tests.test_import_hostile import csv_file, customer_row
from vipcare.cli import app
from vipcare.settings import get_settings

INVISIBLE = {
    "\u200b": "U+200B",  # zero width space
    "\u2060": "U+2060",  # word joiner
    "\ufeff": "U+FEFF",  # zero width no-break space (a BOM inside a cell)
    "\u00ad": "U+00AD",  # soft hyphen
    "\u200e": "U+200E",  # left-to-right mark
    "\u2064": "U+2064",  # invisible plus
    "\u3164": "U+3164",  # Hangul filler: a "letter" that shows as nothing
}


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _customers(engine: Engine) -> list[str]:
    with transaction(engine) as s:
        return list(s.scalars(select(Customer.external_id).order_by(Customer.external_id)))


def _import(cli: CliRunner, kind: str, path: Path) -> tuple[int, str]:
    result = cli.invoke(app, ["import", kind, str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize(("char", "code"), list(INVISIBLE.items()))
def test_an_id_with_an_invisible_character_is_not_a_second_customer(
    cli: CliRunner, engine: Engine, tmp_path: Path, char: str, code: str
) -> None:
    path = csv_file(
        tmp_path,
        "customers",
        customer_row(ref="G8"),
        customer_row(ref=f"G8{char}", phone="+8613812345679"),
    )
    status, output = _import(cli, "customers", path)
    assert status == 1
    line = f"{path}:3: column customer_id:"
    assert line in output, output
    assert code in output and "at character 3" in output and "invisible" in output
    assert char not in output  # shown as its code point, never raw
    assert "Traceback" not in output
    assert _customers(engine) == []  # all or nothing


@pytest.mark.parametrize(
    ("kind", "row", "column", "position"),
    [
        ("plans", "P\u200b1,Gold,58.00,100,1024,100,0.15,0.0293,0.10,gold", "plan_code", 2),
        ("plans", "P1,Go\u2060ld,58.00,100,1024,100,0.15,0.0293,0.10,gold", "name", 3),
        ("managers", "M\ufeff1,Li,+8613900000001,li@example.com,20", "manager_id", 2),
        ("managers", "M1,L\u200bi,+8613900000001,li@example.com,20", "name", 2),
        ("customers", customer_row(name="Wang\u200bFang"), "name", 5),
        ("customers", customer_row(name="王\u2060芳"), "name", 2),
    ],
)
def test_every_kind_refuses_them_in_ids_and_names(
    cli: CliRunner,
    engine: Engine,
    tmp_path: Path,
    kind: str,
    row: str,
    column: str,
    position: int,
) -> None:
    path = csv_file(tmp_path, kind, row)
    status, output = _import(cli, kind, path)
    assert status == 1
    assert f"{path}:2: column {column}:" in output, output
    assert f"at character {position}" in output
    with transaction(engine) as s:
        assert all(s.scalar(select(func.count()).select_from(m)) == 0 for m in (Plan, Manager))


@pytest.mark.parametrize("kind", ["usage", "balances"])
def test_references_to_customers_are_checked_too(
    cli: CliRunner, engine: Engine, tmp_path: Path, kind: str
) -> None:
    assert (
        _import(cli, "customers", csv_file(tmp_path, "customers", customer_row(ref="G8")))[0] == 0
    )
    row = {
        "usage": "G8\u200b,2026-10,100,1024,10",
        "balances": "G8\u200b,-5.00,2026-11-20T08:00:00+08:00",
    }[kind]
    status, output = _import(cli, kind, csv_file(tmp_path, kind, row))
    assert status == 1 and "column customer_id:" in output and "U+200B" in output
    assert "unknown customer" not in output  # the real reason, not a confusing one


def test_visible_unicode_names_still_import(cli: CliRunner, engine: Engine, tmp_path: Path):
    rows = [
        customer_row(name="王芳", ref="C1"),
        customer_row(name="José Ñúñez", ref="C2", phone="+8613812345679"),
        customer_row(name="Zoë O'Brien-Smith", ref="C3", phone="+8613812345670"),
    ]
    status, output = _import(cli, "customers", csv_file(tmp_path, "customers", *rows))
    assert status == 0, output
    assert _customers(engine) == ["C1", "C2", "C3"]


def test_a_manager_id_argument_with_an_invisible_character_says_so(
    cli: CliRunner, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, "managers", "M1,Li,+8613900000001,li@example.com,20")
    assert _import(cli, "managers", path)[0] == 0
    result = cli.invoke(app, ["tasks", "list", "--manager", "M1\u200b"])
    assert result.exit_code == 1
    assert "U+200B" in result.output and "at character 3" in result.output
