"""The words Switchboard sends: customer acknowledgements, redirect notes, surveys and agent notices.

Every text exists in en, ru, bg, pl, lt, uk and de. The wording lives in Jinja2 templates, one
folder per language (``templates/ru/ack.txt.j2``), next to a ``language.yaml`` with the words the
Python side needs to build dates, weekday ranges, category lines and forms of address. A business
can replace any template from its YAML config (``templates: {"ru/ack.txt.j2": "..."}``);
`validate_overrides` is what the config checker calls so a broken override fails at start.

Everything here is pure: no clock reads, no I/O beyond reading the packaged templates once. The
moments a text talks about (``now``, the promise, the next opening) come in as aware datetimes,
already in the zone the reader lives in.

Grammar choices that hold for any input:

* Business and channel names are never declined: they only appear in the nominative (signature,
  prefix, parenthesis), because "Ромашка" after "в" would need to become "Ромашку".
* Customers are addressed by name where the nominative is the address form (en, de, ru, bg). In
  pl, uk and lt the address form is the vocative, which cannot be derived safely from an arbitrary
  name; these languages carry a table of common first names with their vocatives ("Pani Anno",
  "Тарасе", "Jonai"), and for any other name the greeting stays neutral and the name appears in
  the nominative next to the conversation reference instead.
* Deadlines read "on <weekday>, <date>, by <time>" in the inflected languages, which only needs
  the accusative weekday ("в понедельник", "we wtorek", "pirmadienį") and the date form used after
  a day number (genitive months), never a case chosen from the surrounding sentence.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml

from shared.locale import (
    LANGUAGES,
    WEEKDAYS,
    date_words,
    format_weekly_hours,
    format_when,
    language_code,
)
from shared.vocabulary import CATEGORIES

__all__ = [
    "AGENT_NOTICE_KINDS",
    "CATEGORIES",
    "LANGUAGES",
    "SMS_LIMIT",
    "AckContext",
    "TemplateError",
    "format_weekly_hours",
    "format_when",
    "render_ack",
    "render_agent_notice",
    "render_redirect",
    "render_survey_question",
    "render_survey_thanks",
    "template_names",
    "validate_overrides",
]

AGENT_NOTICE_KINDS = ("assigned", "customer_message", "promise_warning", "promise_breached", "queued")
SURVEY_KINDS = ("csat", "nps")
SMS_LIMIT = 320
"""Five UCS-2 segments at most: a Cyrillic or Polish text is UCS-2 anyway, and segments cost money."""

TEMPLATE_DIR = Path(__file__).with_name("templates")
TEMPLATE_FILES = (
    "ack.txt.j2",
    "ack_sms.txt.j2",
    "redirect.txt.j2",
    "survey_question.txt.j2",
    "survey_thanks.txt.j2",
    *(f"agent_{kind}.txt.j2" for kind in AGENT_NOTICE_KINDS),
)

_NAME_LIMIT = 80
_EXCERPT_LINES = 3
_EXCERPT_CHARS = 280


class TemplateError(jinja2.TemplateError):
    """A template (usually a business's override) that does not compile or does not render.

    ``problems`` lists (template name, what is wrong) so a config checker can report each one
    under its own key path; the message names them all.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        self.template_name = self.problems[0][0] if self.problems else None
        super().__init__("; ".join(f"template {name}: {what}" for name, what in self.problems))


@dataclass(frozen=True, kw_only=True)
class AckContext:
    """Everything an acknowledgement says; the caller has resolved calendars and config already."""

    language: str
    customer_name: str | None
    category: str
    promise_due: datetime
    now: datetime
    is_open: bool
    next_opening: datetime | None
    weekly_hours: dict[str, list[tuple[time, time]]]
    timezone_label: str
    self_help: list[tuple[str, str]]
    urgent_contact: str | None
    business_name: str
    channel: str
    reference: str
    #: The promise is past (or about to be) when the text is sent: say "as soon as possible", not a
    #: time that has gone by (see services.notifier.ack).
    promise_past: bool = False


# --- language data ------------------------------------------------------------------------------


def _language(language: str | None, *, default: str | None = None) -> str:
    return language_code(language, default=default)


@functools.cache
def _words(language: str) -> dict[str, Any]:
    # The date words are shared with the gateway's voice prompts (shared/locale); the rest is ours.
    data = {**date_words(language),
            **yaml.safe_load((TEMPLATE_DIR / language / "language.yaml").read_text(encoding="utf-8"))}
    # Lookups are by case-folded first name, so "ANNA" and "anna" find "Anna".
    data["vocatives"] = {k.casefold(): v for k, v in (data.get("vocatives") or {}).items()}
    data.setdefault("at_word_by_hour", {})
    return data


# --- templates ----------------------------------------------------------------------------------


def template_names(language: str | None = None) -> list[str]:
    """Names a business may override ("ru/ack.txt.j2"), for one language or all."""
    languages = [_language(language)] if language else list(LANGUAGES)
    return [f"{lang}/{file}" for lang in languages for file in TEMPLATE_FILES]


def _new_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    # Plain-text channels: escaping would put "&amp;" into an SMS. StrictUndefined turns a typo in
    # a variable name into an error instead of a silently missing sentence.
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )


