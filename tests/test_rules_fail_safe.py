"""Rules fail safe (issue 16, defects 5, 16 and 17), from the user's side.

A rule edit that does not load is refused and reported; the last good version of
that file keeps running, also in a new process, and every other file runs as it
is: a broken ``birthday.yaml`` stops neither the grace credit, nor the pre-call
notices, nor the dispatcher. ``vipcare status`` always reports (exit 3) with the
file:line of each problem. The shipped files validate with a YAML 1.1 reader.

The CLI runs in-process (Typer's runner) or as real processes where a restart is
the point; the scheduler is APScheduler really running, on an injected clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from jsonschema import Draft202012Validator
from sqlalchemy import Engine, func, select
from test_dispatcher_support import (
    FakeClock,
    add_customer,
    add_message,
    add_task,
    connect,
    seed_simple,
    statuses,
)
from test_scheduler import Clock, _stop, _wait_for, job_runs, make_settings
from typer.testing import CliRunner

from crm.models import AuditLog, OutboundMessage
from notifications.backends.mock import MockSMSBackend, MockStore
from rules import load_rules
from tests.builders import Crm, all_day_rules
from vipcare.cli import app
from vipcare.scheduler import daemon
from vipcare.scheduler.schedule import DISPATCH
from vipcare.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "rules"
TZ = "Asia/Shanghai"

BROKEN_AUDIENCE = ("    - tier: {gte: gold}\n", "    - teir: {gte: gold}\n")
"""A typo in birthday.yaml's audience: one problem, at the field, with a suggestion."""

NEW_BROKEN_JOURNEY = """\
journey: anniversary
kind: generic
description: Thank VIPs on the day they joined
audience:
  all:
    - staus: active
trigger:
  date_field: joined_on
limits:
  once_per: yearly
actions:
  - send_sms: {template: thanks}
templates:
  thanks:
    category: service
    text:
      zh-CN: "感谢您的陪伴"
      en: "Thank you for being with us"
"""
"""A new journey that never loaded: two problems (line 6 and line 10), nothing to fall back on."""


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``text`` in ``path``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip() in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def break_birthday(rules_dir: Path) -> tuple[str, str]:
    """Put a typo in birthday.yaml; returns (the last good sha256, the problem's location)."""
    path = rules_dir / "birthday.yaml"
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    where = f"{path}:{line_of(path, BROKEN_AUDIENCE[0])}:7"
    text = path.read_text(encoding="utf-8")
    assert BROKEN_AUDIENCE[0] in text
    path.write_text(text.replace(BROKEN_AUDIENCE[0], BROKEN_AUDIENCE[1]), encoding="utf-8")
    return good, where


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return all_day_rules(tmp_path / "rules")


