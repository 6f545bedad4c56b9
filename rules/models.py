"""Typed rule files: one pydantic model per journey (discriminated by ``journey``) and the
contact policy.

These models are the vocabulary: a rule file can only say what a model has a
field for. Everything is ``extra="forbid"`` so a typo is an error, never a
silently ignored key. Cross-field checks that need the contact policy (the
unsubscribe wording) or the position in the file live in :mod:`rules.loader`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from crm.models import TASK_KINDS, TIERS
from rules.conditions import EVERYONE, All, AnyOf, Compare, Condition, Not, parse, to_data
from rules.errors import ConditionError, UnknownNameError
from rules.keywords import MAX_KEYWORD, normalise_keyword
from rules.values import LOCALE_RE, parse_money

JOURNEY_IDS: tuple[str, ...] = (
    "birthday",
    "plan_fit",
    "grace_credit",
    "precall_notice",
    "callback",
)
REQUIRED_LOCALES: tuple[str, ...] = ("zh-CN", "en")
FALLBACK_LOCALE = "zh-CN"

COMMON_VARIABLES: tuple[str, ...] = (
    "name",
    "tier",
    "manager_name",
    "manager_phone",
    "hotline",
    "date",
)
JOURNEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "birthday": (*COMMON_VARIABLES, "perk_amount"),
    "plan_fit": (
        *COMMON_VARIABLES,
        "current_plan",
        "suggested_plan",
        "saving",
        "current_cost",
        "suggested_cost",
    ),
    "grace_credit": (*COMMON_VARIABLES, "amount", "deadline", "balance", "topup_amount"),
    "precall_notice": (*COMMON_VARIABLES, "task_kind"),
    "callback": COMMON_VARIABLES,
}
"""The only variables a journey's templates may use; journeys pass them as text."""
GENERIC_VARIABLES: tuple[str, ...] = (*COMMON_VARIABLES, "points")
"""What a journey declared in YAML alone (``kind: generic``) offers its templates."""

SAMPLE_VARIABLES: dict[str, str] = {
    "name": "Wang Fang",
    "tier": "diamond",
    "manager_name": "Li Na",
    "manager_phone": "+8613800138000",
    "hotline": "10086",
    "date": "2026-11-21",
    "perk_amount": "20.00",
    "amount": "10.00",
    "deadline": "2026-11-24",
    "balance": "-3.20",
    "topup_amount": "3.20",
    "points": "12000",
    "current_plan": "VIP-198",
    "suggested_plan": "VIP-128",
    "saving": "70.00",
    "current_cost": "198.00",
    "suggested_cost": "128.00",
    "task_kind": "callback",
}
"""The sample customer every template must render for, in every locale."""


def locale_chain(locale: str) -> list[str]:
    """``en-US`` → ``["en-US", "en", "zh-CN"]``: the order in which texts are tried."""
    chain = [locale]
    base = locale.split("-", 1)[0]
    if base != locale:
        chain.append(base)
    if FALLBACK_LOCALE not in chain:
        chain.append(FALLBACK_LOCALE)
    return chain


# --- value types --------------------------------------------------------------------------


def _money(value: object) -> Decimal:
    return parse_money(value)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"expected an amount greater than 0.00, got {value}")
    return value


def _locale(value: str) -> str:
    if not LOCALE_RE.match(value):
        raise ValueError(f"{value!r} is not a locale; expected a locale such as zh-CN or en")
    return value


def _require_locales(value: dict[str, str]) -> dict[str, str]:
    missing = [loc for loc in REQUIRED_LOCALES if loc not in value]
    if missing:
        raise ValueError(f"missing the required locale(s): {', '.join(missing)}")
    return value


def _condition(value: object) -> Condition:
    try:
        return parse(value)
    except ConditionError as exc:
        raise ValueError(str(exc)) from exc


CONDITION_MARK = "x-vipcare-condition"
"""Placeholder in the generated JSON Schema; rules.schema swaps in the Condition $ref."""

