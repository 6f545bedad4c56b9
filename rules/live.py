"""Which rule set is live: each file's current version if it loads, else its last good one.

Every place that runs rules (the care day, the dispatcher, the escalation sweep,
the webhooks, the workspace, the Prefect workers, ``vipcare run`` and
``dispatch``) gets them from :func:`load_live_rules`, never from
:func:`rules.load_rules` directly. The authoring commands (``vipcare rules
check / preview / explain``) stay all or nothing: they are where an edit is fixed.

Fail-safe, file by file:

- Each file is checked on its own. One that loads is **accepted**: its bytes
  become its last good version in the CRM database (``rule_files``, audited
  ``rules.accepted``). One that does not is **refused** (audited
  ``rules.refused`` once per distinct content, with its located problems) and
  its last good version keeps running, also after a restart. A broken
  ``birthday.yaml`` never stops the grace credit, the pre-call notices or the
  dispatcher.
- ``contact_policy.yaml`` is checked first; the journeys are checked against the
  live policy (credit caps, unsubscribe wording). A broken policy leaves its last
  good version in force: the send window, caps and opt-out words the operator had
  in force are the only safe ones (no policy would stop all sending; built-in
  defaults could be looser).
- A journey with no good version to fall back on (a new file that never loaded,
  or a last good version the live policy no longer allows) does not run and is
  reported. ``call_qa.yaml`` falls back to its defaults, as when it is absent.
- A folder that is missing or has no ``contact_policy.yaml`` is not a rules
  folder: the whole last good set keeps running (a wrong ``VIPCARE_RULES_DIR`` or a
  half-finished copy must not stop every journey). A journey file deleted from a
  real rules folder is a change like any other: that journey stops.

:func:`resolve` is the pure decision (files and stored versions in, live set
out); :func:`load_live_rules` reads both, records what changed and caches the
parsed result while neither the files nor the stored versions change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from crm import rule_files
from crm.audit import Actor
from crm.db import transaction
from crm.rule_files import RULES_ACTOR, Accepted, Refused, Removed, Restored, StoredRuleFile
from rules.errors import RuleIssue, RulesValidationError
from rules.loader import (
    CALL_QA_STEM,
    POLICY_STEM,
    CheckedFile,
    RuleSet,
    RuleSource,
    assemble,
    check_file,
    duplicate_issue,
    file_kind,
    missing_policy_issue,
    rule_paths,
)
from rules.models import CallQaRule, ContactPolicy, JourneyBase

log = logging.getLogger("rules.live")
log.addHandler(logging.NullHandler())  # a process that configures no logging prints nothing

FileState = Literal["current", "last_good", "not_running", "default"]
"""``current``: the file as it is; ``last_good``: its last version that loaded (the current
one is refused); ``not_running``: refused with nothing to fall back on; ``default``:
``call_qa.yaml`` refused with no last good version, so the defaults apply."""
CURRENT: FileState = "current"
LAST_GOOD: FileState = "last_good"
NOT_RUNNING: FileState = "not_running"
DEFAULT: FileState = "default"


@dataclass(frozen=True)
class LiveFile:
    """One rule file of the live set: which version of it runs."""

    name: str
    """The rule id (the file name without ``.yaml``)."""
    file: str
    state: FileState
    sha256: str | None
    """The hash of the version that runs (None: none does)."""
    accepted_at: datetime | None
    """When that version was accepted (None: not yet recorded)."""

    @property
    def kind(self) -> str:
        return file_kind(self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.name,
            "file": self.file,
            "state": self.state,
            "sha256": self.sha256,
            "accepted_at": self.accepted_at,
        }


@dataclass(frozen=True)
class RefusedFile:
    """An edit that does not load, where each problem is, and what runs instead."""

    name: str
    file: str
    sha256: str
    """The hash of the refused bytes (of the problem, for a file that is missing)."""
    problems: tuple[RuleIssue, ...]
    running: FileState
    """What runs instead: ``last_good``, ``default`` (call QA) or ``not_running``."""
    running_sha256: str | None = None
    running_since: datetime | None = None
    folder: bool = False
    """The whole folder is refused (missing, or no contact policy): every file runs as last good."""
    ignored_for: str | None = None
    """A second file for one rule (``birthday.yml`` beside ``birthday.yaml``): the first runs."""

    @property
    def errors(self) -> list[RuleIssue]:
        return [p for p in self.problems if p.severity == "error"]

    def consequence(self) -> str:
        """What the refusal means for the journeys, in one clause."""
        since = ""
        if self.running_sha256:
            when = _utc(self.running_since) if self.running_since else "not yet recorded"
            since = f" (sha256 {self.running_sha256[:12]}, accepted {when})"
        if self.folder:
            if self.running == NOT_RUNNING:
                return "no rule set was ever accepted on this database: nothing can run"
            return "the last good rule set keeps running"
        if self.ignored_for is not None:
            return f"it is ignored: {self.name} comes from {self.ignored_for}"
        kind = file_kind(self.name)
        if self.running == LAST_GOOD:
            if kind == "policy":
                return f"the last good contact policy stays in force{since}"
            if kind == "call_qa":
                return f"call QA uses its last good version{since}"
            return f"journey {self.name} runs on its last good version{since}"
        if self.running == DEFAULT:
            return "call QA uses the defaults"
        if kind == "policy":
            return "no contact policy has ever loaded: nothing can run"
        return f"journey {self.name} is not running: it has no good version to fall back on"

    def summary(self) -> str:
        """One line for ``vipcare status``: the first problem, the count, the consequence."""
        errors = self.errors or list(self.problems)
        first = str(errors[0]) if errors else self.file
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        what = "is not a rules folder" if self.folder else "was refused"
        return f"{self.file} {what}: {first}{more}; {self.consequence()}"

    def describe(self, limit: int = 20) -> str:
        """One line with every problem (up to ``limit``) and the consequence: for job errors."""
        problems = [str(p) for p in (self.errors or list(self.problems))]
        shown = problems[:limit]
        if len(problems) > limit:
            shown.append(f"… and {len(problems) - limit} more (`vipcare rules check` lists all)")
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        return f"{self.file} was refused ({count}): {'; '.join(shown)}; {self.consequence()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.name,
            "file": self.file,
            "sha256": self.sha256,
            "problems": [str(p) for p in self.problems],
            "running": self.running,
            "running_sha256": self.running_sha256,
            "running_since": self.running_since,
            "consequence": self.consequence(),
        }


class NoLiveRules(RulesValidationError):
    """Nothing can run: no contact policy has ever loaded (every problem is in ``issues``)."""

    def __init__(self, issues: Sequence[RuleIssue]) -> None:
        super().__init__(issues)
        self.args = (
            "no rule set can run: the contact policy does not load and none was ever "
            f"accepted; {self.total} problem(s): " + "; ".join(self.listing(overall=20)),
        )


@dataclass(frozen=True)
class LiveRules:
    """The rule set that runs, file by file, and every refused edit with its problems."""

    rules_dir: Path
    ruleset: RuleSet | None
    """None when nothing can run (no contact policy ever loaded)."""
    files: tuple[LiveFile, ...]
    refused: tuple[RefusedFile, ...]

    @property
    def healthy(self) -> bool:
        return not self.refused

    @property
    def stale_journeys(self) -> list[str]:
        """Journeys running on their last good version (the current file is refused)."""
        return [f.name for f in self.files if f.kind == "journey" and f.state == LAST_GOOD]

    @property
    def stopped_journeys(self) -> list[str]:
        """Journeys whose file is refused with no good version to run instead."""
        return [f.name for f in self.files if f.kind == "journey" and f.state == NOT_RUNNING]

    def refusal_of(self, name: str) -> RefusedFile | None:
        return next((r for r in self.refused if r.name == name), None)

    def problems(self) -> list[RuleIssue]:
        return [p for r in self.refused for p in r.problems]

    def require(self) -> RuleSet:
        """The rule set; raises :class:`NoLiveRules` (with every problem) when none can run."""
        if self.ruleset is None:
            raise NoLiveRules(self.problems())
        return self.ruleset

    def attention(self) -> list[str]:
        """One line per refused file, for ``vipcare status``."""
        return [r.summary() for r in self.refused]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.rules_dir),
            "healthy": self.healthy,
            "files": [f.as_dict() for f in self.files],
            "refused": [r.as_dict() for r in self.refused],
            "stale_journeys": self.stale_journeys,
            "stopped_journeys": self.stopped_journeys,
        }


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- the decision -------------------------------------------------------------------


@dataclass
class Changes:
    """What :func:`resolve` found that the stored versions do not say yet."""

    accepted: list[Accepted] = field(default_factory=list)
    removed: list[Removed] = field(default_factory=list)
    restored: list[Restored] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.accepted or self.removed or self.restored or self.refused)


Listing = list[RuleSource] | RuleIssue
"""A folder's files, or the one problem that makes it no rules folder."""


