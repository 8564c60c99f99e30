"""The router's tables: customers and their identities, conversations, messages, assignments.

Idempotency and "exactly one owner" are enforced here, by constraints, not by hope:
- a message is unique per (channel, external_id): a provider's redelivery cannot be stored twice;
- an identity (kind, value) belongs to one customer;
- a customer has at most one open conversation (a partial unique index), so two router replicas
  racing on the same customer cannot open two conversations with two owners;
- the events a message produced are stored with it (router_outbox) and re-published as they are if
  the message is delivered again, so a crash between commit and publish loses nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    inspect,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    merged_into: Mapped[str | None] = mapped_column(String(36), ForeignKey("customers.id"))


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(36), ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# What kpi_store.aggregates reads of a conversation besides its scope and opening time.
KPI_INDEX_COLUMNS = ["id", "status", "owner_id", "team_id", "channel", "category", "language", "opening", "reply_to",
                     "promise_due", "first_response_at", "resolved_at", "first_response_business_s", "resolution_s"]


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("uq_one_open_conversation", "customer_id", unique=True,
              postgresql_where=text("status = 'open'"), sqlite_where=text("status = 'open'")),
        # Lists: one ordered index scan per branch of "mine or my teams'" (services/router/listing.py).
        Index("ix_conversations_owner_status_activity", "owner_id", "status", "last_message_at", "id"),
        Index("ix_conversations_team_status_activity", "team_id", "status", "last_message_at", "id"),
        # KPIs: a team's or an agent's conversations opened in a period (services/router/kpi_store.py).
        # On PostgreSQL they carry every column the report reads (migration 0016: index-only scans).
        Index("ix_conversations_team_opened", "team_id", "opened_at",
              postgresql_include=[c for c in KPI_INDEX_COLUMNS if c != "team_id"]),
        Index("ix_conversations_owner_opened", "owner_id", "opened_at",
              postgresql_include=[c for c in KPI_INDEX_COLUMNS if c != "owner_id"]),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    customer_id: Mapped[str] = mapped_column(String(36), ForeignKey("customers.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # open | resolved
    opening: Mapped[int] = mapped_column(Integer, default=1)
    channel: Mapped[str] = mapped_column(String(16))
    reply_to: Mapped[str] = mapped_column(String(320))
    reply_from: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(32))
    category_reason: Mapped[dict] = mapped_column()
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    assignment_reason: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    promise_due: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # an agent's first reply
    # E-mail our mail server did not vouch for opened or joined it (services/router/trust.py): shown.
    unverified_sender: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A Reply-To that is none of the customer's addresses: answers go to reply_to until an agent
    # confirms this one.
    reply_to_pending: Mapped[str | None] = mapped_column(String(320))
    # The conversation's own figures, kept when they happen so that a report only adds them up:
    # business seconds from opening to the first human response (the business calendar, computed
    # once, at that response) and wall-clock seconds from opening to resolution (None while open).
    first_response_business_s: Mapped[float | None] = mapped_column(Float)
    resolution_s: Mapped[float | None] = mapped_column(Float)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id", name="uq_message_external"),
        # The KPI report's arrivals: customer messages by arrival, with their conversation (0016).
        Index("ix_messages_in_received", "received_at", postgresql_include=["conversation_id"],
              postgresql_where=text("direction = 'in'"), sqlite_where=text("direction = 'in'")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the envelope's message id
    conversation_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversations.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(255))
    sender_kind: Mapped[str | None] = mapped_column(String(16))
    sender_value: Mapped[str | None] = mapped_column(String(320))
    text: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict] = mapped_column()  # attachments, automatic flag, thread refs, provider meta
    # No index of its own (0020): the one query by arrival reads customer messages, ix_messages_in_received.
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    correlation_id: Mapped[str] = mapped_column(String(128))


class Assignment(Base):
    """Every owner decision with its reason: who, why, when."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_agent_assigned", "agent_id", "assigned_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversations.id"), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CallbackTask(Base):
    """A call to return: one per phone call that reached nobody (voicemail or missed), for the owner.

    Unique per CallSid: the recording, transcription and dial callbacks of one call, and their
    redeliveries, make one task.
    """

    __tablename__ = "callback_tasks"
    __table_args__ = (UniqueConstraint("call_sid", name="uq_callback_tasks_call_sid"),
                      Index("ix_callback_tasks_owner_open", "owner_id", "done_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversations.id"), index=True)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))  # E.164, the number to call back
    call_sid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # voicemail | missed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The agent who called back, or "answered" (a person took the call after all), or "resolved"
    # (closed with its conversation, not returned).
    done_by: Mapped[str | None] = mapped_column(String(64))


