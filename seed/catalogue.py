"""The demo plan catalogue: a realistic VIP tariff ladder, fixed across seeds.

The plans are deliberately spaced so that heavy users on the small plans pay
large overage and light users on the big plans overpay: that is what makes the
plan-fit journey fire on demo data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class PlanSpec:
    """One plan as the CSV describes it (money as exact decimals)."""

    code: str
    name: str
    monthly_fee: Decimal
    voice_minutes: int
    data_mb: int
    sms: int
    voice_overage_per_min: Decimal
    data_overage_per_mb: Decimal
    sms_overage: Decimal
    tiers: tuple[str, ...]


def _plan(
    code: str,
    name: str,
    fee: str,
    voice: int,
    data_gb: int,
    sms: int,
    voice_rate: str,
    data_rate: str,
    sms_rate: str,
    tiers: str,
) -> PlanSpec:
    return PlanSpec(
        code=code,
        name=name,
        monthly_fee=Decimal(fee),
        voice_minutes=voice,
        data_mb=data_gb * 1024,
        sms=sms,
        voice_overage_per_min=Decimal(voice_rate),
        data_overage_per_mb=Decimal(data_rate),
        sms_overage=Decimal(sms_rate),
        tiers=tuple(tiers.split("|")),
    )


PLANS: tuple[PlanSpec, ...] = (
    _plan(
        "GLB-58",
        "全球通 58元套餐",
        "58.00",
        200,
        10,
        100,
        "0.1900",
        "0.0050",
        "0.1000",
        "silver|gold",
    ),
    _plan(
        "GLB-88",
        "全球通 88元套餐",
        "88.00",
        400,
        20,
        100,
        "0.1900",
        "0.0050",
        "0.1000",
        "silver|gold",
    ),
    _plan(
        "DATA-98",
        "流量王 98元套餐",
        "98.00",
        100,
        50,
        50,
        "0.2500",
        "0.0030",
        "0.1000",
        "silver|gold",
    ),
    _plan(
        "GLB-128",
        "全球通 128元套餐",
        "128.00",
        600,
        40,
        200,
        "0.1500",
        "0.0040",
        "0.1000",
        "silver|gold|platinum",
    ),
    _plan(
        "BIZ-168",
        "商旅 168元套餐",
        "168.00",
        1500,
        20,
        200,
        "0.1200",
        "0.0060",
        "0.1000",
        "gold|platinum|diamond",
    ),
    _plan(
        "GLB-188",
        "全球通 188元套餐",
        "188.00",
        1000,
        60,
        300,
        "0.1500",
        "0.0030",
        "0.1000",
        "gold|platinum",
    ),
    _plan(
        "GLB-288",
        "全球通 288元套餐",
        "288.00",
        1500,
        100,
        500,
        "0.1200",
        "0.0030",
        "0.0800",
        "gold|platinum|diamond",
    ),
    _plan(
        "GLB-388",
        "全球通 388元尊享",
        "388.00",
        2500,
        150,
        500,
        "0.1000",
        "0.0020",
        "0.0800",
        "platinum|diamond",
    ),
    _plan(
        "GLB-588",
        "全球通 588元尊享",
        "588.00",
        4000,
        300,
        1000,
        "0.1000",
        "0.0020",
        "0.0500",
        "platinum|diamond",
    ),
    _plan(
        "GLB-888",
        "全球通 888元至尊",
        "888.00",
        6000,
        500,
        2000,
        "0.0800",
        "0.0015",
        "0.0500",
        "diamond",
    ),
)


def plans_for_tier(tier: str) -> list[PlanSpec]:
    """Plans a tier may take, cheapest first."""
    return sorted((p for p in PLANS if tier in p.tiers), key=lambda p: p.monthly_fee)
