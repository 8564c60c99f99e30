"""What the customer is sent in answer to an event: the acknowledgement of a new conversation, the
note on a redirect-mode channel, and an agent's reply — each claimed in the outbox under its own
idempotency key and delivered through it (services.notifier.outbox)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier import outbox, promises
from services.notifier.deps import NotifierDeps
from services.notifier.models import Outbox
from services.notifier.texts import render_redirect
from services.notifier.unit_of_work import NotifierUnitOfWork
from shared.config import Config, template_language
from shared.contracts import ConversationOpened, ConversationReply, Envelope, Redirected
from shared.metrics import MESSAGES_OUT, observe_stage


@dataclass
class EventClaims:
    """A conversation.opened or conversation.message event as its claiming transaction left it:
    the acknowledgement's outbox claim (None: none is sent for it) and the agent notices claimed
    with it."""

    envelope: Envelope
    ack: outbox.Claim | None
    notices: list[tuple[promises.ClaimedNotice, outbox.Claim]] = field(default_factory=list)
    #: After the sends: what each notice came to, for promises.record_sent.
    outcomes: list[tuple[int, str | None]] = field(default_factory=list)


def claim_events(uow: NotifierUnitOfWork, envelopes: Sequence[Envelope], deps: NotifierDeps,
                 now: datetime) -> list[EventClaims]:
    """In the caller's unit of work, for conversation.opened and conversation.message events of
    distinct conversations: the promises and agent notices (promises.record_many), the
    acknowledgements' daily cap, and the acknowledgements' and due notices' outbox rows claimed
    together (outbox.claim_many) — a few set-based statements for the whole batch. Committed
    before anything is sent."""
    notices = promises.record_many(uow, envelopes, deps.config, now)
    acks: dict[int, outbox.Draft] = {}
    for i, envelope in enumerate(envelopes):
        ev = envelope.payload
        if envelope.type == ConversationOpened.TYPE and ev.acknowledge:
            acks[i] = outbox.Draft({
                "idempotency_key": f"ack:{ev.conversation_id}:{ev.opening}", "kind": "ack",
                "conversation_id": ev.conversation_id, "customer_id": ev.customer_id, "channel": ev.channel,
                "address": ev.reply_to, "body": deps.compose_ack(ev, now), "status": "pending", "attempts": 0,
                "last_error": None, "correlation_id": envelope.correlation_id,
                "source_message_id": envelope.message_id, "created_at": now,
                "options": outbox.send_options(ev.channel, ev.reply_from, ev.received_at,
                                               email=_ack_email_options(ev))})
    drafts = list(acks.values()) + [notice.draft for event in notices for notice in event]
    claims = outbox.claim_many(uow, drafts, now, refuse=_daily_cap(uow, list(acks.values()), deps.config, now))
    ack_claims = dict(zip(acks, claims, strict=False))
    notice_claims = iter(claims[len(acks):])
    return [EventClaims(envelope, ack_claims.get(i), [(notice, next(notice_claims)) for notice in notices[i]])
            for i, envelope in enumerate(envelopes)]


def _daily_cap(uow: NotifierUnitOfWork, acks: list[outbox.Draft], config: Config,
               now: datetime) -> Callable[[dict[str, Any]], str | None]:
    """The refusal of a new acknowledgement over the daily cap (`_acks_today` for a batch): the
    acknowledgements of the last day to its address or customer, those this batch claimed before
    it included. Read in one statement, when the batch has new acknowledgements to ask about."""
    since = now - timedelta(days=1)
    counted: list[tuple[str, str, str | None]] | None = None  # (channel, address, customer) of each
    cap = config.limits.ack_daily_cap

    def over_cap(values: dict[str, Any]) -> str | None:
        nonlocal counted
        if values["kind"] != "ack":
            return None
        if counted is None:
            rows = uow.outbox.recent_acks({(d.values["channel"], d.values["address"]) for d in acks},
                                          {d.values["customer_id"] for d in acks if d.values["customer_id"]}, since)
            counted = [(channel, address, customer) for _, channel, address, customer in rows]
        channel, address, customer = values["channel"], values["address"], values["customer_id"]
        today = sum(1 for c, a, who in counted if (c, a) == (channel, address) or (customer and who == customer))
        if today >= cap:
            return "daily acknowledgement cap reached for this customer"
        counted.append((channel, address, customer))  # pending once inserted: the batch's later ones count it
        return None
    return over_cap


def rows_to_send(claims: EventClaims) -> list[int]:
    """The outbox rows `send_claimed` sends now: those claimed to be sent that wait for no
    earlier message (those raise WaitingForEarlier without a send)."""
    sends = ([claims.ack] if claims.ack is not None else []) + [claim for _, claim in claims.notices]
    return [claim.row_id for claim in sends if claim.send is not None and claim.send.waits_for is None]


def claim_and_send(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """One conversation.opened or conversation.message event alone: its claims in one
    transaction, then its sends, then its notices' statuses."""
    with deps.uow() as uow:
        [claims] = claim_events(uow, [envelope], deps, deps.clock())
    try:
        return send_claimed(claims, deps)
    finally:
        promises.record_sent(claims.outcomes, deps, deps.clock())


