"""Schemathesis over the workspace's OpenAPI schema: no input gives a 500 or a traceback
(issue 12, "Hostile input, continuously"), on SQLite and PostgreSQL.

The workspace serves no schema (``openapi_url=None``), but ``app.openapi()`` still
describes every route, its path and query parameters. The POST forms are read from the
request (``request.form()``), so the schema lacks their bodies: ``FORM_FIELDS`` adds them
as ``application/x-www-form-urlencoded`` bodies, and a route whose form is not declared
there fails ``test_every_form_route_declares_its_fields``.

Each operation is fuzzed with Schemathesis' positive and negative data (values that
break the schema: wrong types, out-of-range numbers, missing or extra fields), signed
in as a manager and as a supervisor, with the session's CSRF token put into every form
so that the handlers behind the check are reached. A finding is a status of 500 or
more, or a body that shows a traceback.

CI runs ``VIPCARE_SCHEMA_EXAMPLES`` (default 3) derandomised examples per operation,
mode and identity: the same requests every run. More, with fresh randomness:
``VIPCARE_SCHEMA_EXAMPLES=200 VIPCARE_SCHEMA_RANDOM=1 .venv/bin/python -m pytest
tests/test_web_schema_fuzz.py``.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from crm.models import TASK_OUTCOMES
from tests.test_security_routes import route_table, sample_for
from tests.web_support import World, csrf_of, sign_in
from vipcare.web.i18n import LOCALES

pytest_plugins = ["tests.web_support"]  # world, cheap_argon2

EXAMPLES = int(os.environ.get("VIPCARE_SCHEMA_EXAMPLES", "3"))
RANDOM = os.environ.get("VIPCARE_SCHEMA_RANDOM", "") not in ("", "0")

TEXT: dict[str, Any] = {"type": "string"}
DAY: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date"}, TEXT]}
SCORE: dict[str, Any] = {"anyOf": [{"enum": ["1", "2", "3", "4", "5"]}, TEXT]}


def one_of(values: Any) -> dict[str, Any]:
    return {"anyOf": [{"enum": sorted(values)}, TEXT]}


# The fields each POST form reads (besides csrf_token, which the test fills in).
FORM_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "/login": {"login": one_of(["M1", "M2", "S1"]), "password": TEXT, "next": TEXT},
    "/logout": {},
    "/tasks/{task_id}/complete": {
        "outcome": one_of(TASK_OUTCOMES),
        "satisfaction": SCORE,
        "note": TEXT,
    },
    "/tasks/{task_id}/reschedule": {"to": DAY, "reason": TEXT},
    "/qa/draw": {"day": DAY},
    "/qa/{sample_id}": {
        "accuracy": SCORE,
        "courtesy": SCORE,
        "proactive_offer": SCORE,
        "note": TEXT,
    },
    "/settings": {"locale": one_of(LOCALES), "timezone": one_of(["Asia/Shanghai", "UTC"])},
}


def with_forms(raw: dict[str, Any]) -> dict[str, Any]:
    """The app's schema plus a form body for every POST operation."""
    schema = copy.deepcopy(raw)
    for path, operations in schema["paths"].items():
        post = operations.get("post")
        if post is None or path not in FORM_FIELDS:
            continue
        post["requestBody"] = {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": FORM_FIELDS[path],
                        "additionalProperties": False,
                    }
                }
            },
        }
    return schema


def post_paths(raw: dict[str, Any]) -> set[str]:
    return {path for path, ops in raw["paths"].items() if "post" in ops}


class Session:
    """A signed-in TestClient that signs in again when a fuzzed request signed it out."""

    def __init__(self, app: Any, login: str) -> None:
        self.app = app
        self.login = login
        self.client = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
        self.token = ""
        self.refresh()

    def refresh(self) -> None:
        self.client.cookies.clear()
        assert sign_in(self.client, self.login).status_code == 303
        self.token = csrf_of(self.client.get("/settings").text)

    def send(self, case: Any) -> Any:
        if "vipcare_session" not in self.client.cookies:
            self.refresh()
        body = case.body
        if case.path == "/login":  # the sign-in form's own double-submit token
            body = {**(body if isinstance(body, dict) else {}), "csrf_token": self._login_token()}
        elif case.method == "POST" and isinstance(body, dict):
            body = {**body, "csrf_token": self.token}
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "params": kwargs.get("params"),
            "headers": {
                k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "cookie"
            },
            "follow_redirects": False,
        }
        if isinstance(body, dict):
            request["data"] = body
        elif body is not None and not isinstance(body, type(case.operation)):
            request["content"] = str(body).encode()
        return self.client.request(**request)

    def _login_token(self) -> str:
        return csrf_of(self.client.get("/login").text)


def findings_of(response: Any) -> str | None:
    text = response.content.decode("utf-8", "replace")
    if response.status_code >= 500:
        return f"{response.status_code}"
    if "Traceback" in text or 'File "' in text:
        return "a traceback in the body"
    return None