MONEY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": r"^[+-]?\d+(\.\d{1,2})?$"}, {"type": "integer"}],
    "description": 'An amount in yuan with at most 2 decimals, written as text: "10.00".',
}

Money: TypeAlias = Annotated[
    Decimal,
    PlainValidator(_money),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(MONEY_SCHEMA),
]
PositiveMoney: TypeAlias = Annotated[Money, AfterValidator(_positive)]
Share: TypeAlias = Annotated[
    Decimal,
    Field(ge=0, le=1),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^(0(\.\d+)?|1(\.0+)?)$"}, {"type": "number"}],
            "description": 'A share between 0 and 1, e.g. "0.15" for 15%.',
        }
    ),
]
Tier: TypeAlias = Literal["silver", "gold", "platinum", "diamond"]
Locale: TypeAlias = Annotated[str, AfterValidator(_locale)]
TemplateName: TypeAlias = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
ConditionField: TypeAlias = Annotated[
    Condition,
    PlainValidator(_condition),
    PlainSerializer(to_data, return_type=dict),
    WithJsonSchema({CONDITION_MARK: True}),
]
ANY_CONDITION = (All, AnyOf, Not, Compare)


class StrictModel(BaseModel):
    """Unknown keys are errors; values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- templates ----------------------------------------------------------------------------


class DaysValidity(StrictModel):
    """Valid through the end of the customer's ``days``-th local day (1 = the day it fired)."""

    days: int = Field(ge=1, le=60)


Validity: TypeAlias = Literal["end_of_day", "deadline", "while_task_open"] | DaysValidity
VALIDITY_HELP = (
    "end_of_day (the customer's local day the journey fired), {days: N}, deadline (grace"
    " credit: the top-up deadline) or while_task_open (pre-call notice)"
)


class Template(StrictModel):
    """One message text per locale; at least zh-CN and en."""

    category: Literal["service", "marketing"] = Field(
        description="marketing texts must carry the unsubscribe wording of the contact policy"
    )
    channel: Literal["sms", "voice"] = "sms"
    text: dict[Locale, Annotated[str, Field(min_length=1)]] = Field(
        description="Jinja2 text per locale, e.g. zh-CN: '尊敬的{{ name }}……'"
    )
    valid_until: Validity | None = Field(
        default=None,
        description="after this the message is never sent (it ends expired): "
        + VALIDITY_HELP
        + "; the journey's default when absent",
    )

    @field_validator("text")
    @classmethod
    def _required_locales(cls, value: dict[str, str]) -> dict[str, str]:
        return _require_locales(value)

    def text_for(self, locale: str) -> tuple[str, str]:
        """(locale actually used, text), following :func:`locale_chain`."""
        for candidate in locale_chain(locale):
            if candidate in self.text:
                return candidate, self.text[candidate]
        first = next(iter(self.text))  # pragma: no cover - zh-CN is required
        return first, self.text[first]


# --- actions ------------------------------------------------------------------------------


class _Conditional(StrictModel):
    when: ConditionField | None = Field(
        default=None, description="only for customers matching this condition"
    )

    def applies_to_all(self) -> bool:
        return self.when is None

    def describe(self) -> str:
        """The action as short text (explain, preview): ``send_sms greeting``."""
        return str(getattr(self, "type", type(self).__name__))


class SendSms(_Conditional):
    """Queue an SMS with a named template."""

    type: ClassVar[str] = "send_sms"
    template: TemplateName

    def describe(self) -> str:
        return f"{self.type} {self.template}"


class SendVoice(_Conditional):
    """Queue a voice notice with a named template."""

    type: ClassVar[str] = "send_voice"
    template: TemplateName

    def describe(self) -> str:
        return f"{self.type} {self.template}"


LocalText: TypeAlias = (
    Annotated[str, Field(min_length=1, max_length=200)]
    | dict[Locale, Annotated[str, Field(min_length=1, max_length=200)]]
)


