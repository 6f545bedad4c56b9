"""Reading a rule file: bounded YAML with every key's line and column, and plain-word errors.

ruamel.yaml's round-trip loader keeps positions; :func:`locate` maps a path in
the document to ``line:column``. YAML syntax errors caused by full-width
punctuation or tabs are reported on the line where they really are, with a hint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from rules.conditions import Loc, PathIssue
from rules.errors import (
    FULL_WIDTH,
    RuleIssue,
    Severity,
    punctuation_hint,
)
from rules.values import show
from rules.yaml_limits import MAX_FILE_BYTES, YAML11_BOOLEANS, YamlLimitError, limited_yaml


@dataclass
class YamlDoc:
    path: Path
    content_hash: str
    tree: Any
    issues: list[RuleIssue]

    def issue(
        self,
        loc: Loc,
        message: str,
        suggestion: str | None = None,
        at_key: bool = False,
        severity: Severity = "error",
    ) -> None:
        line, col = locate(self.tree, loc, at_key)
        self.issues.append(RuleIssue(str(self.path), line, col, message, suggestion, severity))

    def add(self, found: Iterable[PathIssue]) -> None:
        for i in found:
            self.issue(i.loc, i.message, i.suggestion, i.at_key, i.severity)

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def read_rule_bytes(path: Path) -> bytes | str:
    """The file's bytes (never more than the limit plus one), or why it cannot be read."""
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)  # never more than the limit, whatever the file
    except OSError as exc:
        return f"cannot read the file: {exc}"


def read_rule_file(path: Path) -> YamlDoc:
    raw = read_rule_bytes(path)
    if isinstance(raw, str):
        return YamlDoc(path, "", None, [RuleIssue(str(path), 1, 1, raw)])
    return parse_rule_bytes(path, raw)


def parse_rule_bytes(path: Path, raw: bytes) -> YamlDoc:
    """Parse a rule file's bytes; ``path`` is where its problems are reported."""
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES // 1024} KB; rule files may be at most"
        message += f" {MAX_FILE_BYTES // 1024} KB"
        issue = RuleIssue(str(path), 1, 1, message, "keep one journey per file, without padding")
        return YamlDoc(path, "", None, [issue])
    doc = YamlDoc(path, hashlib.sha256(raw).hexdigest(), None, [])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        doc.issues.append(
            RuleIssue(str(path), line, col, "the file is not UTF-8 text", "save the file as UTF-8")
        )
        return doc
    yaml = limited_yaml()
    try:
        doc.tree = yaml.load(text)
    except YamlLimitError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        doc.issues.append(RuleIssue(str(path), line, col, str(exc.problem), exc.suggestion))
        return doc
    except DuplicateKeyError as exc:
        doc.issues.append(_yaml_issue(path, exc, duplicate=True))
        doc.tree = None
        return doc
    except MarkedYAMLError as exc:
        doc.issues.append(_punctuation_issue(path, text, exc) or _yaml_issue(path, exc))
        return doc
    except YAMLError as exc:  # pragma: no cover - ruamel marks nearly everything
        doc.issues.append(RuleIssue(str(path), 1, 1, f"YAML error: {exc}"))
        return doc
    doc.issues += _punctuation_in_values(path, text)
    doc.issues += _yaml11_booleans(path, yaml)
    if doc.tree is None:
        doc.issues.append(
            RuleIssue(str(path), 1, 1, "the file is empty; expected a mapping (key: value lines)")
        )
    elif not isinstance(doc.tree, CommentedMap):
        doc.issues.append(
            RuleIssue(
                str(path),
                1,
                1,
                f"expected a mapping (key: value lines) at the top; got {_kind(doc.tree)}",
            )
        )
        doc.tree = None
    return doc


def _yaml_issue(path: Path, exc: MarkedYAMLError, duplicate: bool = False) -> RuleIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    problem = str(exc.problem or "")
    suggestion = None
    if duplicate:
        key = re.search(r'duplicate key "([^"]*)"', problem)
        name = key.group(1) if key else "?"
        first = exc.context_mark.line + 1 if exc.context_mark is not None else None
        message = f"duplicate key {name!r}: each key may appear only once in a mapping"
        if first is not None:
            message += f" (the mapping starts at line {first})"
        suggestion = "remove or merge the repeated key"
    else:
        context = f" ({exc.context})" if exc.context else ""
        message = f"YAML syntax error: {problem}{context}"
        if "\\t" in problem or "tab" in problem:
            suggestion = "indent with spaces, not tabs"
        elif "mapping values are not allowed" in problem:
            suggestion = "quote text that contains ': ' or check the indentation of this line"
        elif "could not find expected ':'" in problem:
            suggestion = "every key needs a ':' after it; check the indentation"
    return RuleIssue(str(path), line, col, message, suggestion)


