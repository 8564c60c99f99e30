"""The follow-up survey's rules, pure: who gets one, which kind, and what it looks like per channel.

SPEC §5: after resolution plus a delay, only if a human replied, the customer has not opted out
and had no survey within the cooldown. CSAT 1-5; NPS 0-10 on a configurable sample, chosen from
the conversation id so that a retry, a redelivery or a second replica picks the same kind.
Time and config are parameters; the I/O is in services/notifier/survey_flow.py.

WhatsApp accepts free-form messages only within 24 hours of the customer's last message; after
that only an approved template. CSAT (channels.whatsapp.survey_template): its quick-reply buttons
carry the same payloads as the in-window buttons, so a press is recorded the same way. NPS has
eleven answers and a template at most ten buttons, so channels.whatsapp.nps_template has one URL
button instead, to PUBLIC_BASE_URL/survey/{{1}}: we fill in a signed link without a score, the
gateway's page lists the scores, and a click there is recorded like an e-mail link. Without the
template (or, for NPS, without SURVEY_SECRET to sign the link) such a survey is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.notifier.senders.meta import within_customer_window
from shared.config import WhatsAppTemplate
from shared.locale import words
from shared.survey_links import SCALES, SurveyLinks, callback_data, sign_link
from shared.vocabulary import LANGUAGES

#: Buttons one WhatsApp template may have.
MAX_TEMPLATE_BUTTONS = 10

#: The survey's words per language (e-mail subject, unsubscribe line, WhatsApp's list button), from
#: services/notifier/locale/<language>.yaml (shared.locale.words), the one way translations are stored.
LOCALE_DIR = Path(__file__).with_name("locale")
WORDS: dict[str, dict[str, str]] = {language: words(LOCALE_DIR, language)["survey"] for language in LANGUAGES}


def survey_kind(conversation_id: str, nps_sample: float) -> str:
    """"nps" for a deterministic `nps_sample` share of conversations, else "csat"."""
    digest = hashlib.sha256(f"survey-kind:{conversation_id}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    return "nps" if share < nps_sample else "csat"


def skip_reason(*, human_replied: bool, opted_out: bool, last_survey_at: datetime | None, now: datetime,
                cooldown: timedelta) -> str | None:
    """Why this customer gets no survey now, or None when they get one."""
    if not human_replied:
        return "no human replied: an autoresponder is not an answer"
    if opted_out:
        return "the customer opted out of surveys"
    if last_survey_at is not None and now - last_survey_at < cooldown:
        return f"a survey was sent {last_survey_at.isoformat()}, within the cooldown of {cooldown}"
    return None


def new_token() -> str:
    """The survey's handle in buttons and links: 16 URL-safe characters, unguessable."""
    return secrets.token_urlsafe(12)


def compose(*, kind: str, channel: str, token: str, language: str, question: str, business_name: str,
            links: SurveyLinks | None, now: datetime) -> tuple[str, dict[str, Any]]:
    """The survey's text and its sender options: the answer's way back, native to the channel.

    Raises ValueError for an e-mail survey without links (no SURVEY_SECRET): it could not be answered."""
    lang = language if language in WORDS else "en"
    scale = SCALES[kind]
    pairs = [(str(i), callback_data(token, i)) for i in scale]
    if channel == "telegram":
        # Inline keyboard; an 11-point scale in two rows stays readable on a phone.
        rows = [pairs] if len(pairs) <= 6 else [pairs[:6], pairs[6:]]
        return question, {"buttons": rows}
    if channel in ("messenger", "instagram"):
        return question, {"quick_replies": pairs}
    if channel == "whatsapp":
        # Up to ten choices fit an interactive list; NPS has eleven, so it is answered by a number
        # in reply, as the question says (the router turns a bare number into the answer).
        if len(pairs) <= 10:
            return question, {"buttons": pairs, "list_button": WORDS[lang]["list_button"]}
        return question, {}
    if channel == "email":
        if links is None:
            raise ValueError("e-mail surveys need SURVEY_SECRET to sign their links")
        # Each link opens the gateway's page with that score preselected; the page's POST answers
        # (mail scanners open every link). The kind lets the page offer the whole scale.
        unsubscribe = links.url(token, lang, unsubscribe=True, now=now)
        lines = [question.rstrip(), ""]
        lines += [f"  {i}  {links.url(token, lang, score=i, kind=kind, now=now)}" for i in scale]
        lines += ["", f"{WORDS[lang]['unsubscribe']}: {unsubscribe}"]
        return "\n".join(lines) + "\n", {"subject": f"{WORDS[lang]['email_subject']} — {business_name}", "automatic": True,
                                          "list_unsubscribe": unsubscribe}
    return question, {}  # SMS (and a phone caller, answered by SMS): "reply with a number"


