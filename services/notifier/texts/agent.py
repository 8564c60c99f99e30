"""Notices to agents and leads: a conversation assigned, a customer's new message, a promise at
risk or broken, a conversation queued for a team."""

from __future__ import annotations

from typing import Any

from services.notifier.texts.templating import render_template
from services.notifier.texts.words import clean_name, spell_channel, words
from shared.locale import format_when, language_code

AGENT_NOTICE_KINDS = ("assigned", "customer_message", "promise_warning", "promise_breached", "queued")

_EXCERPT_LINES = 3
_EXCERPT_CHARS = 280

# Required fields per kind; everything else a kind accepts is optional and defaults to None.
AGENT_REQUIRED: dict[str, tuple[str, ...]] = {
    # No promise on an assignment made after the first human reply: it is met, nothing is due.
    "assigned": ("reference", "channel", "category", "excerpt"),
    "customer_message": ("reference", "channel", "excerpt"),
    "promise_warning": ("reference", "promise_due", "now"),
    "promise_breached": ("reference", "promise_due", "now"),
    "queued": ("reference", "channel", "category", "team_name"),
}
_AGENT_OPTIONAL: dict[str, tuple[str, ...]] = {
    "assigned": ("customer_name", "promise_due", "now", "link"),
    "customer_message": ("customer_name", "link", "promise_due", "now"),
    "promise_warning": ("customer_name", "channel", "link"),
    "promise_breached": ("customer_name", "channel", "owner_name", "link"),
    "queued": ("customer_name", "promise_due", "now", "link"),
}


def agent_notice_fields(kind: str) -> tuple[str, ...]:
    """Every field a kind of notice takes, required first (what render_agent_notice accepts)."""
    return (*AGENT_REQUIRED[kind], *_AGENT_OPTIONAL[kind])


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

    * ``assigned``: reference, channel, category, excerpt; customer_name, promise_due, now, link
      (no promise_due once the first human reply has met the promise: a later reassignment)
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
    lang = language_code(language, default="en")
    if kind not in AGENT_NOTICE_KINDS:
        raise ValueError(f"agent notice kind must be one of {AGENT_NOTICE_KINDS}, not {kind!r}")
    required, accepted = AGENT_REQUIRED[kind], agent_notice_fields(kind)
    missing = [f for f in required if fields.get(f) is None]
    unknown = sorted(set(fields) - set(accepted))
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise TypeError(f"agent notice {kind!r}: {'; '.join(what)}")
    values: dict[str, Any] = {f: fields.get(f) for f in accepted}
    if (values.get("promise_due") is None) != (values.get("now") is None):
        raise TypeError(f"agent notice {kind!r}: promise_due and now go together")
    language_words = words(lang)
    category = values.get("category")
    # Every agent template sees the same names, None where a kind has nothing to say.
    variables = {
        "reference": values["reference"],
        "customer_name": clean_name(values.get("customer_name")) or language_words["unknown_customer"],
        "channel": spell_channel(values["channel"], lang) if values.get("channel") else None,
        "category": language_words["category_names"].get(category, category) if category else None,
        "due_by": (format_when(values["promise_due"], values["now"], lang, mode="by")
                   if values.get("promise_due") is not None else None),
        "excerpt": _excerpt(values["excerpt"]) if values.get("excerpt") else None,
        "owner_name": values.get("owner_name"),
        "team_name": values.get("team_name"),
        "link": values.get("link"),
    }
    return render_template(f"{lang}/agent_{kind}.txt.j2", variables, overrides)
