"""Hostile input, as properties: no input may crash, hang or half-write (issue 12).

Four targets, each fed generated input by Hypothesis:

- the rule loader: mutated and generated rule files either load or raise
  ``RulesValidationError`` whose problems all have a file, line and column;
- the CSV importers: any cells either import or raise ``ImportFileError`` and
  write nothing (SQLite and PostgreSQL);
- the template renderer: any template either renders within the output limit
  or raises ``TemplateRenderError``, within its time budget;
- the webhook endpoints: any signed or unsigned form answers 200/4xx, never 500,
  and a 4xx changes nothing (SQLite and PostgreSQL).

``HYPOTHESIS_PROFILE=hostile-long`` (with ``VIPCARE_HYPOTHESIS_EXAMPLES=N``) runs
more examples on demand; see docs/reliability.md.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from webhook_support import Hooks, add_customer, add_message, make_client

from crm.audit import Actor
from crm.db import transaction
from crm.importer import HEADERS, KINDS, CsvImportError, ImportFileError, import_csv
from crm.models import AuditLog, Customer, InboundMessage, Manager, MonthlyUsage, Plan
from rules import load_rules
from rules.errors import RulesError, RulesValidationError, TemplateRenderError
from rules.templates import MAX_OUTPUT, render_text

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
EXAMPLES = int(os.environ.get("VIPCARE_HYPOTHESIS_EXAMPLES", "40"))
settings.register_profile(
    "hostile",
    max_examples=EXAMPLES,
    deadline=None,  # the code under test has its own time limits; a hang fails the run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # CI runs the same examples every time; the long profile explores
)
settings.register_profile(
    "hostile-long",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "hostile"))

NASTY_CHARS = "\x00\x07\x1b\x7f\x85\x9b\u202e\u2066\ufeff\t\n\r ٣０ＳＴＯＰ退订。!.'\""
nasty_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(NASTY_CHARS)),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
    ),
    max_size=40,
)

# -- the rule loader -----------------------------------------------------------------

YAML_BITS = [
    "&a ",
    "*a",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "!!python/object:os.system ",
    "!!binary ",
    "'",
    '"',
    "#",
    "|\n",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "9" * 30,
    "1e999",
    "0x",
    "~",
    "\x00",
    "\ufeff",
    "{{ ",
    " }}",
    "{% for x in name %}",
    "{% endfor %}",
    "journey: ",
    "audience:\n  all:\n    - ",
    "tier: {gte: gold}",
]
edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2000),
        st.integers(min_value=0, max_value=20),
        st.one_of(st.sampled_from(YAML_BITS), nasty_text),
    ),
    min_size=1,
    max_size=8,
)


def _mutate(base: str, changes: list[tuple[int, int, str]]) -> str:
    text = base
    for at, cut, insert in changes:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut :]
    return text


def _check_load(directory: Path) -> None:
    try:
        load_rules(directory)
    except RulesValidationError as exc:
        assert exc.issues and exc.total == len(exc.issues)
        for issue in exc.issues:
            assert issue.file and issue.line >= 1 and issue.column >= 1 and issue.message
        assert len(exc.listing()) <= 200 + 2 * 10
    except RulesError:
        pass  # a missing directory and the like: a deliberate, printable error


@HOSTILE
@given(
    journey=st.sampled_from(["birthday", "grace_credit", "plan_fit", "precall_notice"]),
    changes=edits,
)
def test_mutated_rule_files_never_crash_the_loader(
    journey: str, changes: list[tuple[int, int, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "contact_policy.yaml").write_bytes(
            (RULES_DIR / "contact_policy.yaml").read_bytes()
        )
        base = (RULES_DIR / f"{journey}.yaml").read_text(encoding="utf-8")
        (directory / f"{journey}.yaml").write_text(_mutate(base, changes), encoding="utf-8")
        _check_load(directory)


@HOSTILE
@given(policy_changes=edits)
def test_mutated_contact_policies_never_crash_the_loader(
    policy_changes: list[tuple[int, int, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        base = (RULES_DIR / "contact_policy.yaml").read_text(encoding="utf-8")
        (directory / "contact_policy.yaml").write_text(
            _mutate(base, policy_changes), encoding="utf-8"
        )
        _check_load(directory)


# -- the template renderer -----------------------------------------------------------

atoms = st.one_of(
    st.sampled_from(
        ["name", "tier", "9", "99999999", "'a'", "'%s'", "'{:>9}'", "[1, 2]", "range(99999)", "x"]
    ),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    nasty_text.map(repr),
)
operators = st.sampled_from(
    ["+", "-", "*", "**", "%", "//", "~", " and ", " or ", " if x else ", "|upper", "|join(", "."]
)
calls = st.sampled_from(
    [
        ".format(999999999)",
        ".ljust(999999999)",
        ".replace('a', 'bbbbbbbb')",
        "|format(1)",
        "|replace('', 'xxxxxxxx')",
        "|list",
        "|center(9)",
        ".__class__",
        "()",
        "[0]",
    ]
)
expressions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, operators, inner).map("".join),
        st.tuples(inner, calls).map("".join),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=8,
)
template_parts = st.one_of(
    expressions.map(lambda e: "{{ " + e + " }}"),
    expressions.map(lambda e: "{% for x in " + e + " %}"),
    st.just("{% endfor %}"),
    expressions.map(lambda e: "{% if " + e + " %}"),
    st.just("{% endif %}"),
    st.just("{% macro m(a) %}{{ m(a) }}{% endmacro %}{{ m(1) }}"),
    expressions.map(lambda e: "{% set x = " + e + " %}"),
    nasty_text,
)


@HOSTILE
@given(parts=st.lists(template_parts, max_size=10))
def test_any_template_renders_within_limits_or_fails_cleanly(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        rendered = render_text(text, {"name": "Wang Fang", "tier": "gold"})
    except TemplateRenderError as exc:
        event("refused")
        assert str(exc) and len(str(exc)) < 2000
    else:
        event("rendered")
        assert len(rendered) <= MAX_OUTPUT


# -- the CSV importers (SQLite and PostgreSQL) ---------------------------------------

cell = st.one_of(
    nasty_text,
    st.sampled_from(
        [
            "",
            "gold",
            "+8613812345678",
            "13812345678",
            "2026-11-21",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31",
            "12.30",
            "-0.001",
            "9" * 5000,
            "1e9",
            "C1001",
            "GLB-58",
            "AM-001",
            "Asia/Shanghai",
            "zh-CN",
            "yes",
            "music|travel",
            "x" * 300,
            '"quoted, with comma"',
        ]
    ),
)
ACTOR = Actor("import", "hypothesis")
TABLES = (Plan, Manager, Customer, MonthlyUsage, AuditLog)


def _counts(engine: Engine) -> tuple[int, ...]:
    with transaction(engine) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0 for model in TABLES
        )


def _csv_text(kind: str, rows: list[list[str]]) -> str:
    width = len(HEADERS[kind])
    lines = [",".join(HEADERS[kind])]
    for row in rows:
        cells = (row + [""] * width)[:width]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


@HOSTILE
@given(
    kind=st.sampled_from(KINDS),
    rows=st.lists(st.lists(cell, max_size=18), min_size=1, max_size=4),
    raw_tail=st.one_of(st.just(""), nasty_text),
)
def test_any_csv_either_imports_or_writes_nothing(
    engine: Engine, now: datetime, kind: str, rows: list[list[str]], raw_tail: str
) -> None:
    before = _counts(engine)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.csv"
        path.write_text(_csv_text(kind, rows) + raw_tail, encoding="utf-8")
        try:
            report = import_csv(engine, kind, path, ACTOR, now, "Asia/Shanghai")
        except ImportFileError as exc:
            event(f"{kind}: refused")
            assert exc.issues and all(i.line >= 1 for i in exc.issues)
            assert "Traceback" not in str(exc)
            assert _counts(engine) == before, "a refused file must write nothing"
        except CsvImportError as exc:
            assert str(exc)
            assert _counts(engine) == before
        else:
            event(f"{kind}: imported")
            assert report.rows >= 0  # a header with only blank lines is a valid, empty import
            assert _counts(engine)[-1] == before[-1] + 1  # exactly one audit row per import


# -- the webhook endpoints (SQLite and PostgreSQL) -----------------------------------

FIELDS = [
    "MessageSid",
    "MessageStatus",
    "CallSid",
    "CallStatus",
    "ErrorCode",
    "From",
    "Body",
    "To",
    "AccountSid",
]
field_values = st.one_of(
    nasty_text,
    st.sampled_from(
        [
            "SM" + "a" * 32,
            "CA" + "b" * 32,
            "delivered",
            "failed",
            "completed",
            "30003",
            "21610",
            "٣٠٠٠٣",
            "3" * 40,
            "+8613812345678",
            "STOP",
            "START",
            "x" * 2000,
        ]
    ),
)
random_forms = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), nasty_text), field_values, max_size=6
)
status_forms = st.fixed_dictionaries(
    {
        "MessageSid": st.sampled_from(["SM" + "a" * 32, "SM" + "b" * 32]),
        "MessageStatus": st.sampled_from(["sent", "delivered", "undelivered", "failed", "queued"]),
    },
    optional={"ErrorCode": st.sampled_from(["30003", "21610", "30008"])},
)
inbound_forms = st.fixed_dictionaries(
    {
        "From": st.sampled_from(["+8613812345678", "+8613900000000"]),
        "Body": st.one_of(st.sampled_from(["STOP", "start.", "退订。", "hello"]), nasty_text),
        "MessageSid": st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).map(
            lambda hexes: "SM" + hexes
        ),
    }
)


def _spoilt(base: st.SearchStrategy[dict[str, str]]) -> st.SearchStrategy[dict[str, str]]:
    """Well-formed forms, as they are or with a field or two replaced by hostile values."""
    spoils = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=2)
    return st.one_of(base, st.tuples(base, spoils).map(lambda pair: {**pair[0], **pair[1]}))


# Well-formed requests with a field spoilt reach the database paths; wholly random ones
# probe the parsing.
requests = st.one_of(
    st.tuples(st.sampled_from(["/twilio/status", "/twilio/inbound"]), random_forms),
    st.tuples(st.just("/twilio/status"), _spoilt(status_forms)),
    st.tuples(st.just("/twilio/inbound"), _spoilt(inbound_forms)),
)
queries = st.one_of(
    st.just(""),
    st.sampled_from(
        ["message_id=1&attempt_id=ab:1", "message_id=%00&attempt_id=1", "attempt_id=ab%3A1"]
    ),
    st.tuples(nasty_text, nasty_text).map(
        lambda kv: urlencode({"message_id": kv[0], "attempt_id": kv[1]})
    ),
)


def _state(engine: Engine) -> tuple[Any, ...]:
    with transaction(engine) as session:
        audit = session.scalar(select(func.count()).select_from(AuditLog))
        inbound = session.scalar(select(func.count()).select_from(InboundMessage))
        flags = tuple(session.scalars(select(Customer.sms_opt_out).order_by(Customer.id)))
        from crm.models import OutboundMessage

        messages = tuple(
            session.execute(
                select(OutboundMessage.status, OutboundMessage.error_code).order_by(
                    OutboundMessage.id
                )
            )
        )
    return audit, inbound, flags, messages


@HOSTILE
@given(
    request=requests,
    query=queries,
    signed=st.sampled_from([True, True, True, False]),  # mostly past the signature check
)
def test_any_webhook_request_is_answered_without_a_500(
    engine: Engine, now: datetime, request: tuple[str, dict[str, str]], query: str, signed: bool
) -> None:
    path, form = request
    with transaction(engine) as session:
        have_customer = session.scalar(select(func.count()).select_from(Customer))
    if not have_customer:
        customer = add_customer(engine)
        add_message(engine, now, customer, "SM" + "a" * 32)
    before = _state(engine)
    with make_client(engine, lambda: now) as client:
        target = path + (f"?{query}" if query else "")
        try:
            response = Hooks(client).post(target, form, sign=signed)
        except UnicodeEncodeError:
            return  # not sendable over HTTP at all (a lone surrogate in the URL)
    event(f"{path} {'signed' if signed else 'unsigned'}: {response.status_code}")
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 400, 403, 404, 409, 413, 415), response.status_code
    if not signed:
        assert response.status_code in (403, 413, 415)
    if response.status_code != 200:
        assert _state(engine) == before, "a refused request must change nothing"
        assert len(response.text) < 300


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@HOSTILE
@given(body=st.binary(max_size=300), content_type=st.sampled_from(
    ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
     "text/plain", "", "multipart/form-data; boundary=x"]
))  # fmt: skip
def test_any_raw_body_is_answered_without_a_500(
    engine: Engine, now: datetime, body: bytes, content_type: str
) -> None:
    with make_client(engine, lambda: now) as client:
        for path in ("/twilio/status", "/twilio/inbound"):
            headers = {"Content-Type": content_type, "X-Twilio-Signature": "bm9wZQ=="}
            response = client.post(path, content=body, headers=headers)
            assert response.status_code in (400, 403, 413, 415), response.status_code