def read_folder(rules_dir: Path) -> Listing:
    """The rule files of ``rules_dir`` (bytes read once), or why it is not a rules folder."""
    if not rules_dir.is_dir():
        what = "is not a folder" if rules_dir.exists() else "does not exist"
        return RuleIssue(
            str(rules_dir),
            1,
            1,
            f"the rules folder {what}",
            "check VIPCARE_RULES_DIR: it names the folder that holds contact_policy.yaml",
        )
    try:
        paths = rule_paths(rules_dir)
    except OSError as exc:
        return RuleIssue(str(rules_dir), 1, 1, f"cannot read the rules folder: {exc}")
    return [RuleSource.read(p) for p in paths]


def resolve(
    rules_dir: Path, listing: Listing, stored: dict[str, StoredRuleFile], now: datetime
) -> tuple[LiveRules, Changes]:
    """The live set from the folder's files and the stored last good versions (pure)."""
    changes = Changes()
    if isinstance(listing, RuleIssue):
        return _keep_last_good(rules_dir, listing, stored), changes
    by_name: dict[str, RuleSource] = {}
    duplicates: list[RuleSource] = []
    for source in listing:
        if source.name in by_name:
            duplicates.append(source)
        else:
            by_name[source.name] = source
    if POLICY_STEM not in by_name:
        return _keep_last_good(rules_dir, missing_policy_issue(rules_dir), stored), changes

    files: list[LiveFile] = []
    refused: list[RefusedFile] = []
    live: dict[str, CheckedFile] = {}

    def take(source: RuleSource, policy: ContactPolicy | None) -> None:
        checked = check_file(source, policy)
        old = stored.get(source.name)
        if checked.ok:
            live[source.name] = checked
            sha = source.sha256 or ""
            if old is None or old.sha256 != sha:
                raw = source.raw or b""
                previous = old.sha256 if old is not None else None
                changes.accepted.append(Accepted(source.name, source.path.name, raw, sha, previous))
                files.append(LiveFile(source.name, str(source.path), CURRENT, sha, now))
            else:
                if old.refused_sha256 is not None:
                    changes.restored.append(Restored(source.name, old.refused_sha256))
                files.append(LiveFile(source.name, str(source.path), CURRENT, sha, old.accepted_at))
            return
        problems = sorted(checked.issues, key=lambda i: (i.line, i.column))
        fallback = _last_good(source, old, policy)
        if fallback is not None and fallback.ok:
            live[source.name] = fallback
            assert old is not None
            state: FileState = LAST_GOOD
            running_sha, since = old.sha256, old.accepted_at
        else:
            if fallback is not None:  # the last good version no longer loads (the policy moved)
                problems += [_of_last_good(i) for i in fallback.errors]
            state = DEFAULT if file_kind(source.name) == "call_qa" else NOT_RUNNING
            running_sha, since = None, None
        key = source.sha256 or _problem_hash(problems)
        files.append(LiveFile(source.name, str(source.path), state, running_sha, since))
        refused.append(
            RefusedFile(
                source.name, str(source.path), key, tuple(problems), state, running_sha, since
            )
        )
        if old is None or old.refused_sha256 != key:
            changes.refused.append(
                Refused(
                    source.name,
                    source.path.name,
                    key,
                    [str(p) for p in problems],
                    running_sha,
                )
            )

    take(by_name[POLICY_STEM], None)
    policy_checked = live.get(POLICY_STEM)
    policy = policy_checked.rule if policy_checked is not None else None
    assert policy is None or isinstance(policy, ContactPolicy)
    for name, source in by_name.items():
        if name != POLICY_STEM:
            take(source, policy)
    for source in duplicates:
        issue = duplicate_issue(source, by_name[source.name].path)
        key = source.sha256 or _problem_hash([issue])
        first = str(by_name[source.name].path)
        refused.append(
            RefusedFile(source.name, str(source.path), key, (issue,), CURRENT, ignored_for=first)
        )
    for name, old in stored.items():
        if name not in by_name:
            changes.removed.append(Removed(name, old.sha256))
    ruleset = None
    if isinstance(policy, ContactPolicy):
        ruleset = _ruleset(rules_dir, listing, policy, live)
    else:  # nothing runs: accept nothing checked without a policy, only remember the refusals
        changes.accepted, changes.removed, changes.restored = [], [], []
    return (
        LiveRules(rules_dir, ruleset, tuple(files), tuple(refused)),
        changes,
    )