def test_every_form_route_declares_its_fields(world: World) -> None:
    raw = world.app().openapi()
    assert post_paths(raw) == set(FORM_FIELDS)


@pytest.mark.slow
def test_no_generated_request_gets_a_500_or_a_traceback(world: World) -> None:
    app = world.app()
    schema = schemathesis.openapi.from_dict(with_forms(app.openapi()))
    sessions = [Session(app, "M1"), Session(app, "S1")]
    table = route_table(app)
    statuses: Counter[int] = Counter()
    found: list[str] = []
    no_negative: set[str] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    def check(case: Any, response: Any) -> None:
        statuses[response.status_code] += 1
        problem = findings_of(response)
        if problem:
            found.append(f"{case.method} {case.formatted_path} {problem}: {case!r}")

    def fuzz(operation: Any, mode: GenerationMode, session: Session) -> None:
        @settings(
            max_examples=EXAMPLES,
            derandomize=not RANDOM,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            before = len(found)
            check(case, session.send(case))
            assert len(found) == before, found[-1]

        try:
            run()
        except Unsatisfiable:  # nothing to break: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE, operation.label
            no_negative.add(operation.label)

    coverage = 0
    for operation in operations:
        # Schemathesis' coverage phase first: the boundaries of every parameter, wrong
        # types, missing and unexpected fields, other methods (deterministic).
        config = schema.config.generation_for(operation=operation)
        # As whoever can reach the handler: the supervisor for supervisor-only routes.
        access = table.get((operation.method.upper(), operation.path), "viewer")
        session = sessions[1] if access == "supervisor" else sessions[0]
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=config
        ):
            coverage += 1
            check(case, session.send(case))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for session in sessions:
                fuzz(operation, mode, session)
    total = sum(statuses.values())
    print(
        f"schemathesis: {len(operations)} operations, {total} requests ({coverage} coverage"
        f" cases, {total - coverage} generated), statuses "
        f"{dict(sorted(statuses.items()))}, findings {len(found)}; no negative data for"
        f" {len(no_negative)} operations without parameters"
    )
    assert found == []
    assert total >= len(operations) * 2 * len(sessions)


# The inputs the fuzzing found before they were fixed (issue 12): each gave a 500.
FOUND = [
    ("M1", "GET", "/tasks/99999999999999999999", None),  # SQLite OverflowError
    ("M1", "GET", "/tasks/9223372036854775808", None),  # PostgreSQL bigint out of range
    ("M1", "GET", "/tasks?page=99999999999999999999", None),  # the offset overflowed
    ("S1", "GET", "/qa?page=99999999999999999999", None),
    ("S1", "GET", "/qa/99999999999999999999", None),
    ("M1", "GET", "/customers/a%00b", None),  # PostgreSQL: NUL in a text parameter
    ("S1", "GET", "/day?manager=%00", None),
    ("S1", "GET", "/tasks?manager=%00", None),
    ("S1", "GET", "/tasks.csv?manager=%00", None),
    ("S1", "GET", "/qa?manager=%00", None),
    ("S1", "GET", "/qa.csv?manager=%00", None),
    ("M1", "POST", "/tasks/{A}/complete", {"outcome": "reached", "note": "a\x00b"}),
    ("M1", "POST", "/tasks/{A}/reschedule", {"to": "2026-11-25", "reason": "ill\x00"}),
    (None, "POST", "/login", {"login": "M\x001", "password": "whatever"}),
    # '¹'.isdigit() is true, int('¹') raises: a score that passed the check crashed
    ("M1", "POST", "/tasks/{A}/complete", {"outcome": "reached", "satisfaction": "¹"}),
    ("S1", "POST", "/qa/{sample}", {"accuracy": "¹", "courtesy": "5", "proactive_offer": "5"}),
]


@pytest.mark.parametrize(("login", "method", "path", "form"), FOUND)
def test_what_the_fuzzing_found_is_a_clear_400(
    world: World, login: str | None, method: str, path: str, form: dict[str, str] | None
) -> None:
    from tests.db_snapshot import snapshot

    app = world.app()
    client = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    if login is not None:
        assert sign_in(client, login).status_code == 303
    path = path.replace("{A}", str(world.tasks["A"]))
    if "{sample}" in path:
        path = path.replace("{sample}", str(sample_for(world)))
    before = snapshot(world.engine)
    if method == "GET":
        response = client.get(path, follow_redirects=False)
    else:
        page = client.get("/settings" if login else "/login").text
        data = {**(form or {}), "csrf_token": csrf_of(page)}
        response = client.post(path, data=data, follow_redirects=False)
    assert response.status_code == 400, response.text[:300]
    assert "Traceback" not in response.text
    assert snapshot(world.engine) == before
