"""Which catalogue entry labels each coded value: one msgid prefix per enum of
:mod:`crm.statuses` (``TaskStatus.READY`` → ``status_ready``).

Labels, filters and chart colours all start from the enums, so a new status is
one enum member plus its two catalogue entries; ``tests/test_workspace_labels.py``
fails until both exist. The two extractors below let ``pybabel extract`` (see
``babel.cfg``) find these msgids, which no ``t("...")`` call spells out, and the
names of the journeys and templates shipped in ``rules/``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from enum import StrEnum
from typing import IO, Any

from crm import statuses
from crm.statuses import (
    AccountRole,
    ActorType,
    AuditAction,
    Channel,
    Club,
    ConsentFlag,
    GraceStatus,
    InboundAction,
    InboundOutcome,
    LineStatus,
    MessageCategory,
    MessageStatus,
    NoticeState,
    QaCriterion,
    ReasonCode,
    RescheduleRefusal,
    RunKind,
    RunStatus,
    SessionEnd,
    SignInNotice,
    TaskKind,
    TaskOutcome,
    TaskStatus,
    Tier,
)

PREFIXES: dict[type[StrEnum], str] = {
    Tier: "tier_",
    LineStatus: "customer_status_",
    Club: "club_",
    ConsentFlag: "consent_",
    TaskKind: "kind_",
    TaskStatus: "status_",
    TaskOutcome: "outcome_",
    NoticeState: "notice_",
    RescheduleRefusal: "err_reschedule_",
    MessageStatus: "msg_status_",
    Channel: "channel_",
    MessageCategory: "category_",
    ReasonCode: "reason_",
    GraceStatus: "grace_",
    InboundAction: "inbound_",
    InboundOutcome: "inbound_outcome_",
    AccountRole: "role_",
    SessionEnd: "signin_",
    SignInNotice: "signin_",
    QaCriterion: "criterion_",
    RunStatus: "run_status_",
    RunKind: "run_kind_",
    ActorType: "actor_",
    AuditAction: "ev_",
}
"""Every enum the workspace can show, and the prefix of its members' msgids."""

UNLABELLED: dict[type[StrEnum], frozenset[str]] = {
    ActorType: frozenset({ActorType.MANAGER}),
}
"""Members shown some other way: a manager acting is shown by their id."""

JOURNEY_PREFIX = "journey_"
TEMPLATE_PREFIX = "template_"
"""Journeys and templates are named in the rule files, so these are open sets: the
ones shipped in ``rules/`` have labels; one marketing ops add later shows its name."""


def key(enum: type[StrEnum], value: str) -> str:
    """The msgid that labels ``value`` of ``enum``."""
    return PREFIXES[enum] + value


def keys(enum: type[StrEnum]) -> list[str]:
    """The msgids of every labelled member of ``enum``."""
    skip = UNLABELLED.get(enum, frozenset())
    return [key(enum, member.value) for member in enum if member not in skip]


def label_keys() -> list[str]:
    """Every enum label's msgid, in a stable order (the extractor's output)."""
    return list(dict.fromkeys(k for enum in PREFIXES for k in keys(enum)))


def all_enums() -> list[type[StrEnum]]:
    """Every ``StrEnum`` :mod:`crm.statuses` defines (each must have a prefix here)."""
    return [
        value
        for value in vars(statuses).values()
        if inspect.isclass(value) and issubclass(value, StrEnum) and value is not StrEnum
    ]


# --- Babel extractors (babel.cfg names them) ----------------------------------------------


def extract_enum_labels(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str, list[str]]]:
    """For ``crm/statuses.py``: the label msgid of every member of every enum."""
    for msgid in label_keys():
        yield 1, "N_", msgid, []


def extract_rule_names(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str, list[str]]]:
    """For ``rules/*.yaml``: a label msgid for the journey and each of its templates."""
    from ruamel.yaml import YAML

    document = YAML(typ="safe").load(fileobj.read().decode("utf-8"))
    if not isinstance(document, dict) or "journey" not in document:
        return  # the contact policy and the call-QA rule are not journeys
    yield 1, "N_", JOURNEY_PREFIX + str(document["journey"]), []
    for name in document.get("templates") or {}:
        yield 1, "N_", TEMPLATE_PREFIX + str(name), []
