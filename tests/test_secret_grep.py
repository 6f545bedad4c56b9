"""No secret and no whole customer phone number in any log record or CLI output (issue 12,
"Security checks"), along a realistic day at DEBUG logging, on SQLite and PostgreSQL.

The day goes through the real pieces, in process: ``vipcare init``, ``seed``, ``run``
(Prefect), two ``dispatch`` runs through the real Twilio adapter to the local fake (a
configured Account SID and auth token, a number Twilio refuses, one it cannot deliver
to), the fake's signed status callbacks and signed inbound SMS posted over HTTP to the
webhook app served by uvicorn, a forged webhook, then the listings (tasks, messages,
customers, managers, ledger, audit, status, config) and the errors an operator meets
(a wrong auth token, a bad date, a bad CSV, an unknown task).

Every log record that reaches any handler is captured, whatever logger made it and
whether or not it propagates (``Logger.callHandlers`` is wrapped), at DEBUG for vipcare,
the Twilio client, urllib3, httpx and uvicorn. Two greps:

- the raw records of those loggers (message, arguments, traceback) must hold no secret
  and no whole number: vipcare masks them itself, before any handler an operator adds;
- the formatted output of a root handler set up as vipcare's own processes set theirs
  (``install_masking`` with the Twilio secrets), at DEBUG for *every* logger, SQLAlchemy's
  statement parameters and result rows included, must hold none either.

CLI stdout and stderr must hold none. A masked number (``+86182****1847``) is fine; the
workspace shows a whole number to its owner in HTML, which is not tested here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from crm.db import transaction
from crm.models import Customer, OutboundMessage
from notifications.fake_twilio import FakeTwilio
from notifications.logging import install_masking
from tests.served_app import LazyApp, served
from vipcare.cli import app
from vipcare.settings import get_settings

AS_OF = "2026-11-23"
ACCOUNT_SID = "AC" + "7c3e9a1f" * 4
AUTH_TOKEN = "s3cr3t-auth-token-" + "d41f" * 4
FROM = "+15005550006"
# The loggers vipcare itself writes to or drives (their raw records must already be clean).
OWN = ("vipcare", "crm", "notifications", "flows", "rules", "seed")
DRIVEN = ("twilio", "urllib3", "httpx", "httpcore", "uvicorn")
# `vipcare run` sets Prefect's run loggers to CRITICAL; DEBUG again before each command.
DEBUG_LOGGERS = (
    "",
    *OWN,
    *DRIVEN,
    "sqlalchemy.engine",
    "prefect",
    "prefect.flow_runs",
    "prefect.task_runs",
)


class Captured:
    """Every record handed to handlers, plus what a masked root handler wrote."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.raw: list[str] = []
        self.handler_output: list[str] = []
        self.cli: list[str] = []
        self.exports: list[str] = []

    def keep(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in OWN + DRIVEN:
            try:
                text = record.getMessage()
            except (TypeError, ValueError):
                text = f"{record.msg} {record.args}"
            self.raw.append(f"{record.name}: {text} {record.exc_text or ''}")
        self.records.append(record)


class ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    cap = Captured()
    original = logging.Logger.callHandlers

    def spy(self: logging.Logger, record: logging.LogRecord) -> None:
        cap.keep(record)
        original(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", spy)
    handler = ListHandler(cap.handler_output)
    install_masking(handler, [ACCOUNT_SID, AUTH_TOKEN])
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    try:
        yield cap
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def debug_everywhere() -> None:
    """DEBUG again (Prefect's logging setup raises levels when it is first imported)."""
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)


class Cli:
    def __init__(self, cap: Captured) -> None:
        self.cap = cap
        self.runner = CliRunner()
        self.codes: dict[str, int] = {}

    def __call__(self, *args: str, expect: int | None = 0, export: bool = False) -> str:
        get_settings.cache_clear()
        debug_everywhere()
        result = self.runner.invoke(app, list(args))
        if export:  # a data export in the import format: whole numbers by design
            self.cap.exports.append(result.stdout)
            self.cap.cli.append(result.stderr)
        else:
            self.cap.cli += [result.stdout, result.stderr]
        self.codes[" ".join(args)] = result.exit_code
        if expect is not None:
            assert result.exit_code == expect, (args, result.output)
        return result.stdout


def customer_phones(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(Customer.phone).order_by(Customer.external_id)))


