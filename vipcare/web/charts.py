"""Small server-rendered SVG charts: no JavaScript, no chart library.

Each function returns markup for an ``<svg role="img">`` with a title and a
description, so a screen reader gets the gist; pages put the numbers in a
table next to the bigger charts. Every text is escaped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from markupsafe import Markup, escape

from crm.statuses import MessageStatus

INK = "#1f2933"
MUTED = "#52606d"
GRID = "#d9e2ec"
BAR = "#2f6fb2"
STATUS_COLOURS: dict[MessageStatus, str] = {
    MessageStatus.DELIVERED: "#1b7f4c",
    MessageStatus.SENT: "#2f6fb2",
    MessageStatus.SENDING: "#7b61c4",
    MessageStatus.QUEUED: "#8a6d00",
    MessageStatus.UNDELIVERED: "#c2410c",
    MessageStatus.FAILED: "#b42318",
    MessageStatus.SUPPRESSED: "#616e7c",
    MessageStatus.EXPIRED: "#7c4a1e",
}
"""One colour per message status (the chart's bars and its legend); every status has one."""
USAGE_COLOURS = ("#2f6fb2", "#1b7f4c", "#8a6d00")
_ids = itertools.count(1)
"""Element ids of titles and descriptions: unique within the process, so within a page."""


def status_colour(status: str) -> str:
    return STATUS_COLOURS[MessageStatus(status)]


def swatch(colour: str) -> Markup:
    """A legend's colour key: an SVG square, so the colour comes from the same table as
    the bars (the page's CSP allows no inline styles)."""
    return Markup(
        '<svg class="swatch" viewBox="0 0 10 10" aria-hidden="true" focusable="false" '
        f'xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10" rx="2" '
        f'fill="{escape(colour)}"/></svg>'
    )


def _svg(width: int, height: int, title: str, desc: str, body: str, css_class: str) -> Markup:
    ident = f"chart{next(_ids)}"
    return Markup(
        f'<svg class="{css_class}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}t {ident}d" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{ident}t">{escape(title)}</title><desc id="{ident}d">{escape(desc)}</desc>'
        f"{body}</svg>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return step
    magnitude = 10 ** (len(str(int(value))) - 1)
    return ((int(value) // magnitude) + 1) * magnitude


def daily_bars(
    points: Sequence[tuple[date, int]], title: str, desc: str, width: int = 640, height: int = 200
) -> Markup:
    """One bar per day, a y axis with 0, half and max, a day label every 5 days."""
    return stacked_daily_bars(
        [d for d, _ in points], {"": [n for _, n in points]}, title, desc, width, height, {"": BAR}
    )


def stacked_daily_bars(
    days: Sequence[date],
    series: dict[str, list[int]],
    title: str,
    desc: str,
    width: int = 640,
    height: int = 200,
    colours: dict[str, str] | None = None,
) -> Markup:
    colours = colours or {str(k): v for k, v in STATUS_COLOURS.items()}
    left, right, top, bottom = 40, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top_value = _nice_max(max(totals, default=0))
    parts: list[str] = []
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{MUTED}">{_number(top_value * fraction)}</text>'
        )
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1)
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        base = float(top + plot_h)
        for name, values in series.items():
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            base -= h
            label = (
                f"{day.isoformat()}: {value}" if not name else f"{day.isoformat()} {name}: {value}"
            )
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colours.get(name, BAR)}"><title>{escape(label)}</title></rect>'
            )
        if i % 5 == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                f'font-size="11" fill="{MUTED}">{day:%m-%d}</text>'
            )
    return _svg(width, height, title, desc, "".join(parts), "chart chart-daily")


def horizontal_bars(
    rows: Sequence[tuple[str, Decimal, int]],
    title: str,
    desc: str,
    maximum: float = 5,
    width: int = 320,
) -> Markup:
    """One labelled bar per group (e.g. average satisfaction 0–5), the value at its end."""
    row_h, label_w, value_w = 26, 96, 44
    height = max(len(rows), 1) * row_h + 8
    plot_w = width - label_w - value_w
    parts: list[str] = []
    for i, (name, value, _count) in enumerate(rows):
        y = 4 + i * row_h
        w = plot_w * float(value) / maximum
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="12" '
            f'fill="{INK}">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{plot_w}" height="16" fill="{GRID}"/>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="16" fill="{BAR}"/>'
            f'<text x="{label_w + plot_w + 6}" y="{y + 16}" font-size="12" '
            f'fill="{INK}">{escape(str(value))}</text>'
        )
    return _svg(width, height, title, desc, "".join(parts), "chart chart-hbars")


def usage_bars(
    months: Sequence[tuple[str, tuple[float, float, float]]],
    names: tuple[str, str, str],
    title: str,
    desc: str,
    width: int = 220,
    height: int = 84,
) -> Markup:
    """Per month three bars (voice, data, SMS) as a share of the plan; a line at 100 %."""
    left, top, bottom = 4, 6, 16
    plot_h = height - top - bottom
    peak = max([1.0, *(v for _, shares in months for v in shares)])
    scale = min(peak, 2.0)
    slot = (width - left * 2) / max(len(months), 1)
    bar_w = slot / 4.5
    parts: list[str] = []
    full_y = top + plot_h * (1 - 1 / scale)
    for i, (label, shares) in enumerate(months):
        x0 = left + i * slot + bar_w * 0.5
        for j, share in enumerate(shares):
            h = plot_h * min(share, scale) / scale
            parts.append(
                f'<rect x="{x0 + j * bar_w * 1.1:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}" fill="{USAGE_COLOURS[j]}">'
                f"<title>{escape(f'{label} {names[j]}: {share * 100:.0f}%')}</title></rect>"
            )
        parts.append(
            f'<text x="{x0 + bar_w * 1.6:.1f}" y="{height - 3}" text-anchor="middle" '
            f'font-size="10" fill="{MUTED}">{escape(label)}</text>'
        )
    parts.append(
        f'<line x1="0" y1="{full_y:.1f}" x2="{width}" y2="{full_y:.1f}" stroke="{INK}" '
        'stroke-width="1" stroke-dasharray="4 3"/>'
    )
    return _svg(width, height, title, desc, "".join(parts), "chart chart-usage")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
