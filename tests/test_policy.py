"""The contact policy: send windows across time zones, caps, opt-out, do-not-call, wording."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from notifications.policy import (
    CapCounter,
    Recipient,
    decide,
    ensure_unsubscribe,
    has_unsubscribe_wording,
    local_day_start,
    precheck,
    schedule_for_timezones,
    schedule_in_window,
)
from rules.models import SendWindow
from tests.policies import make_policy

DEFAULT_POLICY = make_policy()
NINE_TO_EIGHT = SendWindow(start=time(9, 0), end=time(20, 0))
AT = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)  # 10:00 Shanghai, 21:00 (20th) New York, 02:00 London


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Shanghai", AT),  # 10:00 local: inside, unchanged
        ("America/New_York", datetime(2026, 11, 21, 14, 0, tzinfo=UTC)),  # after 20:00: 09:00 EST
        ("Europe/London", datetime(2026, 11, 21, 9, 0, tzinfo=UTC)),  # 02:00: 09:00 GMT today
    ],
)
def test_window_across_time_zones(tz: str, expected: datetime) -> None:
    assert schedule_in_window(AT, tz, NINE_TO_EIGHT) == expected


def test_window_edges_are_start_inclusive_end_exclusive() -> None:
    start = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)  # 09:00 Shanghai
    assert schedule_in_window(start, "Asia/Shanghai", NINE_TO_EIGHT) == start
    end = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # 20:00 Shanghai
    assert schedule_in_window(end, "Asia/Shanghai", NINE_TO_EIGHT) == datetime(
        2026, 11, 22, 1, 0, tzinfo=UTC
    )
    just_before = start - timedelta(microseconds=1)
    assert schedule_in_window(just_before, "Asia/Shanghai", NINE_TO_EIGHT) == start


def test_window_in_summer_time_and_on_dst_days() -> None:
    summer = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # 22:00 EDT on 30 June
    assert schedule_in_window(summer, "America/New_York", NINE_TO_EIGHT) == datetime(
        2026, 7, 1, 13, 0, tzinfo=UTC
    )
    assert schedule_in_window(summer, "Europe/London", NINE_TO_EIGHT) == datetime(
        2026, 7, 1, 8, 0, tzinfo=UTC
    )  # 09:00 BST
    # 2026-03-08: New York springs forward at 02:00; a 02:30 start does not exist that day.
    gap = SendWindow(start=time(2, 30), end=time(5, 0))
    at = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert schedule_in_window(at, "America/New_York", gap) == datetime(
        2026, 3, 8, 7, 30, tzinfo=UTC
    )


def test_schedule_for_timezones_once_per_zone() -> None:
    zones = ["Asia/Shanghai", "America/New_York", "Asia/Shanghai", "Europe/London"]
    got = schedule_for_timezones(AT, zones, NINE_TO_EIGHT)
    assert got == {tz: schedule_in_window(AT, tz, NINE_TO_EIGHT) for tz in set(zones)}


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        schedule_in_window(datetime(2026, 1, 1, 12), "UTC", NINE_TO_EIGHT)


def _r(**kw: object) -> Recipient:
    values: dict[str, object] = {
        "customer_id": 1,
        "channel": "sms",
        "category": "service",
        "locale": "en",
        "body": "hello",
        "timezone": "Asia/Shanghai",
        "sms_opt_out": False,
        "do_not_call": False,
    }
    values.update(kw)
    return Recipient(**values)  # type: ignore[arg-type]


def test_opt_out_suppresses_sms_but_not_voice() -> None:
    assert precheck(DEFAULT_POLICY, _r(sms_opt_out=True), AT).code == "opt_out"
    assert precheck(DEFAULT_POLICY, _r(sms_opt_out=True, channel="voice"), AT).kind == "send"


def test_do_not_call_suppresses_voice_but_not_sms() -> None:
    voice = precheck(DEFAULT_POLICY, _r(do_not_call=True, channel="voice"), AT)
    assert (voice.kind, voice.code) == ("suppress", "do_not_call")
    assert precheck(DEFAULT_POLICY, _r(do_not_call=True), AT).kind == "send"


def test_marketing_needs_unsubscribe_wording() -> None:
    bare = _r(category="marketing", body="New plan offer!")
    decision = precheck(DEFAULT_POLICY, bare, AT)
    assert (decision.kind, decision.code) == ("suppress", "missing_unsubscribe")
    assert "Reply STOP to opt out" in decision.reason
    worded = _r(
        category="marketing", body=ensure_unsubscribe("New plan offer!", "en-US", DEFAULT_POLICY)
    )
    assert worded.body == "New plan offer! Reply STOP to opt out"
    assert precheck(DEFAULT_POLICY, worded, AT).kind == "send"
    assert has_unsubscribe_wording("新套餐，回TD退订", "zh-CN", DEFAULT_POLICY)
    assert not has_unsubscribe_wording("新套餐", "zh-CN", DEFAULT_POLICY)
    # service texts need no wording
    assert precheck(DEFAULT_POLICY, _r(body="Your bill"), AT).kind == "send"


def test_outside_window_defers_with_reason() -> None:
    d = precheck(DEFAULT_POLICY, _r(timezone="America/New_York"), AT)
    assert d.kind == "defer" and d.code == "outside_window"
    assert d.until == datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    assert "21:00 America/New_York is outside the send window 09:00-20:00" in d.reason


def test_daily_cap_counts_the_customer_local_day() -> None:
    policy = make_policy(service=(2, 10))
    tz = "America/New_York"
    # AT is 21:00 on the 20th in New York; local day = 20th 05:00 UTC .. 21st 05:00 UTC.
    day_start = local_day_start(AT, tz)
    assert day_start == datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    history = [
        (1, "service", day_start - timedelta(minutes=1)),  # the 19th local: not today
        (1, "service", day_start),  # today
        (1, "marketing", day_start + timedelta(hours=1)),  # other category
    ]
    caps = CapCounter(policy, history)
    r = _r(timezone=tz)
    assert caps.decide(r, AT).kind == "send"  # 1 today → 2nd allowed
    third = caps.decide(r, AT)  # the batch's own send counts now
    assert (third.kind, third.code) == ("suppress", "cap_day")
    assert (
        "2 service message(s) already on 2026-11-20 (customer-local); the cap is 2" in third.reason
    )
    # the same history seen by a Shanghai customer: 'today' there started 2026-11-20 16:00 UTC
    assert CapCounter(policy, history).counts(1, "service", AT, "Asia/Shanghai") == (0, 2)


def test_weekly_cap_is_rolling_seven_days() -> None:
    policy = make_policy(marketing=(2, 2))
    week_ago = AT - timedelta(days=7)
    history = [(1, "marketing", week_ago), (1, "marketing", week_ago + timedelta(seconds=1))]
    caps = CapCounter(policy, history)
    body = "Offer. Reply STOP to opt out"
    assert caps.counts(1, "marketing", AT, "UTC") == (0, 1)  # exactly 7 days ago has rolled off
    shanghai = _r(category="marketing", body=body)  # 10:00 local: inside the window
    assert decide(policy, shanghai, AT, caps).kind == "send"
    blocked = decide(policy, shanghai, AT, caps)
    assert (blocked.kind, blocked.code) == ("suppress", "cap_week")
    # another customer is not affected
    other = _r(customer_id=2, category="marketing", body=body)
    assert decide(policy, other, AT, caps).kind == "send"


def test_unknown_category_is_uncapped() -> None:
    caps = CapCounter(DEFAULT_POLICY)
    for _ in range(50):
        assert caps.decide(_r(category="other"), AT).kind == "send"


def test_rules_package_policy_fits() -> None:
    """The rules engineer's pydantic ContactPolicy works as is (categories as attributes)."""
    models = pytest.importorskip("rules.models")
    policy = models.ContactPolicy.model_validate(
        {
            "send_window": {"start": "09:00", "end": "20:00"},
            "categories": {
                "service": {"per_day": 1, "per_week": 10},
                "marketing": {"per_day": 1, "per_week": 2},
            },
            "opt_out_keywords": ["STOP", "TD", "退订"],
            "unsubscribe_text": {"zh-CN": "回TD退订", "en": "Reply STOP to opt out"},
        }
    )
    caps = CapCounter(policy)
    assert decide(policy, _r(), AT, caps).kind == "send"
    assert decide(policy, _r(), AT, caps).code == "cap_day"
    assert precheck(policy, _r(category="marketing", body="x", locale="en-US"), AT).code == (
        "missing_unsubscribe"
    )
