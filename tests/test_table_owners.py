"""One owner per table: no code outside a table's owner writes its state.

Call tasks belong to ``crm/tasks.py``, outbound messages to the
``notifications/outbox`` package, grace periods to ``crm/grace.py`` and the
consent flags to ``crm/consent.py``. Everything else calls them. This test
reads the source (a grep, as the issue allows): an INSERT or UPDATE of an owned
table, an ORM object made or changed outside its owner, fails it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crm", "rules", "flows", "notifications", "vipcare", "seed")
"""Production code. Tests and benchmarks build their fixtures directly and are not scanned."""

WRITES: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "call_tasks": (
        ("crm/tasks.py",),
        [
            r"update\(\s*(CallTask|_TASKS|TASKS)\b",
            r"(?<!class )\bCallTask\(",
            r"table_of\(CallTask\)\.insert",
            r"insert\(\s*CallTask\b",
            r"(UPDATE|INSERT INTO)\s+call_tasks\b",
        ],
    ),
    "outbound_messages": (
        ("notifications/outbox/",),
        [
            r"update\(\s*(OutboundMessage|MESSAGES)\b",
            r"(?<!class )\bOutboundMessage\(",
            r"table_of\(OutboundMessage\)\.insert",
            r"insert\(\s*OutboundMessage\b",
            r"MESSAGES\.insert\(",
            r"(UPDATE|INSERT INTO)\s+outbound_messages\b",
        ],
    ),
    "grace_periods": (
        ("crm/grace.py",),
        [
            r"update\(\s*GracePeriod\b",
            r"(?<!class )\bGracePeriod\(",
            r"table_of\(GracePeriod\)\.insert",
            r"insert\(\s*GracePeriod\b",
            r"(UPDATE|INSERT INTO)\s+grace_periods\b",
        ],
    ),
    "rule_files": (
        ("crm/rule_files.py",),
        [
            r"update\(\s*RuleFile\b",
            r"delete\(\s*RuleFile\b",
            r"(?<!class )\bRuleFile\(",
            r"table_of\(RuleFile\)\.insert",
            r"insert\(\s*RuleFile\b",
            r"(UPDATE|INSERT INTO|DELETE FROM)\s+rule_files\b",
        ],
    ),
    "consent flags": (
        ("crm/consent.py",),
        [
            r"\.(sms_opt_out|do_not_call)\s*=(?!=)",
            r"\.values\([^)]*\b(sms_opt_out|do_not_call)\s*=",
            r"\.values\(\s*\{[^}]*[\"'](sms_opt_out|do_not_call)[\"']",
            r"SET\s+(sms_opt_out|do_not_call)\b",
        ],
    ),
}


def sources() -> list[Path]:
    files: list[Path] = []
    for package in PACKAGES:
        files += [
            p
            for p in (ROOT / package).rglob("*.py")
            if "migrations" not in p.parts and ".venv" not in p.parts
        ]
    return sorted(files)


def offences(text: str, patterns: list[str]) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0]
        for pattern in patterns:
            if re.search(pattern, stripped):
                found.append(f"{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("table", sorted(WRITES))
def test_only_the_owner_writes(table: str) -> None:
    owners, patterns = WRITES[table]
    bad: list[str] = []
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        if any(rel == o or (o.endswith("/") and rel.startswith(o)) for o in owners):
            continue
        bad += [f"{rel}:{hit}" for hit in offences(path.read_text("utf-8"), patterns)]
    assert bad == [], f"{table} is written outside its owner {owners}:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("table", "snippet"),
    [
        ("call_tasks", "session.execute(update(CallTask).values(status='cancelled'))"),
        ("call_tasks", "session.add(CallTask(kind='callback'))"),
        ("outbound_messages", "update(OutboundMessage).where(x).values(status='suppressed')"),
        ("grace_periods", "session.execute(update(GracePeriod).values(status='repaid'))"),
        ("rule_files", "session.execute(delete(RuleFile).where(RuleFile.name == n))"),
        ("rule_files", "session.execute(update(RuleFile).values(sha256=None))"),
        ("consent flags", "customer.sms_opt_out = True"),
        ("consent flags", "update(Customer).where(w).values(sms_opt_out=True)"),
        ("consent flags", 'update(_C).values({"do_not_call": True})'),
    ],
)
def test_the_check_catches_a_write(table: str, snippet: str) -> None:
    """The patterns are not vacuous: each kind of write they stand for is caught."""
    assert offences(snippet, WRITES[table][1])


def test_the_owners_themselves_do_write() -> None:
    """And they point at the real owners (a renamed owner would pass the check vacuously)."""
    for table, (owners, patterns) in WRITES.items():
        owned = [
            p
            for p in sources()
            if any(
                p.relative_to(ROOT).as_posix() == o
                or (o.endswith("/") and p.relative_to(ROOT).as_posix().startswith(o))
                for o in owners
            )
        ]
        assert owned, table
        if table != "consent flags":  # consent writes a column named at run time
            assert any(offences(p.read_text("utf-8"), patterns) for p in owned), table
