"""The follow-up survey, end to end on the notifier's side: schedule, send when due, record answers
once, honour opt-outs everywhere.

- `schedule_survey` (conversation.resolved): one `surveys` row per conversation opening, due after
  the configured delay, or stored as skipped with the reason. The schedule lives in the database,
  so a restart loses nothing.
- `send_due_surveys` (a ticker job, `f(now) -> int`): claims due rows in a transaction (FOR UPDATE
  SKIP LOCKED on PostgreSQL, so replicas share the work), checks again (an opt-out or another
  survey may have come since), and sends through the outbox with the idempotency key
  `survey:<conversation>:<opening>`. On WhatsApp after the customer's 24-hour window (counted from
  their last message, carried by conversation.resolved) the survey goes as the approved
  `survey_template` (CSAT) or `nps_template` (NPS: a signed link to the gateway's score page, so
  it needs the survey link secret), or is skipped with the reason when it cannot.
- `record_answer` (survey.answer): the first rating in range is kept; later presses change nothing.
- `record_opt_out` (survey.opt_out): per customer and per channel + address; scheduled surveys of
  that customer are cancelled.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import select, update

from services.notifier.deps import NotifierDeps
from services.notifier.models import Outbox, Survey, SurveyOptOut
from services.notifier.outbox import deliver, send_options
from services.notifier.senders import TransientSendError
from services.notifier.surveys import (
    compose,
    new_token,
    skip_reason,
    survey_kind,
    whatsapp_survey_options,
)
from services.notifier.texts import render_survey_question, render_survey_thanks
from services.notifier.unit_of_work import NotifierUnitOfWork
from shared.bus.publisher import BusUnavailable, Publisher
from shared.contracts import ConversationResolved, Envelope, SurveyAnswer, SurveyResult, derive_id
from shared.contracts import SurveyOptOut as OptOutEvent
from shared.db import transaction
from shared.survey_links import in_scale

log = logging.getLogger(__name__)

#: A survey whose send keeps failing transiently is given up after this many attempts.
MAX_ATTEMPTS = 8
BATCH = 50


def schedule_survey(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    ev: ConversationResolved = envelope.payload
    opening = ev.opening or 1
    now = deps.clock()
    survey_cfg = deps.config.survey
    with deps.uow() as uow:
        if uow.surveys.exists(ev.conversation_id, opening):
            return []  # a redelivered resolution: scheduled once
        reason = skip_reason(human_replied=ev.human_replied,
                             opted_out=uow.opt_outs.any_for(ev.customer_id, ev.channel, ev.reply_to),
                             last_survey_at=uow.surveys.last_sent_at(ev.customer_id), now=ev.resolved_at,
                             cooldown=survey_cfg.cooldown)
        uow.surveys.add(Survey(conversation_id=ev.conversation_id, opening=opening, customer_id=ev.customer_id,
                     customer_name=ev.customer_name, channel=ev.channel, address=ev.reply_to,
                     reply_from=ev.reply_from, language=ev.language,
                     kind=survey_kind(ev.conversation_id, survey_cfg.nps_sample), token=new_token(),
                     status="skipped" if reason else "scheduled", reason=reason, created_at=now,
                     due_at=ev.resolved_at + survey_cfg.delay,
                     last_customer_message_at=ev.last_customer_message_at))
    if reason:
        log.info("no survey for conversation %s: %s", ev.conversation_id, reason)
    return []


def send_due_surveys(now: datetime, deps: NotifierDeps) -> int:
    """Send every survey that is due; returns how many were sent."""
    work: list[tuple[int, int]] = []
    with deps.uow() as uow:
        for survey in uow.surveys.due(now, BATCH):
            outbox_id = _claim(uow, survey, now, deps)
            if outbox_id is not None:
                work.append((survey.id, outbox_id))
        # Sends that failed transiently before (attempted, still pending): try again now. A first
        # attempt in flight elsewhere has no attempt recorded yet, so it is not picked twice.
        for survey in uow.surveys.sending(BATCH):
            row = uow.outbox.by_key(survey_key(survey))
            if row is not None and row.status == "pending" and row.attempts >= 1:
                work.append((survey.id, row.id))
    sent = 0
    for survey_id, outbox_id in work:
        try:
            deliver(outbox_id, deps)
        except TransientSendError as exc:
            log.warning("survey %s not sent yet: %s", survey_id, exc)
        sent += _settle(survey_id, outbox_id, deps)
    return sent


def survey_key(survey: Survey) -> str:
    return f"survey:{survey.conversation_id}:{survey.opening}"


def _claim(uow: NotifierUnitOfWork, survey: Survey, now: datetime, deps: NotifierDeps) -> int | None:
    config = deps.config
    opted = uow.opt_outs.any_for(survey.customer_id, survey.channel, survey.address)
    reason = skip_reason(human_replied=True, opted_out=opted,
                         last_survey_at=uow.surveys.last_sent_at(survey.customer_id, exclude=survey.id), now=now,
                         cooldown=config.survey.cooldown)
    suppressed = uow.suppressions.reason_at(survey.channel, survey.address, now)
    reason = reason or (f"the address is suppressed: {suppressed}" if suppressed else None)
    body = options = None
    if reason is None:
        question = render_survey_question(survey.language, cast(Literal["csat", "nps"], survey.kind), survey.channel,
                                          config.business.name, survey.customer_name, overrides=config.templates or None)
        try:
            body, options = compose(kind=survey.kind, channel=survey.channel, token=survey.token,
                                    language=survey.language, question=question,
                                    business_name=config.business.name, links=deps.survey_links, now=now)
            if survey.channel == "whatsapp":
                whatsapp = config.channels.get("whatsapp")
                options = whatsapp_survey_options(
                    options, kind=survey.kind, token=survey.token, now=now,
                    last_customer_message_at=survey.last_customer_message_at,
                    template=whatsapp.survey_template if whatsapp is not None else None,
                    nps_template=whatsapp.nps_template if whatsapp is not None else None,
                    links=deps.survey_links, language=survey.language)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        survey.status, survey.reason = ("opted_out" if opted else "skipped"), reason
        log.info("survey %s not sent: %s", survey.id, reason)
        return None
    key = survey_key(survey)
    row = uow.outbox.by_key(key)
    if row is None:
        base = send_options(survey.channel, survey.reply_from, now) or {}
        base.pop("last_customer_message_at", None)  # WhatsApp's window: whatsapp_survey_options judged it
        row = Outbox(idempotency_key=key, kind="survey", conversation_id=survey.conversation_id,
                     channel=survey.channel, address=survey.address, body=body, status="pending", attempts=0,
                     correlation_id=key, source_message_id=f"survey:{survey.id}", created_at=now,
                     options={**base, **(options or {})} or None)
        uow.outbox.add(row)
    survey.status = "sending"
    return row.id


def _settle(survey_id: int, outbox_id: int, deps: NotifierDeps) -> int:
    """Carry the outbox row's fate over to the survey; 1 if it was sent."""
    with deps.uow() as uow:
        survey, row = uow.surveys.get(survey_id), uow.outbox.get(outbox_id)
        if survey is None or row is None or survey.status != "sending":
            return 0
        if row.status == "sent":
            survey.status, survey.sent_at, survey.to_report = "sent", row.sent_at, True
            return 1
        if row.status == "pending" and row.attempts >= MAX_ATTEMPTS:
            row.status = "dead"
        if row.status in ("failed", "dead"):
            survey.status, survey.reason = "failed", row.last_error
    return 0


