"""What every CLI command shares: settings, the engine, output and exit codes.

Exit status: 0 success, 1 an error in the input (bad file, unknown id) or a
database or disk that cannot do what was asked (full, read-only, connection lost:
one line naming the database, never a traceback), 2 a usage error (Typer/Click's
own). :func:`input_errors` is the one place that turns exceptions into those exit
codes. Heavy modules (Prefect above all) are imported inside the commands that
need them, never here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from sqlalchemy import Engine

from vipcare.console import console, err_console
from vipcare.settings import Settings, get_settings

if TYPE_CHECKING:
    from rules.live import LiveRules
    from rules.loader import RuleSet

P = ParamSpec("P")
R = TypeVar("R")


class InputError(Exception):
    """A problem with what the user gave us; exits 1 with the message."""


def fail(message: str, code: int = 1) -> NoReturn:
    from notifications.logging import redact_account_sids

    message = redact_account_sids(message)  # errors quoting a Twilio URL hold the secret sid
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def input_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every package's deliberate errors into exit status 1 with a clear message."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from crm.errors import CrmError

        handled: tuple[type[BaseException], ...] = (InputError, CrmError)
        try:
            from rules.errors import RulesError

            handled += (RulesError,)
        except ImportError:  # pragma: no cover - rules package always ships
            pass
        try:
            from notifications.errors import NotificationError

            handled += (NotificationError,)
        except ImportError:  # pragma: no cover
            pass
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except handled as exc:
            from rich.markup import escape

            fail(escape(str(exc)))  # a message quoting "[...]" is text, not console markup
        except SQLAlchemyError as exc:
            fail(outage_line(exc))
        except OSError as exc:
            fail(_os_line(exc))

    return wrapper


def database_where() -> tuple[str, str | None]:
    """(how to name the configured database to a person, its SQLite file if it is one):
    the absolute path of a SQLite file, else the URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from vipcare.settings import redact_url

    url = settings().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return redact_url(url), None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = os.path.abspath(str(parsed.database))
        return path, path
    return redact_url(url), None


def outage_line(exc: BaseException) -> str:
    """A database error as one line naming the configured database (see :func:`vipcare.
    errors.outage`)."""
    from vipcare.errors import outage

    where, path = database_where()
    return "the database " + outage(exc, where, path).line


def _os_line(exc: OSError) -> str:
    """A file or disk error in one line: which file, what happened."""
    import errno

    from vipcare.errors import outage

    name = exc.filename if isinstance(exc.filename, str) else None
    if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return outage(exc, name or "the disk", name).line
    reason = exc.strerror or type(exc).__name__
    return f"{name}: {reason}" if name else f"{type(exc).__name__}: {reason}"


def settings() -> Settings:
    """The settings; a bad ``VIPCARE_*`` value exits 1 naming the variable, no traceback."""
    from pydantic import ValidationError

    from vipcare.settings import SettingsError

    try:
        return get_settings()
    except SettingsError as exc:
        fail(f"bad configuration: {exc}")
    except ValidationError as exc:
        problems = "; ".join(
            f"VIPCARE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        fail(f"bad configuration: {problems}")


def engine(require_schema: bool = True) -> Engine:
    """The configured database; refuses (exit 1) one that ``vipcare init`` has not set up."""
    from sqlalchemy.exc import SQLAlchemyError

    from crm.db import make_engine
    from crm.schema import current_revision, head_revision

    eng = make_engine(settings().database_url)
    if not require_schema:
        return eng
    where, path = database_where()
    if path is not None and not os.path.isfile(path):  # opening it would create an empty file
        fail(f"no vipcare database at {where}; run `vipcare init`")
    try:
        current = current_revision(eng)
    except SQLAlchemyError as exc:
        from vipcare.errors import outage

        fail(f"cannot open the database {outage(exc, where, path).line}")
    if current is None:
        fail(f"no vipcare database at {where} (no vipcare schema in it); run `vipcare init`")
    if current != head_revision():
        fail(f"the database {where} is at schema revision {current}; run `vipcare init` to upgrade")
    return eng


def parse_date(value: str | None, option: str = "--date") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not a date; expected YYYY-MM-DD", code=2)


def parse_instant(value: str | None, option: str = "--at") -> datetime | None:
    """An ISO time; a naive one is read in the operator's time zone."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO 8601 time", code=2)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=settings().tz)
    return parsed.astimezone(UTC)


def parse_day(value: str | None, option: str = "--date") -> date | None:
    """A date, or the words ``today`` / ``yesterday`` / ``tomorrow`` (operator time)."""
    if value is None:
        return None
    from datetime import timedelta

    words = {"today": 0, "yesterday": -1, "tomorrow": 1}
    if value.strip().lower() in words:
        return today_local() + timedelta(days=words[value.strip().lower()])
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not a date; expected YYYY-MM-DD, today or tomorrow", code=2)


def resolve_manager(session: Any, ref: str, option: str = "--manager") -> int:
    """The internal key of a manager id; an unknown or mis-cased id is an input error
    (exit 1) with a suggestion, never an empty list."""
    from sqlalchemy import select

    from crm.models import Manager
    from crm.text import describe, first_invisible
    from rules.errors import did_you_mean

    if (hidden := first_invisible(ref)) is not None:
        raise InputError(
            f"{option}: the manager id has the invisible character {describe(hidden[1])} "
            f"at character {hidden[0]} (expected an id like M00001; retype it)"
        )
    found = session.scalar(select(Manager.id).where(Manager.external_id == ref))
    if found is not None:
        return int(found)
    refs = list(session.scalars(select(Manager.external_id)).all())
    same_letters = [r for r in refs if r.casefold() == ref.casefold()]
    hint = f"did you mean {same_letters[0]!r}?" if same_letters else did_you_mean(ref, refs)
    raise InputError(
        f"{option}: unknown manager {ref!r} (manager ids are case-sensitive); "
        + (hint or "see `vipcare managers list`")
    )


def print_shown(shown: int, total: int, what: str, hint: str = "use --limit") -> None:
    """The line under a list that was cut short: "showing N of M ..."."""
    if total > shown:
        console.print(f"[dim]showing {shown} of {total} {what}; {hint}[/]", highlight=False)


def now_utc() -> datetime:
    """The CLI is the edge of the system: the only place that reads the wall clock."""
    return datetime.now(UTC)


def today_local() -> date:
    return now_utc().astimezone(settings().tz).date()


def live_rules(eng: Engine, *, record: bool = True, warn: bool = True) -> LiveRules:
    """The live rule set (:func:`rules.live.load_live_rules`), each refused file warned on stderr.

    A refused edit never stops a command that runs rules: its last good version runs,
    and the warning names the file, line and column of its first problem.
    """
    from rich.markup import escape

    from rules.live import load_live_rules

    live = load_live_rules(eng, settings().rules_dir, now_utc(), record=record)
    if warn:
        for refused in live.refused:
            err_console.print(
                f"[yellow]warning:[/] {escape(refused.summary())} (`vipcare rules check` lists"
                " every problem)",
                highlight=False,
                soft_wrap=True,
            )
    return live


def live_ruleset(eng: Engine) -> RuleSet:
    """The live rule set to run with; exits 1 with every problem when none can run."""
    return live_rules(eng).require()
