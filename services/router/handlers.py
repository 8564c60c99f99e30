"""The router's message handler: identity, conversation, language, category, owner, promise.

`handle_inbound` runs in one transaction and returns the events to publish after it committed.
It is idempotent: a message already stored (same channel and provider id) changes nothing, and
the events it produced the first time are returned again, so a crash between commit and publish
is repaired by the redelivery.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.router.assignment import Decision, choose_owner
from services.router.models import Assignment, Conversation, Customer, Identity, Message, RouterOutbox
from shared.config import Config
from shared.contracts import ConversationOpened, Envelope, InboundMessage, decode, derive_id, encode
from shared.db import UTCDateTime, transaction

log = logging.getLogger(__name__)


class Classify(Protocol):
    def __call__(self, text: str, subject: str | None, language: str | None, channel: str | None) -> Any: ...


class DetectLanguage(Protocol):
    def __call__(self, text: str, hints: list[str]) -> str: ...


@dataclass
class RouterDeps:
    config: Config
    sessions: sessionmaker[Session]
    classify: Classify  # returns an object with .category, .confidence, .reason
    detect_language: DetectLanguage


def handle_inbound(envelope: Envelope, deps: RouterDeps) -> list[Envelope]:
    msg: InboundMessage = envelope.payload
    with transaction(deps.sessions) as s:
        stored = s.scalar(select(Message.id).where(Message.channel == msg.channel,
                                                   Message.external_id == msg.external_id))
        if stored is not None:
            log.info("duplicate %s message %s: re-publishing its events", msg.channel, msg.external_id)
            return _stored_events(s, stored)
        events = _route_new(s, envelope, msg, deps)
        for event in events:
            s.add(RouterOutbox(message_id=event.message_id, source_message_id=envelope.message_id,
                               body=encode(event), created_at=envelope.occurred_at))
    return events


def _stored_events(s: Session, message_id: str) -> list[Envelope]:
    rows = s.scalars(select(RouterOutbox).where(RouterOutbox.source_message_id == message_id)
                     .order_by(RouterOutbox.created_at, RouterOutbox.message_id))
    return [decode(r.body) for r in rows]


def _route_new(s: Session, envelope: Envelope, msg: InboundMessage, deps: RouterDeps) -> list[Envelope]:
    config = deps.config
    at = msg.received_at
    customer = _customer(s, msg, at)
    conv = s.scalar(select(Conversation).where(Conversation.customer_id == customer.id,
                                               Conversation.status == "open"))
    events: list[Envelope] = []
    opened = False
    if conv is None:
        last = s.scalar(select(Conversation).where(Conversation.customer_id == customer.id,
                                                   Conversation.resolved_at.is_not(None))
                        .order_by(Conversation.resolved_at.desc()).limit(1))
        language = deps.detect_language(msg.text or msg.subject or "", [h for h in [msg.language_hint] if h])
        result = deps.classify(msg.text, msg.subject, language, msg.channel)
        category = result.category if result.category in config.categories else "other"
        reopen = last is not None and last.resolved_at is not None and at - last.resolved_at <= config.limits.reopen_window
        decision = _decide(s, deps, category, language, at, previous_owner=last.owner_id if last else None)
        team_id = decision.team_id
        calendar = config.calendars[config.teams[team_id].calendar] if team_id in config.teams else config.business_calendar
        promise = calendar.add_business_time(at, config.categories[category].target_for(msg.channel))
        if reopen:
            conv = last
            conv.status, conv.opening, conv.resolved_at = "open", conv.opening + 1, None
            conv.channel, conv.reply_to, conv.language = msg.channel, msg.reply_to, language
            conv.reply_from = _reply_from(msg)
            conv.category, conv.category_reason = category, _reason(result)
        else:
            conv = Conversation(
                id=derive_id("conversation", envelope.message_id), reference=_reference(envelope.message_id),
                customer_id=customer.id, status="open", opening=1, channel=msg.channel, reply_to=msg.reply_to,
                reply_from=_reply_from(msg),
                language=language, category=category, category_reason=_reason(result), opened_at=at,
                last_message_at=at,
            )
            s.add(conv)
        conv.owner_id, conv.team_id, conv.assignment_reason = decision.agent_id, team_id, decision.reason
        conv.promise_due = promise
        s.flush()  # claims the one-open-conversation index now: a racing replica fails here and retries
        s.add(Assignment(conversation_id=conv.id, agent_id=decision.agent_id, team_id=team_id,
                         reason=f"{decision.rule}: {decision.reason}", assigned_at=at))
        opened = True
    conv.last_message_at = at
    s.add(Message(
        id=envelope.message_id, conversation_id=conv.id, direction="in", channel=msg.channel,
        external_id=msg.external_id, sender_kind=msg.sender.kind, sender_value=msg.sender.value, text=msg.text,
        subject=msg.subject, received_at=at, correlation_id=envelope.correlation_id,
        details={"attachments": [a.__dict__ for a in msg.attachments], "automatic": msg.automatic,
                 "thread_refs": list(msg.thread_refs), "meta": msg.meta, "sender_name": msg.sender_name},
    ))
    if opened:
        owner = config.agents.get(conv.owner_id) if conv.owner_id else None
        event = ConversationOpened(
            conversation_id=conv.id, opening=conv.opening, reference=conv.reference, customer_id=customer.id,
            customer_name=customer.name, channel=conv.channel, reply_to=conv.reply_to, language=conv.language,
            category=conv.category, owner_id=conv.owner_id, owner_name=owner.name if owner else None,
            assignment_reason=conv.assignment_reason, received_at=at, promise_due=conv.promise_due,
            inbound_message_id=envelope.message_id,
            acknowledge=not msg.automatic and config.channel_mode(msg.channel) == "active",
            excerpt=(msg.text or msg.subject or "")[:280], reply_from=conv.reply_from,
        )
        events.append(Envelope.wrap(event, message_id=derive_id("event", event.TYPE, envelope.message_id),
                                    correlation_id=envelope.correlation_id, occurred_at=at))
    return events


def _customer(s: Session, msg: InboundMessage, at: datetime) -> Customer:
    """The customer behind the sender's identity; verified linked identities join the same one."""
    ident = s.scalar(select(Identity).where(Identity.kind == msg.sender.kind, Identity.value == msg.sender.value))
    customer = s.get(Customer, ident.customer_id) if ident else None
    if customer is None:
        for linked in msg.linked_identities:
            other = s.scalar(select(Identity).where(Identity.kind == linked.kind, Identity.value == linked.value))
            if other:
                customer = s.get(Customer, other.customer_id)
                break
    if customer is None:
        customer = Customer(id=str(uuid.uuid4()), name=msg.sender_name, created_at=at)
        s.add(customer)
    elif msg.sender_name and not customer.name:
        customer.name = msg.sender_name
    known = {(i.kind, i.value) for i in s.scalars(select(Identity).where(Identity.customer_id == customer.id))}
    for ident_ in (msg.sender, *msg.linked_identities):
        if (ident_.kind, ident_.value) not in known:
            s.add(Identity(customer_id=customer.id, kind=ident_.kind, value=ident_.value, created_at=at))
            known.add((ident_.kind, ident_.value))
    s.flush()
    return customer