def text_for(value: str | Mapping[str, str], locale: str) -> str:
    """A text given once or per locale, in ``locale`` (falling back like templates)."""
    if isinstance(value, str):
        return value
    for candidate in locale_chain(locale):
        if candidate in value:
            return value[candidate]
    return next(iter(value.values()))


class CreateTask(_Conditional):
    """Create a call task for the customer's account manager."""

    type: ClassVar[str] = "create_task"
    kind: Literal["callback", "plan_fit", "grace_followup", "birthday", "care"] = "care"
    priority: int = Field(default=0, ge=0, le=9, description="0 normal … 9 most urgent")
    reason: LocalText | None = Field(
        default=None,
        description="why the manager calls, shown on the task (required for kind: care);"
        " text, or text per locale",
    )

    def describe(self) -> str:
        return f"{self.type} {self.kind}"


class GrantCredit(_Conditional):
    """Add a credit to the balance (recorded in the ledger).

    Birthday: ``amount`` or ``amount_by_tier``. Grace credit: neither; the amount
    is the trigger's ``amount_by_tier``.
    """

    type: ClassVar[str] = "grant_credit"
    amount: PositiveMoney | None = None
    amount_by_tier: dict[Tier, PositiveMoney] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> GrantCredit:
        if self.amount is not None and self.amount_by_tier is not None:
            raise ValueError("give either amount or amount_by_tier, not both")
        return self

    def describe(self) -> str:
        if self.amount is not None:
            return f"{self.type} {self.amount}"
        if self.amount_by_tier is not None:
            by_tier = ", ".join(f"{t} {a}" for t, a in self.amount_by_tier.items())
            return f"{self.type} ({by_tier})"
        return f"{self.type} (the tier's amount)"

    def amount_for(
        self, tier: str, trigger_amounts: Mapping[Any, Decimal] | None = None
    ) -> Decimal | None:
        """The credit for a customer of ``tier``; None when this tier gets none."""
        if self.amount is not None:
            return self.amount
        if self.amount_by_tier is not None:
            return {str(k): v for k, v in self.amount_by_tier.items()}.get(tier)
        return dict(trigger_amounts or {}).get(tier)


class Suspend(_Conditional):
    """Suspend the line (grace credit, on the deadline only)."""

    type: ClassVar[str] = "suspend"


Action: TypeAlias = SendSms | SendVoice | CreateTask | GrantCredit | Suspend
ACTION_TYPES: dict[str, type[_Conditional]] = {
    "send_sms": SendSms,
    "send_voice": SendVoice,
    "create_task": CreateTask,
    "grant_credit": GrantCredit,
    "suspend": Suspend,
}


