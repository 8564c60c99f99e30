"""The router's unit of work: the repositories an inbound message's routing reads and writes, and
its commit (cosmicpython's unit of work pattern).

The handlers (services/router/handlers.py) see only `RouterUnitOfWork`: its repositories answer the
questions the routing and notifying rules ask ("the customer's open conversation", "the roster's
standing", "a token from these buckets") and take the rows the rules make.
services/router/sql_unit_of_work.py is the one over SQLAlchemy, with the statements the handlers
used to send themselves, one for one (the throughput work counts every statement);
tests/support/router_uow.py is an in-memory one, so the rules are tested in tests/unit without a
database. This module imports no SQL, so the rule modules may import it without a circle.

The rows are the ORM models (services/router/models.py): plain objects outside a session, so a fake
repository keeps them as they are. A row a repository returned is the unit of work's: the rules
change it in place and the commit writes the change.

A batch (`handle_inbound_batch`) is one unit of work: one transaction, one commit; only when it
fails is it handled again with each message in a savepoint of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.router.models import (
    Assignment,
    CallbackTask,
    Conversation,
    ConversationSurvey,
    Customer,
    Identity,
    Message,
    PhoneCall,
    RouterOutbox,
    SenderBucket,
)
from shared.contracts import InboundMessage, SurveyResult

# --- what the rules ask, as protocols ----------------------------------------------------------------


class Customers(Protocol):
    def by_identities(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[str, str, Customer]]:
        """(kind, value, customer) of each of these identities that is known, in one look-up."""
    def identities(self, customer_id: str) -> list[Identity]: ...
    def customer_id(self, kind: str, value: str) -> str | None: ...
    def addresses(self, customer_id: str, kinds: Sequence[str]) -> list[str]: ...
    def phones(self, customer_id: str) -> tuple[str, ...]: ...
    def add(self, customer: Customer) -> None: ...
    def add_identity(self, identity: Identity) -> None: ...


class Conversations(Protocol):
    def get(self, conversation_id: str) -> Conversation | None: ...
    def open_of(self, customer_id: str) -> Conversation | None: ...
    def last_resolved_of(self, customer_id: str) -> Conversation | None: ...
    def by_reference(self, reference: str) -> Conversation | None: ...
    def add(self, conversation: Conversation) -> None: ...


class Messages(Protocol):
    def get(self, message_id: str) -> Message | None: ...
    def stored_id(self, channel: str, external_id: str) -> str | None:
        """The id of the message stored for this provider id, if any (the idempotency key)."""
    def customer_message(self, channel: str, external_id: str) -> Message | None:
        """The stored inbound message with this provider id, locked for a revision of it."""
    def email_conversation_ids(self, external_ids: Sequence[str], limit: int) -> list[str]:
        """The conversations of the stored e-mails with these Message-IDs, newest first."""
    def add(self, message: Message) -> None: ...


@dataclass
class Standing:
    """The roster as the owner decision reads it, per agent with anything to say."""

    availability: dict[str, str] = field(default_factory=dict)  # the agent's own word, over the config's
    loads: dict[str, int] = field(default_factory=dict)  # open conversations
    last_assigned: dict[str, datetime] = field(default_factory=dict)


class Roster(Protocol):
    def standing(self, agent_ids: tuple[str, ...]) -> Standing: ...
    def add_assignment(self, assignment: Assignment) -> None: ...


class Outbox(Protocol):
    def events_of(self, source_message_id: str) -> list[RouterOutbox]:
        """The events stored with a message, in the order they were made."""
    def add(self, row: RouterOutbox) -> None: ...


class Buckets(Protocol):
    def claim(self, keys: Sequence[str], tokens: float, at: datetime) -> list[SenderBucket]:
        """The flood control's buckets, made full when new and locked for this transaction; the
        caller sets their tokens."""


class Calls(Protocol):
    def claim(self, call_sid: str) -> PhoneCall:
        """The call's row, made when new and locked for this transaction."""
    def task(self, call_sid: str) -> CallbackTask | None: ...
    def open_task(self, call_sid: str) -> CallbackTask | None: ...
    def add_task(self, task: CallbackTask) -> None: ...


class Surveys(Protocol):
    def last_sent(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None: ...
    def last_answered(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None: ...
    def record_result(self, result: SurveyResult) -> None: ...


class RouterUnitOfWork(Protocol):
    customers: Customers
    conversations: Conversations
    messages: Messages
    roster: Roster
    outbox: Outbox
    buckets: Buckets
    calls: Calls
    surveys: Surveys
    #: Whether `savepoint` can roll one message back alone (SQLite's driver cannot).
    savepoints: bool

    def __enter__(self) -> RouterUnitOfWork: ...
    def __exit__(self, *exc: object) -> None:
        """Rolls back what was not committed."""
    def prepare(self, messages: Sequence[InboundMessage], *, at_once: bool = False) -> None:
        """The messages a batch is about to handle: an implementation may read ahead what their
        look-ups need, in one go. Changes no answer any repository gives. `at_once`: the batch is
        handled without savepoints and redone message by message if it fails, so `claim` may wait
        for the commit."""
    def flush(self) -> None:
        """Writes what was added so far: claims the unique indexes now (the one open conversation
        per customer) and gives new assignments their ids."""
    def claim(self) -> None:
        """Claims the unique indexes of what was added (the one open conversation per customer) by
        the time a conflict must fail this message alone: now in a savepoint, at the commit in a
        batch handled at once."""
    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """What is done inside is undone alone when it raises."""
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
