"""The resource limits of the template sandbox, and the sandbox that enforces them.

Jinja2's sandbox stops code execution, not resource exhaustion: ``9**(9**9)``,
``'{:>999999999}'.format(1)``, ``'a'*10**11``, a recursive macro or 300 nested
``{% if %}`` used to hang, take gigabytes or end in a traceback. Here every
template is bounded, and each limit fails as a ``jinja2.TemplateError``
(:class:`TemplateLimitError` while rendering, :class:`TemplateTooComplex` when
the text itself is past a limit), which ``rules.templates`` turns into
``TemplateRenderError``:

- the text: at most :data:`MAX_TEMPLATE_CHARS` characters, :data:`MAX_NESTING`
  levels of blocks or brackets, :data:`MAX_TAG_TOKENS` tokens per tag, checked on
  the token stream before Jinja's recursive parser sees it;
- numbers: results of ``*`` and ``**`` on integers at most :data:`MAX_INT_BITS` bits;
- texts and lists: ``*``, ``+``, ``~``, ``str`` methods and filters never build
  one longer than :data:`MAX_OUTPUT`; format widths and precisions (``str.format``,
  ``%``, the ``format`` filter) at most :data:`MAX_FORMAT_WIDTH`;
- a render: output at most :data:`MAX_OUTPUT` characters, loops at most
  :data:`MAX_ITERATIONS` steps, macro/loop recursion at most :data:`MAX_CALL_DEPTH`,
  and a wall-clock :class:`RenderBudget` checked at every call, operator, loop
  step and output (its clock is injectable, so tests are deterministic);
- only the filters in :data:`FILTERS`, the ``str`` methods in :data:`STR_METHODS`
  and the globals ``range``, ``dict`` and ``namespace`` exist.
"""

from __future__ import annotations

import math
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from string import Formatter
from typing import Any

import jinja2
from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import EscapeFormatter, Markup

MAX_TEMPLATE_CHARS = 20_000
MAX_NESTING = 20
MAX_TAG_TOKENS = 100
MAX_OUTPUT = 10_000
"""Characters in a rendered text, and in any text or list built while rendering (SMS ≤ 1,600)."""
MAX_PRODUCED = 10 * MAX_OUTPUT
"""Characters all ``{{ }}`` outputs may produce in one render (macros and captured blocks too)."""
MAX_INT_BITS = 4096
MAX_FORMAT_WIDTH = 200
MAX_CALL_DEPTH = 30
MAX_ITERATIONS = 10_000
DEFAULT_SECONDS = 1.0

FILTERS: tuple[str, ...] = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "int",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "replace",
    "reverse",
    "round",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "wordcount",
)
"""The filters a template may use; the rest (center, indent, batch, ...) can build huge texts."""

STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "center",
        "count",
        "endswith",
        "find",
        "format",
        "format_map",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "ljust",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rindex",
        "rjust",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "zfill",
    }
)
"""``str`` methods a template may call (translate, expandtabs, encode, ... are not needed)."""

_BLOCK_TAGS = frozenset({"if", "for", "macro", "call", "filter", "block", "with", "autoescape"})
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])")


@dataclass(frozen=True)
class RenderBudget:
    """How long one render may take; ``clock`` (seconds, monotonic) is injectable for tests."""

    seconds: float = DEFAULT_SECONDS
    clock: Callable[[], float] = time.monotonic


DEFAULT_BUDGET = RenderBudget()


class TemplateTooComplex(jinja2.TemplateSyntaxError):
    """The template text itself is past a limit (size, nesting, tokens per tag)."""


class TemplateLimitError(SecurityError):
    """A render went past a limit; a ``TemplateError``, so every caller already handles it."""


@dataclass
class RenderState:
    """The limits' running counts for one render (kept in a context variable)."""

    budget: RenderBudget
    deadline: float
    depth: int = 0
    steps: int = 0
    produced: int = 0

    def tick(self) -> None:
        if self.budget.clock() > self.deadline:
            raise TemplateLimitError(f"rendering took longer than {self.budget.seconds:g} s")


_CURRENT: ContextVar[RenderState | None] = ContextVar("vipcare_template_render", default=None)


def _tick() -> RenderState | None:
    state = _CURRENT.get()
    if state is not None:
        state.tick()
    return state


def _check_size(value: Any, what: str = "a text or list") -> Any:
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_OUTPUT:
        raise TemplateLimitError(f"{what} would be longer than {MAX_OUTPUT:,} characters or items")
    return value


def _check_width(number: int | str | None) -> None:
    if number in (None, "", "*"):
        return
    if int(number) > MAX_FORMAT_WIDTH:
        raise TemplateLimitError(
            f"format width or precision {int(number):,} is too large (at most {MAX_FORMAT_WIDTH})"
        )


def _check_format_spec(spec: str) -> None:
    """A ``str.format`` spec such as ``>10`` or ``.2f``: each number is a width or precision."""
    if len(spec) > 20:
        raise TemplateLimitError("format width or precision: the format spec is too long")
    for number in re.findall(r"\d+", spec):
        _check_width(number)


