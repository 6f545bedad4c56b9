"""Names and phone numbers for demo people.

Faker is slow per call, so each run draws small pools of given and family names
from a seeded Faker once and combines them with a seeded ``random.Random``.
Phone numbers are derived from the customer's index through a bijection, so they
are unique (for fewer than ten million customers) and always valid E.164: every
prefix below was checked against ``phonenumbers`` (see tests/test_seed.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from faker import Faker

# Chinese mobile prefixes that phonenumbers accepts with any 8 following digits.
CN_MOBILE_PREFIXES: tuple[str, ...] = (
    *(f"13{d}" for d in range(10)),
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "177", "178",
    *(f"18{d}" for d in range(10)),
    "198", "199",
)  # fmt: skip
US_AREA_CODES: tuple[str, ...] = ("212", "646", "917", "718", "347", "332", "929")
# UK mobiles: 7 + these two digits + 7 digits.
UK_MOBILE_RANGES: tuple[str, ...] = tuple(
    f"{d:02d}" for d in (*range(40, 60), *range(71, 90), *range(92, 100))
)
_MULT = 48271  # prime: coprime with 10**8, 10**7 and 8 * 10**6, so the maps below are bijections


@dataclass(frozen=True)
class NamePools:
    zh_family: tuple[str, ...]
    zh_given: tuple[str, ...]
    en_given: tuple[str, ...]
    en_family: tuple[str, ...]

    def zh(self, rng: random.Random) -> str:
        return rng.choice(self.zh_family) + rng.choice(self.zh_given)

    def en(self, rng: random.Random) -> str:
        return f"{rng.choice(self.en_given)} {rng.choice(self.en_family)}"


def name_pools(seed: int, size: int = 600) -> NamePools:
    """Pools drawn from seeded Fakers; duplicates are kept so common surnames stay common."""
    zh = Faker("zh_CN")
    zh.seed_instance(seed)
    en = Faker("en_US")
    en.seed_instance(seed)
    return NamePools(
        zh_family=tuple(zh.last_name() for _ in range(size)),
        zh_given=tuple(zh.first_name() for _ in range(size)),
        en_given=tuple(en.first_name() for _ in range(size)),
        en_family=tuple(en.last_name() for _ in range(size)),
    )


# Managers' names with their pinyin: texts in English show the Latin spelling.
_MANAGER_FAMILY: tuple[tuple[str, str], ...] = (
    ("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
    ("杨", "Yang"), ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"),
    ("徐", "Xu"), ("孙", "Sun"), ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"),
    ("郭", "Guo"), ("何", "He"), ("林", "Lin"), ("罗", "Luo"), ("高", "Gao"),
    ("郑", "Zheng"), ("梁", "Liang"), ("谢", "Xie"), ("宋", "Song"), ("唐", "Tang"),
)  # fmt: skip
_MANAGER_GIVEN: tuple[tuple[str, str], ...] = (
    ("静", "Jing"), ("敏", "Min"), ("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"),
    ("磊", "Lei"), ("艳", "Yan"), ("勇", "Yong"), ("军", "Jun"), ("杰", "Jie"),
    ("涛", "Tao"), ("明", "Ming"), ("霞", "Xia"), ("平", "Ping"), ("丽", "Li"),
    ("婷婷", "Tingting"), ("建华", "Jianhua"), ("秀英", "Xiuying"), ("海燕", "Haiyan"),
    ("志强", "Zhiqiang"), ("晓明", "Xiaoming"), ("玉兰", "Yulan"), ("春梅", "Chunmei"),
    ("文博", "Wenbo"), ("佳怡", "Jiayi"), ("子涵", "Zihan"), ("浩然", "Haoran"),
)  # fmt: skip


def manager_name(rng: random.Random) -> tuple[str, str]:
    """A manager's name in Chinese and in pinyin (family name first, as in Chinese)."""
    family, given = rng.choice(_MANAGER_FAMILY), rng.choice(_MANAGER_GIVEN)
    return family[0] + given[0], f"{family[1]} {given[1]}"


def cn_mobile(index: int, offset: int, rng: random.Random) -> str:
    suffix = (index * _MULT + offset) % 10**8
    return f"+86{rng.choice(CN_MOBILE_PREFIXES)}{suffix:08d}"


def us_mobile(index: int, offset: int, rng: random.Random) -> str:
    line = 2_000_000 + (index * _MULT + offset) % 8_000_000
    return f"+1{rng.choice(US_AREA_CODES)}{line}"


def uk_mobile(index: int, offset: int, rng: random.Random) -> str:
    suffix = (index * _MULT + offset) % 10**7
    return f"+447{rng.choice(UK_MOBILE_RANGES)}{suffix:07d}"


def manager_phone(index: int) -> str:
    """Managers call from Kunming landlines (+86 871 6xxx xxxx), never a customer's number."""
    return f"+868716{(index * _MULT) % 10**7:07d}"
