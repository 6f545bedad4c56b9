"""Errors of the rules package; every one derives from :class:`RulesError`.

Modelled on rule-engine's errors: an error about a name someone typed carries a
``suggestion`` ("did you mean 'tier'?") so the person editing the file can act
on it without reading code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


class RulesError(Exception):
    """Base of every error the rules package raises on purpose."""


FULL_WIDTH: dict[str, str] = {
    "：": ":",
    "，": ",",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
    "［": "[",
    "］": "]",
    "｛": "{",
    "｝": "}",
    "－": "-",
    "　": " ",
}
"""Full-width punctuation a Chinese keyboard types where YAML needs the ASCII character."""


def punctuation_hint(text: str) -> str | None:
    """A hint for full-width punctuation or a tab in ``text``, where YAML needs ASCII."""
    for char, ascii_char in FULL_WIDTH.items():
        if char in text:
            shown = "a space" if ascii_char == " " else f"{ascii_char!r}"
            extra = " followed by a space" if ascii_char == ":" else ""
            return (
                f"the full-width {char!r} must be the ASCII {shown}{extra}"
                " (switch the keyboard to half-width)"
            )
    if "\t" in text:
        return "indent with spaces, not tabs"
    return None


def did_you_mean(word: object, choices: Iterable[str]) -> str | None:
    """``"did you mean 'tier'?"`` for the closest choice, or None when nothing is close."""
    if not isinstance(word, str):
        return None
    hint = punctuation_hint(word)
    if hint is not None:
        return hint
    options = list(dict.fromkeys(choices))
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:
        lowered = {o.lower(): o for o in options}
        match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        match = [lowered[m] for m in match]
    if not match and len(word) >= 3:
        match = [o for o in options if o.lower().startswith(word.lower())][:1]
    return f"did you mean {match[0]!r}?" if match else None


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class RuleIssue:
    """One problem in one rule file: where it is, what was expected, and a fix if we know one.

    ``line`` and ``column`` are 1-based, as editors show them. A ``warning``
    loads anyway (it looks like a mistake but may be meant); an ``error`` loads nothing.
    """

    file: str
    line: int
    column: int
    message: str
    suggestion: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        hint = f" ({self.suggestion})" if self.suggestion else ""
        label = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}: {label}{self.message}{hint}"


LISTED_PER_FILE = 50
LISTED_OVERALL = 200
"""How many problems a listing shows; a hostile or broken file can have thousands."""


class RulesValidationError(RulesError):
    """The rule files are invalid; ``issues`` holds every problem in every file.

    Warnings found alongside the errors are listed too (``severity``). ``str()``
    and :meth:`listing` show at most :data:`LISTED_PER_FILE` problems per file and
    :data:`LISTED_OVERALL` in all, then say how many more there are.
    """

    def __init__(self, issues: Sequence[RuleIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.column, i.message))
        self.total = len(self.issues)
        count = sum(1 for i in self.issues if i.severity == "error")
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
