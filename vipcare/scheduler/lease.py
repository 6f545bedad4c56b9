"""One embedded scheduler per database: a lease row with owner, expiry and heartbeat.

The owner of ``scheduler_lease`` (nothing else writes it). Taking the lease is
one guarded statement: an ``INSERT … ON CONFLICT DO NOTHING`` for the first
scheduler ever, else an ``UPDATE … WHERE`` the lease is free (released, expired,
ours, or held by a process on this host that is certainly dead). Exactly one of
two racing schedulers gets a row back; the other is refused and told who holds
the lease. The holder renews it (a heartbeat) well within its expiry; a
scheduler that stops renewing loses it to the next one. Works the same on
SQLite and PostgreSQL, and needs no PID file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from crm import process
from crm.bulk import insert_ignoring_conflicts, table_of
from crm.db import transaction
from crm.models import SchedulerLease

NAME = "scheduler"
TTL = timedelta(seconds=60)
"""A lease not renewed for this long is free."""
HEARTBEAT = timedelta(seconds=15)
"""How often the holder renews it."""
_LEASE = table_of(SchedulerLease)


@dataclass(frozen=True)
class Holder:
    owner: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    released_at: datetime | None

    def describe(self) -> str:
        return process.describe(self.owner)


class LeaseRefused(Exception):
    """Another scheduler holds the lease on this database."""

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        super().__init__(
            f"another vipcare scheduler ({holder.describe()}) is running on this database: "
            f"its lease was renewed at {_hm(holder.heartbeat_at)} and runs until "
            f"{_hm(holder.expires_at)}; stop it first (only one scheduler may run per database)"
        )


def _hm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def read(engine: Engine) -> Holder | None:
    with transaction(engine) as session:
        row = session.execute(select(_LEASE).where(_LEASE.c.name == NAME)).first()
    if row is None:
        return None
    return Holder(row.owner, row.acquired_at, row.heartbeat_at, row.expires_at, row.released_at)


def acquire(
    engine: Engine,
    owner: str,
    now: datetime,
    *,
    ttl: timedelta = TTL,
    owner_dead: Callable[[str], bool] = process.is_dead,
) -> None:
    """Take the lease for ``owner`` or raise :class:`LeaseRefused` naming the holder."""
    values = {
        "name": NAME,
        "owner": owner,
        "acquired_at": now,
        "heartbeat_at": now,
        "expires_at": now + ttl,
        "released_at": None,
    }
    with transaction(engine) as session:
        if insert_ignoring_conflicts(session, SchedulerLease, [values], returning="name"):
            return
        current = session.execute(select(_LEASE.c.owner).where(_LEASE.c.name == NAME)).scalar()
        free = (
            (_LEASE.c.owner == owner)
            | (_LEASE.c.expires_at <= now)
            | _LEASE.c.released_at.is_not(None)
        )
        if current is not None and owner_dead(current):
            free = free | (_LEASE.c.owner == current)  # still that exact dead owner
        taken = session.execute(
            update(_LEASE).where(_LEASE.c.name == NAME, free).values(**values)
        ).rowcount  # type: ignore[attr-defined]
    if taken != 1:
        holder = read(engine)
        assert holder is not None
        raise LeaseRefused(holder)


def renew(engine: Engine, owner: str, now: datetime, *, ttl: timedelta = TTL) -> bool:
    """The heartbeat: extend our lease; False when it is no longer ours."""
    with transaction(engine) as session:
        changed = session.execute(
            update(_LEASE)
            .where(_LEASE.c.name == NAME, _LEASE.c.owner == owner, _LEASE.c.released_at.is_(None))
            .values(heartbeat_at=now, expires_at=now + ttl)
        ).rowcount  # type: ignore[attr-defined]
    return bool(changed == 1)


def release(engine: Engine, owner: str, now: datetime) -> None:
    """Give the lease up at once (a clean stop), so the next scheduler need not wait."""
    with transaction(engine) as session:
        session.execute(
            update(_LEASE)
            .where(_LEASE.c.name == NAME, _LEASE.c.owner == owner)
            .values(released_at=now, expires_at=now, heartbeat_at=now)
        )
