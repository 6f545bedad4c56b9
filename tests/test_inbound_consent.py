"""Inbound opt-out / opt-in: Twilio's keywords with punctuation, once per MessageSid, in order.

Defect 6 of issue 12: a replayed signed START re-subscribed a customer who had
sent STOP afterwards. Inbound keywords are now recorded once per provider
message id (``inbound_messages``) and applied in message-time order through
``crm.consent``. Also: ``STOP.``, ``退订。``, STOPALL, UNSUBSCRIBE, CANCEL, END and
QUIT were not honoured.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from webhook_support import PHONE, Hooks, add_customer, make_client

from crm import consent
from crm.audit import Actor
from crm.db import transaction
from crm.models import AuditLog, Customer, InboundMessage
from notifications.inbound import KeywordMatcher, normalise_keyword
from rules import load_rules

RULES = Path(__file__).resolve().parent.parent / "rules"
ACTOR = Actor("webhook", "twilio")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def tick(self, minutes: int = 1) -> None:
        self.at += timedelta(minutes=minutes)


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def hooks(engine: Engine, clock: Clock) -> Iterator[Hooks]:
    with make_client(engine, clock) as client:
        yield Hooks(client)


def opted_out(engine: Engine, customer_id: int) -> bool:
    with transaction(engine) as session:
        return bool(session.scalar(select(Customer.sms_opt_out).where(Customer.id == customer_id)))


def actions(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(AuditLog.action).order_by(AuditLog.seq)))


# -- keywords ---------------------------------------------------------------------


SHIPPED = load_rules(RULES).contact_policy
MATCHER = KeywordMatcher(SHIPPED.opt_out_keywords, SHIPPED.opt_in_keywords)


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "STOP.",
        "stop!",
        " Stop ! ",
        "退订。",
        "退订！",
        "「退订」",
        "ＳＴＯＰ．",
        "STOPALL",
        "UNSUBSCRIBE",
        "unsubscribe.",
        "CANCEL",
        "END",
        "QUIT",
        "quit?!",
        "TD",
        "td。",
        "...STOP...",
    ],
)
def test_twilio_opt_out_keywords_with_punctuation_are_honoured(body: str) -> None:
    assert MATCHER.classify(body) is True
    assert SHIPPED.is_opt_out(body)


@pytest.mark.parametrize("body", ["START", "start.", "YES", "yes!", "UNSTOP", "ＵＮＳＴＯＰ。"])
def test_twilio_opt_in_keywords(body: str) -> None:
    assert MATCHER.classify(body) is False
    assert SHIPPED.is_opt_in(body)


@pytest.mark.parametrize(
    "body",
    [
        "please stop calling",
        "stop it now",
        "STOP STOP",
        "S.T.O.P",
        "don't stop",
        "stopped",
        "ending",
        "yes please",
        "",
        "...",
        "。",
    ],
)
def test_ordinary_replies_are_not_keywords(body: str) -> None:
    assert MATCHER.classify(body) is None
    assert not SHIPPED.is_opt_out(body) and not SHIPPED.is_opt_in(body)


def test_normalisation_strips_only_surrounding_punctuation_and_space() -> None:
    assert normalise_keyword("\u3000「ＳＴＯＰ」！\n") == "stop"
    assert normalise_keyword("S.T.O.P") == "s.t.o.p"


# -- once per MessageSid, in message-time order (both databases) -------------------


def test_a_replayed_start_does_not_undo_a_later_stop(
    engine: Engine, hooks: Hooks, clock: Clock
) -> None:
    customer = add_customer(engine)
    stop1, start, stop2 = "SM" + "1" * 32, "SM" + "2" * 32, "SM" + "3" * 32
    assert hooks.inbound("STOP", sid=stop1).status_code == 200
    clock.tick()
    assert hooks.inbound("START", sid=start).status_code == 200
    assert not opted_out(engine, customer)
    clock.tick()
    assert hooks.inbound("STOP", sid=stop2).status_code == 200
    assert opted_out(engine, customer)
    clock.tick()
    # An attacker (or Twilio's retry) replays the signed START request byte for byte.
    response = hooks.inbound("START", sid=start)
    assert response.status_code == 200
    assert opted_out(engine, customer)
    assert actions(engine) == [
        "customer.sms_opt_out",
        "customer.sms_opt_in",
        "customer.sms_opt_out",
    ]
    with transaction(engine) as session:
        rows = session.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
        assert [(r.provider_message_id, r.action, r.outcome) for r in rows] == [
            (stop1, "opt_out", "applied"),
            (start, "opt_in", "applied"),
            (stop2, "opt_out", "applied"),
        ]
        assert all(r.phone == PHONE for r in rows)
        assert [r.keyword for r in rows] == ["stop", "start", "stop"]


def test_a_duplicate_delivery_is_recorded_once(engine: Engine, hooks: Hooks) -> None:
    add_customer(engine)
    sid = "SM" + "4" * 32
    for _ in range(3):
        assert hooks.inbound("TD", sid=sid).status_code == 200
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1
    assert actions(engine) == ["customer.sms_opt_out"]


def apply(
    engine: Engine, sid: str, keyword: str, sent: datetime, received: datetime
) -> consent.InboundOutcome:
    """One keyword through the consent owner, as the webhook applies it."""
    with transaction(engine) as session:
        return consent.apply_inbound_keyword(
            session,
            provider_message_id=sid,
            phone=PHONE,
            keyword=keyword,
            opt_out=keyword == "stop",
            message_at=sent,
            received_at=received,
            actor=ACTOR,
        )


def test_an_older_keyword_never_overrides_a_newer_one(engine: Engine, now: datetime) -> None:
    """Applied in message-time order: START sent before the applied STOP is superseded."""
    customer = add_customer(engine)
    minute = timedelta(minutes=1)
    first = apply(engine, "SM" + "5" * 32, "stop", now + 10 * minute, now + 10 * minute)
    # Written before the STOP, delivered after it.
    late = apply(engine, "SM" + "6" * 32, "start", now + 5 * minute, now + 11 * minute)
    assert (first.outcome, first.changed) == ("applied", 1)
    assert (late.outcome, late.changed) == ("superseded", 0)
    assert opted_out(engine, customer)
    assert actions(engine) == ["customer.sms_opt_out"]
    newer = apply(engine, "SM" + "7" * 32, "start", now + 12 * minute, now + 12 * minute)
    assert (newer.outcome, newer.changed) == ("applied", 1)
    assert not opted_out(engine, customer)


def test_a_keyword_that_changes_nothing_is_still_the_latest_instruction(
    engine: Engine, now: datetime
) -> None:
    """STOP from an opted-out customer is 'unchanged', yet an older START stays behind it."""
    customer = add_customer(engine, opted_out=True)
    received = now + timedelta(minutes=20)
    assert apply(engine, "SMa1", "stop", now + timedelta(minutes=10), received).outcome == (
        "unchanged"
    )
    assert apply(engine, "SMa2", "start", now + timedelta(minutes=5), received).outcome == (
        "superseded"
    )
    assert opted_out(engine, customer)
    assert apply(engine, "SMa1", "stop", now + timedelta(minutes=10), received).outcome == (
        "duplicate"
    )


def test_unknown_sender_is_recorded_and_changes_nothing(engine: Engine, hooks: Hooks) -> None:
    customer = add_customer(engine)
    assert hooks.inbound("STOP", phone="+8613700000000").status_code == 200
    assert not opted_out(engine, customer)
    with transaction(engine) as session:
        row = session.scalars(select(InboundMessage)).one()
        assert (row.phone, row.outcome) == ("+8613700000000", "unchanged")
