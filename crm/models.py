"""The CRM schema: SQLAlchemy 2 typed models.

Internal keys are integers; the operator's own ids (``customer_id`` in the CSV)
live in ``external_id`` columns and are what users see. Money columns use
:class:`~crm.types.Money` (exact), times use :class:`~crm.types.UTCDateTime`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crm.statuses import (
    AccountRole,
    Channel,
    GraceStatus,
    InboundAction,
    InboundOutcome,
    LineStatus,
    MessageCategory,
    MessageStatus,
    QaCriterion,
    RunStatus,
    SessionEnd,
    TaskKind,
    TaskOutcome,
    TaskStatus,
    Tier,
    values,
)
from crm.types import Money, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TIERS: tuple[str, ...] = values(Tier)
"""Tiers in ascending order; ``tier_rank`` is the index in this tuple."""
CUSTOMER_STATUSES: tuple[str, ...] = values(LineStatus)
TASK_KINDS: tuple[str, ...] = values(TaskKind)
"""``care``: a call task of a journey marketing ops declared in YAML (its reason says why)."""
TASK_STATUSES: tuple[str, ...] = values(TaskStatus)
TASK_OUTCOMES: tuple[str, ...] = values(TaskOutcome)
MESSAGE_STATUSES: tuple[str, ...] = values(MessageStatus)
MESSAGE_CHANNELS: tuple[str, ...] = values(Channel)
MESSAGE_CATEGORIES: tuple[str, ...] = values(MessageCategory)
GRACE_STATUSES: tuple[str, ...] = values(GraceStatus)
INBOUND_ACTIONS: tuple[str, ...] = values(InboundAction)
INBOUND_OUTCOMES: tuple[str, ...] = values(InboundOutcome)
ACCOUNT_ROLES: tuple[str, ...] = values(AccountRole)
SESSION_END_REASONS: tuple[str, ...] = values(SessionEnd)
"""Why a workspace session ended before it expired (``staff_sessions.end_reason``)."""
QA_CRITERIA: tuple[str, ...] = values(QaCriterion)
RUN_STATUSES: tuple[str, ...] = values(RunStatus)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Money(2), datetime: UTCDateTime()}


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    monthly_fee: Mapped[Decimal] = mapped_column(Money(2))
    voice_minutes: Mapped[int] = mapped_column(Integer)
    data_mb: Mapped[int] = mapped_column(Integer)
    sms: Mapped[int] = mapped_column(Integer)
    voice_overage_per_min: Mapped[Decimal] = mapped_column(Money(4))
    data_overage_per_mb: Mapped[Decimal] = mapped_column(Money(4))
    sms_overage: Mapped[Decimal] = mapped_column(Money(4))

    tiers: Mapped[list[PlanTier]] = relationship(
        back_populates="plan", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        CheckConstraint("voice_minutes >= 0 AND data_mb >= 0 AND sms >= 0", name="allowances"),
    )

    @property
    def tier_names(self) -> list[str]:
        return sorted((t.tier for t in self.tiers), key=TIERS.index)


class PlanTier(Base):
    """Which customer tiers may take a plan (``tiers`` column of the CSV)."""

    __tablename__ = "plan_tiers"

    plan_id: Mapped[int] = mapped_column(
        ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    plan: Mapped[Plan] = relationship(back_populates="tiers")

    __table_args__ = (
        CheckConstraint(_in("tier", TIERS), name="tier"),
        Index("ix_plan_tiers_tier", "tier", "plan_id"),
    )


class Manager(Base):
    """A dedicated account manager (专属客户经理)."""

    __tablename__ = "managers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_latin: Mapped[str | None] = mapped_column(
        String(200),
        doc="The name in Latin letters (e.g. pinyin) for texts in other languages than "
        "Chinese; NULL: ``name`` everywhere",
    )
    phone: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    daily_call_capacity: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str | None] = mapped_column(
        String(64), doc="IANA zone the workspace shows times in; NULL: the operator's zone"
    )

    __table_args__ = (CheckConstraint("daily_call_capacity >= 0", name="capacity"),)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20))
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    birthday: Mapped[date | None] = mapped_column(Date)
    birth_mmdd: Mapped[int | None] = mapped_column(
        SmallInteger, doc="month*100+day of the birthday, so that 'born on 02-28' is an index seek"
    )
    tier: Mapped[str] = mapped_column(String(16))
    tier_rank: Mapped[int] = mapped_column(SmallInteger, doc="index of tier in TIERS")
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    balance: Mapped[Decimal] = mapped_column(Money(2), default=Decimal("0.00"))
    balance_as_of: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="as_of of the balances feed row the balance derives from (NULL: untimed)"
    )
    balance_received_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="when vipcare received that feed row (crm.balances)"
    )
    credit_limit: Mapped[Decimal] = mapped_column(Money(2), default=Decimal("0.00"))
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_since: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="when vipcare learned the current status (NULL: before it kept track)"
    )
    sms_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    do_not_call: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_on: Mapped[date | None] = mapped_column(Date)
    last_contact_on: Mapped[date | None] = mapped_column(Date)
    points: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="loyalty points balance (积分)"
    )

    plan: Mapped[Plan | None] = relationship(lazy="joined")
    manager: Mapped[Manager | None] = relationship(lazy="joined")
    clubs: Mapped[list[CustomerClub]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        CheckConstraint(_in("tier", TIERS), name="tier"),
        CheckConstraint("tier_rank BETWEEN 0 AND 3", name="tier_rank"),
        CheckConstraint(_in("status", CUSTOMER_STATUSES), name="status"),
        CheckConstraint("points >= 0", name="points"),
        Index("ix_customers_birth_mmdd", "birth_mmdd"),
        Index("ix_customers_balance", "balance"),
        Index("ix_customers_manager", "manager_id"),
        Index("ix_customers_plan", "plan_id"),
        Index("ix_customers_balance_received", "balance_received_at"),
    )

    @property
    def club_names(self) -> list[str]:
        return sorted(c.club for c in self.clubs)


class CustomerClub(Base):
    """Interest-club membership (music, games, film, health, ...)."""

    __tablename__ = "customer_clubs"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    club: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer: Mapped[Customer] = relationship(back_populates="clubs")

    __table_args__ = (Index("ix_customer_clubs_club", "club", "customer_id"),)


class MonthlyUsage(Base):
    """One customer's usage in one calendar month (``month`` is its first day)."""

    __tablename__ = "monthly_usage"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    voice_minutes: Mapped[int] = mapped_column(Integer)
    data_mb: Mapped[int] = mapped_column(Integer)
    sms: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="when these figures arrived (NULL: seeded, known since ever)"
    )

    __table_args__ = (
        CheckConstraint("voice_minutes >= 0 AND data_mb >= 0 AND sms >= 0", name="non_negative"),
        Index("ix_monthly_usage_month", "month", "customer_id"),
    )


