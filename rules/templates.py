"""Message templates: sandboxed Jinja2 with only the documented variables, within limits.

Rule files are edited by people, not programmers, so templates run in Jinja2's
immutable sandbox (no attribute games, no mutation) with ``StrictUndefined`` (a
missing variable is an error, never an empty gap in a customer's SMS), and
within the resource limits of :mod:`rules.template_limits` (size, nesting,
numbers, repetition, format widths, output, loop steps, recursion and a render
deadline). Every failure is a :class:`TemplateRenderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes

from rules.errors import TemplateRenderError
from rules.template_limits import (
    DEFAULT_BUDGET,
    MAX_CALL_DEPTH,
    MAX_OUTPUT,
    MAX_TEMPLATE_CHARS,
    LimitedSandbox,
    RenderBudget,
    TemplateTooComplex,
    check_output,
    rendering,
)

__all__ = [
    "MAX_CALL_DEPTH",
    "MAX_OUTPUT",
    "MAX_TEMPLATE_CHARS",
    "RENDER_ERRORS",
    "RenderBudget",
    "TemplateTooComplex",
    "compile_text",
    "render",
    "render_text",
    "variables_used",
]

_ENV = LimitedSandbox()

RENDER_ERRORS: tuple[type[Exception], ...] = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    RecursionError,
    MemoryError,
)
"""What rendering untrusted template text may raise (limits and security errors are
TemplateErrors; RecursionError and MemoryError are the last line of defence)."""


@lru_cache(maxsize=512)
def compile_text(text: str) -> jinja2.Template:
    """Compile once per distinct text (raises ``jinja2.TemplateSyntaxError``, or its
    subclass :class:`TemplateTooComplex` for a text past the limits)."""
    return _ENV.from_string(text)


def variables_used(text: str) -> set[str]:
    """Every top-level variable a template text reads (raises on a syntax error)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(text)))
    except (RecursionError, MemoryError):
        raise TemplateTooComplex("the template is too complex", 1) from None


@lru_cache(maxsize=512)
def plain_parts(text: str) -> tuple[tuple[bool, str], ...] | None:
    """The text as literal pieces and bare ``{{ name }}`` substitutions, if that is all it is.

    Most message texts are just that; they render by joining the pieces, thousands
    of times a run, without a sandboxed Jinja render each. None for anything else
    (filters, tests, control blocks, expressions), which Jinja renders.
    """
    try:
        tree = _ENV.parse(text)
    except RENDER_ERRORS:
        return None
    if not tree.body:
        return ()
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[tuple[bool, str]] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append((True, node.name))
        else:
            return None
    return tuple(parts)


def _render_plain(parts: tuple[tuple[bool, str], ...], variables: Mapping[str, Any]) -> str | None:
    """What Jinja renders for ``parts`` (None when a name is missing: Jinja says why)."""
    out: list[str] = []
    for is_name, piece in parts:
        if not is_name:
            out.append(piece)
        elif piece in variables:
            out.append(str(variables[piece]))
        else:
            return None
    text = "".join(out)
    return text.strip() if len(text) <= MAX_OUTPUT else None


def render_text(
    text: str, variables: Mapping[str, Any], *, budget: RenderBudget = DEFAULT_BUDGET
) -> str:
    """Render one text within the limits; every failure becomes :class:`TemplateRenderError`."""
    plain = plain_parts(text)
    if plain is not None:
        found = _render_plain(plain, variables)
        if found is not None:
            return found
    try:
        with rendering(budget) as state:
            template = compile_text(text)
            parts: list[str] = []
            length = 0
            for chunk in template.generate(**variables):
                length += len(chunk)
                check_output(length)
                state.tick()
                parts.append(chunk)
            return "".join(parts).strip()
    except RecursionError:
        raise TemplateRenderError("template does not render: it is nested too deeply") from None
    except MemoryError:
        raise TemplateRenderError("template does not render: it needs too much memory") from None
    except RENDER_ERRORS as exc:
        raise TemplateRenderError(f"template does not render: {exc}") from exc


def render(rule: Any, template_name: str, locale: str, variables: Mapping[str, Any]) -> str:
    """Render ``template_name`` of ``rule`` in ``locale`` (falls back en-US → en → zh-CN).

    Only the journey's documented variables are passed to the template;
    a variable the template needs but ``variables`` lacks is an error.
    """
    template = rule.template(template_name)
    used_locale, text = template.text_for(locale)
    allowed = set(rule.variables)
    given = {k: v for k, v in variables.items() if k in allowed}
    try:
        return render_text(text, given)
    except TemplateRenderError as exc:
        raise TemplateRenderError(
            f"{rule.rule_id}: template {template_name!r} ({used_locale}): {exc}"
        ) from exc