def record_answer(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    ans: SurveyAnswer = envelope.payload
    now = deps.clock()
    thanks: int | None = None
    with deps.uow() as uow:
        survey = uow.surveys.by_token(ans.token, for_update=True)
        if survey is None:
            log.info("an answer for an unknown survey", extra={"channel": ans.channel})
            return []
        if ans.score is not None:
            if survey.answered_at is not None:
                log.info("survey %s already answered; a later answer is not recorded", survey.id)
            elif survey.status not in ("sent", "sending"):
                log.info("survey %s is %s: an answer is not recorded", survey.id, survey.status)
            elif not in_scale(survey.kind, ans.score):
                log.info("survey %s: %s is outside the %s scale", survey.id, ans.score, survey.kind)
            else:
                survey.score, survey.answered_at, survey.status = ans.score, ans.received_at, "answered"
                survey.to_report = True
                if ans.comment:
                    survey.comment = ans.comment
                    survey.comment_source = f"{ans.channel}:{ans.external_id}"[:300]
                if ans.channel != "email":  # a link's own page says thank you
                    thanks = _thanks(uow, survey, envelope, now, deps)
        elif ans.comment and survey.answered_at is not None and survey.comment is None:
            survey.comment, survey.comment_source = ans.comment, f"{ans.channel}:{ans.external_id}"[:300]
    if thanks is not None:
        deliver(thanks, deps)
    return []


def report_surveys(now: datetime, deps: NotifierDeps, publisher: Publisher, *, batch: int = 500) -> int:
    """Tell the router what became of the surveys sent or answered since the last tick (its KPIs
    count them: services meet only on the bus). At least once: the mark is cleared only after the
    broker confirmed, and only if the survey has not changed since it was read; the router's record
    is an upsert, so a second copy changes nothing."""
    with deps.sessions() as s:
        rows = list(s.scalars(select(Survey).where(Survey.to_report).order_by(Survey.id).limit(batch)))
    told = 0
    for survey in rows:
        if survey.sent_at is None:  # answered implies sent; a row without a send time has nothing to say
            continue
        result = SurveyResult(conversation_id=survey.conversation_id, opening=survey.opening, kind=survey.kind,
                              sent_at=survey.sent_at, score=survey.score, answered_at=survey.answered_at,
                              channel=survey.channel, address=survey.address, token=survey.token,
                              commented=survey.comment_source is not None)
        envelope = Envelope.wrap(result, message_id=derive_id("survey-result", str(survey.id), survey.status),
                                 correlation_id=derive_id("survey", str(survey.id)), occurred_at=now)
        try:
            publisher.publish(envelope)
        except BusUnavailable as exc:
            log.warning("survey results not reported yet: %s", exc)
            break
        with transaction(deps.sessions) as s:
            s.execute(update(Survey).where(Survey.id == survey.id, Survey.status == survey.status)
                      .values(to_report=False))
        told += 1
    return told


def _thanks(uow: NotifierUnitOfWork, survey: Survey, envelope: Envelope, now: datetime,
            deps: NotifierDeps) -> int | None:
    key = f"survey-thanks:{survey.conversation_id}:{survey.opening}"
    if uow.outbox.has_key(key):
        return None
    body = render_survey_thanks(survey.language, survey.kind,
                                overrides=deps.config.templates or None)
    options = send_options(survey.channel, survey.reply_from, now) or {}
    options.pop("last_customer_message_at", None)
    row = Outbox(idempotency_key=key, kind="survey_thanks", conversation_id=survey.conversation_id,
                 channel=survey.channel, address=survey.address, body=body, status="pending", attempts=0,
                 correlation_id=envelope.correlation_id, source_message_id=envelope.message_id, created_at=now,
                 options=options or None)
    uow.outbox.add(row)
    return row.id


def record_opt_out(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    ev: OptOutEvent = envelope.payload
    now = deps.clock()
    with deps.uow() as uow:
        customer_id, channel, address = ev.customer_id, ev.channel, ev.address
        if ev.token:
            survey = uow.surveys.by_token(ev.token)
            if survey is not None:
                customer_id = customer_id or survey.customer_id
                channel, address = (survey.channel, survey.address) if not address else (channel, address)
        if not address:
            log.info("an opt-out nobody can be found for", extra={"channel": ev.channel})
            return []
        row = uow.opt_outs.by_address(channel, address)
        if row is None:
            uow.opt_outs.add(SurveyOptOut(customer_id=customer_id, channel=channel, address=address,
                               source=f"{ev.channel}:{ev.external_id}"[:255], created_at=now))
        elif customer_id and row.customer_id is None:
            row.customer_id = customer_id
        uow.surveys.opt_out_scheduled(customer_id, channel, address)
    log.info("opted out of surveys on %s", ev.channel)
    return []
