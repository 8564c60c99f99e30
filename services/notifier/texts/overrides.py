"""A business's template overrides: which templates may be overridden, and the check at start.

`validate_overrides` is what the config checker calls (through `check_config_templates`) so a
broken override fails when the service starts, not at the first customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone
from typing import Any

import jinja2

from services.notifier.texts.agent import AGENT_NOTICE_KINDS, AGENT_REQUIRED
from services.notifier.texts.customer import (
    SURVEY_KINDS,
    AckContext,
    ack_variables,
    survey_question_variables,
)
from services.notifier.texts.templating import TemplateError, base_environment, environment
from shared.locale import LANGUAGES, WEEKDAYS, language_code

TEMPLATE_FILES = (
    "ack.txt.j2",
    "ack_sms.txt.j2",
    "redirect.txt.j2",
    "survey_question.txt.j2",
    "survey_thanks.txt.j2",
    *(f"agent_{kind}.txt.j2" for kind in AGENT_NOTICE_KINDS),
)


def template_names(language: str | None = None) -> list[str]:
    """Names a business may override ("ru/ack.txt.j2"), for one language or all."""
    languages = [language_code(language)] if language else list(LANGUAGES)
    return [f"{lang}/{file}" for lang in languages for file in TEMPLATE_FILES]


def _samples(name: str) -> list[Mapping[str, Any]]:
    """Contexts that walk every branch a packaged template has, to render an override against."""
    lang, file = name.split("/", 1)
    now = datetime(2026, 11, 20, 17, 55, tzinfo=timezone(timedelta(hours=1)))
    monday = now + timedelta(days=3, hours=-4, minutes=-55)
    if file.startswith("ack"):
        base = AckContext(language=lang, customer_name="Anna Kowalska", category="delivery",
                          promise_due=monday, now=now, is_open=False, next_opening=monday - timedelta(hours=4),
                          weekly_hours={d: [(time(9), time(17))] for d in WEEKDAYS[:5]},
                          timezone_label="Europe/Warsaw", self_help=[("Track", "https://example.test/t")],
                          urgent_contact="+48 22 100 20 30", business_name="Northwind",
                          channel="sms" if file == "ack_sms.txt.j2" else "email", reference="SB-7K2Q")
        plain = replace(base, is_open=True, next_opening=None, customer_name=None, self_help=[],
                        urgent_contact=None, category="custom")
        closed_for_good = replace(base, next_opening=None, customer_name="Zzyzx")
        late = replace(base, promise_past=True)
        return [{**ack_variables(variant, lang), "language": lang}
                for variant in (base, plain, closed_for_good, late)]
    if file == "redirect.txt.j2":
        return [{"channel_name": "Instagram", "where_to_write": ["support@example.test"],
                 "business_name": "Northwind"}]
    if file.startswith("survey_question"):
        return [survey_question_variables(lang, kind, channel, "Northwind", person)
                for kind in SURVEY_KINDS for channel in ("sms", "email", "telegram") for person in ("Anna", None)]
    if file == "survey_thanks.txt.j2":
        return [{"kind": kind} for kind in SURVEY_KINDS]
    kind = file.removeprefix("agent_").removesuffix(".txt.j2")
    rich = {"reference": "SB-7K2Q", "customer_name": "Anna", "channel": "SMS", "category": "delivery",
            "due_by": "13:00", "excerpt": "Where is my parcel?", "link": "https://example.test/c/1",
            "owner_name": "Piotr", "team_name": "Support"}
    kept = {*AGENT_REQUIRED[kind], "reference", "customer_name"}
    if "promise_due" in kept:
        kept.add("due_by")
    bare = {k: (v if k in kept else None) for k, v in rich.items()}
    return [rich, bare]


def validate_overrides(overrides: Mapping[str, str]) -> None:
    """Check a business's template overrides as the config checker needs: raise TemplateError or pass.

    Each name must be one this module renders ("ru/ack.txt.j2"); each source must compile; and each
    must render, under StrictUndefined, with sample data that takes every branch of the packaged
    template, so a misspelt variable fails at start rather than at the first customer. Every
    problem is reported, not just the first.
    """
    known = set(template_names())
    problems: list[tuple[str, str]] = []
    compiled: dict[str, str] = {}
    for name, source in overrides.items():
        if name not in known:
            problems.append((name, "unknown template name; names are <language>/<file>, e.g. 'ru/ack.txt.j2', "
                                   f"with <file> one of {', '.join(TEMPLATE_FILES)}"))
            continue
        try:
            base_environment().parse(source, name=name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append((name, f"line {exc.lineno}: {exc.message}"))
            continue
        compiled[name] = source
    env = environment(tuple(sorted(compiled.items())))
    for name in sorted(compiled):
        for variables in _samples(name):
            try:
                env.get_template(name).render(variables)
            except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
                problems.append((name, f"does not render: {exc}"))
                break
    if problems:
        raise TemplateError(problems)


def check_config_templates(config: Any) -> list[str]:
    """The config loader's check of the `templates` section (shared.config.ConfigCheck): overrides
    are compiled and rendered with sample data at start, so a typo, an unknown template name or a
    misspelt variable fails now, not at the first customer."""
    if not config.templates:
        return []
    try:
        validate_overrides(config.templates)
    except TemplateError as exc:
        return [f"templates.{name}: {problem}" for name, problem in exc.problems]
    return []