class BalanceFact(Base):
    """One row of the balances feed: the balance billing held at ``as_of``, and when it came.

    Owned by :mod:`crm.balances`. The history lets a care day read the balance
    that was known at its own instant (``as_of <= T`` and ``received_at <= T``);
    ``customers.balance`` is the derived current value.
    """

    __tablename__ = "balance_facts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    balance: Mapped[Decimal] = mapped_column(Money(2))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str | None] = mapped_column(String(300), doc="file:line, or the feed's name")

    __table_args__ = (
        UniqueConstraint("customer_id", "as_of"),
        Index("ix_balance_facts_received", "received_at"),
    )


class JourneyOccurrence(Base):
    """The idempotence key of every journey decision: (journey, customer, occurrence).

    A journey inserts its decision row first; the unique constraint makes a
    rerun, a crash-and-retry or a second scheduler a no-op.
    """

    __tablename__ = "journey_occurrences"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    journey: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    occurrence: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    as_of: Mapped[date] = mapped_column(Date)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "occurrence"),
        Index("ix_journey_occurrences_customer", "customer_id", "journey"),
    )


class JourneyPass(Base):
    """A completed full pass of a journey over a period (plan-fit's inputs are monthly).

    Lets a daily run skip a journey that already looked at every customer this
    period; written only after the last batch committed, so a crash means a rerun.
    """

    __tablename__ = "journey_passes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    journey: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(32))
    shard_index: Mapped[int] = mapped_column(SmallInteger)
    shard_count: Mapped[int] = mapped_column(SmallInteger)
    rule_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("journey", "period", "shard_index", "shard_count", "rule_hash"),
    )


