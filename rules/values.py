"""Value parsing shared by conditions and journey models: money, whole numbers, locales."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import available_timezones

LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MONEY_HELP = 'write amounts as quoted text with at most 2 decimals, e.g. "10.00"'


def parse_money(value: object) -> Decimal:
    """An exact amount in yuan with at most 2 decimals, from text, an integer or a YAML number.

    YAML numbers reach us as Decimal (the loader converts floats through their
    literal text), so ``10.125`` is refused rather than silently rounded.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f'expected an amount such as "10.00", got {_show(value)}')
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+(\.\d+)?", text):
            raise ValueError(f'expected an amount such as "10.00", got {value!r}')
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - regex guards this
            raise ValueError(f'expected an amount such as "10.00", got {value!r}') from exc
    else:
        raise ValueError(f'expected an amount such as "10.00", got {_show(value)}')
    if not amount.is_finite():
        raise ValueError(f"expected a finite amount, got {value}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"amount {value} has more than 2 decimal places")
    return amount.quantize(Decimal("0.01"))


def parse_whole(value: object) -> int:
    """A whole number; ``3.5``, ``"three"`` and ``true`` are refused."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError(f"expected a whole number, got {_show(value)}")


@lru_cache(maxsize=1)
def timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


show = _show
