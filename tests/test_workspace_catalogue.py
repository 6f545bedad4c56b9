"""The workspace's gettext catalogues and the labels derived from the enums.

Every value of every enum in ``crm/statuses.py`` has a label in zh-CN and en; every
message status has a chart colour; the catalogues hold exactly the msgids that
``pybabel extract`` finds with the project's ``babel.cfg`` (none missing, none left
over), each translated, with the same placeholders, in its own language. Numbers,
money and dates are formatted from CLDR in the reader's locale and zone.
"""

from __future__ import annotations

import ast
import re
import string
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from crm import statuses
from crm.models import MESSAGE_STATUSES, TASK_KINDS, TASK_OUTCOMES, TASK_STATUSES
from crm.statuses import MessageStatus, ReasonCode, reason_code
from rules import load_rules
from vipcare.web import charts, labels
from vipcare.web.fmt import Formatter
from vipcare.web.i18n import (
    LOCALES,
    MissingTranslation,
    messages,
    translate,
    translations,
)

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
"""Chinese characters and Chinese (full-width) punctuation."""
SAME_IN_BOTH = {"ev_other"}
"""Entries that are only a placeholder, the same in every language."""
NO_CHINESE_NEEDED = {"ev_other"}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _extracted() -> set[str]:
    """The msgids ``pybabel extract -F babel.cfg -k t -k N_`` finds in the source."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fp:
        method_map, options_map = parse_mapping_cfg(fp)
    found = extract_from_dir(
        str(ROOT),
        method_map,
        options_map,
        keywords={"t": None, "N_": None},
        comment_tags=(),
    )
    return {str(message) for _, _, message, _, _ in found if message}


# --- enums ---------------------------------------------------------------------------------


def test_every_enum_of_the_statuses_module_is_labelled():
    """A new enum in crm/statuses.py needs a msgid prefix (so its values get labels)."""
    missing = [e.__name__ for e in labels.all_enums() if e not in labels.PREFIXES]
    assert missing == []
    assert len(labels.all_enums()) >= 20


@pytest.mark.parametrize("enum", labels.all_enums(), ids=lambda e: e.__name__)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_value_has_a_label_in_both_languages(enum, locale):
    catalogue = messages(locale)
    missing = [key for key in labels.keys(enum) if not catalogue.get(key, "").strip()]
    assert missing == [], f"{enum.__name__}: no {locale} label for {missing}"


def test_the_schema_constants_are_the_enums():
    """The CHECK constraints, the CLI choices and the filters all come from the enums."""
    assert tuple(statuses.TaskStatus) == TASK_STATUSES
    assert tuple(statuses.TaskKind) == TASK_KINDS
    assert tuple(statuses.TaskOutcome) == TASK_OUTCOMES
    assert tuple(MessageStatus) == MESSAGE_STATUSES
    assert all(type(v) is str for v in TASK_STATUSES)  # plain strings: repr() reads 'ready'


def test_every_message_status_has_its_own_chart_colour():
    assert set(charts.STATUS_COLOURS) == set(MessageStatus)
    assert len(set(charts.STATUS_COLOURS.values())) == len(MessageStatus)


def test_every_shipped_journey_and_template_has_a_label():
    ruleset = load_rules(ROOT / "rules")
    names = [labels.JOURNEY_PREFIX + j for j in ruleset.journeys]
    for rule in ruleset.journeys.values():
        names += [labels.TEMPLATE_PREFIX + t for t in rule.templates]
    for locale in LOCALES:
        assert [n for n in names if n not in messages(locale)] == [], locale


@pytest.mark.parametrize(
    ("stored", "code"),
    [
        ("opt_out: customer opted out of SMS", ReasonCode.OPT_OUT),
        ("customer opted out of SMS", ReasonCode.OPT_OUT),  # written before the codes
        ("the pre-call notice journey is off", ReasonCode.PRECALL_OFF),
        ("notice suppressed: opt_out: customer opted out of SMS", ReasonCode.OPT_OUT),
        ("notice expired: valid_until: not sent before 2026-11-23 16:00 UTC", "valid_until"),
        ("suspended: the call it announced was cancelled", ReasonCode.SUSPENDED),
        ("notice failed: invalid 'To' phone number", None),
        ("", None),
        (None, None),
    ],
)
def test_a_stored_reason_gives_its_code(stored, code):
    assert reason_code(stored) == code


def test_the_producers_codes_are_reason_codes():
    """The codes the outbox, the policy and the hygiene sweep write are enum members."""
    from flows.journeys.hygiene import NOTES
    from notifications.outbox import expiry

    written = {*NOTES, expiry.PAST_VALIDITY, expiry.CALL_CLOSED, expiry.WINDOW_AFTER_VALIDITY}
    assert written <= set(ReasonCode)


# --- catalogues ----------------------------------------------------------------------------


def test_the_catalogues_hold_exactly_the_msgids_the_code_uses():
    used = _extracted()
    assert len(used) > 300
    for locale in LOCALES:
        catalogue = set(messages(locale))
        assert sorted(used - catalogue) == [], f"used but not in the {locale} catalogue"
        assert sorted(catalogue - used) == [], f"in the {locale} catalogue but never used"


def test_every_entry_is_translated_with_the_same_placeholders():
    zh, en = messages("zh-CN"), messages("en")
    assert set(zh) == set(en)
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert _placeholders(zh[key]) == _placeholders(en[key]), key


def test_each_language_is_in_its_own_words():
    zh, en = messages("zh-CN"), messages("en")
    assert [k for k in en if CJK.search(en[k])] == []
    assert [k for k in zh if not CJK.search(zh[k]) and k not in NO_CHINESE_NEEDED] == []
    assert [k for k in zh if zh[k] == en[k] and k not in SAME_IN_BOTH] == []


def test_a_missing_msgid_fails_loudly():
    for locale in LOCALES:
        with pytest.raises(MissingTranslation):
            translate(locale, "no_such_msgid")
        with pytest.raises(MissingTranslation):
            Formatter(locale, ZoneInfo("UTC")).t("no_such_msgid")


def test_the_catalogues_are_read_once_per_process():
    assert translations("zh-CN") is translations("zh-CN")
    before = translations.cache_info().misses
    for _ in range(3):
        Formatter("zh-CN", ZoneInfo("UTC")).t("nav_day")
        Formatter("en", ZoneInfo("UTC")).t("nav_day")
    assert translations.cache_info().misses == before


def test_placeholders_are_filled():
    assert translate("en", "showing_n_of_m", n=3, m=9) == "Showing 3 of 9"
    assert translate("zh-CN", "showing_n_of_m", n=3, m=9) == "显示 3 / 共 9 条"


# --- formatting ----------------------------------------------------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("locale", "long_day", "month"),
    [
        ("zh-CN", "2026年11月23日星期一", "8月"),
        ("en", "Monday, November 23, 2026", "Aug"),
    ],
)
def test_dates_follow_the_readers_locale(locale, long_day, month):
    f = Formatter(locale, SHANGHAI)
    assert f.long_day(date(2026, 11, 23)) == long_day
    assert f.month(date(2026, 8, 1)) == month
    assert f.day(date(2026, 11, 23)) == "2026-11-23"
    assert f.iso_day(date(2026, 11, 23)) == "2026-11-23"


def test_times_are_shown_in_the_readers_zone():
    at = datetime(2026, 11, 22, 17, 30, tzinfo=UTC)
    assert Formatter("zh-CN", SHANGHAI).dt(at) == "2026-11-23 01:30"
    assert Formatter("en", ZoneInfo("Europe/London")).dt(at) == "2026-11-22 17:30"
    naive = at.replace(tzinfo=None)  # a naive time is UTC
    assert Formatter("en", SHANGHAI).dt(naive) == "2026-11-23 01:30"


def test_money_percentages_and_numbers_are_exact():
    for locale in LOCALES:
        f = Formatter(locale, SHANGHAI)
        assert f.money(Decimal("-12345.5")) == "-12,345.50"
        assert f.money("0.005") == "0.00"  # half to even, like the ledger's Decimal
        assert f.pct(Decimal("0.856")) == "86%"
        assert f.pct(None) == "–"
        assert f.num(Decimal("4.50")) == "4.50"  # the digits the average was computed to
        assert f.num(Decimal("1234.5")) == "1,234.5"
        assert f.num(7) == "7"


def _audit_action_literals() -> dict[str, str]:
    """Every string literal in the source shaped like an audit action of a known family
    (``task.done``, ``customer.sms_opt_out``), with where it is."""
    families = {a.value.split(".")[0] for a in statuses.AuditAction if "." in a.value}
    shape = re.compile(rf"^(?:{'|'.join(sorted(families))})\.[a-z][a-z_]*$")
    found: dict[str, str] = {}
    for package in ("crm", "notifications", "flows", "vipcare", "rules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                text = node.value if isinstance(node, ast.Constant) else None
                if isinstance(text, str) and shape.match(text) and not text.endswith(".html"):
                    found.setdefault(text, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_audit_action_the_code_writes_is_in_the_enum():
    """So the timeline has a label for it: a new ``customer.closed`` fails here first."""
    written = _audit_action_literals()
    assert len(written) > 20
    unknown = {a: where for a, where in written.items() if a not in set(statuses.AuditAction)}
    assert unknown == {}
