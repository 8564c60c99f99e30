"""What agents do to conversations, in transactions: the agent API's service layer.

Every operation takes the session (one transaction, opened by the caller), the config and the time;
the rules themselves are the pure functions of services/router/assignment.py. Events an operation
produces are stored in router_outbox in the same transaction with `pending_since` set, and
published after commit (`publish_pending`); a publish that fails is retried by `relay_pending`, so
an agent's reply is never lost between the database and the bus.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.router.assignment import (
    DEFAULT_AVAILABILITY,
    Decision,
    OpenWork,
    drain_for,
    hand_over,
    with_availability,
)
from services.router.kpi_store import record_first_response, record_resolution
from services.router.models import (
    AgentAvailability,
    AgentToken,
    Assignment,
    CallbackTask,
    Conversation,
    Customer,
    InboxSession,
    Message,
    RouterOutbox,
)
from services.router.ownership import record_phone_ownership
from shared.bus.publisher import BusUnavailable, Publisher
from shared.calendar import Calendar
from shared.config import Agent, Config
from shared.contracts import (
    ConversationAssigned,
    ConversationCalledBack,
    ConversationReply,
    ConversationResolved,
    Envelope,
    decode,
    derive_id,
    encode,
    new_id,
)
from shared.db import UTCDateTime, engine_of

log = logging.getLogger(__name__)


# --- tokens -----------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(s: Session, agent_id: str, now: datetime, *, valid_for: timedelta | None = None) -> str:
    """A new bearer token for the agent; earlier ones stop working (a lost token is replaced), and so
    do the inbox sessions opened with them. `valid_for`: the token expires after it (None: never)."""
    revoke_tokens(s, agent_id, now)
    token = "sb_" + secrets.token_urlsafe(32)
    s.add(AgentToken(agent_id=agent_id, token_hash=token_hash(token), created_at=now,
                     expires_at=now + valid_for if valid_for else None))
    return token


def revoke_tokens(s: Session, agent_id: str, now: datetime) -> int:
    """Every live token of the agent stops working, with the inbox sessions opened with it; returns
    how many tokens were live. Sessions opened with a password stay (a new password ends those)."""
    ids = list(s.scalars(select(AgentToken.id).where(AgentToken.agent_id == agent_id, AgentToken.revoked_at.is_(None))))
    if ids:
        s.execute(update(AgentToken).where(AgentToken.id.in_(ids)).values(revoked_at=now))
        s.execute(delete(InboxSession).where(InboxSession.token_id.in_(ids)))
    return len(ids)


def authenticate_token(s: Session, token: str, now: datetime) -> AgentToken | None:
    """The live token row behind a bearer token (not revoked, not expired), or None."""
    digest = token_hash(token)
    row = s.scalar(select(AgentToken).where(AgentToken.token_hash == digest, AgentToken.revoked_at.is_(None)))
    # The lookup is by hash of a 256-bit secret; the constant-time compare guards the last step anyway.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return row


def authenticate(s: Session, token: str, now: datetime) -> str | None:
    """The agent id behind a live bearer token, or None."""
    row = authenticate_token(s, token, now)
    return row.agent_id if row else None


# --- the roster as it is now -------------------------------------------------------------------


def availability(s: Session) -> dict[str, str]:
    return dict(s.execute(select(AgentAvailability.agent_id, AgentAvailability.status)).all())


def availability_of(s: Session, agent: Agent) -> str:
    return availability(s).get(agent.id) or DEFAULT_AVAILABILITY.get(agent.status, "off")


def roster(s: Session, config: Config) -> list[Agent]:
    return with_availability(config.agents.values(), availability(s))


def loads(s: Session) -> dict[str, int]:
    rows = s.execute(select(Conversation.owner_id, func.count())
                     .where(Conversation.status == "open", Conversation.owner_id.is_not(None))
                     .group_by(Conversation.owner_id)).all()
    # The query already leaves out unowned conversations; the column's type cannot say so.
    return {owner: n for owner, n in rows if owner is not None}


def last_assigned(s: Session) -> dict[str, datetime]:
    rows = s.execute(select(Assignment.agent_id, func.max(Assignment.assigned_at, type_=UTCDateTime()))
                     .where(Assignment.agent_id.is_not(None)).group_by(Assignment.agent_id)).all()
    return {agent: at for agent, at in rows if agent is not None}  # as in loads()


def assign(s: Session, conv: Conversation, decision: Decision, at: datetime) -> None:
    """A new owner (or the team queue) for an open conversation, with its reason and an event, so
    that the promise follows the conversation and the new owner is told."""
    previous = conv.owner_id
    conv.owner_id, conv.team_id, conv.assignment_reason = decision.agent_id, decision.team_id, decision.reason
    reason = f"{decision.rule}: {decision.reason}"
    assignment = Assignment(conversation_id=conv.id, agent_id=decision.agent_id, team_id=decision.team_id,
                            reason=reason, assigned_at=at)
    s.add(assignment)
    s.flush()  # its id orders the gateway's view of the customer's phone (services/router/ownership.py)
    event = ConversationAssigned(
        conversation_id=conv.id, opening=conv.opening, owner_id=decision.agent_id, team_id=decision.team_id,
        previous_owner_id=previous, reason=reason, assigned_at=at, channel=conv.channel, category=conv.category,
        reference=conv.reference, customer_name=getattr(s.get(Customer, conv.customer_id), "name", None),
        promise_due=conv.promise_due if conv.first_response_at is None else None)
    # The API and the inbox publish every pending event after their commit (relay_pending with no
    # age); the router's relay thread catches anything left behind.
    store_event(s, Envelope.wrap(event, message_id=new_id(), correlation_id=new_id(), occurred_at=at), conv.id, at)
    record_phone_ownership(s, conv, at=at, sequence=assignment.id, message_id=new_id(), correlation_id=new_id())


def _work(conv: Conversation) -> OpenWork:
    return OpenWork(conv.id, conv.category, conv.language, conv.opened_at)


def set_availability(s: Session, config: Config, agent_id: str, status: str, at: datetime) -> list[str]:
    """Store the agent's availability; hand over or drain as it implies. Returns the moved conversation ids."""
    row = s.get(AgentAvailability, agent_id, with_for_update=True)
    if row is None:
        s.add(AgentAvailability(agent_id=agent_id, status=status, changed_at=at))
    else:
        row.status, row.changed_at = status, at
    s.flush()
    if status == "on_shift":
        return drain_queue(s, config, agent_id, at)
    convs = list(s.scalars(select(Conversation).where(Conversation.owner_id == agent_id, Conversation.status == "open")
                           .order_by(Conversation.opened_at).with_for_update()))
    by_id = {c.id: c for c in convs}
    decisions = hand_over(leaving=agent_id, work=[_work(c) for c in convs], agents=roster(s, config), at=at,
                          loads=loads(s), last_assigned=last_assigned(s),
                          default_team=config.agents[agent_id].team)
    for conv_id, decision in decisions:
        assign(s, by_id[conv_id], decision, at)
    return [conv_id for conv_id, _ in decisions]