def _last_good(
    source: RuleSource, old: StoredRuleFile | None, policy: ContactPolicy | None
) -> CheckedFile | None:
    """The stored last good version, checked again (under the live policy), or None."""
    content = old.good_content if old is not None else None
    if content is None:
        return None
    return check_file(RuleSource(source.path, content), policy)


def _of_last_good(issue: RuleIssue) -> RuleIssue:
    return RuleIssue(
        issue.file,
        issue.line,
        issue.column,
        f"(its last good version) {issue.message}",
        issue.suggestion,
        issue.severity,
    )


def _problem_hash(problems: Sequence[RuleIssue]) -> str:
    return hashlib.sha256("\n".join(str(p) for p in problems).encode()).hexdigest()


def _ruleset(
    rules_dir: Path, listing: list[RuleSource], policy: ContactPolicy, live: dict[str, CheckedFile]
) -> RuleSet:
    journeys = {c.rule.journey: c.rule for c in live.values() if isinstance(c.rule, JourneyBase)}
    qa = live.get(CALL_QA_STEM)
    call_qa = qa.rule if qa is not None and isinstance(qa.rule, CallQaRule) else None
    warnings = [i for c in live.values() for i in c.issues if i.severity == "warning"]
    return assemble(rules_dir, [s.path for s in listing], policy, journeys, call_qa, warnings)