class ActionEntry(StrictModel):
    """One list item under ``actions``: exactly one of the action keys."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"minProperties": 1, "maxProperties": 1},
    )

    send_sms: SendSms | None = None
    send_voice: SendVoice | None = None
    create_task: CreateTask | None = None
    grant_credit: GrantCredit | None = None
    suspend: Suspend | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_no_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: ({} if v is None and k in ACTION_TYPES else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> ActionEntry:
        chosen = [name for name in ACTION_TYPES if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "each action is exactly one of: "
                + ", ".join(ACTION_TYPES)
                + (f"; got {', '.join(chosen)}" if chosen else "")
            )
        return self

    @property
    def name(self) -> str:
        return next(n for n in ACTION_TYPES if getattr(self, n) is not None)

    @property
    def action(self) -> Action:
        value: Action = getattr(self, self.name)
        return value


# --- triggers and limits ------------------------------------------------------------------


class BirthdayTrigger(StrictModel):
    offset_days: int = Field(
        default=0, ge=-30, le=30, description="days before (negative) or after the birthday"
    )
    feb29_in_common_years: Literal["feb28", "mar1"] = Field(
        default="feb28", description="when to greet 29 February birthdays in non-leap years"
    )


class PlanFitTrigger(StrictModel):
    months: int = Field(default=3, ge=1, le=12, description="full months of usage to cost")
    min_saving_share: Share = Field(description="minimum monthly saving as a share of today's cost")
    min_saving_amount: Money = Field(description="minimum monthly saving in yuan")


class GraceCreditTrigger(StrictModel):
    threshold: Money = Field(
        default=Decimal("0.00"), description="suspension threshold: balance below this"
    )
    amount_by_tier: dict[Tier, PositiveMoney] = Field(
        min_length=1, description="grace credit per tier; tiers not listed get none"
    )
    topup_days: int = Field(ge=1, le=60, description="days the customer has to top up")


class PrecallNoticeTrigger(StrictModel):
    lead_time_hours: int = Field(
        ge=0, le=72, description="hours between the notice SMS and the call becoming ready"
    )


class CallbackTrigger(StrictModel):
    cadence_days: dict[Tier, Annotated[int, Field(ge=1, le=3650)]] = Field(
        min_length=1, description="days between callbacks, counted from the last contact"
    )
    escalate_after_days: int = Field(ge=1, le=365)
    no_answer_retry_days: int = Field(ge=1, le=60)
    max_attempts: int = Field(ge=1, le=10)


class Limits(StrictModel):
    cooldown_days: int = Field(default=0, ge=0, le=3650, description="quiet days after a firing")


class BirthdayLimits(Limits):
    once_per: Literal["year"] = "year"


class PlanFitLimits(Limits):
    max_open_tasks: int = Field(default=1, ge=1, le=10)
    cooldown_after_decline_days: int = Field(default=90, ge=0, le=3650)


class GraceCreditLimits(Limits):
    once_per: Literal["month", "cycle"] = Field(
        default="month", description="a billing cycle is a calendar month"
    )


class PrecallNoticeLimits(Limits):
    pass


class CallbackLimits(Limits):
    max_open_tasks: int = Field(default=1, ge=1, le=10)


# --- journeys -----------------------------------------------------------------------------


class JourneyBase(StrictModel):
    """What every journey file has; the loader sets ``content_hash`` and ``source``."""

    allowed_actions: ClassVar[tuple[str, ...]] = ()
    task_kinds: ClassVar[tuple[str, ...]] = ()

    journey: str
    description: str = Field(min_length=1)
    enabled: bool = True
    audience: ConditionField = Field(default=EVERYONE, description="who the journey is for")
    actions: list[ActionEntry] = Field(min_length=1)
    templates: dict[TemplateName, Template] = Field(default_factory=dict)

    _content_hash: str = PrivateAttr(default="")
    _source: Path | None = PrivateAttr(default=None)

    @property
    def rule_id(self) -> str:
        return self.journey

    @property
    def content_hash(self) -> str:
        """sha256 hex of the rule file's bytes: traces every intent to the exact text."""
        return self._content_hash

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def variables(self) -> tuple[str, ...]:
        return JOURNEY_VARIABLES.get(self.journey, GENERIC_VARIABLES)

    @property
    def action_list(self) -> list[Action]:
        return [entry.action for entry in self.actions]

    def action_stages(self) -> list[tuple[str, list[Action]]]:
        """Every list of actions the rule has, by name (``actions``, and more in some rules)."""
        return [("actions", self.action_list)]

    def actions_of(self, kind: type[_Conditional]) -> list[Any]:
        return [a for a in self.action_list if isinstance(a, kind)]

    def template(self, name: str) -> Template:
        try:
            return self.templates[name]
        except KeyError:
            raise UnknownNameError("template", name, self.templates) from None

    def stamp(self, content_hash: str, source: Path | None) -> None:
        """Record where the rule came from (loader only)."""
        self._content_hash = content_hash
        self._source = source


