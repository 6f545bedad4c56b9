"""Bounds on what a rule file may cost to read: size, nesting depth and alias expansion.

A rule file is small (a few KB). Without bounds, YAML lets ten lines of
anchors and aliases ("billion laughs") expand to 10^9 values when the loader
turns the tree into plain data, an alias inside its own anchor loops forever,
and a few thousand ``[`` exhaust Python's recursion. The composer below
counts, while it composes, the values the document will hold once every alias
is expanded, and stops at the first alias, nesting level or value past a
limit, with the position in the file, before anything is expanded.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent

MAX_FILE_BYTES = 256 * 1024
"""Rule files are a few KB; 256 KB leaves room for long templates, not for an attack."""
MAX_DEPTH = 64
"""Nesting levels (mappings and lists); audiences rarely go past 10."""
MAX_NODES = 100_000
"""Values (keys, scalars, mappings, lists) the file holds once aliases are expanded."""
YAML11_BOOLEANS: dict[str, bool] = {
    word: value
    for words, value in (("y yes on", True), ("n no off", False))
    for base in words.split()
    for word in (base, base.capitalize(), base.upper())
}
"""Plain words that are text to vipcare (YAML 1.2) but booleans to YAML 1.1 readers (PyYAML,
many editors and linters): an unquoted ``YES`` keyword or an ``on:`` key fails their checks."""


class YamlLimitError(MarkedYAMLError):
    """A rule file past one of the limits; ``problem_mark`` is where, ``suggestion`` what to do."""

    def __init__(self, problem: str, mark: Any, suggestion: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.suggestion = suggestion


class _LimitedComposer(Composer):
    """ruamel's composer, plus a running count of expanded values, open anchors and depth."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._expanded = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to
        self._open: list[str] = []  # anchors of the collections being composed
        self.yaml11_booleans: list[tuple[str, Any]] = []
        """Unquoted words YAML 1.1 reads as booleans: (word, start mark)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if (
            isinstance(event, ScalarEvent)
            and event.style is None
            and event.value in YAML11_BOOLEANS
        ):
            self.yaml11_booleans.append((event.value, event.start_mark))
        if isinstance(event, AliasEvent):
            self._alias(event)
            return super().compose_node(parent, index)
        collection = isinstance(event, MappingStartEvent | SequenceStartEvent)
        if collection and self._depth >= MAX_DEPTH:
            raise YamlLimitError(
                f"nested deeper than {MAX_DEPTH} levels",
                event.start_mark,
                "flatten the structure; rule files need only a few levels",
            )
        start = self._expanded
        self._count(1, event)
        if collection:
            self._depth += 1
            self._open.append(event.anchor or "")
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1
                self._open.pop()
        if getattr(node, "anchor", None) is not None:
            self._sizes[id(node)] = self._expanded - start
        return node

    def _alias(self, event: Any) -> None:
        name = event.anchor
        if name in self._open:
            raise YamlLimitError(
                f"alias *{name} is inside the value it names (&{name}): that is a loop",
                event.start_mark,
                "refer only to a value defined before this one, or write it out",
            )
        target = self.anchors.get(name)
        if target is None:
            return  # ruamel reports the undefined alias itself
        self._count(self._sizes.get(id(target), 1), event, alias=name)

    def _count(self, values: int, event: Any, alias: str | None = None) -> None:
        self._expanded += values
        if self._expanded <= MAX_NODES:
            return
        if alias is not None:
            raise YamlLimitError(
                f"alias *{alias} expands to {values:,} more values; a rule file may hold at most"
                f" {MAX_NODES:,} once aliases are expanded",
                event.start_mark,
                "use fewer aliases, or write the values out",
            )
        raise YamlLimitError(
            f"the file holds more than {MAX_NODES:,} values; rule files are much smaller",
            event.start_mark,
            "split it, or remove what the journey does not need",
        )


def limited_yaml() -> YAML:
    """A round-trip loader (keeps line and column) that enforces the limits above."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = _LimitedComposer
    return yaml