def _keep_last_good(
    rules_dir: Path, problem: RuleIssue, stored: dict[str, StoredRuleFile]
) -> LiveRules:
    """The folder is not a rules folder: every stored last good version runs as it was."""
    files: list[LiveFile] = []
    live: dict[str, CheckedFile] = {}
    sources: list[RuleSource] = []
    policy_row = stored.get(POLICY_STEM)
    policy: ContactPolicy | None = None
    order = ([policy_row] if policy_row else []) + [
        r for n, r in stored.items() if n != POLICY_STEM
    ]
    for row in order:
        content = row.good_content
        if content is None:
            continue
        source = RuleSource(rules_dir / row.file_name, content)
        checked = check_file(source, policy)
        if not checked.ok:
            continue
        if isinstance(checked.rule, ContactPolicy):
            policy = checked.rule
        live[row.name] = checked
        sources.append(source)
        files.append(LiveFile(row.name, str(source.path), LAST_GOOD, row.sha256, row.accepted_at))
    running = LAST_GOOD if policy is not None else NOT_RUNNING
    refusal = RefusedFile(
        POLICY_STEM,
        problem.file,
        _problem_hash([problem]),
        (problem,),
        running,
        folder=True,
    )
    ruleset = _ruleset(rules_dir, sources, policy, live) if policy is not None else None
    return LiveRules(rules_dir, ruleset, tuple(files), (refusal,))


# -- reading, recording, caching ------------------------------------------------------

_CACHE: OrderedDict[tuple[Any, ...], LiveRules] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def load_live_rules(
    engine: Engine,
    rules_dir: Path | str,
    now: datetime,
    *,
    record: bool = True,
    actor: Actor = RULES_ACTOR,
) -> LiveRules:
    """The live rule set of ``rules_dir`` on this database, as of ``now`` (aware UTC).

    ``record`` keeps what changed (accepted versions, refused edits, each audited
    once); ``vipcare status`` passes False and only reads. Parsing is cached per
    process while the files' bytes and the stored versions stay the same: the
    dispatcher asks every few minutes and every care-day task asks again.
    A change that cannot be recorded (a locked database) is logged and tried
    again at the next call; the live set is returned either way.
    """
    folder = Path(rules_dir)
    listing = read_folder(folder)
    with transaction(engine) as session:
        stored = rule_files.read_all(session)
    key = (
        str(engine.url),
        str(folder),
        _listing_key(listing),
        tuple((r.name, r.sha256, r.refused_sha256) for r in stored.values()),
    )
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        live, changes = resolve(folder, listing, stored, now)
        if record and changes:
            try:
                _record(engine, live, changes, now, actor)
            except SQLAlchemyError as exc:
                log.warning("could not record the rule files' changes (tried again later): %s", exc)
                return live
        if not changes:
            # Cached only under the state it was read from: after recording changes the
            # next call reads the stored versions again (a key taken before the write
            # would also match a database emptied since, and skip recording there).
            _CACHE[key] = live
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return live


def _listing_key(listing: Listing) -> tuple[Any, ...]:
    if isinstance(listing, RuleIssue):
        return ("not a folder", str(listing))
    return tuple((str(s.path), s.sha256, s.unreadable) for s in listing)


def _record(engine: Engine, live: LiveRules, changes: Changes, now: datetime, actor: Actor) -> None:
    files = {f.name: f.sha256 for f in live.files if f.sha256}
    with transaction(engine) as session:
        if changes.accepted or changes.removed or changes.restored:
            rule_files.accept(
                session,
                changes.accepted,
                changes.removed,
                changes.restored,
                at=now,
                actor=actor,
                files=files,
                source=str(live.rules_dir),
            )
        for refusal in changes.refused:
            if rule_files.refuse(session, refusal, at=now, actor=actor):
                log.warning(
                    "rule file %s refused (%d problem(s)); %s",
                    refusal.file_name,
                    len(refusal.problems),
                    _consequence(live, refusal.name),
                )


def _consequence(live: LiveRules, name: str) -> str:
    found = live.refusal_of(name)
    return found.consequence() if found is not None else ""


def clear_cache() -> None:
    """Forget every parsed rule set (tests that rewrite files within one clock tick)."""
    with _LOCK:
        _CACHE.clear()