class OutboundMessage(Base):
    """The outbox: one SMS or voice notice and where it is in its life."""

    __tablename__ = "outbound_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    category: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    journey: Mapped[str] = mapped_column(String(32))
    occurrence: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    to_phone: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict[str, Any] | None] = mapped_column(
        JSON,
        doc="the template variables the body was rendered with, so that a queued text can "
        "be rendered again when the customer moves to another manager",
    )
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="never sent after this instant: it ends 'expired' instead"
    )
    status: Mapped[str] = mapped_column(String(16), default="queued")
    status_reason: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(32))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(64))
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rule_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sending_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(
        String(200), doc="the dispatcher holding the 'sending' lease (crm.process owner)"
    )
    claimed_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="wall-clock time the lease was taken or last renewed"
    )
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "occurrence", "template"),
        CheckConstraint(_in("status", MESSAGE_STATUSES), name="status"),
        CheckConstraint(_in("channel", MESSAGE_CHANNELS), name="channel"),
        CheckConstraint(_in("category", MESSAGE_CATEGORIES), name="category"),
        Index("ix_outbound_messages_due", "status", "scheduled_for"),
        Index("ix_outbound_messages_customer", "customer_id", "created_at"),
        Index("ix_outbound_messages_provider_id", "provider_message_id"),
        Index("ix_outbound_messages_expiry", "status", "valid_until"),
    )


class CallTask(Base):
    """A call an account manager should make, and why."""

    __tablename__ = "call_tasks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    kind: Mapped[str] = mapped_column(String(32))
    journey: Mapped[str] = mapped_column(String(32))
    occurrence: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24), default="awaiting_notice")
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    due_on: Mapped[date] = mapped_column(Date)
    scheduled_on: Mapped[date] = mapped_column(Date, doc="the day within manager capacity")
    no_notice: Mapped[bool] = mapped_column(Boolean, default=False)
    notice_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbound_messages.id", ondelete="SET NULL")
    )
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempt: Mapped[int] = mapped_column(SmallInteger, default=1)
    outcome: Mapped[str | None] = mapped_column(String(24))
    satisfaction: Mapped[int | None] = mapped_column(SmallInteger)
    note: Mapped[str | None] = mapped_column(Text)
    rule_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "occurrence", "kind"),
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
        CheckConstraint(
            "satisfaction IS NULL OR satisfaction BETWEEN 1 AND 5", name="satisfaction"
        ),
        Index("ix_call_tasks_manager_day", "manager_id", "scheduled_on", "status"),
        # "My day" and capacity: one manager's open tasks by day, never the closed history
        Index("ix_call_tasks_manager_status", "manager_id", "status", "scheduled_on"),
        # reports and the QA sample: calls completed in a time range
        Index("ix_call_tasks_completed", "completed_at"),
        Index("ix_call_tasks_customer", "customer_id", "kind", "status"),
        Index("ix_call_tasks_status", "status", "due_on"),
        # the dispatcher finds the tasks waiting on a notice it just sent, failed or suppressed
        Index("ix_call_tasks_notice", "notice_message_id"),
    )