def whatsapp_survey_template(kind: str, token: str, template: WhatsAppTemplate,
                             language: str | None = None) -> dict[str, Any]:
    """The Cloud API template of a survey: button i of the approved template answers with the
    scale's i-th score. Raises ValueError when the scale has more answers than a template has buttons."""
    scale = SCALES[kind]
    if len(scale) > MAX_TEMPLATE_BUTTONS:
        raise ValueError(f"the {kind.upper()} scale has {len(scale)} answers and a WhatsApp template at most"
                         f" {MAX_TEMPLATE_BUTTONS} buttons")
    buttons = [{"type": "button", "sub_type": "quick_reply", "index": str(i),
                "parameters": [{"type": "payload", "payload": callback_data(token, score)}]}
               for i, score in enumerate(scale)]
    return {"name": template.name, "language": template.language_for(language), "components": buttons}


def whatsapp_nps_template(token: str, language: str, template: WhatsAppTemplate, links: SurveyLinks,
                          now: datetime) -> dict[str, Any]:
    """The Cloud API template of an NPS survey: its one URL button (index 0) is approved as
    PUBLIC_BASE_URL/survey/{{1}}; the suffix is a signed link without a score, which opens the
    gateway's page of the eleven scores in `language`. Signed at `now`, so it works for LINK_MAX_AGE."""
    signed = sign_link(links.secret, token=token, language=language, kind="nps", now=now)
    button = {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": signed}]}
    return {"name": template.name, "language": template.language_for(language), "components": [button]}


def _approved_template(kind: str, token: str, language: str, now: datetime, template: WhatsAppTemplate | None,
                       nps_template: WhatsAppTemplate | None,
                       links: SurveyLinks | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the template that carries this survey, None) or (None, why there is none)."""
    if kind == "nps":
        if nps_template is None:
            return None, (f"channels.whatsapp.nps_template is not configured (the NPS scale has {len(SCALES[kind])}"
                          f" answers and a WhatsApp template at most {MAX_TEMPLATE_BUTTONS} buttons)")
        if links is None:
            return None, "the NPS template carries a signed survey link and SURVEY_SECRET is not set"
        return whatsapp_nps_template(token, language, nps_template, links, now), None
    if template is None:
        return None, "channels.whatsapp.survey_template is not configured"
    try:
        return whatsapp_survey_template(kind, token, template, language), None
    except ValueError as exc:
        return None, str(exc)


def whatsapp_survey_options(options: dict[str, Any], *, kind: str, token: str,
                            last_customer_message_at: datetime | None, now: datetime,
                            template: WhatsAppTemplate | None, nps_template: WhatsAppTemplate | None = None,
                            links: SurveyLinks | None = None, language: str = "en") -> dict[str, Any]:
    """The sender options of a WhatsApp survey, given `options` from `compose`. Inside the 24-hour
    window: the interactive survey, with the kind's template (`template` for CSAT, `nps_template`
    with a link signed by `links` in `language` for NPS) as the fallback should the window close
    before a retry. After it (or when the customer's last message is unknown): the template alone.
    Raises ValueError with the reason when no template can carry the survey after the window."""
    approved, problem = _approved_template(kind, token, language, now, template, nps_template, links)
    if last_customer_message_at is not None and within_customer_window(last_customer_message_at, now):
        out = {**options, "last_customer_message_at": last_customer_message_at.isoformat()}
        if approved is not None:
            out["fallback_template"] = approved
        return out
    if approved is None:
        raise ValueError(f"outside WhatsApp's 24-hour window only an approved template may be sent: {problem}")
    return {"template": approved}
