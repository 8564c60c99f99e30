"""Inbound messages that talk to a survey, not to an agent: they open no conversation.

The router sees every inbound message, so it picks these out before routing:
- "STOP", "unsubscribe", "стоп"… (the whole message): no more surveys for this customer, on any
  channel → `survey.opt_out` with the customer's id;
- a bare number in the survey's scale from an address that was sent a survey recently (SMS
  "reply 1–5", or WhatsApp NPS, which has no buttons) → `survey.answer`;
- the first text after an answer, within a day, is also the answer's optional comment (the thanks
  invites one) → `survey.answer` with the comment; it is routed as well, because it may just as
  well be a new question, and nothing a customer writes may get lost.

It reads the router's own record of the surveys (conversation_surveys), kept from the notifier's
feedback.survey_result events (services meet only on the bus): where each survey went, its token,
when it was sent and answered, whether a comment is held. The notifier reports a survey in the same
ticker round that sends it. The events are derived from the message id: a redelivery yields the same
event and the notifier's once-only recording does the rest. The one thing stored here is the mark
that a comment was passed on, in the same transaction as the message that carries it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from services.router.unit_of_work import RouterUnitOfWork
from shared.contracts import Envelope, InboundMessage, SurveyAnswer, SurveyOptOut, derive_id
from shared.survey_links import in_scale

#: Whole-message opt-out words (lower case): Twilio's own keywords and their everyday equivalents
#: in the configured languages.
STOP_WORDS = frozenset({
    "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "opt out", "opt-out",
    "стоп", "отписаться", "отписка", "відписатися", "відписка", "abmelden", "wypisz", "rezygnuję", "atsisakyti",
    "отписване",
})
#: How long after a survey was sent a bare number still answers it.
ANSWER_WINDOW = timedelta(days=7)
#: How long after an answer the next text is taken as its comment.
COMMENT_WINDOW = timedelta(days=1)

_TRAILING = ".!,;:"
_NUMBER = re.compile(r"^\d{1,2}$")


def normalise(text: str) -> str:
    # Trailing spaces and punctuation cut from the end, without a regex: "[\s.!,;:]+$" searched
    # from every start in a long run of spaces, which is quadratic in the length of the run.
    text = (text or "").strip()
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in _TRAILING):
        end -= 1
    return text[:end].strip().lower()


def is_stop(msg: InboundMessage) -> bool:
    return msg.meta.get("opt") == "out" or normalise(msg.text) in STOP_WORDS


def survey_reply(uow: RouterUnitOfWork, envelope: Envelope, msg: InboundMessage) -> tuple[Envelope | None, bool]:
    """(the survey event this message is or carries, whether it is to be routed as well)."""
    if msg.automatic or msg.channel == "phone":
        # A voicemail's transcript is what the caller said for a person ("stop the delivery",
        # "5 o'clock"), never a keyword or a rating typed for us: it is always the owner's message.
        return None, True
    if is_stop(msg):
        customer_id = uow.customers.customer_id(msg.sender.kind, msg.sender.value)
        return _wrap(envelope, SurveyOptOut(channel=msg.channel, external_id=msg.external_id, address=msg.reply_to,
                                            received_at=msg.received_at, customer_id=customer_id)), False
    text = normalise(msg.text)
    if not text:
        return None, True
    channels = answer_channels(msg.channel)
    if _NUMBER.match(text):
        survey = uow.surveys.last_sent(channels, msg.reply_to, since=msg.received_at - ANSWER_WINDOW)
        if survey is not None and survey.token and in_scale(survey.kind, int(text)):
            return _wrap(envelope, SurveyAnswer(channel=msg.channel, external_id=msg.external_id, token=survey.token,
                                                score=int(text), received_at=msg.received_at)), False
        return None, True
    answered = uow.surveys.last_answered(channels, msg.reply_to, since=msg.received_at - COMMENT_WINDOW)
    # Only the first text after the answer (a redelivery is re-published from the router's outbox).
    if answered is not None and answered.token and not answered.commented and not msg.attachments:
        answered.commented = True
        return _wrap(envelope, SurveyAnswer(channel=msg.channel, external_id=msg.external_id, token=answered.token,
                                            received_at=msg.received_at, comment=(msg.text or "").strip()[:2000])), True
    return None, True


def answer_channels(channel: str) -> tuple[str, ...]:
    """The channels of the surveys a message on this channel may answer: an SMS answers a survey
    sent by SMS, or one sent to a caller (by SMS, to the number they called from)."""
    return ("sms", "phone") if channel == "sms" else (channel,)


def _wrap(envelope: Envelope, event: SurveyAnswer | SurveyOptOut) -> Envelope:
    return Envelope.wrap(event, message_id=derive_id("event", event.TYPE, envelope.message_id),
                         correlation_id=envelope.correlation_id, occurred_at=envelope.occurred_at)
