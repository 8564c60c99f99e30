"""An in-memory `RouterUnitOfWork` (services/router/unit_of_work.py), as cosmicpython's
FakeUnitOfWork: the router's handlers run on it with no database, so the routing and notifying
rules are tested in tests/unit.

`RouterStore` is the "database" every unit of work of one test shares (a handler starts one per
message); its rows are the ORM models, kept as plain objects. What the SQL adds of its own is done
here by hand, as far as the rules can tell: column defaults and autoincrement ids at the flush, the
unique constraints the rules lean on (one open conversation per customer, a message per provider
id, an identity per customer), and a rollback or a failed savepoint undoes what was done since.
The SQL itself (its statements, locks and races) stays tested against PostgreSQL in
tests/integration.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import inspect

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
from services.router.unit_of_work import Standing
from shared.contracts import SurveyResult


class UniqueViolation(Exception):
    """What the database's IntegrityError is to the SQL unit of work."""


@dataclass
class RouterStore:
    customers: dict[str, Customer] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    assignments: list[Assignment] = field(default_factory=list)
    outbox: dict[str, RouterOutbox] = field(default_factory=dict)
    buckets: dict[str, SenderBucket] = field(default_factory=dict)
    calls: dict[str, PhoneCall] = field(default_factory=dict)
    tasks: list[CallbackTask] = field(default_factory=list)
    surveys: dict[tuple[str, int], ConversationSurvey] = field(default_factory=dict)
    #: The agents' own word on their availability (agent_availability), by agent id.
    availability: dict[str, str] = field(default_factory=dict)
    commits: int = 0

    def rows(self) -> list[Any]:
        return [*self.customers.values(), *self.identities, *self.conversations.values(), *self.messages.values(),
                *self.assignments, *self.outbox.values(), *self.buckets.values(), *self.calls.values(), *self.tasks,
                *self.surveys.values()]

    def snapshot(self) -> tuple[dict[str, Any], list[tuple[Any, dict[str, Any]]]]:
        """Every container and every row's columns, for `restore`."""
        containers = {name: copy.copy(getattr(self, name)) for name in (
            "customers", "identities", "conversations", "messages", "assignments", "outbox", "buckets", "calls",
            "tasks", "surveys")}
        return containers, [(row, copy.deepcopy(_columns(row))) for row in self.rows()]

    def restore(self, snapshot: tuple[dict[str, Any], list[tuple[Any, dict[str, Any]]]]) -> None:
        containers, rows = snapshot
        for name, container in containers.items():
            setattr(self, name, container)
        for row, values in rows:
            for key, value in values.items():
                setattr(row, key, value)

    def unit_of_work(self) -> FakeRouterUnitOfWork:
        """A `RouterDeps.unit_of_work` factory over this store."""
        return FakeRouterUnitOfWork(self)


def _columns(row: Any) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


class _Customers:
    def __init__(self, db: RouterStore):
        self.db = db

    def by_identities(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[str, str, Customer]]:
        keys = set(wanted)
        return [(i.kind, i.value, self.db.customers[i.customer_id]) for i in self.db.identities
                if (i.kind, i.value) in keys]

    def identities(self, customer_id: str) -> list[Identity]:
        return [i for i in self.db.identities if i.customer_id == customer_id]

    def customer_id(self, kind: str, value: str) -> str | None:
        return next((i.customer_id for i in self.db.identities if (i.kind, i.value) == (kind, value)), None)

    def addresses(self, customer_id: str, kinds: Sequence[str]) -> list[str]:
        return [i.value for i in self.identities(customer_id) if i.kind in kinds]

    def phones(self, customer_id: str) -> tuple[str, ...]:
        return tuple(sorted(self.addresses(customer_id, ("phone",))))

    def add(self, customer: Customer) -> None:
        self.db.customers[customer.id] = customer

    def add_identity(self, identity: Identity) -> None:
        self.db.identities.append(identity)


class _Conversations:
    def __init__(self, db: RouterStore):
        self.db = db

    def get(self, conversation_id: str) -> Conversation | None:
        return self.db.conversations.get(conversation_id)

    def open_of(self, customer_id: str) -> Conversation | None:
        return next((c for c in self.db.conversations.values()
                     if c.customer_id == customer_id and c.status == "open"), None)

    def last_resolved_of(self, customer_id: str) -> Conversation | None:
        resolved = [c for c in self.db.conversations.values()
                    if c.customer_id == customer_id and c.resolved_at is not None]
        return max(resolved, key=lambda c: c.resolved_at, default=None)

    def by_reference(self, reference: str) -> Conversation | None:
        return next((c for c in self.db.conversations.values() if c.reference == reference), None)

    def add(self, conversation: Conversation) -> None:
        self.db.conversations[conversation.id] = conversation


class _Messages:
    def __init__(self, db: RouterStore):
        self.db = db

    def get(self, message_id: str) -> Message | None:
        return self.db.messages.get(message_id)

    def _by_external(self, channel: str, external_id: str) -> Message | None:
        return next((m for m in self.db.messages.values() if (m.channel, m.external_id) == (channel, external_id)),
                    None)

    def stored_id(self, channel: str, external_id: str) -> str | None:
        found = self._by_external(channel, external_id)
        return found.id if found else None

    def customer_message(self, channel: str, external_id: str) -> Message | None:
        found = self._by_external(channel, external_id)
        return found if found is not None and found.direction == "in" else None

    def email_conversation_ids(self, external_ids: Sequence[str], limit: int) -> list[str]:
        wanted = set(external_ids)
        found = [m for m in self.db.messages.values() if m.channel == "email" and m.external_id in wanted]
        found.sort(key=lambda m: m.received_at, reverse=True)
        return [m.conversation_id for m in found[:limit]]

    def add(self, message: Message) -> None:
        if message.id in self.db.messages or self._by_external(message.channel, message.external_id):
            raise UniqueViolation(f"message {message.id} ({message.channel} {message.external_id}) is stored")
        self.db.messages[message.id] = message


