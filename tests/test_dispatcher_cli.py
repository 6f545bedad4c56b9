"""``vipcare dispatch`` and ``vipcare messages list`` against both databases and the mock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from test_dispatcher_support import add_customer, add_message, connect, seed_simple
from typer.testing import CliRunner

from notifications.backends.mock import MockStore
from tests.cli_clock import Wall, set_cli_clock
from vipcare.cli import app
from vipcare.settings import get_settings


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    """The CLI's wall clock (the system's edge), set by each test."""
    clock = Wall(datetime(2026, 11, 21, 2, 0, tzinfo=UTC))
    set_cli_clock(monkeypatch, clock)
    return clock


@pytest.fixture
def cli(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wall: Wall
) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("VIPCARE_MOCK_STORE", str(tmp_path / "mock.jsonl"))
    monkeypatch.setenv("VIPCARE_SMS_BACKEND", "mock")
    monkeypatch.setenv("VIPCARE_VOICE_BACKEND", "mock")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_dispatch_then_list(cli: CliRunner, engine: Engine, now: datetime, tmp_path: Path) -> None:
    ids = seed_simple(engine, now, 3)
    with connect(engine) as conn:  # 21:00 in New York: outside the shipped 09:00-20:00 window
        ny = add_customer(conn, "NY1", 77, tz="America/New_York")
        add_message(conn, ny, now, n=77, occurrence="ny")
    result = cli.invoke(app, ["dispatch", "--at", "2026-11-21T02:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["deferred"], summary["failed"]) == (3, 1, 0)
    provider = MockStore(tmp_path / "mock.jsonl").records()
    assert sorted(r.message_id for r in provider) == ids

    listed = cli.invoke(app, ["messages", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [ids[-1] + 1, *reversed(ids)]  # newest first
    first = next(r for r in rows if r["customer_id"] == "C0000")
    assert first["status"] == "sent" and first["to"] == "+86138****0000"
    assert first["provider_message_id"].startswith("SM")
    assert first["sent_at"].endswith("Z") and first["scheduled_for"] == "2026-11-21T02:00:00Z"
    for key in (
        "channel",
        "category",
        "template",
        "journey",
        "occurrence",
        "status_reason",
        "error_code",
        "delivered_at",
    ):
        assert key in first
    deferred = next(r for r in rows if r["customer_id"] == "NY1")
    assert (deferred["status"], deferred["scheduled_for"]) == ("queued", "2026-11-21T14:00:00Z")

    one = cli.invoke(app, ["messages", "list", "--customer", "C0001", "--status", "sent", "--json"])
    assert [r["customer_id"] for r in json.loads(one.stdout)] == ["C0001"]
    none = cli.invoke(
        app, ["messages", "list", "--customer", "C0001", "--status", "failed", "--json"]
    )
    assert json.loads(none.stdout) == []

    table = cli.invoke(app, ["messages", "list", "--limit", "2"])
    assert table.exit_code == 0 and "+8613800000" not in table.stdout  # never a whole number


def test_dispatch_text_summary_and_usage_errors(
    cli: CliRunner, engine: Engine, now: datetime, wall: Wall
) -> None:
    seed_simple(engine, now, 1)
    wall.now = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    result = cli.invoke(app, ["dispatch", "--at", "2026-11-21T10:00:00"])  # naive: operator time
    assert result.exit_code == 0, result.output
    assert "dispatch summary" in result.stdout and "sent" in result.stdout
    assert cli.invoke(app, ["dispatch", "--at", "tomorrow"]).exit_code == 2
    assert cli.invoke(app, ["messages", "list", "--status", "lost"]).exit_code == 2