class CreditLedger(Base):
    """Every credit or debit vipcare applied to a balance; append-only."""

    __tablename__ = "credit_ledger"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(Money(2))
    balance_after: Mapped[Decimal] = mapped_column(Money(2))
    kind: Mapped[str] = mapped_column(String(32))
    journey: Mapped[str] = mapped_column(String(32))
    occurrence: Mapped[str] = mapped_column(String(64))
    rule_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), doc="when it was really posted (the wall clock, not the care day)"
    )
    care_day: Mapped[date | None] = mapped_column(Date, doc="the care day that decided it")

    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "occurrence", "kind"),
        Index("ix_credit_ledger_customer", "customer_id", "created_at"),
        Index("ix_credit_ledger_created", "created_at"),
    )


class GracePeriod(Base):
    """A grace credit's life: open → repaid | suspended."""

    __tablename__ = "grace_periods"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    occurrence: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money(2))
    granted_on: Mapped[date] = mapped_column(Date)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="open")
    closed_on: Mapped[date | None] = mapped_column(Date)
    rule_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("customer_id", "occurrence"),
        CheckConstraint(_in("status", GRACE_STATUSES), name="status"),
        Index("ix_grace_periods_open", "status", "deadline"),
        Index("ix_grace_periods_customer", "customer_id", "status"),
    )


class InboundMessage(Base):
    """One inbound keyword SMS (STOP, START, ...), once per provider message id.

    Owned by :func:`crm.consent.apply_inbound_keyword`. The unique provider id
    makes a replayed or re-delivered webhook a no-op; ``message_at`` orders the
    instructions of one phone so an older keyword never overrides a newer one.
    """

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str] = mapped_column(String(20))
    keyword: Mapped[str] = mapped_column(String(32), doc="normalised, e.g. 'stop'")
    action: Mapped[str] = mapped_column(String(16))
    message_at: Mapped[datetime] = mapped_column(
        doc="the message's own time when the provider gives one, else when first received"
    )
    received_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    customers_changed: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        CheckConstraint(_in("action", INBOUND_ACTIONS), name="action"),
        CheckConstraint(_in("outcome", INBOUND_OUTCOMES), name="outcome"),
        Index("ix_inbound_messages_phone", "phone", "message_at"),
    )


class AuditHead(Base):
    """Single-row table holding the chain head; updating it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditLog(Base):
    """Append-only, hash-chained record of every decision and action."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(Integer)
    customer_ref: Mapped[str | None] = mapped_column(String(64), doc="external id at the time")
    entity: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(64))
    rule_hash: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, doc="canonical JSON, exactly as hashed")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_customer", "customer_ref", "seq"),
        Index("ix_audit_log_action", "action", "seq"),
    )


class StaffAccount(Base):
    """A manager's or supervisor's sign-in to the workspace (one per managers row).

    ``session_version`` counts password changes (each also ends every open session:
    :mod:`crm.staff_sessions`).
    """

    __tablename__ = "staff_accounts"

    manager_id: Mapped[int] = mapped_column(
        ForeignKey("managers.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), default="manager")
    password_hash: Mapped[str] = mapped_column(String(255))
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    locale: Mapped[str | None] = mapped_column(String(16), doc="NULL: the browser's language")
    password_set_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint(_in("role", ACCOUNT_ROLES), name="role"),)


class LoginFailure(Base):
    """One failed sign-in; counted per login and per client to rate-limit guessing.

    Kept in the database so that several web processes enforce one limit.
    """

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    login: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_login_failures_login", "login", "at"),
        Index("ix_login_failures_client", "client", "at"),
        Index("ix_login_failures_at", "at"),
    )