class _Roster:
    def __init__(self, db: RouterStore):
        self.db = db

    def standing(self, agent_ids: tuple[str, ...]) -> Standing:
        standing = Standing()
        for agent_id in agent_ids:
            if agent_id in self.db.availability:
                standing.availability[agent_id] = self.db.availability[agent_id]
            load = sum(1 for c in self.db.conversations.values() if c.owner_id == agent_id and c.status == "open")
            if load:
                standing.loads[agent_id] = load
            times = [a.assigned_at for a in self.db.assignments if a.agent_id == agent_id]
            if times:
                standing.last_assigned[agent_id] = max(times)
        return standing

    def add_assignment(self, assignment: Assignment) -> None:
        self.db.assignments.append(assignment)


class _Outbox:
    def __init__(self, db: RouterStore):
        self.db = db

    def events_of(self, source_message_id: str) -> list[RouterOutbox]:
        rows = [r for r in self.db.outbox.values() if r.source_message_id == source_message_id]
        return sorted(rows, key=lambda r: (r.created_at, r.message_id))

    def add(self, row: RouterOutbox) -> None:
        if row.message_id in self.db.outbox:
            raise UniqueViolation(f"outbox row {row.message_id} is stored")
        self.db.outbox[row.message_id] = row


class _Buckets:
    def __init__(self, db: RouterStore):
        self.db = db

    def claim(self, keys: Sequence[str], tokens: float, at: datetime) -> list[SenderBucket]:
        return [self.db.buckets.setdefault(key, SenderBucket(key=key, tokens=tokens, at=at)) for key in keys]


class _Calls:
    def __init__(self, db: RouterStore):
        self.db = db

    def claim(self, call_sid: str) -> PhoneCall:
        return self.db.calls.setdefault(call_sid, PhoneCall(call_sid=call_sid))

    def task(self, call_sid: str) -> CallbackTask | None:
        return next((t for t in self.db.tasks if t.call_sid == call_sid), None)

    def open_task(self, call_sid: str) -> CallbackTask | None:
        return next((t for t in self.db.tasks if t.call_sid == call_sid and t.done_at is None), None)

    def add_task(self, task: CallbackTask) -> None:
        if self.task(task.call_sid) is not None:
            raise UniqueViolation(f"a call-back task of call {task.call_sid} is stored")
        self.db.tasks.append(task)


class _Surveys:
    def __init__(self, db: RouterStore):
        self.db = db

    def _latest(self, channels: Sequence[str], address: str, since: datetime, column: str) -> ConversationSurvey | None:
        found = [s for s in self.db.surveys.values() if s.channel in channels and s.address == address
                 and getattr(s, column) is not None and getattr(s, column) >= since]
        return max(found, key=lambda s: getattr(s, column), default=None)

    def last_sent(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None:
        return self._latest(channels, address, since, "sent_at")

    def last_answered(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None:
        return self._latest(channels, address, since, "answered_at")

    def record_result(self, result: SurveyResult) -> None:
        """As kpi_store.record_survey_result's upsert: what is known stays, what is new is added."""
        row = self.db.surveys.setdefault((result.conversation_id, result.opening), ConversationSurvey(
            conversation_id=result.conversation_id, opening=result.opening, kind=result.kind, commented=False))
        for key in ("sent_at", "score", "answered_at", "channel", "address", "token"):
            if getattr(row, key) is None:
                setattr(row, key, getattr(result, key))
        row.commented = bool(row.commented or result.commented)


class FakeRouterUnitOfWork:
    savepoints = True

    def __init__(self, db: RouterStore):
        self.db = db
        self.customers, self.conversations, self.messages = _Customers(db), _Conversations(db), _Messages(db)
        self.roster, self.outbox, self.buckets = _Roster(db), _Outbox(db), _Buckets(db)
        self.calls, self.surveys = _Calls(db), _Surveys(db)
        self.committed = False

    def __enter__(self) -> FakeRouterUnitOfWork:
        self._begun = self.db.snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.rollback()

    def prepare(self, messages: Sequence[Any], *, at_once: bool = False) -> None:
        """Nothing to read ahead: every look-up is in memory."""

    def claim(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Column defaults and autoincrement ids, and the unique constraints the rules lean on."""
        for row in self.db.rows():
            for column in inspect(type(row)).columns:
                if getattr(row, column.key) is None and column.default is not None and column.default.is_scalar:
                    setattr(row, column.key, column.default.arg)  # type: ignore[attr-defined]
        for rows in (self.db.assignments, self.db.identities, self.db.tasks):
            taken = [r.id for r in rows if r.id is not None]
            next_id = max(taken, default=0) + 1
            for row in rows:
                if row.id is None:
                    row.id, next_id = next_id, next_id + 1
        open_of: dict[str, str] = {}
        for conv in self.db.conversations.values():
            if conv.status == "open" and open_of.setdefault(conv.customer_id, conv.id) != conv.id:
                raise UniqueViolation(f"customer {conv.customer_id} has two open conversations")
        seen: set[tuple[str, str]] = set()
        for identity in self.db.identities:
            if (identity.kind, identity.value) in seen:
                raise UniqueViolation(f"identity {identity.kind}:{identity.value} belongs to two customers")
            seen.add((identity.kind, identity.value))

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        before = self.db.snapshot()
        try:
            yield
            self.flush()
        except BaseException:
            self.db.restore(before)
            raise

    def commit(self) -> None:
        self.flush()
        self.committed = True
        self.db.commits += 1

    def rollback(self) -> None:
        self.db.restore(self._begun)