class BirthdayRule(JourneyBase):
    allowed_actions = ("send_sms", "send_voice", "grant_credit", "create_task")
    task_kinds = ("birthday",)
    journey: Literal["birthday"]
    trigger: BirthdayTrigger = Field(default_factory=BirthdayTrigger)
    limits: BirthdayLimits = Field(default_factory=BirthdayLimits)


class PlanFitRule(JourneyBase):
    allowed_actions = ("send_sms", "send_voice", "create_task")
    task_kinds = ("plan_fit",)
    journey: Literal["plan_fit"]
    trigger: PlanFitTrigger
    limits: PlanFitLimits = Field(default_factory=PlanFitLimits)


class GraceCreditRule(JourneyBase):
    allowed_actions = ("grant_credit", "send_sms", "send_voice")
    deadline_actions: ClassVar[tuple[str, ...]] = (
        "suspend",
        "create_task",
        "send_sms",
        "send_voice",
    )
    task_kinds = ("grace_followup",)
    journey: Literal["grace_credit"]
    trigger: GraceCreditTrigger
    on_deadline: list[ActionEntry] = Field(
        default_factory=list,
        description="what happens when the balance is still below the threshold at the deadline",
    )
    limits: GraceCreditLimits = Field(default_factory=GraceCreditLimits)

    @property
    def deadline_action_list(self) -> list[Action]:
        return [entry.action for entry in self.on_deadline]

    def action_stages(self) -> list[tuple[str, list[Action]]]:
        return [("actions", self.action_list), ("on_deadline", self.deadline_action_list)]


class PrecallNoticeRule(JourneyBase):
    """The notice before every call task. Fixed behaviour (not configurable): a customer who
    opted out of SMS gets the task marked ``no_notice``; a do-not-call customer gets no task."""

    allowed_actions = ("send_sms", "send_voice")
    journey: Literal["precall_notice"]
    trigger: PrecallNoticeTrigger
    limits: PrecallNoticeLimits = Field(default_factory=PrecallNoticeLimits)


class CallbackRule(JourneyBase):
    allowed_actions = ("create_task", "send_sms", "send_voice")
    task_kinds = ("callback",)
    journey: Literal["callback"]
    trigger: CallbackTrigger
    limits: CallbackLimits = Field(default_factory=CallbackLimits)


DATE_FIELDS: tuple[str, ...] = ("birthday", "joined_on")
"""Customer dates a generic journey may trigger on (an anniversary, or the date itself)."""
CALENDAR_DAY_RE = r"^(\d{4}-)?\d{2}-\d{2}$"


def _calendar_day(value: str) -> str:
    from datetime import date

    parts = value.split("-")
    try:
        if len(parts) == 3:
            date.fromisoformat(value)
        else:
            date(2000, int(parts[0]), int(parts[1]))  # a leap year: 02-29 is a day
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a calendar day; expected MM-DD (every year) or YYYY-MM-DD (once)"
        ) from exc
    return value


CalendarDay: TypeAlias = Annotated[
    str, Field(pattern=CALENDAR_DAY_RE), AfterValidator(_calendar_day)
]


