"""What providers report about messages we sent: a delivery status callback moves the outbox row's
status forward; a bounce or complaint about a mail marks it failed and may suppress the address."""

from __future__ import annotations

import logging

from services.notifier.deps import NotifierDeps
from services.notifier.models import Suppression
from shared.contracts import AddressSuppressed, DeliveryStatus, Envelope, MailReport, derive_id
from shared.delivery import status_moves_forward

log = logging.getLogger(__name__)


def record_delivery(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """A provider's status callback: only ever moves the recorded status forward."""
    st: DeliveryStatus = envelope.payload
    with deps.uow() as uow:
        # A caller's acknowledgement went out as an SMS: its status callback says "sms".
        channels = ("sms", "phone") if st.channel == "sms" else (st.channel,)
        row = uow.outbox.by_provider_id(channels, st.provider_message_id)
        if row is None:
            log.info("status %s for an unknown %s message %s", st.status, st.channel, st.provider_message_id)
            return []
        if status_moves_forward(row.delivery_status, st.status):
            row.delivery_status = st.status
            if st.error_code or st.error_message:
                row.delivery_error = f"{st.error_code or ''} {st.error_message or ''}".strip()
    return []


def record_mail_report(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """A bounce or complaint about a mail we sent, found by the Message-ID it quotes: the outbox row
    is marked failed with the reason; a permanent failure or a complaint suppresses the address we
    wrote to (as an SMS opt-out does), and the router is told so that agents see it.

    The report is hostile input relayed: only a Message-ID of our own outbox counts, and the address
    suppressed is the one that row was sent to, never the one the report names. Idempotent: a
    redelivery finds the row failed and the suppression in place, and yields the same event id."""
    ev: MailReport = envelope.payload
    now = deps.clock()
    with deps.uow() as uow:
        row = uow.outbox.by_provider_id(("email",), ev.original_message_id)
        if row is None:
            log.info("a %s about a message that is not ours (%s): nothing to mark", ev.kind, ev.original_message_id)
            return []
        if status_moves_forward(row.delivery_status, "failed"):
            row.delivery_status = "failed"
        row.delivery_error = ev.reason[:2000]
        if not ev.permanent:
            return []
        reason = f"{'complained (spam report)' if ev.kind == 'complaint' else 'bounced'}: {ev.reason}"[:2000]
        existing = uow.suppressions.get("email", row.address)
        if existing is None:
            uow.suppressions.add(Suppression(channel="email", address=row.address, reason=reason, created_at=now, until=None))
        else:
            existing.reason, existing.until = reason, None
        suppressed = AddressSuppressed(channel="email", address=row.address, reason=reason, suppressed_at=now,
                                       conversation_id=row.conversation_id)
    log.warning("e-mail address suppressed after a %s", ev.kind, extra={"outbox_id": row.id})
    return [Envelope.wrap(suppressed, message_id=derive_id("event", suppressed.TYPE, envelope.message_id),
                          correlation_id=envelope.correlation_id, occurred_at=now)]