class PhoneCall(Base):
    """What the router knows of a call besides its message: that a person answered it (the <Dial>
    action) and that it ended (the status callback). Only these two notices write it, each first
    claiming the row by its CallSid (INSERT … ON CONFLICT), so the two of one call never interleave:
    an "ended" with no answer and no message is a missed call, an "answered" one is nothing."""

    __tablename__ = "phone_calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_status: Mapped[str | None] = mapped_column(String(16))  # Twilio's CallStatus: completed, busy...


class ConversationSurvey(Base):
    """The router's own record of a conversation's survey (one per opening), kept from the
    notifier's survey.result events: what the KPI report counts (sent in the period, the score),
    and what tells an SMS digit or the comment after an answer from a new message
    (services/router/survey_replies.py) without reading the notifier's tables."""

    __tablename__ = "conversation_surveys"
    __table_args__ = (Index("ix_conversation_surveys_recipient", "channel", "address", "sent_at"),)

    conversation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    opening: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # csat | nps
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    score: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    channel: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320))
    token: Mapped[str | None] = mapped_column(String(40))
    # A comment is held (the notifier said so) or was sent by the router: the next text is no comment.
    commented: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RouterOutbox(Base):
    __tablename__ = "router_outbox"
    # Only the agent API's events wait for a confirm: the bus's are stored without (partial, 0021).
    __table_args__ = (Index("ix_router_outbox_pending_since", "pending_since",
                            postgresql_where=text("pending_since IS NOT NULL"),
                            sqlite_where=text("pending_since IS NOT NULL")),)

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_message_id: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[dict] = mapped_column()  # the encoded envelope, re-published unchanged on redelivery
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Agent API events have no bus redelivery to repair a lost publish: set until confirmed.
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AgentToken(Base):
    """An agent's API bearer token, stored as its SHA-256 only: the token itself is shown once."""

    __tablename__ = "agent_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None: until revoked or replaced


class AgentAvailability(Base):
    """An agent's own word on their availability; without a row, the config's status applies."""

    __tablename__ = "agent_availability"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # on_shift | off | on_leave
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CategoryCorrection(Base):
    """An agent's correction of a category: kept as training data for the classifier."""

    __tablename__ = "category_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversations.id"), index=True)
    old_category: Mapped[str] = mapped_column(String(32))
    new_category: Mapped[str] = mapped_column(String(32))
    agent_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgentPassword(Base):
    """An agent's inbox password (set with `switchboard agents password`), stored as a scrypt hash."""

    __tablename__ = "agent_passwords"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InboxSession(Base):
    """A browser's inbox session: the cookie's SHA-256 (the cookie itself is never stored) and the
    CSRF token its forms carry. Kept in the database so every router replica knows every session."""

    __tablename__ = "inbox_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The API token the session was opened with (None: a password): a new or revoked token ends it.
    token_id: Mapped[int | None] = mapped_column(Integer, index=True)


class LoginThrottle(Base):
    """Recent failed inbox logins per key ("address:<ip>" or "agent:<id>"), for
    services/router/login_throttle.py; in the database so every router replica counts the same."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class LoginKnownAddress(Base):
    """An address an agent logged in from: the agent's own failed-login counter does not hold it back."""

    __tablename__ = "login_known_addresses"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_login_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SenderBucket(Base):
    """A sender's notice token bucket (services/router/flood.py), keyed "customer:<id>" or
    "address:<kind>:<value>"; in the database so every router replica drains the same one."""

    __tablename__ = "sender_buckets"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- the KPI report's daily roll-ups (services/router/kpi_store.py) --------------------------------


