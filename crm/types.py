"""Column types that keep money exact and times in UTC on every database.

SQLite has no exact decimal type (``NUMERIC`` becomes a float there), so money is
stored as an integer count of minor units and read back as :class:`~decimal.Decimal`.
Datetimes are stored as naive UTC and always come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect
from sqlalchemy.types import TypeDecorator


class Money(TypeDecorator[Decimal]):
    """An exact amount stored as ``value * 10**scale`` in a BIGINT.

    ``scale=2`` suits balances and fees (yuan.fen); ``scale=4`` suits per-unit
    overage rates such as 0.0293 per MB.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)
        self._factor = Decimal(10) ** scale

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be Decimal, int or str, never float")
        try:
            amount = Decimal(value)
        except (InvalidOperation, TypeError) as exc:
            raise ValueError(f"not an amount: {value!r}") from exc
        scaled = amount * self._factor
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} has more than {self.scale} decimal places")
        return int(scaled)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / self._factor).quantize(self._quantum, ROUND_HALF_EVEN)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC; naive input is refused, output is aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass an aware datetime (UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL paths on SQLite
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


def to_minor(amount: Decimal, scale: int = 2) -> int:
    """``Decimal('-5.00')`` → ``-500``: the stored form, for SQL arithmetic."""
    return int(amount.scaleb(scale))


def from_minor(units: int, scale: int = 2) -> Decimal:
    """``-500`` → ``Decimal('-5.00')``."""
    return Decimal(units).scaleb(-scale).quantize(Decimal(1).scaleb(-scale))
