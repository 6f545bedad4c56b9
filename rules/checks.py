"""Cross-checks of a journey file that pydantic cannot do field by field.

Actions allowed per journey, templates and their variables, single-brace
placeholders, validity, the unsubscribe wording, credit amounts against the
contact policy's caps, and tiers treated in the wrong order (a warning).
"""

from __future__ import annotations

import re
from decimal import Decimal
from itertools import pairwise
from typing import Any

import jinja2

from crm.models import TASK_KINDS, TIERS
from rules.conditions import Loc, PathIssue
from rules.errors import (
    TemplateRenderError,
    did_you_mean,
)
from rules.models import (
    ACTION_TYPES,
    DEFAULT_MAX_CREDIT,
    GENERIC_VARIABLES,
    JOURNEY_VARIABLES,
    SAMPLE_VARIABLES,
    ContactPolicy,
    GenericJourneyRule,
    GraceCreditRule,
    JourneyBase,
)
from rules.templates import TemplateTooComplex, compile_text, render_text, variables_used
from rules.values import parse_money


def check_journey(
    model: type[JourneyBase], data: dict[Any, Any], policy: ContactPolicy | None
) -> list[PathIssue]:
    """Cross-checks pydantic cannot do field by field: actions, templates, wording, amounts.

    Works on the plain data (not the validated model) so that these problems are
    reported in the same run as the structural ones.
    """
    journey_id = str(data.get("journey"))
    issues: list[PathIssue] = []
    raw_templates = data.get("templates")
    templates: dict[Any, Any] = raw_templates if isinstance(raw_templates, dict) else {}
    lists: list[tuple[str, tuple[str, ...]]] = [("actions", model.allowed_actions)]
    if model is GraceCreditRule:
        lists.append(("on_deadline", GraceCreditRule.deadline_actions))
    for list_key, allowed in lists:
        entries = data.get(list_key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # pydantic reports the shape
            name, spec = next(iter(entry.items()))
            if name not in ACTION_TYPES:
                continue
            here: Loc = (list_key, i, name)
            if name not in allowed:
                issues.append(
                    PathIssue(
                        here,
                        f"{name} is not allowed in {list_key} of the {journey_id} journey;"
                        f" expected one of: {', '.join(allowed)}",
                        did_you_mean(name, allowed),
                        at_key=True,
                    )
                )
                continue
            if isinstance(spec, dict) or spec is None:
                issues += _check_action(journey_id, model, name, spec or {}, templates, here)
                if name == "grant_credit" and isinstance(spec, dict):
                    issues += _check_amounts(journey_id, spec, here, policy)
    trigger = data.get("trigger")
    if model is GraceCreditRule and isinstance(trigger, dict):
        issues += _check_amounts(journey_id, trigger, ("trigger",), policy)
    if isinstance(trigger, dict) and isinstance(trigger.get("cadence_days"), dict):
        issues += _tier_order(
            trigger["cadence_days"],
            ("trigger", "cadence_days"),
            "is called back less often than",
            higher_is_more=False,
        )
    issues += _check_templates(journey_id, model, templates, policy)
    return issues


def _check_action(
    journey_id: str,
    model: type[JourneyBase],
    name: str,
    spec: dict[Any, Any],
    templates: dict[Any, Any],
    here: Loc,
) -> list[PathIssue]:
    issues: list[PathIssue] = []
    if name in ("send_sms", "send_voice"):
        channel = "sms" if name == "send_sms" else "voice"
        ref = spec.get("template")
        if not isinstance(ref, str):
            return issues
        if ref not in templates:
            names = [str(n) for n in templates]
            issues.append(
                PathIssue(
                    (*here, "template"),
                    f"unknown template {ref!r}; templates in this file: "
                    + (", ".join(names) if names else "(none)"),
                    did_you_mean(ref, names),
                )
            )
        else:
            target = templates[ref]
            has = target.get("channel", "sms") if isinstance(target, dict) else channel
            if has in ("sms", "voice") and has != channel:
                issues.append(
                    PathIssue(
                        (*here, "template"),
                        f"template {ref!r} is a {has} template; {name} needs one with"
                        f" channel: {channel}",
                        f"use send_{has}" if has in ("sms", "voice") else None,
                    )
                )
    elif name == "create_task":
        kind = spec.get("kind", "care")
        if isinstance(kind, str) and kind in TASK_KINDS and kind not in model.task_kinds:
            issues.append(
                PathIssue(
                    (*here, "kind") if "kind" in spec else here,
                    f"the {journey_id} journey creates"
                    f" {' or '.join(model.task_kinds)} tasks, not {kind!r}",
                    f"write kind: {model.task_kinds[0]}",
                    at_key="kind" not in spec,
                )
            )
        if kind == "care" and not spec.get("reason"):
            issues.append(
                PathIssue(
                    here,
                    "a care call task needs a reason: the manager reads it to know why to call",
                    'add reason: "…" (or a text per locale: {zh-CN: "…", en: "…"})',
                    at_key=True,
                )
            )
    elif name == "grant_credit":
        given = "amount" in spec or "amount_by_tier" in spec
        if model is GraceCreditRule and given:
            issues.append(
                PathIssue(
                    here,
                    "in grace_credit the amount comes from trigger.amount_by_tier",
                    "remove amount / amount_by_tier from grant_credit",
                    at_key=True,
                )
            )
        elif model is not GraceCreditRule and not given:
            issues.append(
                PathIssue(
                    here, 'grant_credit needs amount (e.g. "20.00") or amount_by_tier', at_key=True
                )
            )
    return issues


def _money_or_none(value: object) -> Decimal | None:
    try:
        return parse_money(value)
    except ValueError:
        return None  # the model reports a malformed amount


def _check_amounts(
    journey_id: str, spec: dict[Any, Any], here: Loc, policy: ContactPolicy | None
) -> list[PathIssue]:
    """Credit amounts: within the contact policy's cap, and higher tiers never get less."""
    issues: list[PathIssue] = []
    cap = policy.max_credit_for(journey_id) if policy is not None else DEFAULT_MAX_CREDIT
    found: list[tuple[Loc, Decimal]] = []
    amount = _money_or_none(spec["amount"]) if "amount" in spec else None
    if amount is not None:
        found.append(((*here, "amount"), amount))
    by_tier = spec.get("amount_by_tier")
    if isinstance(by_tier, dict):
        for tier, value in by_tier.items():
            money = _money_or_none(value)
            if money is not None:
                found.append(((*here, "amount_by_tier", tier), money))
        issues += _tier_order(by_tier, (*here, "amount_by_tier"), "gets more than")
    for loc, value in found:
        if value > cap:
            issues.append(
                PathIssue(
                    loc,
                    f"a credit of {value} is above the {journey_id} cap of {cap} (max_credit"
                    " in contact_policy.yaml)",
                    f"amounts are in yuan with 2 decimals: did you mean {value / 100:.2f}?"
                    if value >= cap * 10
                    else f"lower it, or raise max_credit.{journey_id} in contact_policy.yaml",
                )
            )
    return issues


def _tier_order(
    by_tier: dict[Any, Any], here: Loc, verb: str, higher_is_more: bool = True
) -> list[PathIssue]:
    """Warn where a lower tier is treated better than a higher one (a likely swap)."""
    values: list[tuple[int, str, Decimal]] = []
    for tier, raw in by_tier.items():
        if tier in TIERS:
            number = _money_or_none(raw) if higher_is_more else _number_or_none(raw)
            if number is not None:
                values.append((TIERS.index(tier), str(tier), number))
    values.sort()
    issues: list[PathIssue] = []
    for (_, low, low_value), (_, high, high_value) in pairwise(values):
        better = low_value > high_value if higher_is_more else low_value < high_value
        if better:
            issues.append(
                PathIssue(
                    (*here, low),
                    f"{low} ({low_value}) {verb} {high} ({high_value}), a higher tier",
                    "check the values are not swapped",
                    severity="warning",
                )
            )
    return issues


def _number_or_none(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    return Decimal(value)


VALIDITY_OF: dict[str, str] = {"deadline": "grace_credit", "while_task_open": "precall_notice"}
"""Validities that only one journey can honour."""
SINGLE_BRACE = re.compile(r"(?<!\{)\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}(?!\})")
JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def _check_templates(
    journey_id: str,
    model: type[JourneyBase],
    templates: dict[Any, Any],
    policy: ContactPolicy | None,
) -> list[PathIssue]:
    issues: list[PathIssue] = []
    generic = model is GenericJourneyRule
    allowed = list(GENERIC_VARIABLES if generic else JOURNEY_VARIABLES[journey_id])
    sample = {k: v for k, v in SAMPLE_VARIABLES.items() if k in allowed}
    if policy is not None and policy.hotline:
        sample["hotline"] = policy.hotline
    for name, template in templates.items():
        if not isinstance(template, dict) or not isinstance(template.get("text"), dict):
            continue
        category = template.get("category")
        validity = template.get("valid_until")
        only = VALIDITY_OF.get(validity) if isinstance(validity, str) else None
        if only is not None and only != journey_id:
            issues.append(
                PathIssue(
                    ("templates", name, "valid_until"),
                    f"valid_until: {validity} only applies to the {only} journey",
                    "use end_of_day or {days: N}",
                )
            )
        for locale, text in template["text"].items():
            if not isinstance(text, str) or not isinstance(locale, str):
                continue
            here: Loc = ("templates", name, "text", locale)
            label = f"template {name!r} ({locale})"
            try:
                used = variables_used(text)
                compile_text(text)
            except TemplateTooComplex as exc:
                issues.append(PathIssue(here, f"{label}: on its line {exc.lineno}: {exc.message}"))
                continue
            except jinja2.TemplateSyntaxError as exc:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: template syntax error on its line {exc.lineno}: {exc.message}",
                        "variables are written {{ name }}",
                    )
                )
                continue
            single = SINGLE_BRACE.findall(JINJA_BLOCK.sub("", text))
            for var in single:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: {{{var}}} has single braces, so customers would get the"
                        " literal text",
                        f"write {{{{ {var} }}}}",
                    )
                )
            unknown = sorted(used - set(allowed))
            for var in unknown:
                issues.append(
                    PathIssue(
                        here,
                        f"{label}: unknown template variable {var!r}; the {journey_id} journey"
                        f" provides: {', '.join(allowed)}",
                        did_you_mean(var, allowed),
                    )
                )
            rendered: str | None = None
            if not unknown:
                try:  # with the same limits (size, depth, time) as every real render
                    rendered = render_text(text, sample)
                except TemplateRenderError as exc:
                    reason = str(exc).removeprefix("template does not render: ")
                    issues.append(
                        PathIssue(here, f"{label}: does not render for a sample customer: {reason}")
                    )
            if category == "marketing" and policy is not None:
                wording = policy.unsubscribe_for(locale)
                if wording not in (rendered if rendered is not None else text):
                    issues.append(
                        PathIssue(
                            here,
                            f"{label}: a marketing template must contain the unsubscribe wording"
                            f" {wording!r} from contact_policy.yaml",
                            f"append {wording!r} to the text",
                        )
                    )
    return issues