@functools.cache
def _base_environment() -> jinja2.Environment:
    return _new_environment(jinja2.FileSystemLoader(TEMPLATE_DIR))


@functools.lru_cache(maxsize=32)
def _environment(overrides: tuple[tuple[str, str], ...]) -> jinja2.Environment:
    """An environment for one set of overrides, keyed by their content so none leaks elsewhere.

    Overrides shadow the packaged templates by name, including for ``{% include %}``; they are all
    compiled here so a syntax error surfaces once, naming its template.
    """
    if not overrides:
        return _base_environment()
    env = _new_environment(jinja2.ChoiceLoader([jinja2.DictLoader(dict(overrides)),
                                                jinja2.FileSystemLoader(TEMPLATE_DIR)]))
    problems = []
    for name, _ in overrides:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append((name, f"line {exc.lineno}: {exc.message}"))
    if problems:
        raise TemplateError(problems)
    return env


def _render(name: str, context: Mapping[str, Any], overrides: Mapping[str, str] | None) -> str:
    env = _environment(tuple(sorted((overrides or {}).items())))
    try:
        text = env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError([(name, f"line {exc.lineno}: {exc.message}")]) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError([(name, str(exc))]) from exc
    return _tidy(text)


def _tidy(text: str) -> str:
    """Template whitespace is for translators' readability; the reader gets no stray blank lines.

    A date phrase may end in an abbreviation ("2027 г.", "13:00 val."); at the end of a sentence
    that abbreviation's dot is the full stop, so "val.." becomes "val.".
    """
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return re.sub(r"(?<=[^\W\d_])\.\.(?!\.)", ".", text)


# --- customer acknowledgement -------------------------------------------------------------------


