"""The texts a customer reads: the acknowledgement, the redirect note and the survey.

Every text exists in en, ru, bg, pl, lt, uk and de (templates/<language>/, rendered by
templating.py with the words of words.py). Everything here is pure: no clock reads, no I/O beyond
reading the packaged templates once. The moments a text talks about (``now``, the promise, the
next opening) come in as aware datetimes, already in the zone the reader lives in.

Deadlines read "on <weekday>, <date>, by <time>" in the inflected languages, which only needs the
accusative weekday ("в понедельник", "we wtorek", "pirmadienį") and the date form used after a day
number (genitive months), never a case chosen from the surrounding sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Literal

from services.notifier.texts.templating import render_template
from services.notifier.texts.words import address, clean_name, spell_channel, words
from shared.locale import format_weekly_hours, format_when, language_code

SURVEY_KINDS = ("csat", "nps")
SMS_LIMIT = 320
"""Five UCS-2 segments at most: a Cyrillic or Polish text is UCS-2 anyway, and segments cost money."""


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


# --- customer acknowledgement -------------------------------------------------------------------


def ack_variables(ctx: AckContext, language: str) -> dict[str, Any]:
    language_words = words(language)
    name = clean_name(ctx.customer_name)
    reopen = ctx.next_opening if not ctx.is_open else None
    return {
        "business_name": ctx.business_name,
        "customer_name": name,
        "address": address(name, language),
        "category": ctx.category,
        "category_line": language_words["categories"].get(ctx.category, language_words["categories"]["_default"]),
        "is_open": ctx.is_open,
        "reopens": format_when(reopen, ctx.now, language, mode="at") if reopen else None,
        # Fits wherever the time phrase does ("will reply to you personally as soon as possible").
        "promise_by": (language_words["by_asap"] if ctx.promise_past
                       else format_when(ctx.promise_due, ctx.now, language, mode="by")),
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
    first_word = clean_name(name.split(" ")[0], 24) if name else None
    business = variables["business_name"]
    attempts: list[dict[str, Any]] = [
        {},
        {"customer_name": first_word, "business_name": clean_name(business, 30)},
        {"customer_name": None, "business_name": clean_name(business, 20)},
        {"customer_name": None, "business_name": clean_name(business, 20), "is_open": True, "reopens": None},
    ]
    text = ""
    for changes in attempts:
        attempt = {**variables, **changes}
        attempt["address"] = address(attempt.get("customer_name"), variables["language"])
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
    language = language_code(ctx.language)
    for label, moment in (("promise_due", ctx.promise_due), ("now", ctx.now), ("next_opening", ctx.next_opening)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"AckContext.{label} must be an aware datetime")
    variables = {**ack_variables(ctx, language), "language": language}
    if ctx.channel in ("sms", "phone"):  # a call is acknowledged by SMS
        return _fit_sms(lambda v: render_template(f"{language}/ack_sms.txt.j2", v, overrides), variables)
    return render_template(f"{language}/ack.txt.j2", variables, overrides)


# --- redirect -----------------------------------------------------------------------------------


def render_redirect(language: str, channel_name: str, where_to_write: list[str], business_name: str, *,
                    overrides: dict[str, str] | None = None) -> str:
    """The one reply on a channel in "redirect" mode: we don't answer here, please write there.

    ``channel_name`` may be a channel id ("instagram") or a display name; ids get their usual
    spelling in the language ("e-mail", "SMS").
    """
    lang = language_code(language)
    return render_template(f"{lang}/redirect.txt.j2", {
        "channel_name": spell_channel(channel_name, lang),
        "where_to_write": [w for w in where_to_write if w],
        "business_name": business_name,
    }, overrides)


# --- surveys ------------------------------------------------------------------------------------


def survey_question_variables(language: str, kind: str, channel: str, business_name: str,
                              customer_name: str | None) -> dict[str, Any]:
    """What the survey question's template sees (the scale: CSAT 1–5, NPS 0–10)."""
    name = clean_name(customer_name)
    return {
        "kind": kind,
        "channel": channel,
        "business_name": business_name,
        "customer_name": name,
        "address": address(name, language),
        "low": 1 if kind == "csat" else 0,
        "high": 5 if kind == "csat" else 10,
        "language": language,
    }


def render_survey_question(language: str, kind: Literal["csat", "nps"], channel: str, business_name: str,
                           customer_name: str | None, *, overrides: dict[str, str] | None = None) -> str:
    """The one survey question after resolution: CSAT 1–5 or NPS 0–10.

    SMS says how to answer ("reply with a number") and how to opt out (STOP); email introduces
    the one-click links the caller appends; chat channels point at the buttons the caller adds.
    """
    lang = language_code(language)
    if kind not in SURVEY_KINDS:
        raise ValueError(f"survey kind must be one of {SURVEY_KINDS}, not {kind!r}")
    variables = survey_question_variables(lang, kind, channel, business_name, customer_name)

    def render(v: Mapping[str, Any]) -> str:
        return render_template(f"{lang}/survey_question.txt.j2", v, overrides)

    return _fit_sms(render, variables) if channel == "sms" else render(variables)


def render_survey_thanks(language: str, kind: str, *,  # str: a stored survey's kind, checked below
                         overrides: dict[str, str] | None = None) -> str:
    """Thanks for a survey answer; invites an optional comment, asks nothing more."""
    lang = language_code(language)
    if kind not in SURVEY_KINDS:
        raise ValueError(f"survey kind must be one of {SURVEY_KINDS}, not {kind!r}")
    return render_template(f"{lang}/survey_thanks.txt.j2", {"kind": kind}, overrides)