def _punctuation_issue(path: Path, text: str, exc: MarkedYAMLError) -> RuleIssue | None:
    """A YAML error caused by full-width punctuation or a tab, reported where it really is.

    ruamel notices the damage later (``expected <block end>`` a line or two on);
    the first line up to the error that has a tab in its indentation, or
    full-width punctuation outside quotes and comments, is the real cause.
    """
    mark = exc.problem_mark or exc.context_mark
    last = (mark.line + 1) if mark is not None else len(text.splitlines())
    for number, line in enumerate(text.splitlines()[:last], start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            return RuleIssue(
                str(path),
                number,
                indent.index("\t") + 1,
                "YAML syntax error: a tab in the indentation of this line",
                "indent with spaces, not tabs",
            )
        code = _unquoted(line)
        for column, char in enumerate(code, start=1):
            if char in FULL_WIDTH and char != "　":
                return RuleIssue(
                    str(path),
                    number,
                    column,
                    f"YAML syntax error: full-width {char!r} where YAML needs {FULL_WIDTH[char]!r}",
                    punctuation_hint(char),
                )
    return None


CURLY_QUOTES = "“”‘’"


YAML11_HINT = "is read as {value} by YAML 1.1 tools (PyYAML, many editors and linters)"


def _yaml11_booleans(path: Path, yaml: Any) -> list[RuleIssue]:
    """A warning at each unquoted yes / no / on / off / y / n: text here, a boolean elsewhere."""
    found: list[RuleIssue] = []
    for word, mark in getattr(yaml.composer, "yaml11_booleans", []):
        value = "true" if YAML11_BOOLEANS[word] else "false"
        found.append(
            RuleIssue(
                str(path),
                mark.line + 1,
                mark.column + 1,
                f"{word} {YAML11_HINT.format(value=value)}, so their checks of this file fail",
                f'quote it: "{word}"',
                "warning",
            )
        )
    return found


def _punctuation_in_values(path: Path, text: str) -> list[RuleIssue]:
    """Full-width punctuation that parsed but changes the meaning (the file loaded).

    A full-width comma inside ``[...]`` or ``{...}`` glues two items into one
    (an error); a value opened by a curly quote keeps the quotes in the value
    (a warning: Chinese text may mean it).
    """
    found: list[RuleIssue] = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = _unquoted(line)
        depth = 0
        for column, char in enumerate(code, start=1):
            depth += (char in "[{") - (char in "]}")
            if char == "，" and depth > 0:
                found.append(
                    RuleIssue(
                        str(path),
                        number,
                        column,
                        "a full-width '，' inside a [...] list joins two items into one",
                        punctuation_hint(char),
                    )
                )
        value = line.split(": ", 1)[1].lstrip() if ": " in line else ""
        if value and value[0] in CURLY_QUOTES:
            found.append(
                RuleIssue(
                    str(path),
                    number,
                    len(line) - len(value) + 1,
                    f"the value starts with a curly quote {value[0]!r}, which stays in the text",
                    'quote with straight quotes "..." (half-width), or drop the quotes',
                    "warning",
                )
            )
    return found


def _unquoted(line: str) -> str:
    """``line`` with quoted text and a trailing comment blanked out (same length)."""
    out = []
    quote: str | None = None
    for index, char in enumerate(line):
        if quote is not None:
            out.append(" ")
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
            out.append(" ")
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            break
        else:
            out.append(char)
    return "".join(out)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return f"the text {value!r}" if isinstance(value, str) else show(value)


def plain(node: Any) -> Any:
    """ruamel's round-trip objects → plain Python; YAML floats → exact Decimal of their text."""
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, float):
        return Decimal(repr(float(node)))
    if isinstance(node, int):
        return int(node)
    if isinstance(node, str):
        return str(node)
    return node


def locate(tree: Any, loc: Loc, at_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of ``loc`` in a round-trip tree.

    Path items not present (a missing field, a pydantic union tag) are skipped
    or stop the walk; the deepest position found is reported, so a missing
    field points at its parent key.
    """
    pos = (0, 0)
    node = tree
    items = list(loc)
    for index, item in enumerate(items):
        last = index == len(items) - 1
        if isinstance(node, CommentedMap) and _has_key(node, item):
            key = _real_key(node, item)
            key_pos = node.lc.key(key)
            if last:
                pos = key_pos if at_key or not _is_scalar(node[key]) else node.lc.value(key)
                return pos[0] + 1, pos[1] + 1
            pos = key_pos
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(item, int) and 0 <= item < len(node):
            pos = node.lc.item(item)
            node = node[item]
        elif isinstance(item, str) and not isinstance(node, CommentedMap | CommentedSeq):
            break
        else:
            continue
    return pos[0] + 1, pos[1] + 1


def _has_key(node: CommentedMap, item: object) -> bool:
    return item in node or any(str(k) == str(item) for k in node)


def _real_key(node: CommentedMap, item: object) -> Any:
    if item in node:
        return item
    return next(k for k in node if str(k) == str(item))


def _is_scalar(value: object) -> bool:
    return not isinstance(value, dict | list)