def _clean_name(name: str | None, limit: int = _NAME_LIMIT) -> str | None:
    # Profile names arrive with newlines, double spaces and sometimes novels in them.
    if not name:
        return None
    cleaned = " ".join(name.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned or None


def _address(name: str | None, language: str) -> str | None:
    """How the greeting names the customer, or None for a neutral greeting (see module docstring)."""
    if not name:
        return None
    words = _words(language)
    if not words.get("vocative_required"):
        return name
    first = name.split()[0]
    known = words["vocatives"].get(first.casefold())
    if known:
        return known
    # Only endings whose vocative is certain whatever the name (see the language's YAML); a
    # rule may say "don't guess" (None), and no matching rule means a neutral greeting.
    styled = first.capitalize() if first.isupper() or first.islower() else first
    for suffix, replacement in words.get("vocative_rules") or ():
        if styled.endswith(suffix) and len(styled) > len(suffix):
            return None if replacement is None else styled[: -len(suffix)] + replacement
    return None


def _ack_variables(ctx: AckContext, language: str) -> dict[str, Any]:
    words = _words(language)
    name = _clean_name(ctx.customer_name)
    reopen = ctx.next_opening if not ctx.is_open else None
    return {
        "business_name": ctx.business_name,
        "customer_name": name,
        "address": _address(name, language),
        "category": ctx.category,
        "category_line": words["categories"].get(ctx.category, words["categories"]["_default"]),
        "is_open": ctx.is_open,
        "reopens": format_when(reopen, ctx.now, language, mode="at") if reopen else None,
        # Fits wherever the time phrase does ("will reply to you personally as soon as possible").
        "promise_by": words["by_asap"] if ctx.promise_past else format_when(ctx.promise_due, ctx.now, language,
                                                                             mode="by"),
        "promise_past": ctx.promise_past,
        "hours": format_weekly_hours(ctx.weekly_hours, language),
        "timezone_label": ctx.timezone_label,
        "self_help": [{"title": title, "url": url} for title, url in ctx.self_help],
        "urgent_contact": ctx.urgent_contact or None,
        "reference": ctx.reference,
        "channel": ctx.channel,
    }


def _fit_sms(render: Any, variables: dict[str, Any]) -> str:
    """Render an SMS, giving up the least useful parts until it fits in SMS_LIMIT characters.

    The promise, the reference and the urgent contact are what the customer needs most; a long
    name and a long business name are what usually overflow, so they go first: the name shrinks to
    its first word, then goes (neutral greeting) while the business name is cut; last, the "we are
    closed, back on ..." sentence goes, since the promise already says when the answer comes.
    Whatever still overflows (an override that says too much) is cut with an ellipsis.
    """
    name = variables.get("customer_name")
    first_word = _clean_name(name.split(" ")[0], 24) if name else None
    business = variables["business_name"]
    attempts: list[dict[str, Any]] = [
        {},
        {"customer_name": first_word, "business_name": _clean_name(business, 30)},
        {"customer_name": None, "business_name": _clean_name(business, 20)},
        {"customer_name": None, "business_name": _clean_name(business, 20), "is_open": True, "reopens": None},
    ]
    text = ""
    for changes in attempts:
        attempt = {**variables, **changes}
        attempt["address"] = _address(attempt.get("customer_name"), variables["language"])
        text = render(attempt)
        if len(text) <= SMS_LIMIT:
            return text
    return text[: SMS_LIMIT - 1].rstrip() + "…"


def render_ack(ctx: AckContext, overrides: dict[str, str] | None = None) -> str:
    """The acknowledgement a customer gets once per new or reopened conversation (SPEC §5).

    It thanks, says what we understood, states the promise as a concrete local time, the hours,
    self-help links and the urgent contact; out of hours it says we are closed and when we are
    back. It never claims to answer. SMS gets a short version of at most SMS_LIMIT characters.
    """
    language = _language(ctx.language)
    for label, moment in (("promise_due", ctx.promise_due), ("now", ctx.now), ("next_opening", ctx.next_opening)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"AckContext.{label} must be an aware datetime")
    variables = {**_ack_variables(ctx, language), "language": language}
    if ctx.channel in ("sms", "phone"):  # a call is acknowledged by SMS
        return _fit_sms(lambda v: _render(f"{language}/ack_sms.txt.j2", v, overrides), variables)
    return _render(f"{language}/ack.txt.j2", variables, overrides)


# --- redirect -----------------------------------------------------------------------------------


def _channel_name(channel: str, language: str) -> str:
    return _words(language)["channels"].get(channel, channel)


def render_redirect(language: str, channel_name: str, where_to_write: list[str], business_name: str, *,
                    overrides: dict[str, str] | None = None) -> str:
    """The one reply on a channel in "redirect" mode: we don't answer here, please write there.

    ``channel_name`` may be a channel id ("instagram") or a display name; ids get their usual
    spelling in the language ("e-mail", "SMS").
    """
    lang = _language(language)
    return _render(f"{lang}/redirect.txt.j2", {
        "channel_name": _channel_name(channel_name, lang),
        "where_to_write": [w for w in where_to_write if w],
        "business_name": business_name,
    }, overrides)


# --- surveys ------------------------------------------------------------------------------------


def render_survey_question(language: str, kind: Literal["csat", "nps"], channel: str, business_name: str,
                           customer_name: str | None, *, overrides: dict[str, str] | None = None) -> str:
    """The one survey question after resolution: CSAT 1–5 or NPS 0–10.

    SMS says how to answer ("reply with a number") and how to opt out (STOP); email introduces
    the one-click links the caller appends; chat channels point at the buttons the caller adds.
    """
    lang = _language(language)
    if kind not in SURVEY_KINDS:
        raise ValueError(f"survey kind must be one of {SURVEY_KINDS}, not {kind!r}")
    name = _clean_name(customer_name)
    variables = {
        "kind": kind,
        "channel": channel,
        "business_name": business_name,
        "customer_name": name,
        "address": _address(name, lang),
        "low": 1 if kind == "csat" else 0,
        "high": 5 if kind == "csat" else 10,
        "language": lang,
    }

    def render(v: Mapping[str, Any]) -> str:
        return _render(f"{lang}/survey_question.txt.j2", v, overrides)

    return _fit_sms(render, variables) if channel == "sms" else render(variables)


def render_survey_thanks(language: str, kind: str, *,  # str: a stored survey's kind, checked below
                         overrides: dict[str, str] | None = None) -> str:
    """Thanks for a survey answer; invites an optional comment, asks nothing more."""
    lang = _language(language)
    if kind not in SURVEY_KINDS:
        raise ValueError(f"survey kind must be one of {SURVEY_KINDS}, not {kind!r}")
    return _render(f"{lang}/survey_thanks.txt.j2", {"kind": kind}, overrides)


# --- agent notices ------------------------------------------------------------------------------

# Required fields per kind; everything else a kind accepts is optional and defaults to None.
_AGENT_REQUIRED: dict[str, tuple[str, ...]] = {
    "assigned": ("reference", "channel", "category", "promise_due", "now", "excerpt"),
    "customer_message": ("reference", "channel", "excerpt"),
    "promise_warning": ("reference", "promise_due", "now"),
    "promise_breached": ("reference", "promise_due", "now"),
    "queued": ("reference", "channel", "category", "team_name"),
}
_AGENT_OPTIONAL: dict[str, tuple[str, ...]] = {
    "assigned": ("customer_name", "link"),
    "customer_message": ("customer_name", "link", "promise_due", "now"),
    "promise_warning": ("customer_name", "channel", "link"),
    "promise_breached": ("customer_name", "channel", "owner_name", "link"),
    "queued": ("customer_name", "promise_due", "now", "link"),
}


def _excerpt(text: str) -> str:
    """The first few non-empty lines of a customer's message, enough to triage from a phone."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    kept = [line for line in lines if line][:_EXCERPT_LINES]
    excerpt = "\n".join(kept)
    cut = len(kept) < len([line for line in lines if line])
    if len(excerpt) > _EXCERPT_CHARS:
        excerpt, cut = excerpt[:_EXCERPT_CHARS].rstrip(), True
    return excerpt + ("…" if cut else "")


def render_agent_notice(language: str | None, kind: str, *, overrides: dict[str, str] | None = None,
                        **fields: Any) -> str:
    """A notice to an agent or lead, in their language (English when they have none set).

    Kinds and fields (required, then optional):

    * ``assigned``: reference, channel, category, promise_due, now, excerpt; customer_name, link
    * ``customer_message``: reference, channel, excerpt; customer_name, link, promise_due, now
    * ``promise_warning`` (75 % of the promised time gone): reference, promise_due, now;
      customer_name, channel, link
    * ``promise_breached`` (to owner and lead): reference, promise_due, now; customer_name,
      channel, owner_name, link
    * ``queued`` (to the lead): reference, channel, category, team_name; customer_name,
      promise_due, now, link

    ``promise_due`` and ``now`` are aware datetimes in the reader's zone; ``excerpt`` is the
    message text, trimmed here to its first lines.
    """
    lang = _language(language, default="en")
    if kind not in AGENT_NOTICE_KINDS:
        raise ValueError(f"agent notice kind must be one of {AGENT_NOTICE_KINDS}, not {kind!r}")
    required, optional = _AGENT_REQUIRED[kind], _AGENT_OPTIONAL[kind]
    missing = [f for f in required if fields.get(f) is None]
    unknown = sorted(set(fields) - set(required) - set(optional))
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise TypeError(f"agent notice {kind!r}: {'; '.join(what)}")
    values: dict[str, Any] = {f: fields.get(f) for f in (*required, *optional)}
    if (values.get("promise_due") is None) != (values.get("now") is None):
        raise TypeError(f"agent notice {kind!r}: promise_due and now go together")
    words = _words(lang)
    category = values.get("category")
    # Every agent template sees the same names, None where a kind has nothing to say.
    variables = {
        "reference": values["reference"],
        "customer_name": _clean_name(values.get("customer_name")) or words["unknown_customer"],
        "channel": _channel_name(values["channel"], lang) if values.get("channel") else None,
        "category": words["category_names"].get(category, category) if category else None,
        "due_by": (format_when(values["promise_due"], values["now"], lang, mode="by")
                   if values.get("promise_due") is not None else None),
        "excerpt": _excerpt(values["excerpt"]) if values.get("excerpt") else None,
        "owner_name": values.get("owner_name"),
        "team_name": values.get("team_name"),
        "link": values.get("link"),
    }
    return _render(f"{lang}/agent_{kind}.txt.j2", variables, overrides)


# --- override validation ------------------------------------------------------------------------


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
        return [{**_ack_variables(variant, lang), "language": lang}
                for variant in (base, plain, closed_for_good, late)]
    if file == "redirect.txt.j2":
        return [{"channel_name": "Instagram", "where_to_write": ["support@example.test"],
                 "business_name": "Northwind"}]
    if file.startswith("survey_question"):
        return [{"kind": kind, "channel": channel, "business_name": "Northwind", "customer_name": person,
                 "address": _address(person, lang), "low": 1 if kind == "csat" else 0,
                 "high": 5 if kind == "csat" else 10, "language": lang}
                for kind in SURVEY_KINDS for channel in ("sms", "email", "telegram") for person in ("Anna", None)]
    if file == "survey_thanks.txt.j2":
        return [{"kind": kind} for kind in SURVEY_KINDS]
    kind = file.removeprefix("agent_").removesuffix(".txt.j2")
    rich = {"reference": "SB-7K2Q", "customer_name": "Anna", "channel": "SMS", "category": "delivery",
            "due_by": "13:00", "excerpt": "Where is my parcel?", "link": "https://example.test/c/1",
            "owner_name": "Piotr", "team_name": "Support"}
    kept = {*_AGENT_REQUIRED[kind], "reference", "customer_name"}
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
            _base_environment().parse(source, name=name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append((name, f"line {exc.lineno}: {exc.message}"))
            continue
        compiled[name] = source
    env = _environment(tuple(sorted(compiled.items())))
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