def _decide(s: Session, deps: RouterDeps, category: str, language: str, at: datetime,
            previous_owner: str | None) -> Decision:
    agents = list(deps.config.agents.values())
    loads = dict(s.execute(select(Conversation.owner_id, func.count())
                           .where(Conversation.status == "open", Conversation.owner_id.is_not(None))
                           .group_by(Conversation.owner_id)).all())
    last = dict(s.execute(select(Assignment.agent_id, func.max(Assignment.assigned_at, type_=UTCDateTime()))
                          .where(Assignment.agent_id.is_not(None)).group_by(Assignment.agent_id)).all())
    return choose_owner(agents=agents, category=category, language=language, at=at, loads=loads,
                        last_assigned=last, previous_owner=previous_owner,
                        default_team=next(iter(deps.config.teams), None))


def _reply_from(msg: InboundMessage) -> str | None:
    """The business number the customer wrote to: the answer leaves from the same one."""
    value = msg.meta.get("phone_number_id") if msg.channel == "whatsapp" else msg.meta.get("to")
    return value if isinstance(value, str) and value else None


def _reason(result: Any) -> dict:
    return {"confidence": round(float(getattr(result, "confidence", 0.0)), 4), **dict(getattr(result, "reason", {}) or {})}


def _reference(message_id: str) -> str:
    """A short code customers can quote; derived, so a retried handler makes the same one."""
    raw = uuid.UUID(derive_id("reference", message_id)).bytes
    return "SB-" + base64.b32encode(raw).decode()[:10]


Clock = Callable[[], datetime]