def sent_sids(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return [
            s
            for s in session.scalars(
                select(OutboundMessage.provider_message_id).where(
                    OutboundMessage.provider_message_id.is_not(None)
                )
            )
            if s
        ]


def findings(texts: list[str], needles: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for text in texts:
        for label, needle in needles.items():
            if needle in text:
                found.setdefault(label, []).append(text[:300])
    return found


def test_a_day_at_debug_logging_shows_no_secret_and_no_whole_phone(
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    captured: Captured,
    prefect_harness: None,
) -> None:
    import vipcare.cli as package
    from notifications.webhooks import create_app

    wall = [datetime.fromisoformat(f"{AS_OF}T09:00:00+08:00")]  # the CLI's clock, moved below
    for module in vars(package).values():
        if hasattr(module, "now_utc"):
            monkeypatch.setattr(module, "now_utc", lambda: wall[0])
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, auto_deliver=True)
    lazy = LazyApp()
    with fake, served(lazy, log_level="debug") as public_url:
        env = {
            "VIPCARE_DATABASE_URL": db_url,
            "VIPCARE_SMS_BACKEND": "twilio",
            "VIPCARE_VOICE_BACKEND": "twilio",
            "VIPCARE_TWILIO_API_BASE": fake.base_url,
            "VIPCARE_PUBLIC_URL": public_url,
            "VIPCARE_SEND_RATE_PER_SECOND": "1000",
            "VIPCARE_TIMEZONE": "Asia/Shanghai",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        cli = Cli(captured)
        get_settings.cache_clear()
        lazy.app = create_app(engine, get_settings().notifications(), clock=lambda: fake.clock())

        cli("init")
        cli("seed", "--customers", "40", "--seed", "7", "--as-of", AS_OF)
        phones = customer_phones(engine)
        assert len(phones) == 40
        cli("run", "--date", AS_OF, "--json")
        with transaction(engine) as session:
            queued = list(
                session.scalars(select(OutboundMessage.to_phone).order_by(OutboundMessage.id))
            )
        assert len(queued) >= 3, "the day queued too few texts to exercise the adapter"
        fake.fail_number(queued[0], 21211)  # Twilio refuses it: an invalid number
        fake.undeliverable(queued[1], 30003)  # accepted, then undelivered
        fake.fail_number(queued[2], 20500, status=503)  # Twilio is down for it: retried later
        cli("dispatch", "--at", f"{AS_OF}T09:00:00", "--json")
        wall[0] = datetime.fromisoformat(f"{AS_OF}T11:05:00+08:00")
        cli("dispatch", "--at", f"{AS_OF}T11:05:00")
        assert fake.join_callbacks(timeout=30)
        assert fake.messages, "nothing reached the fake Twilio"

        with httpx.Client(base_url=public_url) as web:
            for phone, body in ((phones[5], "STOP"), (phones[6], "thanks"), (FROM, "STOP")):
                url, params, headers = fake.inbound_message(
                    public_url + "/twilio/inbound", phone, body
                )
                assert web.post(url, data=params, headers=headers).status_code == 200
            forged = {"From": phones[7], "Body": "START", "MessageSid": "SM" + "0" * 32}
            assert web.post("/twilio/inbound", data=forged).status_code == 403

        cli("tasks", "list")
        tasks = json.loads(cli("tasks", "list", "--json"))
        assert tasks
        cli("tasks", "show", str(tasks[0]["id"]))
        cli("messages", "list")
        cli("messages", "list", "--json")
        cli("customers", "list")
        cli("customers", "list", "--json", export=True)
        cli("managers", "list")
        cli("ledger", "list")
        cli("audit", "list", "--limit", "200")
        cli("audit", "verify")
        cli("status", expect=None)
        cli("status", "--json", expect=None)
        cli("config")

        # The errors an operator meets.
        bad_csv = tmp_path / "bad.csv"
        bad_csv.write_text(
            "customer_id,name,phone,tier\nX1,Bad Number,"
            + phones[8].replace("+", "")
            + "9999,gold\n",
            encoding="utf-8",
        )
        cli("import", "customers", str(bad_csv), expect=None)
        cli("dispatch", "--at", "tomorrow", expect=2)
        cli("tasks", "show", "999999", expect=1)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN[::-1])
        wall[0] = datetime.fromisoformat(f"{AS_OF}T19:00:00+08:00")
        cli("dispatch", "--at", f"{AS_OF}T19:00:00", expect=None)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)

    # Every path ran: accepted, refused (400), down (503), a wrong token (401), callbacks.
    assert {201, 400, 401, 503} <= {r.status for r in fake.api_requests()}
    assert cli.codes[f"dispatch --at {AS_OF}T19:00:00"] == 1
    assert any(c.status == 200 for c in fake.callbacks)
    needles = {"auth token": AUTH_TOKEN, "account sid": ACCOUNT_SID, "sid digits": ACCOUNT_SID[2:]}
    needles |= {f"phone {p}": p for p in phones}
    needles |= {f"digits {p}": p[1:] for p in phones}
    print(
        f"secret grep: {len(captured.records)} log records ({len(captured.raw)} from vipcare and"
        f" the clients it drives), {len(captured.handler_output)} handler lines,"
        f" {len(cli.codes)} CLI commands, {len(needles)} needles, {len(fake.api_requests())}"
        f" Twilio API requests, {len(fake.callbacks)} callbacks"
    )
    assert findings(captured.raw, needles) == {}
    assert findings(captured.handler_output, needles) == {}
    assert findings(captured.cli, needles) == {}
    # The one deliberate exception: `customers list --json` is the import format (docs/import.md).
    assert len(findings(captured.exports, needles)) == 2 * len(phones)
    # The greps could find something: the captures hold the traffic they are meant to.
    assert any(ACCOUNT_SID[:2] + "********" in r for r in captured.raw)
    assert any(re.search(r"\+\d{5}\*{4}\d{4}", r) for r in captured.raw)
    assert any(r.name.startswith("sqlalchemy.engine") for r in captured.records)
    assert sent_sids(engine)
