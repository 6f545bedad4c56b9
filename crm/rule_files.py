"""The last good version of each rule file: the one owner of ``rule_files``.

:mod:`rules.live` decides which version of each file runs; this module only
keeps what it decided, with guarded writes so two processes that see the same
edit at once (the scheduler's dispatcher and a care-day task, say) change the
row once and write one audit row between them:

- :func:`accept`: a file's new good version (or a file added, removed, or back
  to its last good content), one ``rules.accepted`` audit row for the set;
- :func:`refuse`: an edit that does not load, one ``rules.refused`` audit row per
  distinct refused content, with its located problems.

Nothing here reads rule files or knows their format: the rows hold bytes, hashes
and problem lines (``crm`` sits below ``rules``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor
from crm.bulk import insert_ignoring_conflicts
from crm.models import RuleFile

RULES_ACTOR = Actor("system", "rules")
LISTED_PROBLEMS = 50
"""Problems kept per refused edit (the rest are counted); ``vipcare rules check`` lists all."""


@dataclass(frozen=True)
class StoredRuleFile:
    """One row: the last good bytes (None if the file never loaded) and the refused edit."""

    name: str
    file_name: str
    content: bytes | None
    sha256: str | None
    accepted_at: datetime | None
    refused_sha256: str | None
    refused_at: datetime | None
    refused_problems: tuple[str, ...]

    @property
    def good_content(self) -> bytes | None:
        """The last good bytes, only when they still match their hash (never a altered copy)."""
        if self.content is None or self.sha256 is None:
            return None
        if hashlib.sha256(self.content).hexdigest() != self.sha256:
            return None
        return self.content


def read_all(session: Session) -> dict[str, StoredRuleFile]:
    """Every stored rule file by name (a handful of small rows)."""
    rows = session.execute(select(RuleFile).order_by(RuleFile.name)).scalars()
    return {
        r.name: StoredRuleFile(
            name=r.name,
            file_name=r.file_name,
            content=r.content,
            sha256=r.sha256,
            accepted_at=r.accepted_at,
            refused_sha256=r.refused_sha256,
            refused_at=r.refused_at,
            refused_problems=tuple(r.refused_problems or ()),
        )
        for r in rows
    }


@dataclass(frozen=True)
class Accepted:
    """A file whose current bytes load: they become its last good version."""

    name: str
    file_name: str
    content: bytes
    sha256: str
    previous: str | None
    """The last good hash this change replaces (None: the file had none)."""


@dataclass(frozen=True)
class Removed:
    """A file that is gone from the folder (its journey no longer runs)."""

    name: str
    previous: str | None


@dataclass(frozen=True)
class Restored:
    """A file back to its last good bytes after a refused edit: the refusal is over."""

    name: str
    refused_sha256: str


@dataclass(frozen=True)
class Refused:
    """An edit that does not load: its hash, its problems and what runs instead."""

    name: str
    file_name: str
    sha256: str
    problems: Sequence[str]
    running: str | None
    """The hash of the last good version that runs instead (None: nothing does)."""


def accept(
    session: Session,
    accepted: Sequence[Accepted],
    removed: Sequence[Removed],
    restored: Sequence[Restored],
    *,
    at: datetime,
    actor: Actor = RULES_ACTOR,
    files: dict[str, str],
    source: str,
) -> bool:
    """Keep the new good versions; one ``rules.accepted`` audit row for what this call changed.

    Each write is guarded by the hash it replaces: of two processes making the same
    change, one changes the row and audits it, the other changes nothing.
    ``files`` (name → hash of every version now live) and ``source`` (the folder)
    go into the audit row. Returns True when anything changed.
    """
    added: dict[str, str] = {}
    changed: dict[str, dict[str, str | None]] = {}
    for a in sorted(accepted, key=lambda x: x.name):
        if _replace(session, a, at):
            if a.previous is None:
                added[a.name] = a.sha256
            else:
                changed[a.name] = {"from": a.previous, "to": a.sha256}
    gone: dict[str, str | None] = {}
    for r in sorted(removed, key=lambda x: x.name):
        guard = RuleFile.sha256.is_(None) if r.previous is None else RuleFile.sha256 == r.previous
        done = session.execute(delete(RuleFile).where(RuleFile.name == r.name, guard))
        if done.rowcount and r.previous is not None:  # type: ignore[attr-defined]
            gone[r.name] = r.previous
    back: list[str] = []
    for b in sorted(restored, key=lambda x: x.name):
        done = session.execute(
            update(RuleFile)
            .where(RuleFile.name == b.name, RuleFile.refused_sha256 == b.refused_sha256)
            .values(refused_sha256=None, refused_at=None, refused_problems=None)
        )
        if done.rowcount:  # type: ignore[attr-defined]
            back.append(b.name)
    if not (added or changed or gone or back):
        return False
    details = {
        "source": source,
        "files": dict(sorted(files.items())),
        "added": added,
        "changed": changed,
        "removed": gone,
        "restored": back,
    }
    audit.record(session, actor, at, "rules.accepted", details, entity="rules")
    return True


def _replace(session: Session, a: Accepted, at: datetime) -> bool:
    guard = RuleFile.sha256.is_(None) if a.previous is None else RuleFile.sha256 == a.previous
    values = {
        "file_name": a.file_name,
        "content": a.content,
        "sha256": a.sha256,
        "accepted_at": at,
        "refused_sha256": None,
        "refused_at": None,
        "refused_problems": None,
    }
    done = session.execute(update(RuleFile).where(RuleFile.name == a.name, guard).values(values))
    if done.rowcount:  # type: ignore[attr-defined]
        return True
    if a.previous is not None:
        return False
    won = insert_ignoring_conflicts(session, RuleFile, [{"name": a.name, **values}], "name")
    return a.name in won


def refuse(session: Session, refused: Refused, *, at: datetime, actor: Actor = RULES_ACTOR) -> bool:
    """Remember a refused edit; one ``rules.refused`` audit row per distinct refused content."""
    problems = list(refused.problems)
    values = {
        "refused_sha256": refused.sha256,
        "refused_at": at,
        "refused_problems": problems[:LISTED_PROBLEMS],
    }
    done = session.execute(
        update(RuleFile)
        .where(
            RuleFile.name == refused.name,
            RuleFile.refused_sha256.is_(None) | (RuleFile.refused_sha256 != refused.sha256),
        )
        .values(values)
    )
    won = bool(done.rowcount)  # type: ignore[attr-defined]
    if not won:
        exists = session.execute(select(RuleFile.name).where(RuleFile.name == refused.name)).first()
        if exists is None:
            row = {"name": refused.name, "file_name": refused.file_name, **values}
            won = refused.name in insert_ignoring_conflicts(session, RuleFile, [row], "name")
    if won:
        audit.record(
            session,
            actor,
            at,
            "rules.refused",
            {
                "file": refused.file_name,
                "problems": problems[:LISTED_PROBLEMS],
                "total": len(problems),
                "running": refused.running,
            },
            entity=f"rule_file:{refused.name}",
            rule_id=refused.name,
            rule_hash=refused.sha256,
        )
    return won
