"""Templates that try to exhaust memory, time or the stack end in a clear error (defect 8).

Before: ``{{ 9**(9**9) }}`` hung ``rules check``; ``{{ '{:>999999999}'.format(1) }}``
passed the check and took ~3 GB per render; ``'a'*100000000000``, a recursive
macro or 300 nested levels ended in raw MemoryError / RecursionError tracebacks.
Every case here runs in bounded memory and time and raises TemplateRenderError
(or is a rule-check problem at file:line:col).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from test_rules_loader import rules_copy
from typer.testing import CliRunner

from rules import load_rules
from rules.errors import RulesValidationError, TemplateRenderError
from rules.templates import (
    MAX_CALL_DEPTH,
    MAX_OUTPUT,
    MAX_TEMPLATE_CHARS,
    RenderBudget,
    render_text,
)
from vipcare.cli import app

VARS = {"name": "Wang Fang", "tier": "gold"}


def refused(text: str, *words: str, budget: RenderBudget | None = None) -> str:
    with pytest.raises(TemplateRenderError) as caught:
        if budget is None:
            render_text(text, VARS)
        else:
            render_text(text, VARS, budget=budget)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert len(message) < 400
    return message


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("{{ 9**(9**9) }}", "exponent"),
        ("{{ 2**100000 }}", "exponent"),
        ("{{ (2**4000) * (2**4000) }}", "number"),
        ("{{ 'a'*100000000000 }}", "repeat"),
        ("{{ [1]*100000000000 }}", "repeat"),
        ("{{ 100000000000 * 'a' }}", "repeat"),
        ("{% set s = 'x'*9000 %}{{ s + s }}", "longer"),
        ("{% set s = 'x'*9000 %}{% set s = s ~ s %}{{ s|length }}", "longer"),
        ("{{ '{:>999999999}'.format(1) }}", "width"),
        ("{{ '{:.999999999f}'.format(1.5) }}", "width"),
        ("{{ '{:{w}}'.format(1, w=999999999) }}", "width"),
        ("{{ '{0:{1}}'.format(1, 999999999) }}", "width"),
        ("{{ '{x:>999999999}'.format_map({'x': 1}) }}", "width"),
        ("{{ '%999999999d' % 1 }}", "width"),
        ("{{ '%*d' % (999999999, 1) }}", "width"),
        ("{{ '%.999999999f' % 1.5 }}", "width"),
        ("{{ '%999999999d'|format(1) }}", "width"),
        ("{{ 'x'.ljust(999999999) }}", "long"),
        ("{{ 'x'.center(999999999) }}", "long"),
        ("{{ '0'.zfill(999999999) }}", "long"),
        ("{{ 'a\tb'.expandtabs(999999999) }}", "unsafe"),  # not a method templates may call
        ("{{ ('x'*9000).replace('x', 'yyyyyyyyyy') }}", "long"),
        ("{{ range(100000)|join('x'*9000) }}", "long"),
        ("{{ ('x'*9000)|replace('x', 'yyyyyyyyyy') }}", "long"),
        ("{{ 'x'*5000 ~ 'x'*5000 ~ 'x'*5000 }}", "longer"),
        ("{% for i in range(100000) %}xxxxxxxx{% endfor %}", "output"),
    ],
)
def test_resource_bombs_are_refused(text: str, word: str) -> None:
    refused(text, word)


@pytest.mark.parametrize(
    "text",
    [
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% macro f(n) %}x{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% for x in [[[1]]] recursive %}{{ loop([x]) }}{% endfor %}",
    ],
)
def test_unbounded_recursion_is_refused(text: str) -> None:
    refused(text, f"nested deeper than {MAX_CALL_DEPTH}")


@pytest.mark.parametrize(
    "text",
    [
        "{% if true %}" * 300 + "x" + "{% endif %}" * 300,
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "[" * 300 + "]" * 300 + " }}",
        "{{ " + "not " * 3000 + "1 }}",
        "{{ " + "- " * 3000 + "1 }}",
        "{{ 1" + " + 1" * 3000 + " }}",
        "{{ name" + "|upper" * 3000 + " }}",
        "{% for a in x %}" * 300 + "{% endfor %}" * 300,
    ],
)
def test_deep_nesting_is_refused_without_a_recursion_traceback(text: str) -> None:
    message = refused(text)
    assert "nested" in message or "complex" in message


def test_a_template_longer_than_the_limit_is_refused() -> None:
    refused("{{ name }}" + "x" * MAX_TEMPLATE_CHARS, f"longer than {MAX_TEMPLATE_CHARS:,}")


def test_a_slow_render_stops_at_the_deadline() -> None:
    """Deterministic: the injected clock moves 10 ms per look, the budget is 1 s."""
    ticks = itertools.count()
    budget = RenderBudget(seconds=1.0, clock=lambda: next(ticks) * 0.01)
    text = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    refused(text, "took longer than 1", budget=budget)
    # The clock is consulted at every loop step, so even empty nested loops stop early.
    assert next(ticks) < 200


def test_tight_loops_without_calls_still_meet_the_deadline() -> None:
    ticks = itertools.count()
    budget = RenderBudget(seconds=1.0, clock=lambda: next(ticks) * 0.01)
    text = "{% set s = 'x'*9000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    refused(text, "took longer than 1", budget=budget)


def test_ordinary_templates_render_unchanged() -> None:
    assert (
        render_text("Dear {{ name }}, tier {{ tier|upper }}.", VARS) == "Dear Wang Fang, tier GOLD."
    )
    assert render_text("{{ '%.2f'|format(3.14159) }} {{ '{:>5}'.format('ab') }}", VARS) == (
        "3.14    ab"
    )
    assert render_text("{% for c in name %}{{ c }}{% endfor %}", VARS) == "Wang Fang"
    assert render_text("{{ 2**10 }} {{ 'ab'*3 }} {{ name|replace('Wang', 'W.') }}", VARS) == (
        "1024 ababab W. Fang"
    )
    assert len(render_text("{{ 'x' * " + str(MAX_OUTPUT) + " }}", VARS)) == MAX_OUTPUT


def test_the_filters_a_template_may_use_are_a_short_list() -> None:
    message = refused("{{ name|center(999999999) }}", "no filter named 'center'")
    assert "upper" in message  # the error lists what is available
    refused("{{ [1,2]|batch(999999999, 'x')|list }}", "no filter named 'batch'")


@pytest.mark.parametrize(
    "text",
    [
        "{{ 9**(9**9) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ 'a'*100000000000 }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% if true %}" * 300 + "{% endif %}" * 300,
    ],
)
def test_rules_check_reports_template_bombs_at_file_line_col(tmp_path: Path, text: str) -> None:
    directory = rules_copy(tmp_path)
    path = directory / "grace_credit.yaml"  # a service template: no unsubscribe wording needed
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(i for i, t in enumerate(lines, start=1) if t.strip().startswith("en:"))
    indent = lines[line - 1].split("en:")[0]
    lines[line - 1] = f"{indent}en: {json.dumps(text)}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RulesValidationError) as caught:
        load_rules(directory)
    [issue] = caught.value.issues
    assert issue.file == str(path) and issue.line == line
    assert "template" in issue.message
    result = CliRunner().invoke(app, ["rules", "check", str(directory)])
    assert result.exit_code == 1
    assert f"{path}:{line}:" in result.stdout
    assert "Traceback" not in result.output
