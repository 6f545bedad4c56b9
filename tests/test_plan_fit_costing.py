"""Plan-fit costing in isolation: the pruned search equals a brute-force reference."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.journeys.plan_fit import PlanCost, best_alternative, full_months_before

TIERS = ("silver", "gold", "platinum", "diamond")

plan_st = st.builds(
    lambda i, fee, v, d, s, vr, dr, sr, tiers: PlanCost(
        i, f"P{i}", f"P{i}", fee, v, d, s, vr, dr, sr, frozenset(tiers)
    ),
    st.integers(0, 10_000),
    st.integers(0, 3_000_000),  # fee in units of 0.0001 (up to 300.00)
    st.integers(0, 3000),
    st.integers(0, 50_000),
    st.integers(0, 1000),
    st.integers(0, 3000),
    st.integers(0, 500),
    st.integers(0, 2000),
    st.sets(st.sampled_from(TIERS), min_size=1),
)
usage_st = st.tuples(st.integers(0, 6000), st.integers(0, 100_000), st.integers(0, 2000))


def reference(current, tier, usage, plans, share, amount):
    """Cost every eligible plan, take the cheapest, apply both thresholds."""
    total = lambda p: sum(p.month_cost(*u) for u in usage)  # noqa: E731
    options = [p for p in plans if p.id != current.id and tier in p.tiers]
    if not options:
        return None
    best = min(options, key=lambda p: (total(p), p.fee))
    saving = total(current) - total(best)
    needed = int(amount * 10_000) * len(usage)
    if saving < needed or Decimal(saving) < share * Decimal(total(current)):
        return None
    return total(best)


@settings(max_examples=300, deadline=None)
@given(
    plans=st.lists(plan_st, min_size=2, max_size=8, unique_by=lambda p: p.id),
    usage=st.lists(usage_st, min_size=3, max_size=3),
    tier=st.sampled_from(TIERS),
    pick=st.integers(0, 7),
)
def test_pruned_search_matches_brute_force(plans, usage, tier, pick):
    current = plans[pick % len(plans)]
    ordered = sorted(plans, key=lambda p: p.fee)
    share, amount = Decimal("0.15"), Decimal("20.00")
    got = best_alternative(current, tier, usage, ordered, share, amount)
    want = reference(current, tier, usage, plans, share, amount)
    assert (got.suggested_total if got else None) == want


def test_full_months_before():
    from datetime import date

    assert full_months_before(date(2026, 1, 15), 3) == [
        date(2025, 10, 1),
        date(2025, 11, 1),
        date(2025, 12, 1),
    ]
