"""Who holds a lease: a process identity that a restart on the same host can prove dead.

A lease row (a message claimed for sending, the scheduler's lease) names its
owner as ``host/pid/start/token``. On another host only the lease's expiry can
free it. On the same host we can do better: if that process is gone, or the pid
now belongs to a newer process (its start time differs), or it is this very
process but the run that took the lease has finished, the lease is dead at
once, so a restart right after a crash does not wait for the expiry.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass

_LIVE_TOKENS: set[str] = set()
_LOCK = threading.Lock()


def _stat(pid: int) -> list[str]:
    """Fields 3… of ``/proc/<pid>/stat`` (Linux), or [] when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return []
    # The command name (field 2) may contain spaces, so split after its ')'.
    return stat.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22), or '' when unknown."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Owner:
    """One holder of leases: this process, plus a token for one run inside it."""

    host: str
    pid: int
    start: str
    token: str

    @property
    def ident(self) -> str:
        return f"{self.host}/{self.pid}/{self.start}/{self.token}"

    def __str__(self) -> str:
        return self.ident


def new_owner() -> Owner:
    """A fresh owner for this process; live until :func:`retire` is called with it."""
    owner = Owner(socket.gethostname()[:120], os.getpid(), _start_ticks(os.getpid()), _token())
    with _LOCK:
        _LIVE_TOKENS.add(owner.token)
    return owner


def retire(owner: Owner) -> None:
    """The run holding ``owner`` has finished: its leftover leases are dead from now on."""
    with _LOCK:
        _LIVE_TOKENS.discard(owner.token)


def _token() -> str:
    return uuid.uuid4().hex[:12]


def parse(ident: str) -> Owner | None:
    parts = ident.split("/")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return Owner(parts[0], int(parts[1]), parts[2], parts[3])


def describe(ident: str | None) -> str:
    """A person-readable owner: ``pid 123 on host db1``."""
    owner = parse(ident or "")
    if owner is None:
        return ident or "unknown owner"
    return f"pid {owner.pid} on host {owner.host}"


def is_dead(ident: str | None) -> bool:
    """True only when the owner certainly no longer runs (same host, process gone or reused).

    Unknown or remote owners are never declared dead here: their lease must expire.
    """
    owner = parse(ident or "")
    if owner is None or owner.host != socket.gethostname()[:120]:
        return False
    if owner.pid == os.getpid():
        if owner.start != _start_ticks(os.getpid()):
            return True
        with _LOCK:
            return owner.token not in _LIVE_TOKENS
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    fields = _stat(owner.pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    current = fields[19] if len(fields) > 19 else ""
    return bool(current and owner.start and current != owner.start)
