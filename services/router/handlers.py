"""The router's message handler: identity, conversation, language, category, owner, promise.

`handle_inbound` runs in one transaction and returns the events to publish after it committed.
It is idempotent: a message already stored (same channel and provider id) changes nothing, and
the events it produced the first time are returned again, so a crash between commit and publish
is repaired by the redelivery.

A phone call's "answered" and "ended" notices are not customer messages: they are recorded per
CallSid (`PhoneCall`), and "ended" becomes a missed call only when nothing else is known of the
call (`_call_notice`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.router import automatic, flood, trust
from services.router.assignment import Decision, choose_owner, with_availability
from services.router.kpi_store import record_reopening
from services.router.models import (
    Assignment,
    CallbackTask,
    Conversation,
    Customer,
    Identity,
    Message,
    RouterOutbox,
    new_row,
)
from services.router.ownership import PHONE, opening_ownership_id, ownership_event, pending_row
from services.router.revisions import apply_revision, revision_of
from services.router.sql_unit_of_work import SqlRouterUnitOfWork
from services.router.survey_replies import survey_reply
from services.router.unit_of_work import RouterUnitOfWork
from shared.config import Config, Limits
from shared.contracts import (
    AddressSuppressed,
    ConversationMessage,
    ConversationOpened,
    Envelope,
    InboundMessage,
    Redirected,
    SurveyResult,
    decode,
    derive_id,
    encode,
)
from shared.log import correlated

log = logging.getLogger(__name__)

#: A phone message of these kinds is a call nobody took: it gets a call-back task for the owner.
CALLBACK_KINDS = ("voicemail", "missed")
#: Phone notices that are no customer message: a person took the call (the <Dial> action), the
#: call ended (the status callback). See `_call_notice`.
CALL_NOTICES = ("answered", "ended")


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
    learn: Callable[[str, str, str | None], None] | None = None  # (text, category, language): a correction
    #: A new unit of work per call; None: SQL over `sessions` (tests/support/router_uow.py has a fake).
    unit_of_work: Callable[[], RouterUnitOfWork] | None = None

    def start(self) -> RouterUnitOfWork:
        return self.unit_of_work() if self.unit_of_work is not None else SqlRouterUnitOfWork(self.sessions)


def handle_inbound(envelope: Envelope, deps: RouterDeps) -> list[Envelope]:
    with deps.start() as uow:
        events = _handle(uow, envelope, deps)
        uow.commit()
    return events


def handle_inbound_batch(envelopes: Sequence[Envelope], deps: RouterDeps) -> list[list[Envelope] | Exception]:
    """A micro-batch as one unit of work (shared/bus/consumer.py): one transaction and one commit,
    its messages in delivery order (so a conversation's messages keep theirs), each handled exactly
    as `handle_inbound` would, and idempotent: a redelivered batch finds its stored messages and
    returns their stored events.

    First at once: no savepoint, the new rows written together at the commit. When anything in it
    fails (a poison message, a unique index another replica took first), that transaction is rolled
    back whole and the batch is handled again with each message in a SAVEPOINT of its own: a message
    that fails then rolls back alone and is given back as its exception, for the worker to retry
    alone; the others are committed. A failure costs one batch's work twice; savepoints on every
    message cost two round trips each and a write per message instead of per table.

    A lone message (the batch of a quiet minute) takes the same way: its look-ups read ahead in
    three set-based queries and its rows written by table at the commit cost less than the
    per-message way's query per look-up and ORM flushes. Its failure is given back as it is: there
    is nothing else in its batch to save."""
    inbound = [e.payload for e in envelopes if isinstance(e.payload, InboundMessage)]
    with deps.start() as uow:
        if not uow.savepoints:
            # pysqlite's own transaction handling breaks SAVEPOINTs; SQLite (embedded mode) has one
            # writer anyway: one transaction per message.
            return [_one(envelope, deps) for envelope in envelopes]
        try:
            uow.prepare(inbound, at_once=True)
            results: list[list[Envelope] | Exception] = []
            for envelope in envelopes:
                with correlated(envelope.correlation_id):
                    results.append(_handle(uow, envelope, deps))
            uow.commit()
            return results
        except Exception as exc:  # noqa: BLE001 - rolled back whole; each message again in its savepoint
            if len(envelopes) == 1:
                return [exc]
            log.info("a batch of %d failed at once (%s: %s): each message again in a savepoint", len(envelopes),
                     type(exc).__name__, str(exc)[:300])
    results = []
    with deps.start() as uow:
        uow.prepare(inbound)
        for envelope in envelopes:
            with correlated(envelope.correlation_id):
                try:
                    with uow.savepoint():
                        results.append(_handle(uow, envelope, deps))
                except Exception as exc:  # noqa: BLE001 - this message's failure, rolled back to its savepoint
                    log.warning("message %s failed in its batch, rolled back alone: %s: %s", envelope.message_id,
                                type(exc).__name__, str(exc)[:300])
                    results.append(exc)
        uow.commit()
    return results


def _one(envelope: Envelope, deps: RouterDeps) -> list[Envelope] | Exception:
    with correlated(envelope.correlation_id):
        try:
            return handle_inbound(envelope, deps)
        except Exception as exc:  # noqa: BLE001 - given back for the worker to retry this message alone
            return exc


def _handle(uow: RouterUnitOfWork, envelope: Envelope, deps: RouterDeps) -> list[Envelope]:
    """One inbound message's work in the caller's unit of work; the events to publish after its commit."""
    if envelope.type == AddressSuppressed.TYPE:
        automatic.record_suppression(uow, envelope)
        return []
    if isinstance(envelope.payload, SurveyResult):  # the notifier's word on a survey, for the KPIs
        uow.surveys.record_result(envelope.payload)
        return []
    msg: InboundMessage = envelope.payload
    if msg.channel == "phone" and msg.meta.get("call") in CALL_NOTICES:
        return _call_notice(uow, envelope, msg, deps)
    revision = revision_of(msg)
    if revision is not None:
        # An edit or deletion of a stored message: applied to it, nothing opened, nothing sent.
        apply_revision(uow.messages.customer_message(msg.channel, revision["of"]), msg, revision)
        return []
    if deps.config.channel_mode(msg.channel) == "redirect" and not msg.automatic:
        return [_redirect(envelope, msg, deps)]
    stored = uow.messages.stored_id(msg.channel, msg.external_id)
    if stored is not None:
        log.info("duplicate %s message %s: re-publishing its events", msg.channel, msg.external_id)
        if msg.channel == "phone":
            _complete_call(uow, stored, msg)
        return _stored_events(uow, stored)
    if _agent_note(uow, envelope, msg, deps.config):
        return []
    # From here on an unverified e-mail is filed under its own identity: it answers no survey
    # and joins no conversation of the customer who owns that address.
    sender = trust.sender_identity(msg)
    if sender != msg.sender:
        msg = dataclasses.replace(msg, sender=sender)
    survey_event, route = survey_reply(uow, envelope, msg)
    if not route:  # a survey answer or STOP: no conversation, nothing stored
        return [survey_event] if survey_event is not None else []
    # A survey comment is routed as well: it may be a new question too.
    store = _store_automatic if msg.automatic else _route_new
    events = ([survey_event] if survey_event else []) + store(uow, envelope, msg, deps)
    _store_events(uow, envelope, events)
    return events


def _details(msg: InboundMessage, **extra: Any) -> dict[str, Any]:
    """What a stored message keeps of an InboundMessage beyond its columns. An e-mail also keeps
    whether our mail server vouched for its sender, and a Reply-To other than the sender."""
    details = {"attachments": [a.__dict__ for a in msg.attachments], "automatic": msg.automatic,
               "thread_refs": list(msg.thread_refs), "meta": msg.meta, "sender_name": msg.sender_name,
               # The provider's own time (a device's clock), for display: received_at is the arrival.
               "sent_at": msg.sent_at.isoformat() if msg.sent_at else None}
    if msg.channel == "email":
        details["sender_verified"] = trust.sender_verified(msg)
        if msg.reply_to and msg.reply_to.lower() != msg.sender.value.lower():
            details["reply_to"] = msg.reply_to
    return {**details, **{k: v for k, v in extra.items() if v is not None}}


def agent_by_email(config: Config, address: str) -> str | None:
    """The agent whose notices go to this e-mail address, if any."""
    address = address.strip().lower()
    for agent in config.agents.values():
        if agent.notify is not None and agent.notify.channel == "email" and agent.notify.address.lower() == address:
            return agent.id
    return None


def _agent_note(uow: RouterUnitOfWork, envelope: Envelope, msg: InboundMessage, config: Config) -> bool:
    """An agent's mail answering a notice ([SB-…] in the subject, or In-Reply-To): kept in that
    conversation as the agent's note. Never sent to the customer — replies to customers go through
    the authenticated API and inbox — and never a customer's message, which would open a
    conversation with the agent as the customer and acknowledge it. A From header is easily forged:
    a note our mail server did not vouch for is kept all the same (the agent may have written it
    from a phone whose mail our server cannot check) but stored and shown as unverified
    (details.sender_verified). Mail from an agent's address that threads nowhere is left to the
    usual route (an agent trying the service out, or forwarding a customer's mail, is a customer there)."""
    if msg.channel != "email" or msg.automatic:
        return False
    agent_id = agent_by_email(config, msg.sender.value)
    if agent_id is None:
        return False
    found = _thread_candidates(uow, msg)
    conv = found[0] if found else None
    if conv is None:
        return False
    uow.messages.add(new_row(Message,
        id=envelope.message_id, conversation_id=conv.id, direction="note", channel="email",
        external_id=msg.external_id, sender_kind="agent", sender_value=agent_id, text=msg.text,
        subject=msg.subject, received_at=msg.received_at, correlation_id=envelope.correlation_id,
        details=_details(msg),
    ))
    if trust.sender_verified(msg):
        log.info("agent %s answered a notice of %s by e-mail: kept as a note", agent_id, conv.reference)
    else:
        log.warning("a mail from agent %s's address to %s, not authenticated by our mail server: kept as an "
                    "unverified note", agent_id, conv.reference)
    return True


def _store_events(uow: RouterUnitOfWork, envelope: Envelope, events: list[Envelope]) -> None:
    for event in events:
        uow.outbox.add(new_row(RouterOutbox, message_id=event.message_id, source_message_id=envelope.message_id,
                           body=encode(event), created_at=envelope.occurred_at))


def _call_notice(uow: RouterUnitOfWork, envelope: Envelope, msg: InboundMessage, deps: RouterDeps) -> list[Envelope]:
    """A call was answered by a person, or it ended. "answered" is recorded and nothing more: no
    conversation, no acknowledgement. "ended" is a missed call (message and call-back task) only
    when nothing else is known of the call: no person answered it, and no voicemail or missed
    message of it is stored (then it only adds its facts to that message, never downgrading a
    voicemail). A redelivered notice finds what the first one did and changes nothing."""
    sid, at = msg.external_id, msg.received_at
    call = uow.calls.claim(sid)
    if msg.meta["call"] == "answered":
        if call.answered_at is None:
            call.answered_at = at
        # Twilio calls the <Dial> action before the status callback, so "answered" normally comes
        # first; when "ended" was handled first anyway (a redelivery, a slow replica), it made a
        # missed call of a call a person took: its call-back task is done.
        task = uow.calls.open_task(sid)
        if task is not None:
            task.done_at, task.done_by = at, "answered"
        return []
    if call.ended_at is None:
        call.ended_at, call.end_status = at, msg.meta.get("call_status")
    if call.answered_at is not None:
        return []
    if deps.config.channel_mode(msg.channel) == "redirect":
        # As any missed call in redirect mode: one note; its id is the call's, so a missed or
        # voicemail message of the same call made the very same note.
        return [_redirect(envelope, msg, deps)]
    stored = uow.messages.stored_id(msg.channel, msg.external_id)
    if stored is not None:
        _complete_call(uow, stored, msg)
        return _stored_events(uow, stored)
    missed = dataclasses.replace(msg, meta={**msg.meta, "call": "missed"})
    events = _route_new(uow, envelope, missed, deps)
    _store_events(uow, envelope, events)
    return events


def _stored_events(uow: RouterUnitOfWork, message_id: str) -> list[Envelope]:
    return [decode(r.body) for r in uow.outbox.events_of(message_id)]


def _route_new(uow: RouterUnitOfWork, envelope: Envelope, msg: InboundMessage, deps: RouterDeps) -> list[Envelope]:
    config = deps.config
    at = msg.received_at
    customer, known = _customer(uow, msg, at)
    # A customer made just now has no conversations yet: two queries fewer on the commonest path.
    conv = uow.conversations.open_of(customer.id) if known else None
    # A thread (its reference token, In-Reply-To, References) counts only when it is this
    # customer's own: anyone can quote a reference. Another's is shown to the agent, not joined.
    found = _thread_candidates(uow, msg)
    threaded = next((c for c in found if c.customer_id == customer.id), None)
    foreign = next((c for c in found if c.customer_id != customer.id), None)
    quoted = trust.quoted_reference(threaded.reference if threaded else None,
                                    foreign.reference if foreign else None, msg.meta.get("reference"))
    if quoted:
        log.warning("a %s message quoted %s, which is not its sender's conversation: not joined", msg.channel, quoted)
    verified = trust.sender_verified(msg)
    if threaded is not None and threaded.status == automatic.STATUS:
        threaded = None  # a customer's answer never continues a stored bounce or auto-reply
    explicit_reopen = False
    if threaded is not None and threaded.status == "open":
        conv = threaded
    events: list[Envelope] = []
    opened = False
    if conv is None:
        last = uow.conversations.last_resolved_of(customer.id) if known else None
        if threaded is not None and threaded.customer_id == customer.id and threaded.resolved_at is not None:
            # An answer to a resolved thread reopens it whatever its age: the customer said which one.
            last, explicit_reopen = threaded, True
        language = deps.detect_language(msg.text or msg.subject or "", [h for h in [msg.language_hint] if h])
        result = deps.classify(msg.text, msg.subject, language, msg.channel)
        category = result.category if result.category in config.categories else "other"
        reopen = last is not None and last.resolved_at is not None and (
            explicit_reopen or at - last.resolved_at <= config.limits.reopen_window)
        decision = _decide(uow, deps, category, language, at, previous_owner=last.owner_id if last else None)
        team_id = decision.team_id
        calendar = config.calendars[config.teams[team_id].calendar] if team_id in config.teams else config.business_calendar
        promise = calendar.add_business_time(at, config.categories[category].target_for(msg.channel))
        reply_to, pending = _reply_address(uow, msg, customer.id)
        if last is not None and reopen:  # reopen implies last; said again for the type checker
            conv = last
            record_reopening(conv)
            conv.opening += 1
            conv.channel, conv.reply_to, conv.language = msg.channel, reply_to, language
            conv.reply_from = _reply_from(msg)
            conv.category, conv.category_reason = category, _reason(result)
        else:
            conv = Conversation(
                id=derive_id("conversation", envelope.message_id), reference=trust.new_reference(),
                customer_id=customer.id, status="open", opening=1, channel=msg.channel, reply_to=reply_to,
                reply_from=_reply_from(msg),
                language=language, category=category, category_reason=_reason(result), opened_at=at,
                last_message_at=at,
            )
            uow.conversations.add(conv)
        conv.reply_to_pending, conv.unverified_sender = pending, not verified
        conv.owner_id, conv.team_id, conv.assignment_reason = decision.agent_id, team_id, decision.reason
        conv.promise_due = promise
        # Claims the one-open-conversation index now (message by message): a racing replica fails
        # here and retries. A batch at once claims it at its commit.
        uow.claim()
        assignment = new_row(Assignment, conversation_id=conv.id, agent_id=decision.agent_id, team_id=team_id,
                                reason=f"{decision.rule}: {decision.reason}", assigned_at=at)
        uow.roster.add_assignment(assignment)
        opened = True
    else:
        if not verified:
            conv.unverified_sender = True
        if msg.channel == "email" and msg.channel == conv.channel:
            _, pending = _reply_address(uow, msg, customer.id)
            if pending and pending != conv.reply_to:
                conv.reply_to_pending = pending
    conv.last_message_at = at
    uow.messages.add(new_row(Message,
        id=envelope.message_id, conversation_id=conv.id, direction="in", channel=msg.channel,
        external_id=msg.external_id, sender_kind=msg.sender.kind, sender_value=msg.sender.value, text=msg.text,
        subject=msg.subject, received_at=at, correlation_id=envelope.correlation_id,
        details=_details(msg, quoted_reference=quoted),
    ))
    if _to_call_back(msg):
        uow.calls.add_task(_callback_task(conv, msg, at))
    if opened:
        owner = config.agents.get(conv.owner_id) if conv.owner_id else None
        event = ConversationOpened(
            conversation_id=conv.id, opening=conv.opening, reference=conv.reference, customer_id=customer.id,
            customer_name=customer.name, channel=conv.channel, reply_to=conv.reply_to, language=conv.language,
            category=conv.category, owner_id=conv.owner_id, owner_name=owner.name if owner else None,
            assignment_reason=conv.assignment_reason, received_at=at, promise_due=conv.promise_due,
            inbound_message_id=envelope.message_id,
            # A withheld caller left no address (empty reply_to): there is nothing to acknowledge on.
            acknowledge=not msg.automatic and config.channel_mode(msg.channel) == "active" and bool(msg.reply_to),
            excerpt=(msg.text or msg.subject or "")[:280], reply_from=conv.reply_from,
            subject=msg.subject if msg.channel == "email" else None,
            in_reply_to=msg.external_id if msg.channel == "email" and not msg.external_id.startswith("sha256-") else None,
            team_id=conv.team_id,
        )
        events.append(Envelope.wrap(event, message_id=derive_id("event", event.TYPE, envelope.message_id),
                                    correlation_id=envelope.correlation_id, occurred_at=at))
        # A customer made by this message has only the identities it brought: no query for them.
        phones = uow.customers.phones(customer.id) if known else [
            i.value for i in (msg.sender, *msg.linked_identities) if i.kind == PHONE]
        if phones:  # without a phone there is no event, and no flush for the assignment's id now
            uow.flush()  # the assignment's id orders the gateway's view of this phone's owner
            ownership = ownership_event(conv, phones, at=at, sequence=assignment.id,
                                        message_id=opening_ownership_id(envelope.message_id),
                                        correlation_id=envelope.correlation_id)
            if ownership is not None:
                uow.outbox.add(pending_row(conv, ownership, at))
    elif not msg.automatic and _earns_notice(uow, customer.id, msg, deps.config.limits, at):
        # The owner hears of a new customer message (an auto-reply is not one worth a notice; a
        # burst from one sender is stored but tells the owner only at the flood control's pace).
        joined = ConversationMessage(
            conversation_id=conv.id, owner_id=conv.owner_id, channel=msg.channel,
            excerpt=(msg.text or msg.subject or "")[:280], received_at=at, inbound_message_id=envelope.message_id,
            reference=conv.reference, customer_name=customer.name,
            promise_due=conv.promise_due if conv.first_response_at is None else None)
        events.append(Envelope.wrap(joined, message_id=derive_id("event", joined.TYPE, envelope.message_id),
                                    correlation_id=envelope.correlation_id, occurred_at=at))
    return events


def _earns_notice(uow: RouterUnitOfWork, customer_id: str, msg: InboundMessage, limits: Limits, at: datetime) -> bool:
    """Takes a token from the customer's and the sender address's buckets (services/router/flood.py),
    claimed for this transaction, so two router replicas with messages of one sender take turns
    instead of both reading a full bucket."""
    policy = flood.Policy(burst=limits.notice_burst, refill=limits.notice_refill)
    keys = flood.keys(customer_id, msg.sender.kind, msg.sender.value)
    rows = uow.buckets.claim(keys, float(policy.burst), at)
    allowed, after = flood.take([flood.Bucket(r.tokens, r.at) for r in rows], policy, at)
    for row, bucket in zip(rows, after, strict=True):
        row.tokens, row.at = bucket.tokens, max(row.at, bucket.at)
    if not allowed:
        log.info("no notice for a %s message: its sender is over the flood control's pace", msg.channel)
    return allowed


def _store_automatic(uow: RouterUnitOfWork, envelope: Envelope, msg: InboundMessage, deps: RouterDeps) -> list[Envelope]:
    """Automatic mail (services.router.automatic): stored in a conversation of its own, visible
    under the "automatic" filter; no owner, no promise, no acknowledgement, no notice. The only
    event is a bounce's or complaint's report to the notifier about the message of ours it quotes."""
    config = deps.config
    customer, _ = _customer(uow, msg, msg.received_at)
    uow.flush()  # the customer row first: nothing else orders these inserts (no ORM relationships)
    conv = automatic.conversation(msg, envelope, customer, reference=trust.new_reference(),
                                  language=config.business.default_language,
                                  team_id=next(iter(config.teams), None), reply_from=_reply_from(msg))
    uow.conversations.add(conv)
    uow.messages.add(new_row(Message,
        id=envelope.message_id, conversation_id=conv.id, direction="in", channel=msg.channel,
        external_id=msg.external_id, sender_kind=msg.sender.kind, sender_value=msg.sender.value, text=msg.text,
        subject=msg.subject, received_at=msg.received_at, correlation_id=envelope.correlation_id,
        details=_details(msg),
    ))
    log.info("automatic %s mail stored (%s): %s", msg.channel, automatic.kind_of(msg),
             msg.meta.get("automatic_reason"))
    return automatic.report_event(msg, envelope)


def _redirect(envelope: Envelope, msg: InboundMessage, deps: RouterDeps) -> Envelope:
    """A channel in redirect mode opens no conversation: the notifier answers once with where to
    write instead. Nothing is stored, so the event is derived from the message alone and a
    redelivery yields the very same event (the notifier's idempotency key does the rest)."""
    language = deps.detect_language(msg.text or msg.subject or "", [h for h in [msg.language_hint] if h])
    event = Redirected(channel=msg.channel, reply_to=msg.reply_to, language=language, received_at=msg.received_at,
                       inbound_message_id=envelope.message_id, reply_from=_reply_from(msg))
    return Envelope.wrap(event, message_id=derive_id("event", event.TYPE, envelope.message_id),
                         correlation_id=envelope.correlation_id, occurred_at=msg.received_at)


def _thread_candidates(uow: RouterUnitOfWork, msg: InboundMessage) -> list[Conversation]:
    """The conversations an e-mail says it answers, strongest first: the [SB-…] token in its subject,
    then those of the Message-IDs it refers to (In-Reply-To/References carry the customer's earlier
    Message-IDs, which we store), newest first. Whose they are is the caller's question."""
    if msg.channel != "email":
        return []
    found: list[Conversation] = []
    reference = msg.meta.get("reference")
    if isinstance(reference, str) and reference:
        conv = uow.conversations.by_reference(reference.upper())
        if conv is not None:
            found.append(conv)
    if msg.thread_refs:
        conv_ids = uow.messages.email_conversation_ids(list(msg.thread_refs)[-50:], limit=5)
        for conv_id in dict.fromkeys(conv_ids):
            conv = uow.conversations.get(conv_id)
            if conv is not None and conv not in found:
                found.append(conv)
    return found


def _reply_address(uow: RouterUnitOfWork, msg: InboundMessage, customer_id: str) -> tuple[str, str | None]:
    """Where answers go, and a Reply-To that waits for an agent (services/router/trust.py). Only
    e-mail has a Reply-To; the customer's addresses are read only when it names another one."""
    if msg.channel != "email":
        return msg.reply_to, None
    addresses: list[str] = []
    if msg.reply_to and msg.reply_to.lower() != msg.sender.value.lower():
        addresses = uow.customers.addresses(customer_id, trust.EMAIL_KINDS)
    return trust.reply_address(msg.sender.value, msg.reply_to, addresses)


def _customer(uow: RouterUnitOfWork, msg: InboundMessage, at: datetime) -> tuple[Customer, bool]:
    """The customer behind the sender's identity; verified linked identities join the same one.

    Returns (customer, known): known is False for a customer made here, who has no history. One
    query finds the sender's and every linked identity with its customer; the rows are written by
    the caller's flush (the unit of work orders customer, identities, conversation)."""
    wanted = [(i.kind, i.value) for i in (msg.sender, *msg.linked_identities)]
    rows = uow.customers.by_identities(wanted)
    by_identity = {(kind, value): customer for kind, value, customer in rows}
    # The sender's own identity first, then the linked ones in the order the channel gave them.
    customer = next((by_identity[w] for w in wanted if w in by_identity), None)
    known = customer is not None
    if customer is None:
        customer = Customer(id=str(uuid.uuid4()), name=msg.sender_name, created_at=at)
        uow.customers.add(customer)
        have: set[tuple[str, str]] = set()
    else:
        if msg.sender_name and not customer.name:
            customer.name = msg.sender_name
        have = {k for k, c in by_identity.items() if c.id == customer.id}
        if len(have) < len(set(wanted)):
            have = {(i.kind, i.value) for i in uow.customers.identities(customer.id)}
    for kind, value in wanted:
        if (kind, value) not in have:
            uow.customers.add_identity(new_row(Identity, customer_id=customer.id, kind=kind, value=value, created_at=at))
            have.add((kind, value))
    return customer, known


def _decide(uow: RouterUnitOfWork, deps: RouterDeps, category: str, language: str, at: datetime,
            previous_owner: str | None) -> Decision:
    """The owner, from the roster's standing (one round trip: `Roster.standing`) and the pure rules."""
    config_agents = list(deps.config.agents.values())
    standing = uow.roster.standing(tuple(a.id for a in config_agents))
    agents = with_availability(config_agents, standing.availability)
    return choose_owner(agents=agents, category=category, language=language, at=at, loads=standing.loads,
                        last_assigned=standing.last_assigned, previous_owner=previous_owner,
                        default_team=next(iter(deps.config.teams), None))


def _to_call_back(msg: InboundMessage) -> bool:
    """A call nobody took, from a number to call back (a withheld one has none: its voicemail is
    a conversation to hear, but no task)."""
    return msg.channel == "phone" and msg.meta.get("call") in CALLBACK_KINDS and bool(msg.reply_to)


def _callback_task(conv: Conversation, msg: InboundMessage, at: datetime, kind: str | None = None) -> CallbackTask:
    return CallbackTask(conversation_id=conv.id, owner_id=conv.owner_id, phone=msg.reply_to,
                        call_sid=msg.external_id, kind=kind or msg.meta["call"], created_at=at)


def _complete_call(uow: RouterUnitOfWork, message_id: str, msg: InboundMessage) -> None:
    """Another callback of a call already stored (the gateway publishes at the dial, recording,
    transcription and status callbacks, keyed by the CallSid): it completes the one message and the one task
    instead of making seconds, so a transcript that comes last is kept and a lost one loses nothing."""
    row = uow.messages.get(message_id)
    if row is None:
        return
    row.text, row.details = merge_call(row.text, row.details or {}, msg)
    kind = row.details.get("meta", {}).get("call")
    task = uow.calls.task(msg.external_id)
    if task is None and kind in CALLBACK_KINDS and msg.reply_to:
        conv = uow.conversations.get(row.conversation_id)
        if conv is not None:
            # The stored kind: this callback may be an "ended" notice adding to a missed call.
            uow.calls.add_task(_callback_task(conv, msg, msg.received_at, kind=kind))
    elif task is not None and kind == "voicemail":
        task.kind = "voicemail"


def merge_call(text: str, details: dict, msg: InboundMessage) -> tuple[str, dict]:
    """What a stored call message becomes with one more callback of the same call: the first
    non-empty transcript, the recording once, "missed" upgraded to "voicemail", and facts the
    stored one lacks (duration, transcription status). Order-independent, and a redelivery of
    what is already there changes nothing."""
    meta = dict(details.get("meta") or {})
    for key, value in msg.meta.items():
        if key == "call":
            if value == "voicemail":
                meta["call"] = "voicemail"
        elif key == "duration":
            if value and not meta.get("duration"):
                meta["duration"] = value
        elif key == "transcription":
            if value == "completed" or key not in meta:
                meta[key] = value
        else:
            meta.setdefault(key, value)
    merged = {**details, "meta": meta}
    if msg.attachments and not details.get("attachments"):
        merged["attachments"] = [a.__dict__ for a in msg.attachments]
    return (text or msg.text or ""), merged


def _reply_from(msg: InboundMessage) -> str | None:
    """The business number the customer wrote to: the answer leaves from the same one."""
    value = msg.meta.get("phone_number_id") if msg.channel == "whatsapp" else msg.meta.get("to")
    return value if isinstance(value, str) and value else None


def _reason(result: Any) -> dict:
    return {"confidence": round(float(getattr(result, "confidence", 0.0)), 4), **dict(getattr(result, "reason", {}) or {})}



Clock = Callable[[], datetime]
