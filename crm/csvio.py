"""Reading operator CSV files: header checks and strict, explained cell parsing.

Every problem becomes a :class:`RowIssue` saying ``FILE:LINE: column COLUMN:
reason (expected ...)`` so that an operator can fix the file without reading
code. Parsers never raise on bad input; they record the issue and return None.
"""

from __future__ import annotations

import csv
import difflib
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from zoneinfo import available_timezones

from crm.phones import InvalidPhone, mask_in_text, to_e164
from crm.text import code_point, describe, first_invisible, first_unsafe

MAX_KEPT_ISSUES = 100_000
"""Issues kept in memory; beyond this they are only counted (a 1M-row bad file stays bounded)."""

_MONEY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_INT = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_LOCALE = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|\d{3}))?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}
MAX_MINOR = 10**15  # money is stored as BIGINT minor units; keep far from the edge
MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class RowIssue:
    """One problem in an input file, located by physical line and column."""

    file: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:"
        return (
            f"{where} column {self.column}: {self.message}"
            if self.column
            else f"{where} {self.message}"
        )


class Issues:
    """Collects issues for one file; keeps the first :data:`MAX_KEPT_ISSUES`, counts all."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.kept: list[RowIssue] = []
        self.total = 0

    def add(self, line: int, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_KEPT_ISSUES:
            self.kept.append(RowIssue(self.file, line, column, message))

    def __bool__(self) -> bool:
        return self.total > 0

    def sorted(self, columns: Sequence[str] = ()) -> list[RowIssue]:
        """By line, then in header order (row-level problems first).

        Header problems (line 1) keep the order they were found in.
        """
        order = {name: i for i, name in enumerate(columns)}
        return sorted(
            self.kept,
            key=lambda i: (i.line, order.get(i.column or "", -1) if i.line > 1 else 0),
        )


def suggest(value: str, choices: Collection[str]) -> str:
    """`` (did you mean 'x'?)``-style hint text, or empty when nothing is close."""
    pool = list(choices)
    lowered = {c.lower(): c for c in pool}
    if value.lower() in lowered:
        return f"did you mean {lowered[value.lower()]!r}?"
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def quoted(value: str, limit: int = 60) -> str:
    """A cell quoted for a message, cut at ``limit`` characters so one line stays readable."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value)} chars)"


def _expected(what: str, hint: str = "") -> str:
    return f"(expected {what}; {hint})" if hint else f"(expected {what})"