class KpiDaily(Base):
    """One local day's conversations (opened that day, automatic mail left out) added up per team,
    owner, channel, category and language: their count, promise outcomes as they stand once every
    promise of the day is settled, and how many were opened more than once. Rebuilt whole, a day
    at a time, from the conversations (never incremented), so a redelivered or reassigned
    conversation cannot be counted twice."""

    __tablename__ = "kpi_daily"
    __table_args__ = (Index("ix_kpi_daily_day", "day"), Index("ix_kpi_daily_team_day", "team_id", "day"),
                      Index("ix_kpi_daily_owner_day", "owner_id", "day"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    team_id: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    conversations: Mapped[int] = mapped_column(Integer)
    kept: Mapped[int] = mapped_column(Integer)
    breached: Mapped[int] = mapped_column(Integer)
    closed: Mapped[int] = mapped_column(Integer)
    reopened: Mapped[int] = mapped_column(Integer)


class KpiDailySurveys(Base):
    """The surveys of one local day's conversations (`day`: opened that day), added up per team,
    owner and the day each was sent (`sent_day`: the day whose [midnight, midnight) holds its
    sending time), rebuilt with the day's other roll-ups: a report adds the rows whose opening and
    sending days are both rolled-up days of its period."""

    __tablename__ = "kpi_daily_surveys"
    __table_args__ = (Index("ix_kpi_daily_surveys_day", "day"), Index("ix_kpi_daily_surveys_team_day", "team_id", "day"),
                      Index("ix_kpi_daily_surveys_owner_day", "owner_id", "day"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    sent_day: Mapped[date] = mapped_column(Date)
    team_id: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    sent: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer)
    csat_answers: Mapped[int] = mapped_column(Integer)
    csat_good: Mapped[int] = mapped_column(Integer)
    nps_answers: Mapped[int] = mapped_column(Integer)
    promoters: Mapped[int] = mapped_column(Integer)
    detractors: Mapped[int] = mapped_column(Integer)


class KpiDay(Base):
    """A local day whose roll-up rows are built, in which zone, and from when its promise outcomes
    no longer depend on the time of asking (the latest due time of an unanswered promise, or
    resolution of one resolved unanswered): a report asked before then reads the day's
    conversations instead."""

    __tablename__ = "kpi_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    stable_after: Mapped[datetime | None] = mapped_column(UTCDateTime())


class KpiDirtyDay(Base):
    """A UTC day some conversation opened on changed since its roll-up was built: one row per
    change (never updated, so writers never wait on each other); the roll-up job deletes the rows
    it saw once it rebuilt the local days around that day."""

    __tablename__ = "kpi_dirty_days"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    utc_day: Mapped[date] = mapped_column(Date, index=True)


_Row = TypeVar("_Row", bound=Base)
_ATTRIBUTES: dict[type, frozenset[str]] = {}


def new_row(model: type[_Row], **values: Any) -> _Row:
    """A row the router's unit of work only inserts (services/router/sql_unit_of_work.py `_Pending`
    writes it with Core and never adds it to the session): an instance of the mapped class made
    without the ORM's constructor, which records every attribute's history for a flush that never
    comes — ~15 us for a message's row against ~1 us. Reading and setting its attributes works as
    on any instance; it must not be given to Session.add (nothing in its history to flush)."""
    names = _ATTRIBUTES.get(model)
    if names is None:
        names = _ATTRIBUTES[model] = frozenset(inspect(model).attrs.keys())
    if not values.keys() <= names:
        raise TypeError(f"{model.__name__} has no attribute {sorted(values.keys() - names)[0]!r}")
    row = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    row.__dict__.update(values)
    return row
