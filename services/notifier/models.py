"""The notifier's outbox: one row per outbound message, unique by its idempotency key.

The key (conversation + kind + opening, or a reply id) is claimed before anything is sent, so a
redelivered event finds the row and sends nothing twice. Status moves forward only:
pending → sent | failed (permanent, recorded, not retried) | dead (out of attempts).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_recipient", "channel", "address", "created_at"),
                      # Partial (0021): an agent's notice has no customer, a pending row no provider
                      # id; the queries ask for a value, so the rows without one need no entry.
                      Index("ix_outbox_customer", "customer_id", "created_at",
                            postgresql_where=text("customer_id IS NOT NULL"),
                            sqlite_where=text("customer_id IS NOT NULL")),
                      Index("ix_outbox_provider_message_id", "provider_message_id",
                            postgresql_where=text("provider_message_id IS NOT NULL"),
                            sqlite_where=text("provider_message_id IS NOT NULL")))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # ack | redirect | ...
    conversation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # The router's customer (acknowledgements): the daily cap counts a customer's every address.
    customer_id: Mapped[str | None] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    # No index of its own (0020): the queries that test it find their rows by recipient, customer or
    # conversation, and each send updates it.
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    options: Mapped[dict | None] = mapped_column()  # sender options: the number to send from, buttons...
    delivery_status: Mapped[str | None] = mapped_column(String(32))  # the provider's last word, only forward
    delivery_error: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(128))
    source_message_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Suppression(Base):
    """An address we must not write to: opted out (STOP, 21610) or bouncing, until `until` if set."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_suppression"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Survey(Base):
    """One survey per conversation opening, after resolution (SPEC §5), its delay kept here.

    `due_at` is the schedule: the ticker claims due rows in a transaction (status scheduled →
    sending → sent), so a restart or a second replica sends exactly what is due, once. `token` is
    the survey's unguessable handle in buttons, quick replies and signed e-mail links; an answer
    is recorded once (`answered_at` set only while it is empty).
    Status: scheduled | sending | sent | answered | skipped (with `reason`) | opted_out.
    """

    __tablename__ = "surveys"
    __table_args__ = (UniqueConstraint("conversation_id", "opening", name="uq_survey_conversation_opening"),
                      UniqueConstraint("token", name="uq_surveys_token"),
                      Index("ix_surveys_status_due", "status", "due_at"),
                      Index("ix_surveys_recipient", "channel", "address", "sent_at"),
                      Index("ix_surveys_to_report", "id", postgresql_where=text("to_report"),
                            sqlite_where=text("to_report")))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36))
    opening: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(36), index=True)
    customer_name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    reply_from: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(8))  # csat | nps
    token: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    score: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    comment_source: Mapped[str | None] = mapped_column(String(300))  # "<channel>:<provider id>" of the comment
    # WhatsApp's 24-hour window counts from it: free-form survey inside, an approved template after.
    last_customer_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Sent or answered since the router was last told (survey.result, published by the ticker).
    to_report: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SurveyOptOut(Base):
    """No more surveys: per customer (honoured on every channel) and per channel + address (a
    sender the router could not tie to a customer yet). Suppressions stop every message to one
    address; this stops only surveys, but everywhere."""

    __tablename__ = "survey_opt_outs"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_survey_opt_out_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str | None] = mapped_column(String(36), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    source: Mapped[str] = mapped_column(String(255))  # what said it: "sms:SM…", "email link", ...
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- promises and agent notices ---------------------------------------------------------------


class Promise(Base):
    """The first-response promise of one conversation opening, tracked until a human keeps it.

    Made from conversation.opened (the acknowledgement states `due_at`; an acknowledgement is not a
    response). `warn_at` is 75 % of the promised business time. The ticker claims due rows: a
    warning once (`warned_at`), a breach once (`breached_at`, status breached); the first agent reply
    sets `kept_at` — the first human reply, whether in time or late — and status kept when in time.
    Every moment is stored, so "promises kept %" is kept / (kept + breached) over any period.
    Status: open | kept | breached | closed (resolved before any reply and before the due time).
    """

    __tablename__ = "promises"
    __table_args__ = (UniqueConstraint("conversation_id", "opening", name="uq_promise_conversation_opening"),
                      Index("ix_promises_status_warn", "status", "warn_at"),
                      Index("ix_promises_status_due", "status", "due_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36))
    opening: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(32))
    customer_name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(64))  # no index: nothing looks promises up by owner (0020)
    team_id: Mapped[str | None] = mapped_column(String(64))
    lead_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    warn_at: Mapped[datetime] = mapped_column(UTCDateTime())
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kept_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the first human reply, in time or not
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgentNotice(Base):
    """A notice to an agent or lead, held until their shift (`not_before`), sent once via the outbox.

    `idempotency_key` is also the outbox row's key. `not_before` is the schedule and the lease: the
    ticker claims a due row by moving it forward (a crashed sender's claim expires), a transient
    failure moves it by the backoff. The text is rendered when it is sent, so "due today at 13:00"
    is true on the day the agent reads it. Status: pending | sent | failed | skipped | cancelled | dead.
    """

    __tablename__ = "agent_notices"
    # The ticker's due notices: pending ones only (0021), so a sent notice leaves the index.
    __table_args__ = (Index("ix_agent_notices_pending_due", "not_before", postgresql_where=text("status = 'pending'"),
                            sqlite_where=text("status = 'pending'")),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # assigned | customer_message | promise_warning | ...
    conversation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    fields: Mapped[dict] = mapped_column()  # what the text says (texts.render_agent_notice), JSON-ready
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
