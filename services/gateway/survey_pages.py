"""Survey links: `GET /survey/<signed>` shows a page, `POST /survey/<signed>` records the answer.

E-mail security scanners and link previews open every link in a mail, so opening one must answer
nothing: a GET shows the question with the link's score preselected (one tap on "Send" answers),
the scale for a link without a score (a WhatsApp NPS template's URL button: a template cannot hold
eleven quick replies), or a "no more surveys" button for the unsubscribe link. The POST from that
page publishes `survey.answer` (or `survey.opt_out`) like any webhook — with confirms, or into the
spool — and the notifier records an answer once, so a second tap adds nothing.

The unsubscribe link is also the survey mail's `List-Unsubscribe` with `List-Unsubscribe-Post:
List-Unsubscribe=One-Click` (RFC 8058): a mail client's one-click unsubscribe POSTs
`List-Unsubscribe=One-Click` to it, with no cookie and no page, and that opts out.

The link is checked first (shared/survey_links.py): a tampered one → 400, an expired one → 410,
each a friendly page in the survey's language, and nothing is published. The signed link is the
credential and the only thing a POST needs (no session, so no CSRF token: a forged POST would
need the link itself); the page's CSP allows forms to post to this origin only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flask import Blueprint, Response, request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.gateway.intake import Intake
from shared.config import Config
from shared.contracts import Envelope, SurveyAnswer, SurveyOptOut, derive_id
from shared.locale import words
from shared.survey_links import SCALES, LinkAction, LinkExpired, LinkInvalid, read_link, sign_link
from shared.vocabulary import LANGUAGES

log = logging.getLogger(__name__)

MAX_COMMENT = 2000
LOCALE_DIR = Path(__file__).with_name("locale")
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

#: The page's words per language, from services/gateway/locale/<language>.yaml (shared.locale.words).
TEXTS: dict[str, dict[str, str]] = {language: words(LOCALE_DIR, language)["survey_page"] for language in LANGUAGES}

_templates = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                         autoescape=select_autoescape(default=True, default_for_string=True))


def survey_blueprint(*, secret: str | None, intake: Intake, config: Config,
                     clock: Callable[[], datetime]) -> Blueprint:
    bp = Blueprint("survey", __name__)

    def page(state: str, language: str | None, status: int, form_action: str | None = None,
             **pick: object) -> Response:
        lang = language if language in TEXTS else config.business.default_language
        lang = lang if lang in TEXTS else "en"
        html = _templates.get_template("survey_page.html.j2").render(
            lang=lang, t=TEXTS[lang], state=state, form_action=form_action, business_name=config.business.name,
            **pick)
        response = Response(html, status, content_type="text/html; charset=utf-8")
        # The link is the credential: keep it out of caches and of other sites' Referer headers.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        # No scripts, no third-party anything: the page is text, its own style, links and forms.
        response.headers["Content-Security-Policy"] = CSP
        return response

    def read(signed: str) -> LinkAction | Response:
        if not secret:
            return page("invalid", None, 404)
        try:
            return read_link(secret, signed, now=clock())
        except LinkExpired as exc:
            return page("expired", exc.language, 410)
        except LinkInvalid:
            return page("invalid", None, 400)

    def publish(payload) -> None:
        envelope = Envelope.wrap(payload, message_id=derive_id("survey-link", payload.channel, payload.external_id),
                                 correlation_id=str(uuid.uuid4()), occurred_at=payload.received_at)
        intake.accept(envelope)

    def scale(action: LinkAction) -> list[int]:
        """The scores this link may answer with: its kind's scale; a link signed before links
        carried their kind, only its own score."""
        if action.kind is not None:
            return list(SCALES[action.kind])
        return [action.score] if action.score is not None else []

    @bp.get("/survey/<signed>")
    def show(signed: str):
        """Only a page: scanners and previews open links, and opening answers nothing."""
        action = read(signed)
        if isinstance(action, Response):
            return action
        if action.unsubscribe:
            return page("confirm_unsubscribe", action.language, 200, form_action=f"/survey/{signed}")
        choices = scale(action)
        if not choices:  # a link without a score or a kind answers nothing
            return page("invalid", action.language, 400)
        # The way out too, signed with the original link's time so the page does not extend its life.
        unsubscribe = "/survey/" + sign_link(secret or "", token=action.token, language=action.language,
                                             unsubscribe=True, now=action.signed_at)
        return page("pick", action.language, 200, form_action=f"/survey/{signed}", kind=action.kind or
                    ("nps" if max(choices) > 5 else "csat"), choices=choices, preselected=action.score,
                    unsubscribe=unsubscribe)

    @bp.post("/survey/<signed>")
    def answer(signed: str):
        action = read(signed)
        if isinstance(action, Response):
            return action
        now = clock()
        if action.unsubscribe:
            # The page's button, or RFC 8058's one-click POST (body "List-Unsubscribe=One-Click").
            publish(SurveyOptOut(channel="email", external_id=f"link:{action.token}:unsubscribe", address=None,
                                 received_at=now, token=action.token))
            return page("unsubscribed", action.language, 200)
        if "score" in request.form:
            raw = request.form.get("score", "")
            score = int(raw) if raw.isdigit() and len(raw) <= 2 else None
            if score is None or score not in scale(action):
                return page("invalid", action.language, 400)
            publish(SurveyAnswer(channel="email", external_id=f"link:{action.token}:{score}", token=action.token,
                                 score=score, received_at=now))
            return page("thanks", action.language, 200, form_action=f"/survey/{signed}")
        text = (request.form.get("comment") or "").strip()[:MAX_COMMENT]
        if text:
            publish(SurveyAnswer(channel="email", external_id=f"link:{action.token}:comment", token=action.token,
                                 received_at=now, comment=text))
        return page("comment_thanks", action.language, 200)

    return bp
