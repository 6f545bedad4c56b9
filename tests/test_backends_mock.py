"""The mock SMS/voice backends: recording, delivery reports, failure injection, persistence."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from notifications.backends import get_backend
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from notifications.base import OutgoingMessage, RetryPolicy
from notifications.errors import OptedOutError, PermanentSendError, TransientSendError
from vipcare.settings import Settings

TO = "+8613812345678"
OTHER = "+8613912345678"


def msg(n: int = 1, to: str = TO, channel: str = "sms", body: str = "你好") -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        channel=channel,
        to=to,
        body=body,
        locale="zh-CN",
        attempt_id=f"att-{n}",  # type: ignore[arg-type]
    )


def test_send_records_with_provider_style_ids() -> None:
    sms, voice = MockSMSBackend(), MockVoiceBackend()
    result = sms.send(msg(1))
    call = voice.send(msg(2, channel="voice"))
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.provider_message_id)
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.provider_message_id)
    assert result.status == "queued" and result.provider == "mock"
    assert [r.body for r in sms.sent] == ["你好"]
    assert sms.sent[0].attempt_id == "att-1"
    assert [r.channel for r in voice.sent] == ["voice"]


def test_non_e164_and_wrong_channel_refused_before_provider() -> None:
    sms = MockSMSBackend()
    with pytest.raises(PermanentSendError) as bad:
        sms.send(msg(1, to="13812345678"))
    assert bad.value.code == "invalid_to"
    assert "13812345678" not in str(bad.value)  # masked
    with pytest.raises(PermanentSendError) as wrong:
        sms.send(msg(2, channel="voice"))
    assert wrong.value.code == "wrong_channel"
    assert sms.calls == 0 and sms.sent == []


def test_failing_number_is_permanent_with_code_and_opt_out_is_special() -> None:
    sms = MockSMSBackend()
    sms.fail_number(TO, 21211)
    sms.fail_number(OTHER, "21610")
    with pytest.raises(PermanentSendError) as invalid:
        sms.send(msg(1))
    assert invalid.value.code == "21211"
    assert "invalid 'To' phone number" in invalid.value.reason
    assert invalid.value.provider_response["code"] == 21211
    assert not isinstance(invalid.value, OptedOutError)
    with pytest.raises(OptedOutError) as opted:
        sms.send(msg(2, to=OTHER))
    assert opted.value.code == "21610"
    assert sms.sent == []


def test_fail_next_is_deterministic_and_not_retried_by_default() -> None:
    sms = MockSMSBackend()
    sms.fail_next(2, "timeout")
    for n in (1, 2):
        with pytest.raises(TransientSendError) as exc:
            sms.send(msg(n))
        assert not exc.value.maybe_accepted
    assert sms.send(msg(3)).status == "queued"
    assert sms.calls == 3 and len(sms.sent) == 1


def test_rate_limited_failure_carries_retry_after() -> None:
    sms = MockSMSBackend()
    sms.fail_next(1, "rate_limited")
    with pytest.raises(TransientSendError) as exc:
        sms.send(msg(1))
    assert exc.value.retry_after == 1.0


def test_seeded_share_of_transient_failures_is_reproducible() -> None:
    def outcomes(seed: int) -> list[bool]:
        sms = MockSMSBackend(seed=seed, transient_rate=0.3, timeout_rate=0.1)
        out = []
        for n in range(200):
            try:
                sms.send(msg(n))
                out.append(True)
            except TransientSendError:
                out.append(False)
        return out

    first = outcomes(7)
    assert first == outcomes(7)
    failures = first.count(False)
    assert 50 <= failures <= 110  # about 40% of 200


def test_in_call_retry_reconciles_an_accepted_timeout_instead_of_resending() -> None:
    sleeps: list[float] = []
    sms = MockSMSBackend(
        retry=RetryPolicy(max_attempts=3), sleep=sleeps.append, rng=random.Random(1)
    )
    sms.fail_next(1, "accepted_timeout")
    result = sms.send(msg(1))
    assert len(sms.sent) == 1 and sms.calls == 1
    assert result.provider_message_id == sms.sent[0].sid
    assert len(sleeps) == 1


def test_find_previous_attempt_matches_attempt_id_only() -> None:
    sms = MockSMSBackend()
    sent = sms.send(msg(1))
    found = sms.find_previous_attempt(msg(1))
    assert found is not None and found.provider_message_id == sent.provider_message_id
    assert sms.find_previous_attempt(msg(2)) is None


def test_simulated_delivery_reports() -> None:
    sms = MockSMSBackend()
    sms.undeliverable(OTHER, 30005)
    ok = sms.send(msg(1))
    bad = sms.send(msg(2, to=OTHER))
    reports = {r.provider_message_id: r for r in sms.simulate_delivery()}
    assert reports[ok.provider_message_id].status == "delivered"
    assert reports[bad.provider_message_id].status == "undelivered"
    assert reports[bad.provider_message_id].error_code == "30005"
    assert "unknown handset" in (reports[bad.provider_message_id].reason or "")
    assert sms.simulate_delivery() == []  # settled messages are not reported twice
    with pytest.raises(ValueError):
        sms.report(ok.provider_message_id, "bogus")


def test_file_store_survives_a_killed_process(tmp_path: Path) -> None:
    store = tmp_path / "mock.jsonl"
    code = (
        "import os, signal\n"
        "from notifications.backends.mock import MockSMSBackend\n"
        "from notifications.base import OutgoingMessage\n"
        f"b = MockSMSBackend(store_path={str(store)!r})\n"
        f"b.send(OutgoingMessage(7, 'sms', {TO!r}, 'hi', 'en', 'att-7'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    with store.open("a") as fh:
        fh.write('{"op": "add", "sid": "SMtorn')  # a torn last line is ignored
    backend = MockSMSBackend(store_path=store)
    found = backend.find_previous_attempt(msg(7, body="hi"))
    assert found is not None and found.raw["message_id"] == 7
    assert backend.find_previous_attempt(msg(8)) is None


def test_file_store_status_updates_replay(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    a = MockSMSBackend(store=MockStore(path))
    sid = a.send(msg(1)).provider_message_id
    a.report(sid, "delivered")
    b = MockSMSBackend(store_path=path)
    assert [(r.sid, r.status) for r in b.sent] == [(sid, "delivered")]


def test_get_backend_defaults_to_mock_and_reads_store_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIPCARE_MOCK_STORE", str(tmp_path / "env.jsonl"))
    settings = Settings(_env_file=None).notifications()  # type: ignore[call-arg]
    sms = get_backend(settings, "sms")
    voice = get_backend(settings, "voice", seed=3)
    assert isinstance(sms, MockSMSBackend) and isinstance(voice, MockVoiceBackend)
    sms.send(msg(1))
    assert (tmp_path / "env.jsonl").exists()
    with pytest.raises(Exception, match="unknown channel"):
        get_backend(settings, "fax")