def read_rows(
    path: Path,
    display: str,
    header: Sequence[str],
    issues: Issues,
    optional: Sequence[str] = (),
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: stripped cell})`` for each data row of a UTF-8 CSV.

    The header must hold exactly ``header`` (any order), plus any of the
    ``optional`` columns; an optional column the file lacks reads as empty cells.
    Header problems are reported on line 1 and no rows are yielded. Blank lines
    are skipped; ``line`` is the physical line on which the row starts.
    """
    expected_header = ",".join(header)
    line = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            first = next(reader, None)
            if first is None:
                issues.add(1, None, f"file is empty (expected the header {expected_header})")
                return
            names = [c.strip() for c in first]
            if not _check_header(names, header, issues, optional):
                return
            absent = {name: "" for name in optional if name not in names}
            positions = [(name, i) for i, name in enumerate(names)]
            width = len(names)
            previous_end = reader.line_num
            for cells in reader:
                line = previous_end + 1
                previous_end = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != width:
                    issues.add(
                        line,
                        None,
                        f"row has {len(cells)} cells but the header has {width} "
                        "(expected one cell per column; quote cells that contain commas)",
                    )
                    continue
                if not _safe_cells(cells, names, line, issues):
                    continue
                yield line, {**absent, **{name: cells[i].strip() for name, i in positions}}
    except UnicodeDecodeError:
        # Text files decode a block at a time; find the physical line that is bad.
        issues.add(
            _first_undecodable_line(path),
            None,
            "file is not UTF-8 text (expected UTF-8, with or without BOM)",
        )
    except csv.Error as exc:
        issues.add(line + 1, None, f"malformed CSV: {exc} (expected RFC 4180 quoting)")
    except OSError as exc:
        issues.add(line + 1, None, f"cannot read the file: {exc.strerror or exc}")


def _safe_cells(cells: list[str], names: list[str], line: int, issues: Issues) -> bool:
    """Refuse control characters and bidi overrides, naming the column and the position.

    They are never part of a name, id or number; stored, a NUL breaks PostgreSQL
    and an escape code rewrites the terminal of whoever lists the customers.
    """
    ok = True
    for name, cell in zip(names, cells, strict=True):
        found = first_unsafe(cell)
        if found is not None:
            position, char = found
            issues.add(
                line,
                name,
                f"contains the control character {code_point(char)} at character {position} "
                "(expected printable text; remove it or re-export the file)",
            )
            ok = False
    return ok


def _first_undecodable_line(path: Path) -> int:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1  # pragma: no cover - only called after a decode error


def _check_header(
    names: list[str], header: Sequence[str], issues: Issues, optional: Sequence[str] = ()
) -> bool:
    expected = ",".join(header) + "".join(f"[,{name}]" for name in optional)
    ok = True
    seen: set[str] = set()
    for name in names:
        if name in seen:
            issues.add(1, name, f"appears twice in the header (expected header {expected})")
            ok = False
        seen.add(name)
        if name not in header and name not in optional:
            hint = suggest(name, [h for h in (*header, *optional) if h not in names])
            label = name or "(empty)"
            text = f"unknown column {label!r} (expected header {expected}"
            issues.add(1, label, text + (f"; {hint})" if hint else ")"))
            ok = False
    for name in header:
        if name not in seen:
            issues.add(1, name, f"missing column (expected header {expected})")
            ok = False
    return ok


def _is_latin(ch: str) -> bool:
    if ch in " -'.":
        return True
    return ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN ")


class Cells:
    """One row's cells with typed accessors; every failure is recorded, never raised."""

    def __init__(self, issues: Issues, line: int, cells: dict[str, str]) -> None:
        self.issues = issues
        self.line = line
        self.cells = cells
        self.ok = True

    def problem(self, column: str | None, message: str) -> None:
        self.ok = False
        self.issues.add(self.line, column, message)

    def raw(self, column: str) -> str:
        return self.cells[column]

    def text(self, column: str, *, required: bool = True, max_len: int = 200) -> str | None:
        """A name: printable, at most ``max_len`` characters, nothing invisible in it."""
        value = self.cells[column]
        if not value:
            if required:
                self.problem(column, f"is empty (expected a value, at most {max_len} characters)")
            return None
        if len(value) > max_len:
            self.problem(column, f"is {len(value)} characters long (expected at most {max_len})")
            return None
        if not self._visible(column, value, "a name"):
            return None
        return value

    def ident(self, column: str) -> str | None:
        value = self.text(column, max_len=64)
        if value is not None and any(ch.isspace() for ch in value):
            self.problem(column, f"{quoted(value)} contains spaces (expected an id without spaces)")
            return None
        return value

    def _visible(self, column: str, value: str, what: str) -> bool:
        """False (and a problem at the character) when ``value`` holds a character that
        shows as nothing: ``G8`` and ``G8`` + U+200B would be two keys that print alike."""
        found = first_invisible(value)
        if found is None:
            return True
        position, char = found
        self.problem(
            column,
            f"contains the invisible character {describe(char)} at character {position} "
            f"(expected {what} without invisible or formatting characters; remove it or "
            "re-export the file)",
        )
        return False

    def money(
        self, column: str, *, scale: int = 2, required: bool = True, non_negative: bool = False
    ) -> Decimal | None:
        value = self.cells[column]
        example = "12.30" if scale == 2 else "0.0293"
        if not value:
            if required:
                self.problem(column, f"is empty (expected an amount like {example})")
            return None
        if not _MONEY.fullmatch(value):
            self.problem(
                column,
                f"{quoted(value)} is not an amount (expected a decimal number like {example})",
            )
            return None
        try:
            amount = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex already rules this out
            self.problem(column, f"{quoted(value)} is not an amount (expected a decimal number)")
            return None
        exponent = amount.as_tuple().exponent
        if (
            isinstance(exponent, int)
            and exponent < -scale
            and amount != amount.quantize(Decimal(1).scaleb(-scale))
        ):
            self.problem(
                column,
                f"{quoted(value)} has more than {scale} decimal places "
                f"(expected at most {scale}, like {example})",
            )
            return None
        if non_negative and amount < 0:
            self.problem(column, f"{quoted(value)} is negative (expected an amount >= 0)")
            return None
        if abs(amount.scaleb(scale)) >= MAX_MINOR:
            self.problem(column, f"{quoted(value)} is too large (expected less than 10 trillion)")
            return None
        return amount.quantize(Decimal(1).scaleb(-scale))

    def count(self, column: str, *, what: str = "a whole number >= 0") -> int | None:
        value = self.cells[column]
        if not value:
            self.problem(column, f"is empty (expected {what})")
            return None
        if not _INT.fullmatch(value):
            self.problem(column, f"{quoted(value)} is not a whole number (expected {what})")
            return None
        if len(value.lstrip("+-0")) > len(str(MAX_INT)):
            self.problem(column, f"{quoted(value)} is too large (expected at most {MAX_INT})")
            return None
        number = int(value)
        if number < 0:
            self.problem(column, f"{quoted(value)} is negative (expected {what})")
            return None
        if number > MAX_INT:
            self.problem(column, f"{quoted(value)} is too large (expected at most {MAX_INT})")
            return None
        return number

    def day(
        self, column: str, *, required: bool = False, not_after: date | None = None
    ) -> date | None:
        value = self.cells[column]
        if not value:
            if required:
                self.problem(column, "is empty (expected a date YYYY-MM-DD)")
            return None
        if not _DATE.fullmatch(value):
            self.problem(column, f"{quoted(value)} is not a date (expected YYYY-MM-DD)")
            return None
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            self.problem(column, f"{quoted(value)} is not a real date (expected YYYY-MM-DD)")
            return None
        if parsed.year < 1900:
            self.problem(
                column, f"{quoted(value)} is before 1900 (expected a date after 1900-01-01)"
            )
            return None
        if not_after is not None and parsed > not_after:
            self.problem(
                column,
                f"{quoted(value)} is in the future "
                f"(expected a date on or before {not_after.isoformat()})",
            )
            return None
        return parsed

    def month(self, column: str) -> date | None:
        value = self.cells[column]
        match = _MONTH.fullmatch(value)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1900:
            shown = repr(value) if value else "empty"
            self.problem(column, f"{shown} is not a month (expected YYYY-MM, like 2026-10)")
            return None
        return date(int(match.group(1)), int(match.group(2)), 1)

    def boolean(self, column: str) -> bool | None:
        """Empty means 'not given' (None); the caller picks the default."""
        value = self.cells[column].lower()
        if not value:
            return None
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        self.problem(
            column,
            f"{self.cells[column]!r} is not a boolean (expected true/false, yes/no, 1/0 or y/n)",
        )
        return None

    def phone(self, column: str) -> str | None:
        value = self.cells[column]
        if not value:
            self.problem(column, "is empty (expected a phone number in E.164, like +8613812345678)")
            return None
        try:
            return to_e164(value)
        except InvalidPhone:
            # Masked: a number with one digit too many is still somebody's number.
            self.problem(
                column,
                f"{quoted(mask_in_text(value))} is not a valid phone number "
                "(expected E.164, like +8613812345678)",
            )
            return None

    def latin_text(self, column: str, max_len: int = 200) -> str | None:
        """A name spelled in Latin letters (pinyin, say): what a text in English can show."""
        value = self.text(column, required=False, max_len=max_len)
        if value is None:
            return None
        odd = [ch for ch in value if not _is_latin(ch)]
        if odd:
            self.problem(
                column,
                f"{quoted(value)} has {quoted(odd[0])}, not a Latin letter "
                "(expected the name in Latin letters, e.g. Wang Jing)",
            )
            return None
        return value

    def email(self, column: str) -> str | None:
        value = self.cells[column]
        if not value:
            return None
        if len(value) > 254 or not _EMAIL.fullmatch(value):
            self.problem(
                column, f"{quoted(value)} is not an email address (expected name@example.com)"
            )
            return None
        return value

    def timezone(self, column: str) -> str | None:
        value = self.cells[column]
        if not value:
            return None
        zones = _zones()
        if value in zones:
            return value
        hint = suggest(value, zones)
        self.problem(
            column,
            f"{quoted(value)} is not an IANA time zone "
            + _expected("a name like Asia/Shanghai or Europe/London", hint),
        )
        return None

    def locale(self, column: str) -> str | None:
        value = self.cells[column]
        if not value:
            return None
        if _LOCALE.fullmatch(value):
            return value
        parts = re.split(r"[-_]", value)
        guess = "-".join([parts[0].lower(), *(p.upper() if len(p) == 2 else p for p in parts[1:])])
        hint = f"did you mean {guess!r}?" if guess != value and _LOCALE.fullmatch(guess) else ""
        self.problem(
            column,
            f"{quoted(value)} is not a locale tag " + _expected("a tag like zh-CN or en", hint),
        )
        return None

    def choice(self, column: str, choices: Sequence[str], *, what: str) -> str | None:
        value = self.cells[column]
        if value in choices:
            return value
        if not value:
            self.problem(column, f"is empty (expected one of {', '.join(choices)})")
            return None
        self.problem(
            column,
            f"{quoted(value)} is not a {what} "
            + _expected(f"one of {', '.join(choices)}", suggest(value, choices)),
        )
        return None

    def tier_list(self, column: str, tiers: Sequence[str]) -> list[str] | None:
        value = self.cells[column]
        names = [p.strip() for p in value.split("|") if p.strip()]
        if not names:
            self.problem(
                column, f"is empty (expected tiers separated by |, like {'|'.join(tiers[:2])})"
            )
            return None
        good: list[str] = []
        for name in names:
            if name not in tiers:
                self.problem(
                    column,
                    f"{quoted(name)} is not a tier "
                    + _expected(
                        f"tiers from {', '.join(tiers)} separated by |", suggest(name, tiers)
                    ),
                )
                return None
            if name not in good:
                good.append(name)
        return good

    def club_list(self, column: str) -> list[str]:
        clubs: list[str] = []
        for part in self.cells[column].split("|"):
            name = part.strip().lower()
            if not name:
                continue
            if len(name) > 32:
                self.problem(
                    column,
                    f"club {quoted(name)} is longer than 32 characters (expected short names)",
                )
                continue
            if name not in clubs:
                clubs.append(name)
        return clubs


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())
