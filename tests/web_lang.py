"""Is a workspace page wholly in the reader's language? A reusable check for page walks.

``language_problems(html, locale)`` reads what a person sees or hears on the page:
text, the ``title``/``aria-label``/``alt``/``placeholder`` attributes, the
``data-label`` a narrow screen shows, and the charts' SVG titles. It reports

* in zh-CN: a coded value shown raw (``expired``, ``care``, ``awaiting_notice``,
  ``task.done``: any value of an enum in :mod:`crm.statuses`), or an English phrase
  (three or more English words in a row, like "customer opted out of SMS");
* in en: any Chinese character, and any snake_case code.

Content that is not the workspace's own words is skipped: elements marked with
another ``lang`` (the language switcher's "中文"), the text of an SMS as sent
(``.sms``), and command lines (``code``); ``allowed`` names more (customer names,
plan names) to remove before checking.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from html.parser import HTMLParser

from vipcare.web.labels import all_enums

VISIBLE_ATTRIBUTES = ("title", "aria-label", "alt", "placeholder", "data-label")
SKIPPED_TAGS = {"script", "style", "code"}
SKIPPED_CLASSES = {"sms", "cmd"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
ENGLISH_PHRASE = re.compile(r"\b[A-Za-z][a-z']+(?:[ ,]+[a-z][a-z']+){2,}\b")
SNAKE_CODE = re.compile(r"(?<![/\w.])[a-z]+(?:_[a-z]+)+(?![\w/.])")
"""A snake_case word that is not part of a path (``rules/call_qa.yaml``) or zone name."""
WORD = re.compile(r"[A-Za-z_]+(?:\.[a-z_]+)?")


def codes() -> set[str]:
    """Every coded value the workspace must never show raw (each enum of crm.statuses)."""
    found: set[str] = set()
    for enum in all_enums():
        found |= {m.value for m in enum if isinstance(m, StrEnum)}
    return found


class _Visible(HTMLParser):
    def __init__(self, page_lang: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.page_lang = page_lang
        self.texts: list[str] = []
        self._stack: list[bool] = []  # per open element: is its content skipped?

    @property
    def _skipping(self) -> bool:
        return bool(self._stack) and self._stack[-1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.page_lang = self.page_lang or values.get("lang")
        lang = values.get("lang")
        classes = set(values.get("class", "").split())
        skip = (
            self._skipping
            or tag in SKIPPED_TAGS
            or bool(classes & SKIPPED_CLASSES)
            or (lang is not None and tag != "html" and lang != self.page_lang)
        )
        if not skip:
            self.texts += [values[a] for a in VISIBLE_ATTRIBUTES if values.get(a)]
            if tag == "input" and values.get("type") in ("submit", "button"):
                self.texts.append(values.get("value", ""))
        if tag not in VOID:
            self._stack.append(skip)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self._stack:
            self._stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._skipping and data.strip():
            self.texts.append(data.strip())


def visible_texts(html: str) -> list[str]:
    parser = _Visible(None)
    parser.feed(html)
    parser.close()
    return parser.texts


def language_problems(html: str, locale: str, allowed: Iterable[str] = ()) -> list[str]:
    """What on the page is not in ``locale``: a list of ``why: "the text"`` (empty is good)."""
    known_codes = codes()
    data = sorted({a for a in allowed if a}, key=len, reverse=True)
    problems: list[str] = []
    for text in visible_texts(html):
        rest = text
        for item in data:
            rest = rest.replace(item, " ")
        if locale == "en":
            if CJK.search(rest):
                problems.append(f"Chinese on an English page: {text!r}")
            problems += [f"raw code {c!r}: {text!r}" for c in SNAKE_CODE.findall(rest)]
        else:
            raw = [w for w in WORD.findall(rest) if w in known_codes]
            problems += [f"raw code {w!r}: {text!r}" for w in raw]
            if ENGLISH_PHRASE.search(rest):
                problems.append(f"English on a Chinese page: {text!r}")
    return list(dict.fromkeys(problems))