@pytest.fixture
def cli(db_url: str, rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("VIPCARE_DATABASE_URL", db_url)
    monkeypatch.setenv("VIPCARE_RULES_DIR", str(rules_dir))
    monkeypatch.setenv("VIPCARE_TIMEZONE", TZ)
    monkeypatch.setenv("VIPCARE_SEND_RATE_PER_SECOND", "1000")
    monkeypatch.delenv("VIPCARE_MOCK_STORE", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def env_for(db_url: str, rules_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIPCARE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        VIPCARE_DATABASE_URL=db_url,
        VIPCARE_RULES_DIR=str(rules_dir),
        VIPCARE_TIMEZONE=TZ,
        VIPCARE_SEND_RATE_PER_SECOND="1000",
        **extra,
    )
    return env


def vipcare(args: list[str], env: dict[str, str], timeout: float = 300) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "vipcare", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def accept_current_rules(cli: CliRunner) -> None:
    """What the scheduler's dispatcher does every few minutes: run with the rules as they are."""
    out = cli.invoke(app, ["dispatch", "--json"])
    assert out.exit_code == 0, out.output


def audit_count(engine: Engine, action: str | None = None) -> int:
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(AuditLog)
        if action is not None:
            stmt = stmt.where(AuditLog.action == action)
        return int(conn.execute(stmt).scalar_one())


# -- defect 5: one broken file stops all sending ---------------------------------------


@pytest.mark.slow
def test_a_broken_birthday_file_stops_neither_grace_nor_precall_notices_nor_dispatch(
    cli: CliRunner, engine: Engine, db_url: str, rules_dir: Path, prefect_harness: None
) -> None:
    from prefect.settings import PREFECT_API_URL

    today = datetime.now(ZoneInfo(TZ)).date()
    crm = Crm(engine)
    crm.manager("M1", capacity=20)
    crm.customer("G1", tier="gold", balance=Decimal("-5.00"), birthday=None, last_contact_on=today)
    crm.customer(
        "B1", tier="gold", birthday=date(1980, today.month, today.day), last_contact_on=today
    )
    waiting = crm.customer("P1", tier="gold", birthday=None, last_contact_on=today)
    with connect(engine) as conn:  # a call planned yesterday, still waiting for its notice
        add_task(conn, waiting, None, datetime.now(UTC) - timedelta(days=1))
    accept_current_rules(cli)  # the set that loaded cleanly, kept in the database
    good_birthday, where = break_birthday(rules_dir)
    anniversary = rules_dir / "anniversary.yaml"
    anniversary.write_text(NEW_BROKEN_JOURNEY, encoding="utf-8")

    # A new process: it has only the files and the database to go on.
    env = env_for(db_url, rules_dir, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    run = vipcare(["run", "--json"], env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    decided = {j["journey"]: j.get("decided", 0) for j in result["journeys"]}
    assert decided["grace_credit"] == 1 and decided["precall_notice"] == 1
    assert decided["birthday"] == 1  # on its last good version
    assert result["rules"]["stale_journeys"] == ["birthday"]
    assert result["rules"]["stopped_journeys"] == ["anniversary"]
    assert f"{where}: unknown field 'teir'" in run.stderr and "(did you mean 'tier'?)" in run.stderr
    assert "journey birthday runs on its last good version" in run.stderr

    out = cli.invoke(app, ["dispatch", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["sent"] == 3
    with engine.connect() as conn:
        sent = {
            r.journey: r
            for r in conn.execute(
                select(OutboundMessage.journey, OutboundMessage.status, OutboundMessage.rule_hash)
            )
        }
    assert {j: r.status for j, r in sent.items()} == {
        "grace_credit": "sent",
        "birthday": "sent",
        "precall_notice": "sent",
    }
    assert sent["birthday"].rule_hash == good_birthday  # the last good text, traceably

    # The journey with nothing to fall back on did not run: recorded with every problem.
    (failed,) = [r for r in job_runs(engine, "journey") if r.name == "anniversary"]
    assert failed.status == "failed" and failed.care_day == today
    for problem in (f"{anniversary}:6:7: unknown field 'staus'", f"{anniversary}:10:13: "):
        assert problem in failed.error
    assert "journey anniversary is not running" in failed.error
    only = cli.invoke(app, ["run", "--journey", "anniversary", "--dry-run"])
    assert only.exit_code == 1
    assert f"--journey anniversary cannot run: {anniversary} was refused (2 problems)" in (
        only.output.replace("\n", "")
    )


def test_a_broken_contact_policy_keeps_the_last_good_policy_in_force(
    cli: CliRunner, engine: Engine, rules_dir: Path, now: datetime
) -> None:
    policy = rules_dir / "contact_policy.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text.replace("service:   {per_day: 3,", "service:   {per_day: 1,"), "utf-8")
    accept_current_rules(cli)  # its last good version: one service text a day
    policy.write_text(text.replace("send_window:", "send_window: [", 1), encoding="utf-8")
    with connect(engine) as conn:
        customer = add_customer(conn, "S1", 1)
        for n in (1, 2):
            add_message(conn, customer, now, n=1, occurrence=f"o{n}")
    out = cli.invoke(app, ["dispatch", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    # The last good cap (1 a day), not the edit and not a default (the shipped 3 would send both).
    assert (summary["sent"], summary["suppressed_reasons"]) == (1, {"cap_day": 1})
    assert (
        f"{policy}:" in out.stderr and "the last good contact policy stays in force" in out.stderr
    )
    status = cli.invoke(app, ["status", "--json"])
    assert status.exit_code == 3
    report = json.loads(status.stdout)
    assert any(
        a.startswith(f"{policy} was refused: {policy}:")
        and a.endswith(")")
        and "the last good contact policy stays in force (sha256 " in a
        for a in report["attention"]
    ), report["attention"]


# -- defect 16: status goes blind; job errors lose the location --------------------------


def test_status_reports_a_refused_file_with_its_line_and_the_last_good_version(
    cli: CliRunner, engine: Engine, db_url: str, rules_dir: Path
) -> None:
    accept_current_rules(cli)
    good, where = break_birthday(rules_dir)
    before = (audit_count(engine), job_runs(engine))
    env = env_for(db_url, rules_dir)
    out = vipcare(["status", "--json"], env)
    assert out.returncode == 3, out.stderr  # needs attention, not "cannot read the database"
    report = json.loads(out.stdout)
    assert report["healthy"] is False
    (item,) = [a for a in report["attention"] if "birthday.yaml" in a]
    assert item.startswith(f"{rules_dir / 'birthday.yaml'} was refused: {where}: unknown field")
    assert f"journey birthday runs on its last good version (sha256 {good[:12]}, accepted " in item
    rules = report["rules"]
    assert rules["stale_journeys"] == ["birthday"] and rules["stopped_journeys"] == []
    (refused,) = rules["refused"]
    assert refused["running"] == "last_good" and refused["running_sha256"] == good
    assert [p.split(": ", 1)[0] for p in refused["problems"]] == [where]
    states = {f["rule_id"]: f["state"] for f in rules["files"]}
    assert states.pop("birthday") == "last_good" and set(states.values()) == {"current"}

    table = vipcare(["status"], {**env, "COLUMNS": "300"})
    assert table.returncode == 3
    assert table.stdout.startswith("needs attention:")
    assert f"  {where}: unknown field 'teir'" in table.stdout
    assert "last good version" in table.stdout
    assert (audit_count(engine), job_runs(engine)) == before  # status only reads


def test_status_and_the_scheduler_when_no_rule_set_ever_loaded(
    engine: Engine, db_url: str, rules_dir: Path
) -> None:
    policy = rules_dir / "contact_policy.yaml"
    policy.write_text("send_window: [\n", encoding="utf-8")  # never accepted on this database
    env = env_for(db_url, rules_dir)
    out = vipcare(["status", "--json"], env)
    assert out.returncode == 3, out.stderr
    report = json.loads(out.stdout)
    (item,) = report["attention"]
    assert item.startswith(f"{policy} was refused: {policy}:2:1: YAML syntax error")
    assert item.endswith("no contact policy has ever loaded: nothing can run")
    for command in (["scheduler"], ["dispatch"]):
        refused = vipcare(command, env)
        assert refused.returncode == 1
        (line,) = refused.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: no rule set can run: ") and f"{policy}:2:1: " in line


@pytest.fixture
def scheduler_thread(engine: Engine) -> Iterator[Any]:
    """``daemon.run`` in a thread on an injected clock, stopped after the test."""
    started: dict[str, Any] = {}

    def start(settings: Any, clock: Clock, **options: Any) -> Any:
        ready = threading.Event()
        stop = threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                daemon.run(
                    settings,
                    selected=[DISPATCH],
                    clock=clock,
                    engine=engine,
                    install_signals=False,
                    stop=stop,
                    on_ready=lambda s: (started.update(scheduler=s), ready.set()),
                    **options,
                )
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        assert ready.wait(60), "the scheduler did not start"
        if failure:
            raise failure[0]
        started.update(thread=thread, stop=stop)
        return started["scheduler"]

    yield start
    if "stop" in started:
        started["stop"].set()
        started["thread"].join(60)
        assert not started["thread"].is_alive()


def _executions(scheduler: Any, count: int) -> threading.Event:
    from apscheduler.events import EVENT_JOB_EXECUTED

    seen: list[str] = []
    done = threading.Event()

    def listen(event: Any) -> None:
        if event.job_id.startswith(DISPATCH):
            seen.append(event.job_id)
            if len(seen) >= count:
                done.set()

    scheduler.add_listener(listen, EVENT_JOB_EXECUTED)
    return done


def test_the_running_scheduler_keeps_the_last_good_rules_when_a_file_breaks(
    engine: Engine, db_url: str, rules_dir: Path, now: datetime, scheduler_thread: Any
) -> None:
    sms = MockSMSBackend(store=MockStore())
    fake = FakeClock()
    clock = Clock(now + timedelta(hours=1))
    scheduler = scheduler_thread(
        make_settings(db_url, rules_dir),
        clock,
        dispatch_options={"backends": {"sms": sms}, "sleep": fake.sleep, "clock": fake},
    )
    first = _executions(scheduler, 1)
    assert first.wait(60) or job_runs(engine, "dispatch")  # start-up run: the set is accepted
    break_birthday(rules_dir)
    ids = seed_simple(engine, now, 3)
    later = _executions(scheduler, 1)
    scheduler.modify_job(DISPATCH, next_run_time=datetime.now(UTC))  # the cron fires now
    assert later.wait(60)
    last = job_runs(engine, "dispatch")[-1]
    assert (last.status, last.error, last.details["sent"]) == ("succeeded", None, 3)
    assert last.details["rules_refused"] == [str(rules_dir / "birthday.yaml")]
    assert sorted(r.message_id for r in sms.sent) == sorted(ids)
    assert set(statuses(engine).values()) == {"sent"}


def test_a_job_that_cannot_get_rules_records_every_located_problem(
    engine: Engine, db_url: str, rules_dir: Path, now: datetime, scheduler_thread: Any
) -> None:
    """With no rule set that can run at all, the job fails with the file:line of each problem."""
    policy = rules_dir / "contact_policy.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(
        text.replace('start: "00:00"', 'start: "25:00"').replace("per_day: 3", "per_day: lots"),
        encoding="utf-8",
    )
    lines = [line_of(policy, 'start: "25:00"'), line_of(policy, "per_day: lots")]
    scheduler = scheduler_thread(make_settings(db_url, rules_dir), Clock(now))
    assert _executions(scheduler, 1).wait(60) or job_runs(engine, "dispatch")
    (run,) = job_runs(engine, "dispatch")
    assert run.status == "failed"
    assert run.error.startswith("NoLiveRules: no rule set can run: ")
    for line in lines:
        assert f"{policy}:{line}:" in run.error, run.error


def test_a_scheduler_restarted_with_a_broken_file_starts_and_runs_the_last_good_set(
    cli: CliRunner, engine: Engine, db_url: str, rules_dir: Path, now: datetime, tmp_path: Path
) -> None:
    accept_current_rules(cli)  # an earlier process accepted the set
    _good, where = break_birthday(rules_dir)
    ids = seed_simple(engine, now, 3)
    env = env_for(db_url, rules_dir, VIPCARE_MOCK_STORE=str(tmp_path / "provider.jsonl"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vipcare", "scheduler", "--job", "dispatch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        log = _wait_for(proc, "dispatch: done")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    log += err.decode()
    assert proc.returncode == 0, log
    assert "scheduler running" in log
    assert f"{where}: unknown field 'teir'" in log
    assert "journey birthday runs on its last good version" in log
    (run,) = job_runs(engine, "dispatch")
    assert (run.status, run.details["sent"]) == ("succeeded", 3)
    sent = [r.message_id for r in MockStore(tmp_path / "provider.jsonl").records()]
    assert sorted(sent) == sorted(ids)


# -- defect 17: `on:` is `true` to YAML 1.1 readers ------------------------------------


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_rule_file_passes_a_yaml_1_1_json_schema_check(path: Path) -> None:
    """What an editor or linter does: PyYAML (YAML 1.1), then the shipped JSON Schema."""
    schema = json.loads((SHIPPED / "schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: e.path)
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_older_on_key_is_still_read_with_a_warning_at_its_line(
    cli: CliRunner, rules_dir: Path
) -> None:
    event = rules_dir / "club_event.yaml"
    text = event.read_text(encoding="utf-8")
    assert "  on_date: " in text
    event.write_text(text.replace("  on_date: ", "  on: "), encoding="utf-8")
    line = line_of(event, '  on: "2026-12-20"')
    ruleset = load_rules(rules_dir)
    assert ruleset.journeys["club_event"].trigger.on_date == "2026-12-20"  # type: ignore[attr-defined]
    out = cli.invoke(app, ["rules", "check", str(rules_dir)])
    assert out.exit_code == 0, out.output
    assert f"{event}:{line}:3: warning: the key on: is read as true by YAML 1.1 tools" in out.stdout
    assert "(rename on: to on_date:)" in out.stdout
    both = text.replace("  on_date: ", '  on: "12-20"\n  on_date: ')
    event.write_text(both, encoding="utf-8")
    refused = cli.invoke(app, ["rules", "check", str(rules_dir)])
    assert refused.exit_code == 1
    assert f"{event}:{line}:3: both on: and on_date: are given" in refused.stdout


# -- the live set itself: recorded once, restored, folder missing, file removed ------------


def test_each_change_is_recorded_and_audited_once_even_by_two_processes(
    engine: Engine, rules_dir: Path, now: datetime
) -> None:
    from crm.audit import verify
    from crm.db import transaction
    from crm.models import RuleFile
    from rules.live import clear_cache, load_live_rules

    live = load_live_rules(engine, rules_dir, now)
    assert live.healthy and audit_count(engine, "rules.accepted") == 1
    clear_cache()  # another process: same files, same database
    load_live_rules(engine, rules_dir, now + timedelta(minutes=5))
    assert audit_count(engine, "rules.accepted") == 1

    good, _where = break_birthday(rules_dir)
    for minutes in (10, 15):  # two processes see the same refused edit
        clear_cache()
        live = load_live_rules(engine, rules_dir, now + timedelta(minutes=minutes))
        assert live.stale_journeys == ["birthday"]
        assert live.require().journeys["birthday"].content_hash == good
    assert audit_count(engine, "rules.refused") == 1

    path = rules_dir / "birthday.yaml"
    path.write_text(
        path.read_text("utf-8").replace(BROKEN_AUDIENCE[1], BROKEN_AUDIENCE[0]), "utf-8"
    )
    live = load_live_rules(engine, rules_dir, now + timedelta(minutes=20))  # back as it was
    assert live.healthy and audit_count(engine, "rules.accepted") == 2
    with engine.connect() as conn:
        row = conn.execute(select(RuleFile).where(RuleFile.name == "birthday")).one()
    assert (row.sha256, row.refused_sha256) == (good, None)

    (rules_dir / "club_event.yaml").unlink()  # a journey removed on purpose
    live = load_live_rules(engine, rules_dir, now + timedelta(minutes=25))
    assert "club_event" not in live.require().journeys and live.healthy
    assert audit_count(engine, "rules.accepted") == 3
    with transaction(engine) as session:
        assert verify(session).ok


def test_a_missing_rules_folder_keeps_the_whole_last_good_set(
    engine: Engine, rules_dir: Path, tmp_path: Path, now: datetime
) -> None:
    from crm.models import RuleFile
    from rules.live import load_live_rules

    first = load_live_rules(engine, rules_dir, now).require()
    live = load_live_rules(engine, tmp_path / "no-such-folder", now)
    assert sorted(live.require().journeys) == sorted(first.journeys)
    assert live.require().contact_policy.content_hash == first.contact_policy.content_hash
    (item,) = live.attention()
    assert "the rules folder does not exist" in item
    assert item.endswith("the last good rule set keeps running")
    with engine.connect() as conn:  # nothing was removed from the stored set
        assert conn.execute(select(func.count()).select_from(RuleFile)).scalar_one() == len(
            first.files
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    live = load_live_rules(engine, empty, now)  # a folder without contact_policy.yaml
    assert sorted(live.require().journeys) == sorted(first.journeys)
    assert "missing contact_policy.yaml" in live.attention()[0]


def test_a_database_emptied_since_the_last_read_gets_the_rule_files_recorded_again(
    engine: Engine,
) -> None:
    """The process's cache never stands in for a record the database no longer has.

    Found in the suite: a cache entry keyed on the state before the write also matched
    the database after it was emptied, so a later process found no rule files and wrote
    (and waited for) the acceptance itself.
    """
    from sqlalchemy import delete

    from crm.db import transaction
    from crm.models import RuleFile
    from rules.live import load_live_rules

    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    load_live_rules(engine, ROOT / "rules", at)
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(RuleFile))
        s.execute(delete(RuleFile))
    load_live_rules(engine, ROOT / "rules", at)
    with transaction(engine) as s:
        stored = s.scalar(select(func.count()).select_from(RuleFile))
    assert stored == len(list((ROOT / "rules").glob("*.yaml")))