def _check_printf(text: str) -> None:
    """``%`` formatting: widths and precisions bounded, ``*`` (width from the arguments) refused."""
    for width, precision, _kind in _PRINTF.findall(text):
        if "*" in (width, precision):
            raise TemplateLimitError("format width or precision '*' is not allowed in templates")
        _check_width(width)
        _check_width(precision)


class _LimitedFormatter(SandboxedFormatter):
    """``str.format`` with every field's spec checked once it is resolved (``{:{w}}`` too)."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class _LimitedEscapeFormatter(_LimitedFormatter, EscapeFormatter):
    pass


def _bits(value: int) -> int:
    return max(abs(value).bit_length(), 1)


def _safe_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the deadline checked before and the result's size after."""

    @wraps(func)  # keeps jinja's pass_context / pass_eval_context marker
    def checked(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return _check_size(func(*args, **kwargs), f"the {name} filter's result")

    return checked


def _join(value: Iterable[Any], d: str = "") -> str:
    """The ``join`` filter, refusing before it builds a text longer than the limit."""
    parts: list[str] = []
    total = 0
    sep = str(d)
    for item in value:
        text = str(item)
        total += len(text) + (len(sep) if parts else 0)
        if total > MAX_OUTPUT:
            raise TemplateLimitError(f"join would build a text longer than {MAX_OUTPUT:,}")
        parts.append(text)
    return sep.join(parts)


def _check_replace(s: str, old: str, new: str, count: int | None = None) -> None:
    hits = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    if len(s) + hits * (len(new) - len(old)) > MAX_OUTPUT:
        raise TemplateLimitError(f"replace would build a text longer than {MAX_OUTPUT:,}")


def _replace(s: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    _check_replace(text, old, new, count)
    return text.replace(old, new, -1 if count is None else count)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    """The ``format`` filter (``"%.2f"|format(x)``), widths checked first."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at once")
    text = str(value)
    _check_printf(text)
    return _check_size(text % (kwargs or args), "the format filter's result")


def _check_str_call(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a ``str`` method call that would build a huge text, before it runs."""
    name = getattr(method, "__name__", "")
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int) and width > MAX_OUTPUT:
            raise TemplateLimitError(f"str.{name}() would build a text longer than {MAX_OUTPUT:,}")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, str(args[0]), str(args[1]), args[2] if len(args) > 2 else None)
    elif name == "join" and args:
        items = list(args[0])
        if sum(len(str(i)) for i in items) + len(owner) * max(len(items) - 1, 0) > MAX_OUTPUT:
            raise TemplateLimitError(f"str.join() would build a text longer than {MAX_OUTPUT:,}")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus the resource limits of this module."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            finalize=self._count_output,
        )
        self.filters = {name: _safe_filter(name, JINJA_FILTERS[name]) for name in FILTERS}
        self.filters.update(
            join=_safe_filter("join", _join),
            replace=_safe_filter("replace", _replace),
            format=_safe_filter("format", _format),
        )
        self.globals = {"range": self.globals["range"], "dict": dict, "namespace": Namespace}

    # -- the template text ---------------------------------------------------------
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        _check_source(self, source, name)
        try:
            tree = super()._parse(source, name, filename)
        except (RecursionError, MemoryError):
            raise TemplateTooComplex("the template is too complex", 1, name) from None
        for loop in list(tree.find_all(nodes.For)):
            loop.iter = _guarded("vipcare_steps", loop.iter, loop.lineno)  # type: ignore[arg-type]
        for concat in list(tree.find_all(nodes.Concat)):
            _wrap_in_place(tree, concat)
        return tree

    def _compile(self, source: str, filename: str) -> types.CodeType:
        try:
            return super()._compile(source, filename)
        except (RecursionError, MemoryError, SyntaxError):
            raise TemplateTooComplex("the template is too complex", 1) from None

    # -- hooks the compiled template calls -----------------------------------------
    def vipcare_steps(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Every ``{% for %}`` iterates through this: one deadline check per step."""
        state = _CURRENT.get()
        for item in iterable:
            if state is not None:
                state.steps += 1
                if state.steps > MAX_ITERATIONS:
                    raise TemplateLimitError(f"loops ran more than {MAX_ITERATIONS:,} steps")
                state.tick()
            yield item

    def vipcare_text(self, value: Any) -> Any:
        """Every ``~`` concatenation goes through this."""
        _tick()
        return _check_size(value, "a text joined with ~")

    def _count_output(self, value: Any) -> Any:
        state = _tick()
        if state is not None:
            state.produced += len(value) if isinstance(value, str) else len(str(value))
            if state.produced > MAX_PRODUCED:
                raise TemplateLimitError(
                    f"the template's output is longer than {MAX_PRODUCED:,} characters"
                )
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and numbers and right > 0 and abs(left) > 1:
            if math.log2(abs(left)) * right > MAX_INT_BITS:
                raise TemplateLimitError(
                    f"the exponent {right:,} is too large: results are limited to"
                    f" {MAX_INT_BITS} bits"
                )
        elif operator == "*" and numbers:
            if _bits(left) + _bits(right) > MAX_INT_BITS:
                raise TemplateLimitError(
                    f"multiplying these numbers would exceed {MAX_INT_BITS} bits"
                )
        elif operator == "*":
            seq, times = (left, right) if isinstance(right, int) else (right, left)
            sized = isinstance(times, int) and isinstance(seq, str | bytes | list | tuple)
            if sized and len(seq) * times > MAX_OUTPUT:
                raise TemplateLimitError(
                    f"repeating it {times:,} times would make it longer than {MAX_OUTPUT:,}"
                )
        elif operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple) and len(left) + len(right) > MAX_OUTPUT:
                raise TemplateLimitError(f"a text or list would be longer than {MAX_OUTPUT:,}")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        state = _tick()
        _check_str_call(__obj, args, kwargs)
        if state is None:
            return _check_size(super().call(__context, __obj, *args, **kwargs))
        state.depth += 1
        try:
            if state.depth > MAX_CALL_DEPTH:
                raise TemplateLimitError(
                    f"macros or recursive loops nested deeper than {MAX_CALL_DEPTH} calls"
                )
            return _check_size(super().call(__context, __obj, *args, **kwargs))
        finally:
            state.depth -= 1

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr not in STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` / ``format_map`` through a formatter that checks every spec."""
        methods = types.MethodType | types.BuiltinMethodType
        if not isinstance(value, methods) or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: Formatter = (
            _LimitedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _LimitedFormatter(self)
        )
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                kwargs = dict(args[0])
                args = ()
            return _check_size(type(owner)(formatter.vformat(owner, args, kwargs)))

        return wrapper


def _guarded(method: str, expr: nodes.Expr, lineno: int) -> nodes.Call:
    """``expr`` wrapped in a call of the environment's ``method`` (through the sandbox)."""
    return nodes.Call(nodes.EnvironmentAttribute(method), [expr], [], None, None, lineno=lineno)


def _wrap_in_place(tree: nodes.Node, target: nodes.Concat) -> None:
    """Replace ``target`` in its parent by ``vipcare_text(target)``."""
    for parent in tree.find_all(nodes.Node):
        for field_name in parent.fields:
            child = getattr(parent, field_name, None)
            if child is target:
                setattr(parent, field_name, _guarded("vipcare_text", target, target.lineno))
                return
            if isinstance(child, list):
                for i, item in enumerate(child):
                    if item is target:
                        child[i] = _guarded("vipcare_text", target, target.lineno)
                        return


def _check_source(env: jinja2.Environment, source: str, name: str | None) -> None:
    """Size, nesting, tokens per tag and filter names, from the token stream (no recursion)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateTooComplex(
            f"the template is longer than {MAX_TEMPLATE_CHARS:,} characters", 1, name
        )
    blocks = brackets = tokens = 0
    tag: str | None = None  # None outside a tag, "" before its first token
    assigns = False
    previous = ""
    for lineno, kind, value in env.lex(source, name):
        if kind in ("block_begin", "variable_begin"):
            tag, tokens, assigns, previous = "", 0, False, ""
            continue
        if kind in ("block_end", "variable_end"):
            if tag == "set" and not assigns:
                blocks += 1  # {% set x %} ... {% endset %}
            tag = None
            continue
        if tag is None or kind == "whitespace":
            continue
        tokens += 1
        if tokens > MAX_TAG_TOKENS:
            raise TemplateTooComplex(
                f"a tag with more than {MAX_TAG_TOKENS} parts is too complex", lineno, name
            )
        symbol = value if kind == "operator" else kind
        if tag == "":
            tag = value if kind == "name" else "expression"
            if tag in _BLOCK_TAGS:
                blocks += 1
            elif tag.startswith("end"):
                blocks -= 1
        elif kind == "name" and value not in env.filters and _names_a_filter(tag, previous):
            raise jinja2.TemplateSyntaxError(
                f"no filter named {value!r}; templates may use: {', '.join(FILTERS)}",
                lineno,
                name,
            )
        assigns = assigns or symbol == "="
        if symbol in ("(", "[", "{"):
            brackets += 1
        elif symbol in (")", "]", "}"):
            brackets -= 1
        if blocks > MAX_NESTING or brackets > MAX_NESTING:
            raise TemplateTooComplex(f"nested deeper than {MAX_NESTING} levels", lineno, name)
        previous = value if kind in ("name", "operator") else kind


def _names_a_filter(tag: str, previous: str) -> bool:
    """Whether a name token is a filter name: after ``|``, or right after ``{% filter``."""
    return previous == "|" or (tag == "filter" and previous == "filter")


@contextmanager
def rendering(budget: RenderBudget) -> Iterator[RenderState]:
    """The counts and deadline of one render, seen by every hook while it runs."""
    state = RenderState(budget, budget.clock() + budget.seconds)
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)


def check_output(length: int) -> None:
    """Refuse a rendered text past :data:`MAX_OUTPUT` characters."""
    if length > MAX_OUTPUT:
        raise TemplateLimitError(f"the template's output is longer than {MAX_OUTPUT:,} characters")
