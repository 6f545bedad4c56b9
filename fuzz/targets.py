"""The four fuzz targets of issue 12: rule loader, CSV importer, template renderer, webhooks.

Each target takes the fuzzer's bytes, feeds them to vipcare the way a user or
an attacker could, and lets anything but vipcare's own deliberate errors
escape: an escaping exception, a hang (libFuzzer's ``-timeout``) or memory
past ``-rss_limit_mb`` is a finding. The checks after a refused input are the
"nothing half-written" promise: a refused CSV or webhook leaves the database as
it was. Targets need a working directory for their files and SQLite databases;
:func:`prepare` builds it once per process.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes

from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from twilio.request_validator import RequestValidator

from crm.audit import Actor
from crm.db import make_engine, transaction
from crm.importer import HEADERS, KINDS, CsvImportError, ImportFileError, import_csv
from crm.models import AuditLog, Customer, InboundMessage, OutboundMessage
from crm.schema import upgrade
from notifications.config import NotificationConfig
from rules import load_rules
from rules.errors import RulesError, RulesValidationError, TemplateRenderError
from rules.templates import MAX_OUTPUT, RenderBudget, render_text

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "rules"
DATA_DIR = REPO / "tests" / "data"
AT = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
ACTOR = Actor("import", "fuzz")
PUBLIC = "https://care.example.com"
TOKEN = "fuzz-auth-token-0123456789abcdef"
JOURNEYS = ("birthday", "grace_credit", "plan_fit", "precall_notice", "callback")
TEMPLATE_VARS = {"name": "Wang Fang", "tier": "gold", "manager_name": "Li Na"}


@dataclass
class Workspace:
    """Files and databases the targets write to (one per fuzzing process, built lazily)."""

    root: Path
    rules: Path | None = None
    csv_engine: Engine | None = None
    hook_engine: Engine | None = None
    client: Any = None


_WORKSPACE: Workspace | None = None


def prepare(root: Path, target: str) -> Workspace:
    """Build what ``target`` needs, once: a rules copy, an imported CRM, a webhook database."""
    global _WORKSPACE
    if _WORKSPACE is None:
        root.mkdir(parents=True, exist_ok=True)
        _WORKSPACE = Workspace(root)
    ws = _WORKSPACE
    if target == "rules" and ws.rules is None:
        ws.rules = root / "rules"
        ws.rules.mkdir(exist_ok=True)
        shutil.copyfile(RULES_DIR / "contact_policy.yaml", ws.rules / "contact_policy.yaml")
    if target == "csv" and ws.csv_engine is None:
        ws.csv_engine = _database(root / "csv.db")
        for kind in ("plans", "managers", "customers"):
            path = DATA_DIR / f"good_{kind}.csv"
            import_csv(ws.csv_engine, kind, path, ACTOR, AT, "Asia/Shanghai")
    if target == "webhooks" and ws.hook_engine is None:
        ws.hook_engine = _database(root / "hooks.db")
        _add_customer_and_message(ws.hook_engine)
        ws.client = _webhook_client(ws.hook_engine)
    return ws


def _add_customer_and_message(engine: Engine) -> None:
    with transaction(engine) as session:
        customer = Customer(
            external_id="C001",
            name="Wang Fang",
            phone="+8613812345678",
            tier="gold",
            tier_rank=1,
            locale="zh-CN",
            timezone="Asia/Shanghai",
        )
        session.add(customer)
        session.flush()
        session.add(
            OutboundMessage(
                customer_id=customer.id,
                channel="sms",
                category="service",
                template="grace_notice",
                journey="grace_credit",
                occurrence="grace:fuzz",
                locale="zh-CN",
                to_phone="+8613812345678",
                body="hello",
                scheduled_for=AT,
                status="sent",
                provider="twilio",
                provider_message_id="SM" + "a" * 32,
                attempt_id="ab:1",
                attempts=1,
                created_at=AT,
                updated_at=AT,
                sent_at=AT,
            )
        )


def _database(path: Path) -> Engine:
    path.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def _webhook_client(engine: Engine) -> Any:
    logging.getLogger("notifications.webhooks").setLevel(logging.ERROR)  # one line per 403
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from notifications.webhooks import create_app

    config = NotificationConfig(
        public_url=PUBLIC,
        twilio_account_sid=SecretStr("AC" + "0" * 32),
        twilio_auth_token=SecretStr(TOKEN),
    )
    app = create_app(engine, config, clock=lambda: AT)
    return TestClient(app, raise_server_exceptions=False)


def _workspace() -> Workspace:
    if _WORKSPACE is None:
        raise RuntimeError("call fuzz.targets.prepare(root, target) first")
    return _WORKSPACE


# -- the targets ---------------------------------------------------------------------


def rules_loader(data: bytes) -> None:
    """A journey file with the fuzzer's bytes, beside the shipped contact policy."""
    rules_dir = _workspace().rules
    assert rules_dir is not None
    journey = JOURNEYS[data[0] % len(JOURNEYS)] if data else JOURNEYS[0]
    for old in rules_dir.glob("*.yaml"):
        if old.stem != "contact_policy":
            old.unlink()
    (rules_dir / f"{journey}.yaml").write_bytes(data[1:])
    try:
        load_rules(rules_dir)
    except RulesValidationError as exc:
        assert exc.issues and exc.total == len(exc.issues)
        for issue in exc.issues:
            assert issue.line >= 1 and issue.column >= 1 and issue.message, issue
    except RulesError:
        pass


