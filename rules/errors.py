"""Errors of the rules package; every one derives from :class:`RulesError`.

Modelled on rule-engine's errors: an error about a name someone typed carries a
``suggestion`` ("did you mean 'tier'?") so the person editing the file can act
on it without reading code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class RulesError(Exception):
    """Base of every error the rules package raises on purpose."""


def did_you_mean(word: object, choices: Iterable[str]) -> str | None:
    """``"did you mean 'tier'?"`` for the closest choice, or None when nothing is close."""
    if not isinstance(word, str):
        return None
    options = list(dict.fromkeys(choices))
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:
        lowered = {o.lower(): o for o in options}
        match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        match = [lowered[m] for m in match]
    if not match and len(word) >= 3:
        match = [o for o in options if o.lower().startswith(word.lower())][:1]
    return f"did you mean {match[0]!r}?" if match else None


@dataclass(frozen=True)
class RuleIssue:
    """One problem in one rule file: where it is, what was expected, and a fix if we know one.

    ``line`` and ``column`` are 1-based, as editors show them.
    """

    file: str
    line: int
    column: int
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        hint = f" ({self.suggestion})" if self.suggestion else ""
        return f"{self.file}:{self.line}:{self.column}: {self.message}{hint}"


LISTED_PER_FILE = 50
LISTED_OVERALL = 200
"""How many problems a listing shows; a hostile or broken file can have thousands."""


class RulesValidationError(RulesError):
    """The rule files are invalid; ``issues`` holds every problem in every file.

    ``str()`` and :meth:`listing` show at most :data:`LISTED_PER_FILE` problems per
    file and :data:`LISTED_OVERALL` in all, then say how many more there are.
    """

    def __init__(self, issues: Sequence[RuleIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.column, i.message))
        self.total = len(self.issues)
        count = self.total
        lines = [f"{count} problem{'s' if count != 1 else ''} in the rule files:"]
        lines += self.listing()
        super().__init__("\n".join(lines))

    def listing(self, per_file: int = LISTED_PER_FILE, overall: int = LISTED_OVERALL) -> list[str]:
        """One line per problem shown, plus "… and N more problems" lines where cut."""
        lines: list[str] = []
        shown = 0
        by_file: dict[str, list[RuleIssue]] = {}
        for issue in self.issues:
            by_file.setdefault(issue.file, []).append(issue)
        for file, found in by_file.items():
            room = min(per_file, overall - shown)
            if room <= 0:
                break
            lines += [str(i) for i in found[:room]]
            shown += min(room, len(found))
            if len(found) > room:
                lines.append(f"… and {len(found) - room} more problems in {file}")
        if shown >= overall and self.total > shown:
            lines.append(f"… and {self.total - shown} more problems ({self.total} in all)")
        return lines


class UnknownNameError(RulesError):
    """A journey, template or customer name that does not exist."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.suggestion = did_you_mean(name, choices)
        hint = f" ({self.suggestion})" if self.suggestion else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")


class TemplateRenderError(RulesError):
    """A template could not be rendered with the variables given."""


class ConditionError(RulesError):
    """A condition given in code (not from a file) is malformed."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        self.suggestion = suggestion
        super().__init__(message + (f" ({suggestion})" if suggestion else ""))
