"""`vipcare rules explain` agrees with what a run then does, customer by customer."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from crm.models import JourneyOccurrence
from tests.builders import Crm, months_before
from vipcare.cli import app
from vipcare.settings import get_settings

AS_OF = date(2027, 2, 28)  # a Sunday in a common year: 29 Feb birthdays are greeted today


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _population(crm: Crm) -> list[str]:
    crm.manager("M1", capacity=50)
    big = crm.plan("BIG", fee="198.00")
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    people = {
        "LEAP": dict(tier="gold", birthday=date(1992, 2, 29)),
        "SILVER_BDAY": dict(tier="silver", birthday=date(1990, 2, 28)),
        "NEG": dict(tier="platinum", balance=Decimal("-3.00")),
        "NEG_SILVER": dict(tier="silver", balance=Decimal("-3.00")),
        "DUE": dict(tier="diamond", last_contact_on=AS_OF - timedelta(days=31)),
        "NOT_DUE": dict(tier="diamond", last_contact_on=AS_OF - timedelta(days=3)),
        "DNC": dict(tier="diamond", last_contact_on=AS_OF - timedelta(days=90), do_not_call=True),
        "MISFIT": dict(tier="gold", plan_id=big, last_contact_on=AS_OF),
        "FIT": dict(tier="gold", plan_id=big, last_contact_on=AS_OF),
    }
    for ref, kw in people.items():
        kw.setdefault("last_contact_on", AS_OF - timedelta(days=1))
        cid = crm.customer(ref, **kw)
        if ref == "MISFIT":
            crm.usage(cid, months_before(AS_OF), voice=20, data=100, sms=1)
        if ref == "FIT":
            crm.usage(cid, months_before(AS_OF), voice=900, data=18000, sms=90)
    return list(people)


@pytest.mark.parametrize("journey", ["birthday", "grace_credit", "callback", "plan_fit"])
def test_explain_predicts_the_run(cli, engine, journey):
    crm = Crm(engine)
    refs = _population(crm)
    predicted = {}
    for ref in refs:
        out = cli.invoke(
            app, ["rules", "explain", journey, ref, "--date", AS_OF.isoformat(), "--json"]
        )
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout)
        assert data["trigger"], "every deciding journey explains its trigger"
        predicted[ref] = data["would_act"]
    crm.run(AS_OF, journey)
    decided = {crm.get_ref(o.customer_id) for o in crm.rows(JourneyOccurrence, journey=journey)}
    assert {r for r, yes in predicted.items() if yes} == decided
    assert decided, f"the population exercises {journey}"
    # Once decided, explain says so and predicts no second action.
    ref = sorted(decided)[0]
    again = json.loads(
        cli.invoke(
            app, ["rules", "explain", journey, ref, "--date", AS_OF.isoformat(), "--json"]
        ).stdout
    )
    assert again["would_act"] is False
    failed = [c["check"] for c in again["trigger"] if not c["passed"]]
    # a second decision is refused by the occurrence key, or by the open task it left
    assert any("not decided before" in c or "no open" in c for c in failed), failed
    assert again["reason"] == "not in the audience" or again["reason"].startswith(failed[0])


def test_explain_unknown_customer_exits_1(cli, engine):
    out = cli.invoke(app, ["rules", "explain", "birthday", "NOPE", "--date", "2027-02-28"])
    assert out.exit_code == 1 and "NOPE" in out.output