def drain_queue(s: Session, config: Config, agent_id: str, at: datetime) -> list[str]:
    """Give the freed agent the oldest queued conversations of their team (SPEC §4 rule 4).

    The queued rows are locked with SKIP LOCKED on PostgreSQL, so two drains running at once (two
    agents freed at the same moment, two replicas) never hand one conversation to both; on SQLite
    the transaction alone serialises writers.
    """
    agent = next((a for a in roster(s, config) if a.id == agent_id), None)
    if agent is None:
        return []
    queued = list(s.scalars(select(Conversation)
                            .where(Conversation.status == "open", Conversation.owner_id.is_(None),
                                   Conversation.team_id == agent.team)
                            .order_by(Conversation.opened_at, Conversation.id)
                            .with_for_update(skip_locked=True)))
    if not queued:
        return []
    by_id = {c.id: c for c in queued}
    spoken = {lang for a in roster(s, config) if a.status == "active" for lang in a.languages}
    taken = drain_for(agent, queued=[_work(c) for c in queued], load=loads(s).get(agent.id, 0), at=at,
                      roster_languages=spoken)
    for conv_id, decision in taken:
        assign(s, by_id[conv_id], decision, at)
    return [conv_id for conv_id, _ in taken]


def drain_team(s: Session, config: Config, team_id: str | None, at: datetime) -> list[str]:
    """Offer a team's queue to each of its agents, least loaded first."""
    if team_id is None:
        return []
    current = loads(s)
    members = sorted((a for a in roster(s, config) if a.team == team_id and a.status == "active"),
                     key=lambda a: (current.get(a.id, 0) / a.capacity, a.id))
    moved: list[str] = []
    for agent in members:
        moved += drain_queue(s, config, agent.id, at)
    return moved


# --- history -----------------------------------------------------------------------------------


def human_replied(s: Session, conversation_id: str) -> bool:
    """An agent answered: a reply, or a call back (a person took the call counts too)."""
    replied = select(Message.id).where(Message.conversation_id == conversation_id, Message.direction == "out",
                                       Message.sender_kind == "agent")
    called = select(CallbackTask.id).where(CallbackTask.conversation_id == conversation_id,
                                           CallbackTask.done_by.is_not(None), CallbackTask.done_by != "resolved")
    return bool(s.scalar(select(replied.exists() | called.exists())))


