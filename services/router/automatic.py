"""Automatic mail in the router: stored where agents find it, and nothing else.

A vacation reply, a bounce, a complaint, a read receipt, spam or list mail (the gateway's
`services.gateway.channels.loops` names the kind) is kept as a conversation of its own with the
status "automatic": no owner, no promise, no acknowledgement, no agent notice, outside the KPIs
and never joining, opening or reopening a customer's conversation. Every agent sees it under the
"automatic" filter (it came to the shared mailbox and belongs to nobody); a lead sees the count by
kind on the dashboard.

A bounce or complaint that quotes one of our Message-IDs becomes a `MailReport` for the notifier,
which owns the outbox: it marks that message failed and, when the failure is permanent or a
complaint, stops writing to the address. The notifier's `AddressSuppressed` comes back here and is
kept as a note in the conversation of the failed message, so whoever answers the customer sees it.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.router.models import Conversation, Customer, Message
from services.router.unit_of_work import RouterUnitOfWork
from shared.contracts import AddressSuppressed, Envelope, InboundMessage, MailReport, derive_id

log = logging.getLogger(__name__)

STATUS = "automatic"

#: What a stored automatic conversation says of its owner and promise, for the agent who opens it.
NO_OWNER = "automatic mail: no owner, no promise, no acknowledgement"


def kind_of(msg: InboundMessage) -> str:
    kind = msg.meta.get("automatic_kind")
    return kind if isinstance(kind, str) and kind else "auto"


def conversation(msg: InboundMessage, envelope: Envelope, customer: Customer, *, reference: str, language: str,
                 team_id: str | None, reply_from: str | None) -> Conversation:
    """The automatic mail's own conversation. promise_due is a required column: it holds the
    arrival time and means nothing, as no promise is made (the notifier never hears of it)."""
    at = msg.received_at
    return Conversation(
        id=derive_id("conversation", envelope.message_id), reference=reference, customer_id=customer.id,
        status=STATUS, opening=1, channel=msg.channel, reply_to=msg.reply_to, reply_from=reply_from,
        language=language, category="other",
        category_reason={"automatic": kind_of(msg), "reason": str(msg.meta.get("automatic_reason") or "")},
        owner_id=None, team_id=team_id, assignment_reason=NO_OWNER, opened_at=at, promise_due=at,
        last_message_at=at)


def report_event(msg: InboundMessage, envelope: Envelope) -> list[Envelope]:
    """The MailReport of a failed delivery or a complaint about a message of ours, if it names one.
    A delay notice (nothing failed yet) and a read receipt tell the notifier nothing."""
    report = msg.meta.get("report")
    if not isinstance(report, dict) or report.get("kind") not in ("bounce", "complaint"):
        return []
    original = report.get("original_message_id")
    if not isinstance(original, str) or not original or len(original) > 255:
        return []
    if report["kind"] == "bounce" and not report.get("failed"):
        return []
    permanent = bool(report.get("permanent")) or report["kind"] == "complaint"
    words = [report["kind"], "(permanent)" if permanent else "(temporary)"]
    for key in ("status", "diagnostic"):
        if isinstance(report.get(key), str) and report[key]:
            words.append(report[key])
    recipient = report.get("recipient") if isinstance(report.get("recipient"), str) else None
    event = MailReport(original_message_id=original, kind=report["kind"], permanent=permanent,
                       reason=" ".join(words)[:2000], occurred_at=msg.received_at, recipient=recipient)
    return [Envelope.wrap(event, message_id=derive_id("event", event.TYPE, envelope.message_id),
                          correlation_id=envelope.correlation_id, occurred_at=msg.received_at)]


def record_suppression(uow: RouterUnitOfWork, envelope: Envelope) -> None:
    """The notifier's suppression, as a note in the conversation of the failed message (once per
    event: the note's id is the event's). Without a known conversation it is only logged."""
    ev: AddressSuppressed = envelope.payload
    conv = uow.conversations.get(ev.conversation_id) if ev.conversation_id else None
    if conv is None:
        log.info("%s address suppressed outside any conversation: %s", ev.channel, ev.reason)
        return
    if uow.messages.get(envelope.message_id) is not None:
        return
    uow.messages.add(Message(id=envelope.message_id, conversation_id=conv.id, direction="note", channel=ev.channel,
                  external_id=f"suppressed:{envelope.message_id}", sender_kind="system", sender_value="notifier",
                  text=f"No more messages are sent to {ev.address}: {ev.reason}", received_at=ev.suppressed_at,
                  correlation_id=envelope.correlation_id,
                  details={"suppressed": {"channel": ev.channel, "address": ev.address, "reason": ev.reason}}))


def counts(s: Session, start: datetime, end: datetime, team_id: str | None = None) -> dict[str, Any]:
    """Automatic mail received in [start, end), by kind: a lead's view of bounce and spam volume."""
    stmt = select(Conversation.category_reason).where(Conversation.status == STATUS, Conversation.opened_at >= start,
                                                      Conversation.opened_at < end)
    if team_id is not None:
        stmt = stmt.where(Conversation.team_id == team_id)
    by_kind = Counter((reason or {}).get("automatic", "auto") for reason in s.scalars(stmt))
    return {"total": sum(by_kind.values()), "by_kind": dict(sorted(by_kind.items()))}
