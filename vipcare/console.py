"""Console output shared by the CLI and the demo: Rich tables, JSON, the care-day summary.

Every text segment is neutralised on its way out (:func:`crm.text.neutralise`):
a name holding a terminal escape, another control code or a bidi override is
shown as visible escapes, never sent to the terminal raw.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.segment import Segment
from rich.table import Table

from crm.jsonable import jsonable
from crm.text import neutralise


class _Console(Console):
    """Piped or captured output uses ``COLUMNS`` when set, else 200 columns, read at print time:
    tables in logs and files are not squeezed to 80 columns.

    Every text segment is neutralised as it is written (:func:`crm.text.neutralise`):
    a customer or manager name holding ESC, another control code or a bidi override
    is shown as visible escapes, never sent to the terminal raw. Rich's own styling
    is added after this step, so colours still work.
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else Segment(safe(segment.text), segment.style)
            for segment in buffer
        )

    @property
    def size(self) -> ConsoleDimensions:
        real = super().size
        if self.is_terminal:
            return real
        columns = os.environ.get("COLUMNS", "")
        return ConsoleDimensions(int(columns) if columns.isdigit() else 200, real.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def safe(text: str) -> str:
    """``text`` with control characters and bidi overrides as visible escapes (newlines kept)."""
    return neutralise(text, keep_newlines=True)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What ``json.dumps(ensure_ascii=False)`` leaves raw but a terminal would act on."""


console = _Console()
err_console = _Console(stderr=True)


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON for a terminal: unicode kept readable, but C1 controls and bidi overrides escaped.

    ``json.dumps`` escapes C0 controls itself; the escaped form decodes to the same value.
    """
    text = json.dumps(jsonable(value), ensure_ascii=False, indent=indent)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def print_json(rows: Any) -> None:
    sys.stdout.write(json_text(rows, indent=2) + "\n")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    empty: str = "nothing to show",
) -> None:
    table = Table(title=title, header_style="bold cyan", title_justify="left")
    for col in columns:
        justify = "right" if col in {"balance", "amount", "monthly_fee", "credit_limit"} else "left"
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    count = 0
    for row in rows:
        table.add_row(*("" if v is None else safe(str(jsonable(v))) for v in row))
        count += 1
    if count == 0:
        console.print(f"[dim]{title}: {empty}[/]")
    else:
        console.print(table)


def print_care_day(result: dict[str, Any]) -> None:
    """What each journey decided on a care day, one column per journey that did something."""
    journeys = [j for j in result["journeys"] if j.get("candidates") or len(j) > 4]
    keys = sorted({k for j in journeys for k in j if k != "journey"})
    print_table(
        f"care day {result['as_of']}: what each journey decided",
        ["", *(j["journey"] for j in journeys)],
        ([key, *(j.get(key, 0) for j in journeys)] for key in keys),
    )