# --- what an agent does to a conversation: shared by the API and the inbox page -----------------


class Unanswerable(Exception):
    """The customer left no address to answer on: a voicemail from a withheld number."""


def reply(s: Session, conv: Conversation, *, reply_id: str, agent_id: str, text: str, at: datetime,
          correlation_id: str, calendar: Calendar, details: dict | None = None) -> Envelope:
    """Store the agent's reply and its event (to leave on the customer's channel); the first one is
    the conversation's first human response. Refused when there is nowhere to send it: queued, it
    would only fail in the notifier, and the agent would believe the customer had an answer."""
    if conv.status == "automatic":
        raise Unanswerable("automatic mail (a bounce, an auto-reply, spam) is not answered: "
                           "write to the customer in their own conversation")
    if not conv.reply_to:
        raise Unanswerable("this customer left no way to answer: the call came from a withheld number; "
                           "listen to the voicemail, then resolve the conversation")
    s.add(Message(id=reply_id, conversation_id=conv.id, direction="out", channel=conv.channel,
                  external_id=f"reply:{reply_id}", sender_kind="agent", sender_value=agent_id,
                  text=text, received_at=at, correlation_id=correlation_id, details=details or {}))
    record_first_response(conv, at, calendar)
    event = ConversationReply(reply_id=reply_id, conversation_id=conv.id, channel=conv.channel,
                              reply_to=conv.reply_to, reply_from=conv.reply_from, text=text,
                              agent_id=agent_id, language=conv.language,
                              last_customer_message_at=conv.last_message_at)
    envelope = Envelope.wrap(event, message_id=derive_id("event", event.TYPE, reply_id),
                             correlation_id=correlation_id, occurred_at=at)
    store_event(s, envelope, reply_id, at)
    return envelope


def resolve(s: Session, config: Config, conv: Conversation, *, at: datetime, correlation_id: str) -> Envelope:
    """Resolve an open conversation (the caller checked it is open); the owner takes queued work."""
    record_resolution(conv, at)
    event = ConversationResolved(conversation_id=conv.id, customer_id=conv.customer_id, channel=conv.channel,
                                 reply_to=conv.reply_to, language=conv.language, owner_id=conv.owner_id,
                                 resolved_at=at, human_replied=human_replied(s, conv.id),
                                 # The survey: one per opening, from the number written to, by name.
                                 opening=conv.opening, reply_from=conv.reply_from,
                                 customer_name=getattr(s.get(Customer, conv.customer_id), "name", None),
                                 last_customer_message_at=conv.last_message_at)
    envelope = Envelope.wrap(event, message_id=new_id(), correlation_id=correlation_id, occurred_at=at)
    store_event(s, envelope, conv.id, at)
    # Its calls ring the team from now on (published with the API's pending events).
    record_phone_ownership(s, conv, at=at, message_id=new_id(), correlation_id=correlation_id)
    # A resolved conversation has nothing left to do: its calls to return are done with it.
    s.execute(update(CallbackTask).where(CallbackTask.conversation_id == conv.id, CallbackTask.done_at.is_(None))
              .values(done_at=at, done_by="resolved"))
    s.flush()
    if conv.owner_id:
        drain_queue(s, config, conv.owner_id, at)
    return envelope


def open_callbacks(s: Session, where: ColumnElement[bool]) -> list[CallbackTask]:
    """Calls still to return, oldest first, among those `where` picks (a clause on the task or on
    its conversation: whoever owns the conversation now owns its calls back)."""
    return list(s.scalars(select(CallbackTask).join(Conversation, Conversation.id == CallbackTask.conversation_id)
                          .where(CallbackTask.done_at.is_(None), where)
                          .order_by(CallbackTask.created_at, CallbackTask.id)))


def complete_callback(s: Session, task: CallbackTask, *, agent_id: str, at: datetime,
                      correlation_id: str, calendar: Calendar) -> Envelope | None:
    """An agent returned the call: the task is done, and the conversation has had its first human
    response (a call is one), so the promise is kept — the notifier hears it as
    conversation.called_back. None when it was already done (a second click changes nothing)."""
    if task.done_at is not None:
        return None
    task.done_at, task.done_by = at, agent_id
    conv = s.get_one(Conversation, task.conversation_id)
    record_first_response(conv, at, calendar)
    event = ConversationCalledBack(conversation_id=conv.id, agent_id=agent_id, phone=task.phone, called_at=at)
    envelope = Envelope.wrap(event, message_id=new_id(), correlation_id=correlation_id, occurred_at=at)
    store_event(s, envelope, conv.id, at)
    return envelope


class NothingToConfirm(Exception):
    """The Reply-To the agent confirmed is not (or no longer) the one waiting."""