def template_render(data: bytes) -> None:
    """The fuzzer's bytes as template text, with the journeys' kind of variables."""
    text = data.decode("utf-8", errors="replace")
    try:
        rendered = render_text(text, TEMPLATE_VARS, budget=RenderBudget(seconds=2.0))
    except TemplateRenderError as exc:
        assert str(exc)
    else:
        assert len(rendered) <= MAX_OUTPUT


def _csv_state(engine: Engine) -> tuple[int, str]:
    """The audit length and a digest of every customer row: a refused file changes neither."""
    with transaction(engine) as session:
        audit = session.scalar(select(func.count()).select_from(AuditLog)) or 0
        rows = session.execute(select(Customer).order_by(Customer.id)).scalars().all()
        digest = hashlib.sha256(
            repr(
                [(c.external_id, c.name, c.phone, c.balance, c.sms_opt_out) for c in rows]
            ).encode()
        ).hexdigest()
    return audit, digest


def csv_import(data: bytes) -> None:
    """A CSV of the kind chosen by the first byte: the right header, then the fuzzer's bytes."""
    ws = _workspace()
    engine = ws.csv_engine
    assert engine is not None
    kind = KINDS[data[0] % len(KINDS)] if data else KINDS[0]
    body = data[1:]
    header = ",".join(HEADERS[kind]).encode() + b"\n"
    path = ws.root / f"{kind}.csv"
    path.write_bytes(body if body.startswith(b"!") else header + body)
    before = _csv_state(engine)
    try:
        import_csv(engine, kind, path, ACTOR, AT, "Asia/Shanghai")
    except ImportFileError as exc:
        assert exc.issues and exc.total >= len(exc.issues)
        assert _csv_state(engine) == before, "a refused file wrote something"
    except CsvImportError:
        assert _csv_state(engine) == before, "a refused file wrote something"


def _hook_state(engine: Engine) -> tuple[Any, ...]:
    with transaction(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(AuditLog)),
            session.scalar(select(func.count()).select_from(InboundMessage)),
            tuple(session.scalars(select(Customer.sms_opt_out))),
            tuple(session.execute(select(OutboundMessage.status, OutboundMessage.error_code))),
        )


def webhooks(data: bytes) -> None:
    """A POST to a webhook: first byte picks the path, signing and content type; the rest is
    the body (``?query`` before a NUL byte goes in the URL)."""
    ws = _workspace()
    engine = ws.hook_engine
    assert engine is not None
    control = data[0] if data else 0
    path = "/twilio/status" if control & 1 else "/twilio/inbound"
    query, _, body = data[1:].partition(b"\x00") if control & 8 else (b"", b"", data[1:])
    # A client percent-encodes what a URL cannot carry raw (httpx refuses it otherwise).
    target = path + ("?" + quote_from_bytes(query, safe="=&:%+") if query else "")
    headers = {"Content-Type": "application/x-www-form-urlencoded" if control & 2 else "text/plain"}
    if control & 4:
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            params = {}
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + target, params)
        headers["X-Twilio-Signature"] = signature
    before = _hook_state(engine)
    try:
        response = ws.client.post(target, content=body, headers=headers)
    except UnicodeEncodeError:
        return  # the URL itself cannot be sent
    assert response.status_code != 500, (response.status_code, response.text[:200])
    if response.status_code != 200:
        assert _hook_state(engine) == before, "a refused request changed something"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "rules": rules_loader,
    "templates": template_render,
    "csv": csv_import,
    "webhooks": webhooks,
}
