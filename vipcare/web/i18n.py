"""The workspace's words in zh-CN and en: gettext catalogues read through Babel, and how a
reader's language is chosen.

The catalogues are ``locale/<zh_CN|en>/LC_MESSAGES/workspace.po``. A msgid is a
stable key (``nav_day``, ``status_ready``), never the English text, so both
languages are translations and a missing one is visible. Each catalogue is read
once per process (first use) into a :class:`babel.support.Translations`; a key
neither catalogue knows raises :class:`MissingTranslation` instead of showing
the key. ``docs/translations.md`` says how to add a string.

The language is the user's saved setting, else the signed-out language cookie,
else the browser's ``Accept-Language`` (negotiated by Babel), else zh-CN.
"""

from __future__ import annotations

import gettext
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel import Locale
from babel.core import negotiate_locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = ("zh-CN", "en")
"""The workspace's languages, as HTML ``lang`` tags and as stored in ``managers.locale``."""
DEFAULT_LOCALE = "zh-CN"
DOMAIN = "workspace"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
BABEL_NAMES = {"zh-CN": "zh_CN", "en": "en"}
"""Each language's catalogue directory (a Babel/CLDR locale identifier)."""
ALIASES = {
    "zh": "zh-CN",
    "zh-hans": "zh-CN",
    "zh-sg": "zh-CN",
    "zh-tw": "zh-CN",
    "zh-hk": "zh-CN",
    "zh-mo": "zh-CN",
    "zh-hant": "zh-CN",
}
"""Every Chinese reader gets the Chinese workspace (there is no Traditional one, and
Simplified serves a Traditional reader better than English does)."""


class MissingTranslation(KeyError):
    """A msgid the catalogue lacks: a bug that the catalogue tests catch, never shown."""


class _Missing(gettext.NullTranslations):
    """The last fallback: refuses instead of showing the key."""

    def __init__(self, locale: str) -> None:
        super().__init__()
        self.locale = locale

    def gettext(self, message: str) -> str:
        raise MissingTranslation(f"{message!r} is not in the {self.locale} workspace catalogue")


def po_path(locale: str) -> Path:
    return LOCALE_DIR / BABEL_NAMES[locale] / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def _catalog(locale: str) -> Catalog:
    with po_path(locale).open("rb") as fp:
        return read_po(fp, locale=BABEL_NAMES[locale], domain=DOMAIN)


@cache
def messages(locale: str) -> dict[str, str]:
    """``msgid → text`` of ``locale``'s catalogue (entries left empty are left out)."""
    return {str(m.id): str(m.string) for m in _catalog(locale) if m.id and m.string}


@cache
def translations(locale: str) -> Translations:
    """``locale``'s catalogue as Babel translations, compiled in memory once per process."""
    compiled = BytesIO()
    write_mo(compiled, _catalog(locale))
    compiled.seek(0)
    found = Translations(compiled, domain=DOMAIN)
    found.add_fallback(_Missing(locale))
    return found


@cache
def babel_locale(locale: str) -> Locale:
    """The CLDR data numbers and dates are formatted with."""
    return Locale.parse(BABEL_NAMES[locale])


def known(key: str) -> bool:
    return key in messages(DEFAULT_LOCALE)


def N_(key: str) -> str:  # noqa: N802 - the gettext convention for "marked, not translated here"
    """Marks a msgid chosen here and translated later (``pybabel extract -k N_`` finds it)."""
    return key


def translate(locale: str, key: str, **values: Any) -> str:
    """The text of ``key`` in ``locale`` with ``{name}`` placeholders filled in."""
    text = translations(locale).gettext(key)
    return text.format(**values) if values else text


def accepted(header: str | None) -> list[str]:
    """The languages of an ``Accept-Language`` header, most wanted first (q=0 left out;
    a malformed entry is skipped, not fatal)."""
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        if quality > 0:
            weighted.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(accept_language: str | None) -> str:
    """The best of our locales for an ``Accept-Language`` header; zh-CN when none fits."""
    wanted = [form for tag in accepted(accept_language) for form in (tag, tag.split("-")[0])]
    found = negotiate_locale(wanted, LOCALES, sep="-", aliases=ALIASES)
    if found is None:
        return DEFAULT_LOCALE
    lowered = found.lower()
    return next(locale for locale in LOCALES if locale.lower() == lowered)


def pick_locale(saved: str | None, cookie: str | None, accept_language: str | None) -> str:
    for choice in (saved, cookie):
        if choice in LOCALES:
            return str(choice)
    return negotiate(accept_language)