class GenericTrigger(StrictModel):
    """When a YAML-only journey fires: exactly one of ``condition``, ``date_field``, ``on_date``."""

    condition: ConditionField | None = Field(
        default=None, description="fires when this holds, e.g. {points: {gte: 5000}}"
    )
    date_field: Literal["birthday", "joined_on"] | None = Field(
        default=None,
        description="fires on this date of the customer plus offset_days: every year"
        " (once_per: year) or only on the date itself (once_per: ever)",
    )
    offset_days: int = Field(
        default=0, ge=-366, le=366, description="days after (negative: before) date_field"
    )
    on_date: CalendarDay | None = Field(
        default=None,
        description='a calendar day: "12-24" every year, "2026-12-24" once (the older spelling'
        " on: is still read, with a warning: YAML 1.1 tools read that key as true)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> GenericTrigger:
        given = [n for n in ("condition", "date_field", "on_date") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of condition, date_field or on_date"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.offset_days and self.date_field is None:
            raise ValueError("offset_days only goes with date_field")
        return self

    @property
    def kind(self) -> str:
        return (
            "condition"
            if self.condition is not None
            else ("date_field" if self.date_field is not None else "on_date")
        )


class GenericLimits(Limits):
    once_per: Literal["year", "month", "ever"] = Field(
        description="at most one firing per customer per calendar year, month, or ever"
    )


JOURNEY_ID_RE = r"^[a-z][a-z0-9_]{1,31}$"


class GenericJourneyRule(JourneyBase):
    """A journey declared in YAML alone (``kind: generic``): audience, trigger, actions, texts."""

    allowed_actions = ("send_sms", "send_voice", "create_task", "grant_credit")
    task_kinds = ("care",)
    kind: Literal["generic"]
    journey: Annotated[str, Field(pattern=JOURNEY_ID_RE)]
    trigger: GenericTrigger
    limits: GenericLimits

    @property
    def variables(self) -> tuple[str, ...]:
        return GENERIC_VARIABLES

    @model_validator(mode="after")
    def _trigger_fits_period(self) -> GenericJourneyRule:
        t, period = self.trigger, self.limits.once_per
        if t.date_field is not None and period == "month":
            raise ValueError(
                "a date_field trigger fires once a year (once_per: year) or on the date itself"
                " (once_per: ever), not monthly"
            )
        if t.on_date is not None and len(t.on_date) == 5 and period != "year":
            raise ValueError(
                f"on_date: {t.on_date!r} comes every year: use once_per: year, or give the year"
                " (YYYY-MM-DD) for a one-off"
            )
        return self


BuiltinRule: TypeAlias = Annotated[
    BirthdayRule | PlanFitRule | GraceCreditRule | PrecallNoticeRule | CallbackRule,
    Field(discriminator="journey"),
]
JourneyRule: TypeAlias = BuiltinRule | GenericJourneyRule
JOURNEY_MODELS: dict[str, type[JourneyBase]] = {
    "birthday": BirthdayRule,
    "plan_fit": PlanFitRule,
    "grace_credit": GraceCreditRule,
    "precall_notice": PrecallNoticeRule,
    "callback": CallbackRule,
}
"""The built-in journeys, each with its own model; any other id needs ``kind: generic``."""
_ALL_MODELS: tuple[type[JourneyBase], ...] = (*JOURNEY_MODELS.values(), GenericJourneyRule)
assert set(TASK_KINDS) == {k for m in _ALL_MODELS for k in m.task_kinds}
assert set(TIERS) == set(Tier.__args__)  # type: ignore[attr-defined]


# --- contact policy -----------------------------------------------------------------------


class SendWindow(StrictModel):
    start: time = Field(description='earliest local send time, "09:00"')
    end: time = Field(description='latest local send time, "20:00"')

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(f"send_window start {self.start} must be before end {self.end}")
        return self


class CategoryCaps(StrictModel):
    per_day: int = Field(ge=0, le=100)
    per_week: int = Field(ge=0, le=700)

    @model_validator(mode="after")
    def _week_covers_day(self) -> CategoryCaps:
        if self.per_week < self.per_day:
            raise ValueError(
                f"per_week ({self.per_week}) must be at least per_day ({self.per_day})"
            )
        return self


class Categories(StrictModel):
    service: CategoryCaps
    marketing: CategoryCaps


DEFAULT_MAX_CREDIT = Decimal("100.00")
"""The credit cap when contact_policy.yaml names none for a journey (and has no default)."""


class ContactPolicy(StrictModel):
    """The one contact policy every message goes through (see notifications)."""

    send_window: SendWindow
    categories: Categories
    opt_out_keywords: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    opt_in_keywords: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    unsubscribe_text: dict[Locale, Annotated[str, Field(min_length=1)]]
    hotline: str = Field(default="", description="the VIP hotline, the {{ hotline }} variable")
    max_credit: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")], PositiveMoney] = (
        Field(
            default_factory=lambda: {"default": DEFAULT_MAX_CREDIT},
            description="the most one credit may be, per journey id, and 'default' for the"
            ' rest: a sanity bound against typos such as "1500" for 15.00',
        )
    )

    _content_hash: str = PrivateAttr(default="")
    _source: Path | None = PrivateAttr(default=None)

    def max_credit_for(self, journey: str) -> Decimal:
        """The largest single credit ``journey`` may grant."""
        return self.max_credit.get(journey, self.max_credit.get("default", DEFAULT_MAX_CREDIT))

    @field_validator("unsubscribe_text")
    @classmethod
    def _required_locales(cls, value: dict[str, str]) -> dict[str, str]:
        return _require_locales(value)

    @model_validator(mode="after")
    def _consistent(self) -> ContactPolicy:
        for keyword in (*self.opt_out_keywords, *self.opt_in_keywords):
            word = normalise_keyword(keyword)
            if not word or len(word) > MAX_KEYWORD:
                raise ValueError(
                    f"keyword {keyword[:40]!r} must have 1 to {MAX_KEYWORD} characters"
                    " besides spaces and punctuation"
                )
        both = {normalise_keyword(k) for k in self.opt_out_keywords} & {
            normalise_keyword(k) for k in self.opt_in_keywords
        }
        if both:
            raise ValueError(f"keywords both opt out and opt in: {', '.join(sorted(both))}")
        return self

    @property
    def rule_id(self) -> str:
        return "contact_policy"

    @property
    def content_hash(self) -> str:
        return self._content_hash

    @property
    def source(self) -> Path | None:
        return self._source

    def stamp(self, content_hash: str, source: Path | None) -> None:
        self._content_hash = content_hash
        self._source = source

    def unsubscribe_for(self, locale: str) -> str:
        for candidate in locale_chain(locale):
            if candidate in self.unsubscribe_text:
                return self.unsubscribe_text[candidate]
        return self.unsubscribe_text[FALLBACK_LOCALE]  # pragma: no cover - required

    def is_opt_out(self, text: str) -> bool:
        """An inbound SMS that is just an opt-out keyword (case, spaces, punctuation ignored)."""
        return normalise_keyword(text) in {normalise_keyword(k) for k in self.opt_out_keywords}

    def is_opt_in(self, text: str) -> bool:
        return normalise_keyword(text) in {normalise_keyword(k) for k in self.opt_in_keywords}


# --- call QA sampling ------------------------------------------------------------------


Outcome: TypeAlias = Literal["reached", "no_answer", "declined", "plan_changed", "wrong_number"]
SAMPLED_OUTCOMES_DEFAULT: tuple[Outcome, ...] = ("reached", "declined", "plan_changed")


class CallQaRule(StrictModel):
    """``rules/call_qa.yaml``: how much of each day's completed calls is sampled for review."""

    share: Share = Field(
        default=Decimal("0.10"), description="share of a day's calls drawn for review"
    )
    seed: str = Field(
        default="vipcare-call-qa",
        min_length=1,
        description="mixed into the ranking: the same seed draws the same sample",
    )
    outcomes: list[Outcome] = Field(
        default_factory=lambda: list(SAMPLED_OUTCOMES_DEFAULT),
        min_length=1,
        description="only calls that ended with one of these outcomes are sampled",
    )

    _content_hash: str = PrivateAttr(default="")
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("share")
    @classmethod
    def _above_zero(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError('share must be above 0 (e.g. "0.10" for 10%)')
        return value

    @property
    def rule_id(self) -> str:
        return "call_qa"

    @property
    def content_hash(self) -> str:
        return self._content_hash

    @property
    def source(self) -> Path | None:
        return self._source

    def stamp(self, content_hash: str, source: Path | None) -> None:
        self._content_hash = content_hash
        self._source = source
