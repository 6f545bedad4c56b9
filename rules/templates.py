"""Message templates: sandboxed Jinja2 with only the documented variables.

Rule files are edited by people, not programmers, so templates run in Jinja2's
``SandboxedEnvironment`` (no attribute games) with ``StrictUndefined`` (a missing
variable is an error, never an empty string in a customer's SMS).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

from rules.errors import TemplateRenderError

_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
)

RENDER_ERRORS: tuple[type[Exception], ...] = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
)
"""What rendering untrusted template text may raise (security errors are TemplateErrors)."""


@lru_cache(maxsize=512)
def compile_text(text: str) -> jinja2.Template:
    """Compile once per distinct text (raises ``jinja2.TemplateSyntaxError``)."""
    return _ENV.from_string(text)


def variables_used(text: str) -> set[str]:
    """Every top-level variable a template text reads (raises on a syntax error)."""
    return set(meta.find_undeclared_variables(_ENV.parse(text)))


def render_text(text: str, variables: Mapping[str, Any]) -> str:
    """Render one text; every failure becomes :class:`TemplateRenderError`."""
    try:
        return compile_text(text).render(**variables).strip()
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
