"""Faker-based demo and benchmark data: ``seed.generate(engine, customers, seed, as_of)``."""

from seed.digest import digest
from seed.errors import SeedError
from seed.generator import SeedSummary, generate

__all__ = ["SeedError", "SeedSummary", "digest", "generate"]
