"""``vipcare config``: the effective settings, with every secret hidden (no database needed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notifications.backends import get_backend
from notifications.backends.mock import MockSMSBackend
from vipcare.cli import app
from vipcare.settings import Settings, get_settings

ACCOUNT_SID = "AC7e3b9d02c4f1a8e6b5d0c9f2a1e4b7d3"
AUTH_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
DB_PASSWORD = "Pg0nlyF0rTest5"
DB_URL = f"postgresql+psycopg://care:{DB_PASSWORD}@db.internal:5432/vipcare"
SECRETS = (ACCOUNT_SID, AUTH_TOKEN, DB_PASSWORD)
ENV_FILE = "VIPCARE_ENV_FILE"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A clean working directory (no stray ``.env``) and fresh settings per test."""
    monkeypatch.chdir(tmp_path)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "VIPCARE_MOCK_STORE", ENV_FILE):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def assert_never_shown(output: str) -> None:
    """No secret, nor any 8-character piece of one, even if a table cell wrapped it."""
    squashed = re.sub(r"[^0-9A-Za-z]", "", output)
    for secret in SECRETS:
        for i in range(len(secret) - 7):
            piece = secret[i : i + 8]
            assert piece not in output and piece not in squashed, f"leaked {piece!r}"


def config(cli: CliRunner, *args: str) -> str:
    result = cli.invoke(app, ["config", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_secrets_from_the_environment_are_never_printed(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("VIPCARE_DATABASE_URL", DB_URL)
    monkeypatch.setenv("VIPCARE_SMS_BACKEND", "twilio")
    monkeypatch.setenv("VIPCARE_MOCK_STORE", str(tmp_path / "mock.jsonl"))
    monkeypatch.setenv("VIPCARE_PUBLIC_URL", "https://hook:callback-pass-123@care.example.com/x")

    table = config(cli)
    as_json = config(cli, "--json")

    assert_never_shown(table)
    assert_never_shown(as_json)
    values = {row["setting"]: row["value"] for row in json.loads(as_json)}
    assert values["twilio_account_sid"] == values["twilio_auth_token"] == "********"
    assert values["database_url"] == "postgresql+psycopg://care:***@db.internal:5432/vipcare"
    assert values["sms_backend"] == "twilio"
    assert values["public_url"] == "https://***@care.example.com/x"
    assert "callback-pass-123" not in table + as_json
    assert values["mock_store"] == str(tmp_path / "mock.jsonl")
    # The table shows the same settings (the redacted token is there, the real one is not).
    assert "twilio_auth_token" in table and "********" in table


def test_unset_secrets_print_empty_and_dotenv_is_read_and_redacted(
    cli: CliRunner, tmp_path: Path
) -> None:
    values = {row["setting"]: row["value"] for row in json.loads(config(cli, "--json"))}
    assert values["twilio_auth_token"] == values["twilio_account_sid"] == ""
    assert values["mock_store"] == ""

    (tmp_path / ".env").write_text(
        f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\n"
        f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}\n"
        f"VIPCARE_DATABASE_URL={DB_URL}\n"
        "VIPCARE_MOCK_STORE=state/mock.jsonl\n",
        encoding="utf-8",
    )
    get_settings.cache_clear()
    as_json = config(cli, "--json")
    assert_never_shown(as_json)
    assert_never_shown(config(cli))
    values = {row["setting"]: row["value"] for row in json.loads(as_json)}
    assert values["twilio_auth_token"] == "********"
    assert values["mock_store"] == "state/mock.jsonl"


def test_mock_store_setting_reaches_the_mock_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIPCARE_MOCK_STORE", raising=False)
    store = tmp_path / "sends.jsonl"
    settings = Settings(_env_file=None, mock_store=store)
    assert settings.notifications().mock_store == store
    assert Settings(_env_file=None).notifications().mock_store is None
    backend = get_backend(settings.notifications(), "sms")
    assert isinstance(backend, MockSMSBackend)
    assert backend.store.path == store


def test_vipcare_env_file_names_the_settings_file(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``VIPCARE_ENV_FILE`` is read wherever the command runs, and wins over ``./.env``."""
    (tmp_path / ".env").write_text("VIPCARE_TIMEZONE=Europe/London\n", encoding="utf-8")
    named = tmp_path / "etc" / "vipcare.env"
    named.parent.mkdir()
    named.write_text(f"VIPCARE_DATABASE_URL={DB_URL}\nVIPCARE_TIMEZONE=UTC\n", encoding="utf-8")
    monkeypatch.setenv(ENV_FILE, str(named))
    as_json = config(cli, "--json")
    assert_never_shown(as_json)
    values = {row["setting"]: row["value"] for row in json.loads(as_json)}
    assert values["database_url"] == "postgresql+psycopg://care:***@db.internal:5432/vipcare"
    assert values["timezone"] == "UTC"


def test_a_missing_vipcare_env_file_is_one_clear_line(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in ``VIPCARE_ENV_FILE`` must not run silently on the defaults."""
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "nope.env"))
    result = cli.invoke(app, ["config"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: bad configuration: {ENV_FILE}={tmp_path / 'nope.env'}: no such file"
    ]


def test_a_worker_reads_the_env_of_the_folder_it_was_started_from(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect runs the flow in a temporary folder; the shell's ``$PWD`` is where it started."""
    from vipcare.workers import worker_settings

    started = tmp_path / "srv"
    started.mkdir()
    (started / ".env").write_text(f"VIPCARE_DATABASE_URL={DB_URL}\n", encoding="utf-8")
    flow_folder = tmp_path / "tmpabc123prefect"
    flow_folder.mkdir()
    monkeypatch.chdir(flow_folder)
    monkeypatch.setenv("PWD", str(started))
    monkeypatch.delenv("VIPCARE_DATABASE_URL", raising=False)
    assert worker_settings().database_url == DB_URL


def test_a_worker_without_a_database_refuses_to_guess(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ``sqlite:///vipcare.db`` would be a new, empty file in Prefect's temp folder."""
    from vipcare.settings import SettingsError
    from vipcare.workers import worker_settings

    monkeypatch.setenv("PWD", str(tmp_path))  # no .env there either
    monkeypatch.delenv("VIPCARE_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError) as refused:
        worker_settings()
    message = str(refused.value)
    assert "this worker has no CRM database" in message and ENV_FILE in message
    assert "no .env file" in message
    monkeypatch.setenv("VIPCARE_DATABASE_URL", f"sqlite:///{tmp_path / 'crm.db'}")
    assert worker_settings().database_url.endswith("crm.db")  # an absolute path is fine
