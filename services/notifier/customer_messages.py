"""What the customer is sent in answer to an event: the acknowledgement of a new conversation, the
note on a redirect-mode channel, and an agent's reply — each claimed in the outbox under its own
idempotency key and delivered through it (services.notifier.outbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.notifier import outbox, promises
from services.notifier.deps import NotifierDeps
from services.notifier.models import Outbox
from services.notifier.texts import render_redirect
from services.notifier.unit_of_work import NotifierUnitOfWork
from shared.config import Config, template_language
from shared.contracts import ConversationOpened, ConversationReply, Envelope, Redirected
from shared.metrics import MESSAGES_OUT, observe_stage


def acknowledge(envelope: Envelope, deps: NotifierDeps, *, notices: list[int] | None = None) -> list[Envelope]:
    """Claim the acknowledgement's outbox row, then send it. With `notices`, the event's promise and
    agent notices are recorded in the same transaction and the notices due now are added to it."""
    ev: ConversationOpened = envelope.payload
    key = f"ack:{ev.conversation_id}:{ev.opening}"
    now = deps.clock()
    with deps.uow() as uow:
        if notices is not None:
            notices += promises.record_in(uow, envelope, deps.config, now)
        if not ev.acknowledge:
            return []

        def build() -> Outbox:
            return Outbox(idempotency_key=key, kind="ack", conversation_id=ev.conversation_id,
                          customer_id=ev.customer_id, channel=ev.channel,
                          address=ev.reply_to, body=deps.compose_ack(ev, now), status="pending", attempts=0,
                          correlation_id=envelope.correlation_id, source_message_id=envelope.message_id,
                          created_at=now, options=outbox.send_options(ev.channel, ev.reply_from, ev.received_at,
                                                                      email=_ack_email_options(ev)))

        def over_cap() -> str | None:
            cap = deps.config.limits.ack_daily_cap
            if _acks_today(uow, ev.channel, ev.reply_to, now, customer_id=ev.customer_id) >= cap:
                return "daily acknowledgement cap reached for this customer"
            return None

        claim = outbox.claim(uow, key, build, now, refuse=over_cap)
    if claim.created and claim.status == "skipped":
        MESSAGES_OUT.labels(ev.channel, "skipped").inc()
    # The wording is computed again at the moment of sending: after a broker outage, a retry or a
    # spooled backlog, "we are closed", "back at 09:00" and the promise must be true then.
    if claim.send is not None and outbox.deliver(claim.row_id, deps, claimed=claim.send,
                                                 compose=lambda at: deps.compose_ack(ev, at)) == "sent":
        # The customer's wait, from the webhook to the provider's accepting the acknowledgement.
        observe_stage("sent", ev.channel, envelope.occurred_at, deps.clock())
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


def _acks_today(uow: NotifierUnitOfWork, channel: str, address: str, now: datetime, *,
                customer_id: str | None = None) -> int:
    """Acknowledgements in the last day to this address or, given the customer, to any of the
    customer's addresses: a sender who writes from several addresses (or channels) is capped once."""
    return uow.outbox.acks_since(channel, address, now - timedelta(days=1), customer_id=customer_id)