def confirm_reply_to(s: Session, conv: Conversation, *, address: str, agent_id: str, at: datetime) -> None:
    """An agent saw the Reply-To waiting on this conversation and confirms it: answers go there from
    now on. The address the agent saw is named, so a different one that arrived meanwhile is not
    confirmed by a click meant for another. Kept in the history as the agent's note."""
    address = address.strip().lower()
    if not conv.reply_to_pending or conv.reply_to_pending != address:
        raise NothingToConfirm(f"{address} is not the Reply-To waiting for confirmation"
                               + (f" ({conv.reply_to_pending} is)" if conv.reply_to_pending else ""))
    previous, conv.reply_to, conv.reply_to_pending = conv.reply_to, address, None
    note_id = new_id()
    s.add(Message(id=note_id, conversation_id=conv.id, direction="note", channel=conv.channel,
                  external_id=f"reply-to:{note_id}", sender_kind="agent", sender_value=agent_id,
                  text=f"Reply-To {address} confirmed: answers go there instead of {previous}.",
                  received_at=at, correlation_id=note_id, details={"reply_to_confirmed": address}))


def transfer(s: Session, config: Config, conv: Conversation, *, by: str, agent_id: str | None,
             team_id: str | None, note: str, at: datetime) -> None:
    """Give an open conversation to an agent or a team's queue (the caller checked both exist)."""
    previous = conv.owner_id
    if agent_id is not None:
        target = config.agents[agent_id]
        decision = Decision(target.id, target.team, "transfer", f"transferred by {by} to {target.id}: {note}")
    else:
        decision = Decision(None, team_id, "transfer", f"transferred by {by} to the {team_id} queue: {note}")
    assign(s, conv, decision, at)
    s.flush()
    if previous and previous != decision.agent_id:
        drain_queue(s, config, previous, at)
    if decision.agent_id is None:
        drain_team(s, config, decision.team_id, at)


# --- events: stored with the change, published after commit ------------------------------------


def store_event(s: Session, event: Envelope, source: str, at: datetime) -> None:
    s.add(RouterOutbox(message_id=event.message_id, source_message_id=source, body=encode(event),
                       created_at=at, pending_since=at))


def publish_pending(sessions: sessionmaker[Session], publisher: Publisher, message_ids: Iterable[str]) -> int:
    """Publish the named stored events with their confirms awaited together, then mark them no
    longer pending in one statement. Each awaited alone and marked in a transaction of its own, an
    opening message cost the worker a broker round trip and a commit of its own.

    The read and the mark are one statement each, in autocommit: a transaction around either would
    only add its BEGIN and its ROLLBACK or COMMIT, two round trips each, and nearly every batch
    that opens a conversation at low load is one message paying them all."""
    ids = list(message_ids)
    if not ids:
        return 0
    engine = engine_of(sessions)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = list(conn.execute(select(RouterOutbox.message_id, RouterOutbox.body)
                                 .where(RouterOutbox.message_id.in_(ids), RouterOutbox.pending_since.is_not(None))
                                 .order_by(RouterOutbox.created_at, RouterOutbox.message_id)))
    if not rows:
        return 0
    try:
        publisher.publish_many([decode(body) for _, body in rows])
    except BusUnavailable as exc:
        # All stay pending (some may have been taken: a duplicate publish is harmless, every
        # consumer dedupes): relay_pending publishes them when the broker is back.
        log.warning("%d events not published yet: %s", len(rows), exc)
        return 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(update(RouterOutbox).where(RouterOutbox.message_id.in_([message_id for message_id, _ in rows]))
                     .values(pending_since=None))
    return len(rows)


def relay_pending(sessions: sessionmaker[Session], publisher: Publisher, now: datetime,
                  older_than: timedelta = timedelta(seconds=10)) -> int:
    """Publish stored events whose first publish failed (a broker outage, a crash after commit).

    Only rows pending for a while: a request that has just committed publishes its own. A
    duplicate publish is harmless, every consumer is idempotent on the message id.
    """
    with sessions() as s:
        ids = list(s.scalars(select(RouterOutbox.message_id)
                             .where(RouterOutbox.pending_since.is_not(None),
                                    RouterOutbox.pending_since <= now - older_than)
                             .order_by(RouterOutbox.pending_since).limit(500)))
    return publish_pending(sessions, publisher, ids)


def run_relay(sessions: sessionmaker[Session], publisher: Publisher, clock, stop, interval: float = 5.0) -> None:
    """Until `stop` is set: every few seconds, publish what the API could not (see relay_pending)."""
    while not stop.wait(interval):
        try:
            relay_pending(sessions, publisher, clock())
        except Exception:  # noqa: BLE001 - a database hiccup must not end the relay; the next round retries
            log.exception("relaying pending agent API events failed")