class StaffSession(Base):
    """One workspace sign-in, kept server-side so that it can be ended (owner:
    :mod:`crm.staff_sessions`).

    The browser's cookie holds a random token; only its SHA-256 is stored, so
    reading this table does not give anyone a working cookie. An ended session
    keeps its row (with why it ended) until it is old, so the sign-in page can
    tell "you signed out" and "your password changed" from "no session".
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    manager_id: Mapped[int] = mapped_column(ForeignKey("managers.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(24))

    __table_args__ = (
        CheckConstraint(
            f"end_reason IS NULL OR {_in('end_reason', SESSION_END_REASONS)}", name="end_reason"
        ),
        Index("ix_staff_sessions_manager", "manager_id", "ended_at"),
        Index("ix_staff_sessions_expires", "expires_at"),
    )


class WebSecret(Base):
    """Generated signing keys, so every web process of one database signs alike."""

    __tablename__ = "web_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class QaSample(Base):
    """A completed call drawn for quality review (about 10 % of a day's calls)."""

    __tablename__ = "qa_samples"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("call_tasks.id", ondelete="CASCADE"), unique=True
    )
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    day: Mapped[date] = mapped_column(Date, doc="the operator-local day the call was completed")
    drawn_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rule_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_qa_samples_day", "day", "manager_id"),
        Index("ix_qa_samples_manager", "manager_id", "day"),
    )


class QaReview(Base):
    """A supervisor's review of one sampled call: 1–5 per criterion and a note."""

    __tablename__ = "qa_reviews"

    sample_id: Mapped[int] = mapped_column(
        ForeignKey("qa_samples.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("managers.id"))
    accuracy: Mapped[int] = mapped_column(SmallInteger)
    courtesy: Mapped[int] = mapped_column(SmallInteger)
    proactive_offer: Mapped[int] = mapped_column(SmallInteger)
    note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "accuracy BETWEEN 1 AND 5 AND courtesy BETWEEN 1 AND 5 "
            "AND proactive_offer BETWEEN 1 AND 5",
            name="scores",
        ),
    )


class JobRun(Base):
    """One run of a scheduled operation or of one journey: what ran, when, and how it ended.

    Written by :mod:`crm.runs` only; ``vipcare status`` reads it.
    """

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), doc="journey | care_day | dispatch | escalation")
    name: Mapped[str] = mapped_column(String(64), doc="the journey id, or the job's name")
    care_day: Mapped[date | None] = mapped_column(Date)
    shard: Mapped[str | None] = mapped_column(String(16), doc="'index/count' of a sharded run")
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("ix_job_runs_name", "kind", "name", "started_at"),
    )


class SchedulerLease(Base):
    """The one embedded scheduler allowed per database: owner, expiry and heartbeat."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobDay(Base):
    """The last care day a daily job completed: catch-up after downtime starts after it."""

    __tablename__ = "job_days"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_day: Mapped[date] = mapped_column(Date)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SchedulerJob(Base):
    """APScheduler's ``SQLAlchemyJobStore`` table, declared here so migrations own it.

    The columns are exactly the ones APScheduler 3 creates; ``next_run_time`` is
    a UNIX timestamp, which ``vipcare status`` reads without unpickling a job.
    """

    __tablename__ = "scheduler_jobs"

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class RuleFile(Base):
    """The last good version of each rule file, and the edit of it refused since (if any).

    Written by :mod:`crm.rule_files` only. While a file's current edit does not
    load, the journeys run this version (:mod:`rules.live`), also after a restart.
    ``content`` is the file's exact bytes; ``sha256`` their hash, as on every
    decision the version made. A row with no ``content`` is a file that never
    loaded (its refusal is remembered, so it is audited once).
    """

    __tablename__ = "rule_files"

    name: Mapped[str] = mapped_column(
        String(255), primary_key=True, doc="the rule id: the file name without .yaml"
    )
    file_name: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    sha256: Mapped[str | None] = mapped_column(String(64))
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refused_sha256: Mapped[str | None] = mapped_column(
        String(64), doc="the hash of the edit refused since the last good version"
    )
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refused_problems: Mapped[list[str] | None] = mapped_column(JSON)