def send_claimed(claims: EventClaims, deps: NotifierDeps, *,
                 sending: outbox.SendingTogether | None = None) -> list[Envelope]:
    """After the claims' commit: the acknowledgement, then the agent notices claimed with it (sent
    even when the acknowledgement must wait for a retry: the agent's news does not). The notices'
    statuses are recorded by the caller, for a whole batch at once (promises.record_sent), from
    `claims.outcomes`; returns the events to publish (none). `sending`: the batch's sending
    transaction (outbox.sending_together), holding the locks of the rows claimed to be sent."""
    ev = claims.envelope.payload
    claim = claims.ack
    if claim is not None and claim.created and claim.status == "skipped":
        MESSAGES_OUT.labels(ev.channel, "skipped").inc()
    now = deps.clock()
    try:
        # The wording is computed again at the moment of sending: after a broker outage, a retry or
        # a spooled backlog, "we are closed", "back at 09:00" and the promise must be true then.
        if claim is not None and claim.send is not None and outbox.deliver(
                claim.row_id, deps, claimed=claim.send, compose=lambda at: deps.compose_ack(ev, at),
                sending=sending) == "sent":
            # The customer's wait, from the webhook to the provider's accepting the acknowledgement.
            observe_stage("sent", ev.channel, claims.envelope.occurred_at, deps.clock())
    finally:
        claims.outcomes = promises.send_claimed(claims.notices, deps, now, sending=sending)
    return []


def redirect(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """One note per address on a redirect-mode channel, ever: where to write instead."""
    ev: Redirected = envelope.payload
    key = f"redirect:{ev.channel}:{ev.reply_to}"
    now = deps.clock()
    config = deps.config

    def build() -> Outbox:
        body = render_redirect(ev.language, ev.channel, list(config.channels[ev.channel].redirect_to),
                               config.business.name, overrides=config.templates or None)
        return Outbox(idempotency_key=key, kind="redirect", conversation_id=None, channel=ev.channel,
                      address=ev.reply_to, body=body, status="pending", attempts=0,
                      correlation_id=envelope.correlation_id, source_message_id=envelope.message_id,
                      created_at=now, options=outbox.send_options(ev.channel, ev.reply_from, ev.received_at))

    with deps.uow() as uow:
        # Every message from one address shares this key: only the event that made the row (its
        # bus retry, its DLQ replay) sends it again; the customer's next message sends nothing.
        claim = outbox.claim(uow, key, build, now, only_for_source=envelope.message_id)
    if claim.send is not None:
        outbox.deliver(claim.row_id, deps, claimed=claim.send)
    return []


def send_reply(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """An agent's reply, on the customer's channel, once: the key is the reply's id."""
    ev: ConversationReply = envelope.payload
    key = f"reply:{ev.reply_id}"
    now = deps.clock()
    # Without the customer's last message time a WhatsApp window counts as closed, never as open.
    last = ev.last_customer_message_at or datetime.min.replace(tzinfo=UTC)
    with deps.uow() as uow:
        claim = outbox.claim(uow, key, lambda: Outbox(
            idempotency_key=key, kind="reply", conversation_id=ev.conversation_id, channel=ev.channel,
            address=ev.reply_to, body=ev.text, status="pending", attempts=0,
            correlation_id=envelope.correlation_id, source_message_id=envelope.message_id,
            created_at=now, options=_reply_options(uow, ev, deps.config, last)), now)
    if claim.send is not None:
        outbox.deliver(claim.row_id, deps, claimed=claim.send)
    return []


def _reply_options(uow: NotifierUnitOfWork, ev: ConversationReply, config: Config, last: datetime) -> dict | None:
    """An agent's reply continues the thread the acknowledgement started: the same subject and
    reference, In-Reply-To the customer's mail, References our acknowledgement; and it is a human
    answer, so no Auto-Submitted header. On WhatsApp, the reply template for a closed window."""
    email = None
    if ev.channel == "email":
        ack = uow.outbox.last_email_ack(ev.conversation_id)
        previous = dict(ack.options or {}) if ack is not None else {}
        email = {k: previous[k] for k in ("subject", "reference", "in_reply_to") if previous.get(k)}
        if ack is not None and ack.provider_message_id:
            email["references"] = [ack.provider_message_id]
    options = outbox.send_options(ev.channel, ev.reply_from, last, email=email) or {}
    channel = config.channels.get(ev.channel)
    if ev.channel == "whatsapp" and channel is not None and channel.reply_template:
        language = template_language(ev.language, channel.reply_template_language, channel.reply_template_languages)
        options["fallback_template"] = {"name": channel.reply_template, "language": language}
    return options or None



def _ack_email_options(ev: ConversationOpened) -> dict:
    """Threaded and loop-safe: "Re: <their subject> [SB-…]", In-Reply-To their Message-ID, and
    Auto-Submitted: auto-replied so that their autoresponder stays quiet (RFC 3834)."""
    subject = (ev.subject or "").strip()
    if subject and not subject.lower().startswith(("re:", "aw:", "odp:", "отв:", "ha:")):
        subject = f"Re: {subject}"
    options: dict = {"subject": subject or None, "reference": ev.reference, "automatic": True}
    if ev.in_reply_to:
        options["in_reply_to"] = ev.in_reply_to
    return options
