"""Tells the gateway whom a customer's phone reaches: `ownership.phone`, for its call routing.

The gateway rings the owner of a caller's open conversation. It keeps that in a table of its own,
filled from these events (services/gateway/owners.py), instead of reading the router's tables. The
router sends one whenever what a call would ring changes: a conversation opened or reopened, a new
owner or the team's queue, a resolution. Only for customers with a phone identity: the others
cost nothing.

Each is stored in the router's outbox with the change, pending until the broker confirmed it, like
the agent API's events: the API publishes it after its commit, the worker after the message that
opened the conversation (`publish_after_opening`), and the relay whatever either could not. It is
not among the events a handler returns, which are the notifier's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.router.models import Assignment, Conversation, Identity, RouterOutbox
from shared.contracts import ConversationOpened, Envelope, PhoneOwnership, derive_id, encode

PHONE = "phone"
PHONE_MAX, MAX_PHONES = 32, 50  # as PhoneOwnershipSchema takes them


def customer_phones(s: Session, customer_id: str) -> tuple[str, ...]:
    return tuple(sorted(s.scalars(select(Identity.value).where(Identity.customer_id == customer_id,
                                                                Identity.kind == PHONE))))


def last_assignment(s: Session, conversation_id: str) -> int:
    """The conversation's latest assignment id (the event's sequence; see PhoneOwnership)."""
    return s.scalar(select(func.max(Assignment.id)).where(Assignment.conversation_id == conversation_id)) or 0


def phone_ownership(s: Session, conv: Conversation, *, at: datetime, message_id: str, correlation_id: str,
                    sequence: int | None = None, phones: Iterable[str] | None = None) -> Envelope | None:
    """The event for the conversation as it is now (flushed), or None when its customer has no phone.

    `sequence`: the assignment just flushed, when the caller has it; `phones`: the customer's phones
    when the caller knows them (a customer made by this message: the identities it brought).
    """
    found = tuple(phones) if phones is not None else customer_phones(s, conv.customer_id)
    if not _numbers(found):
        return None  # and no look-up of the sequence
    return ownership_event(conv, found, at=at, message_id=message_id, correlation_id=correlation_id,
                           sequence=sequence if sequence is not None else last_assignment(s, conv.id))


def ownership_event(conv: Conversation, phones: Iterable[str], *, at: datetime, message_id: str, correlation_id: str,
                    sequence: int) -> Envelope | None:
    """The event for the conversation with these phones of its customer, or None without one."""
    numbers = _numbers(phones)
    if not numbers:
        return None
    is_open = conv.status == "open"
    event = PhoneOwnership(conversation_id=conv.id, phones=numbers, owner_id=conv.owner_id if is_open else None,
                           open=is_open, sequence=sequence, changed_at=at)
    return Envelope.wrap(event, message_id=message_id, correlation_id=correlation_id, occurred_at=at)


def _numbers(phones: Iterable[str]) -> tuple[str, ...]:
    # What the contract takes (E.164 is at most 16 characters): an odd stored value must never make
    # the router's own transaction fail.
    return tuple(sorted({p for p in phones if 0 < len(p) <= PHONE_MAX}))[:MAX_PHONES]


def pending_row(conv: Conversation, envelope: Envelope, at: datetime) -> RouterOutbox:
    """The event's outbox row, pending until the broker confirmed it."""
    return RouterOutbox(message_id=envelope.message_id, source_message_id=conv.id, body=encode(envelope),
                        created_at=at, pending_since=at)


def record_phone_ownership(s: Session, conv: Conversation, *, at: datetime, message_id: str, correlation_id: str,
                           sequence: int | None = None, phones: Iterable[str] | None = None) -> str | None:
    """Store the event in the outbox, pending; its message id, or None when there is none to send."""
    envelope = phone_ownership(s, conv, at=at, message_id=message_id, correlation_id=correlation_id,
                               sequence=sequence, phones=phones)
    if envelope is None:
        return None
    s.add(pending_row(conv, envelope, at))
    return envelope.message_id


def opening_ownership_id(inbound_message_id: str) -> str:
    """The message id of the event a customer's message that opened a conversation stores: derived,
    so its redelivery stores nothing new."""
    return derive_id("event", PhoneOwnership.TYPE, inbound_message_id)


def publish_after_opening(events: list[Envelope], publish_pending: Callable[[list[str]], object]) -> None:
    """After the worker's handler: publish the ownership event of a conversation it opened (one
    indexed look-up, and only for a message that opened one). `publish_pending(ids)` leaves what it
    could not publish pending, for the relay."""
    ids = [opening_ownership_id(e.payload.inbound_message_id) for e in events if isinstance(e.payload, ConversationOpened)]
    if ids:
        publish_pending(ids)

