"""The router's unit of work over SQLAlchemy (services/router/unit_of_work.py says what it is for):
the statements the handlers sent themselves before it, one for one."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    event,
    func,
    insert,
    inspect,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    make_transient_to_detached,
    sessionmaker,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from services.router import flood
from services.router.kpi_store import mark_opened_days, record_survey_result
from services.router.models import (
    AgentAvailability,
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
from services.router.ownership import customer_phones
from services.router.survey_replies import answer_channels
from services.router.trust import sender_identity
from services.router.unit_of_work import (
    Buckets,
    Calls,
    Conversations,
    Customers,
    Messages,
    Outbox,
    Roster,
    Standing,
    Surveys,
)
from shared.contracts import InboundMessage, SurveyResult
from shared.db import Base, UTCDateTime
from shared.db.bulk import ROWS, in_order, recordset, recordset_insert, rows_document


def _insert(s: Session):
    return postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert


#: The tables the routing adds rows to, in the order their foreign keys need them written.
_WRITE_ORDER = (Customer, Identity, Conversation, Assignment, Message, RouterOutbox, CallbackTask)
#: Rows a later message of the batch may change in place (a customer's name, a conversation's last
#: message): once written, they join the session, which writes such a change as an UPDATE.
_KEPT = (Customer, Conversation)


class _Columns:
    """What a row of one table inserts: every column, its value from the object or else the column's
    own scalar default (else NULL), so the rows of a table share one statement. An autoincrement key
    is left to the database; RETURNING gives it back only where something reads it (`returned`)."""

    def __init__(self, model: type[Base], returned: bool):
        mapper: Mapper[Base] = inspect(model)
        self.table = cast(Table, model.__table__)
        self.serial: str | None = next((c.key for c in mapper.primary_key if c.autoincrement is True), None)
        self.columns = [(prop.key, prop.columns[0].key,
                         prop.columns[0].default.arg if prop.columns[0].default is not None
                         and prop.columns[0].default.is_scalar else None)
                        for prop in mapper.column_attrs if prop.columns[0].key != self.serial]
        self.returned: str | None = self.serial if returned else None
        # On SQLite (embedded mode): one multi-row VALUES (SQLAlchemy's "insertmanyvalues"), ids
        # back in the rows' order.
        key = self.table.c[self.serial] if returned and self.serial else next(iter(self.table.primary_key))
        self.many = insert(self.table).returning(key, sort_by_parameter_order=returned)
        # On PostgreSQL, INSERT … SELECT FROM jsonb_to_recordset(:rows): one short statement whatever
        # the number of rows, its rows one JSON document (shared/db/bulk.py says why). Ids come
        # back in the rows' order where something reads them (`returned`).
        names = tuple(column for _, column, _ in self.columns)
        self.recordset = recordset_insert(self.table, names, returning=(self.returned,) if self.returned else (),
                                          ordered=self.returned is not None)

    def values(self, obj: object, keep: bool) -> dict[str, object]:
        state = obj.__dict__
        row = {}
        for attr, column, default in self.columns:
            value = state.get(attr, _MISSING)
            if value is _MISSING:
                value = default
                if keep:
                    setattr(obj, attr, value)  # what was written: nothing left to load back
            row[column] = value
        return row


_MISSING = object()
#: An execution option: this statement reads and writes none of the rows held back (`_Pending`).
_KEEP_PENDING = "router_keep_pending"
_COLUMNS = {model: _Columns(model, returned=model is Assignment) for model in _WRITE_ORDER}


class _Pending:
    """New rows held back and written together: one multi-row INSERT per table for as many
    messages as came before the next read, savepoint end or commit (SQLAlchemy Core: no ORM flush,
    which costs more CPU per row than PostgreSQL spends storing it). The ORM's own flush still writes
    changes to rows read or kept (`_KEPT`)."""

    def __init__(self, s: Session):
        self.s = s
        self.rows: dict[type, list[object]] = {}
        self.postgresql = s.get_bind().dialect.name == "postgresql"

    def add(self, row: object) -> None:
        self.rows.setdefault(type(row), []).append(row)

    def clear(self) -> None:
        self.rows = {}

    def write(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, {}
        connection = self.s.connection()
        for model in _WRITE_ORDER:
            objs = rows.pop(model, None)
            if not objs:
                continue
            columns, keep = _COLUMNS[model], model in _KEPT
            values = [columns.values(obj, keep) for obj in objs]
            if self.postgresql:
                result = connection.execute(columns.recordset, {ROWS: rows_document(values)})
                serials = in_order(result.scalars().all()) if columns.returned is not None else []
            else:
                result = connection.execute(columns.many, values)
                serials = list(result.scalars()) if columns.returned is not None else []
            if columns.returned is not None:
                for obj, serial in zip(objs, serials, strict=True):
                    setattr(obj, columns.returned, serial)
            if model is Conversation:
                # As the ORM's flush would have (kpi_store's after_flush hook).
                mark_opened_days(self.s, [getattr(obj, "opened_at", None) for obj in objs])
            if keep:
                for obj in objs:
                    make_transient_to_detached(obj)
                    self.s.add(obj)
        assert not rows, f"rows of no known table: {list(rows)}"


def _postgresql(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


#: The bound parameter of a batch's read-ahead keys: pairs as one JSON document.
_KEYS = "keys"


#: The same pairs' first and second halves as arrays (`_pairs_in`), for an index condition.
_FIRSTS, _SECONDS = bindparam("firsts", type_=postgresql.ARRAY(Text())), bindparam("seconds", type_=postgresql.ARRAY(Text()))


def _pairs(pairs: Collection[tuple[str, str]], first: str, second: str) -> dict[str, Any]:
    return {_KEYS: rows_document([{first: a, second: b} for a, b in pairs]),
            "firsts": list({a for a, _ in pairs}), "seconds": list({b for _, b in pairs})}


def _pairs_in(first: Any, second: Any) -> Any:
    """(first, second) IN the batch's key pairs (`_pairs`, one JSON document), and beside it
    `first = ANY(:firsts) AND second = ANY(:seconds)`: a superset the pair test narrows, there for
    the planner. It guesses 100 rows for any jsonb_to_recordset, and below a few tens of thousands
    of rows it then read the whole table (a hash join over a sequential scan: 2.7 ms a batch at
    15,000 identities, in every bench run on a fresh database); the arrays make the pair's index
    (uq_identity, uq_message_external, ix_conversation_surveys_recipient) an index condition at any
    size."""
    keys = recordset(_KEYS, ((first.key, Text()), (second.key, Text())))
    return and_(first == any_(_FIRSTS), second == any_(_SECONDS),
                tuple_(first, second).in_(select(keys.c[first.key], keys.c[second.key])))


def _read(s: Session, statement: Select, parameters: dict[str, Any]) -> Any:
    """A read-ahead of columns on the session's connection: Session.execute's ORM hooks cost more
    CPU than such a statement. The router's own hook (`_before_execute`) writes held-back rows
    first; a read-ahead runs at a unit of work's start (`prepare`), before any is held back. ORM
    changes are flushed first, as Session.execute's autoflush would."""
    s.flush()
    return s.connection().execute(statement, parameters)


# The batch's read-aheads on PostgreSQL, built once (as the router's other statements: lru_cache
# builders): each takes its key pairs as one JSON document (`_pairs`), so the statement's text is
# the same whatever the number of keys, converted once by psycopg and prepared once by PostgreSQL,
# where a tuple IN list was built and rendered again for every batch. SQLite (embedded mode) keeps
# the IN lists.
@functools.lru_cache(maxsize=1)
def _identities_ahead() -> Select:
    return _identities_of(_pairs_in(Identity.kind, Identity.value))


def _identities_of(where: Any) -> Select:
    return (select(Identity.kind, Identity.value, Customer, Conversation)
            .join(Customer, Customer.id == Identity.customer_id)
            .outerjoin(Conversation, (Conversation.customer_id == Customer.id) & (Conversation.status == "open"))
            .where(where))


@functools.lru_cache(maxsize=1)
def _stored_ahead() -> Select:
    return _stored_of(_pairs_in(Message.channel, Message.external_id))


def _stored_of(where: Any) -> Select:
    return select(Message.channel, Message.external_id, Message.id).where(where)


@functools.lru_cache(maxsize=1)
def _surveyed_ahead() -> Select:
    return _surveyed_of(_pairs_in(ConversationSurvey.channel, ConversationSurvey.address))


def _surveyed_of(where: Any) -> Select:
    return select(ConversationSurvey.channel, ConversationSurvey.address).distinct().where(where)


class _SqlCustomers:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending
        #: Identities read ahead (`read_ahead`) with their customer, or None when unknown then;
        #: kept up to date by `add`/`add_identity`. An identity not in it is asked for.
        self._known: dict[tuple[str, str], Customer | None] = {}
        self._made: dict[str, Customer] = {}

    def read_ahead(self, wanted: Sequence[tuple[str, str]], conversations: _SqlConversations) -> None:
        """One query for the identities of a whole batch, their customers and those customers' open
        conversations, instead of two per message. A customer or conversation another replica makes
        meanwhile fails this one's insert on its unique index (uq_identity, uq_one_open_conversation)
        and the message's retry alone finds it, as with a look-up per message."""
        keys = set(wanted)
        if not keys:
            return
        if _postgresql(self.s):
            rows = self.s.execute(_identities_ahead(), _pairs(keys, "kind", "value")).all()
        else:
            rows = self.s.execute(_identities_of(tuple_(Identity.kind, Identity.value).in_(list(keys)))).all()
        self._known = dict.fromkeys(keys)
        for kind, value, customer, conv in rows:
            self._known[(kind, value)] = customer
            conversations.known_open(customer.id, conv)

    def forget(self) -> None:
        self._known.clear()
        self._made.clear()

    def known(self, kind: str, value: str) -> Customer | None:
        """The identity's customer as read ahead (None: unknown, or not read ahead)."""
        return self._known.get((kind, value))

    def by_identities(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[str, str, Customer]]:
        if wanted and all(w in self._known for w in wanted):
            return [(kind, value, customer) for (kind, value) in dict.fromkeys(wanted)
                    if (customer := self._known[(kind, value)]) is not None]
        rows = self.s.execute(select(Identity.kind, Identity.value, Customer)
                              .join(Customer, Customer.id == Identity.customer_id)
                              .where(tuple_(Identity.kind, Identity.value).in_(list(wanted)))).all()
        return [(kind, value, customer) for kind, value, customer in rows]

    def identities(self, customer_id: str) -> list[Identity]:
        return list(self.s.scalars(select(Identity).where(Identity.customer_id == customer_id)))

    def customer_id(self, kind: str, value: str) -> str | None:
        return self.s.scalar(select(Identity.customer_id).where(Identity.kind == kind, Identity.value == value))

    def addresses(self, customer_id: str, kinds: Sequence[str]) -> list[str]:
        return list(self.s.scalars(select(Identity.value).where(Identity.customer_id == customer_id,
                                                                Identity.kind.in_(list(kinds)))))

    def phones(self, customer_id: str) -> tuple[str, ...]:
        return customer_phones(self.s, customer_id)

    def add(self, customer: Customer) -> None:
        self._made[customer.id] = customer
        self._pending.add(customer)

    def add_identity(self, identity: Identity) -> None:
        key = (identity.kind, identity.value)
        if key in self._known:
            customer = self._made.get(identity.customer_id) or self._by_id(identity.customer_id)
            if customer is None:
                del self._known[key]  # ask the database next time
            else:
                self._known[key] = customer
        self._pending.add(identity)

    def _by_id(self, customer_id: str) -> Customer | None:
        return next((c for c in self._known.values() if c is not None and c.id == customer_id), None)


class _SqlConversations:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending
        #: Customers' open conversations (or None) read ahead with their identities; a customer
        #: whose conversation the caller may reopen (it read one that is not open) is asked again.
        self._open: dict[str, Conversation | None] = {}

    def known_open(self, customer_id: str, conversation: Conversation | None) -> None:
        self._open[customer_id] = conversation

    def forget(self) -> None:
        self._open.clear()

    def known_open_of(self, customer_id: str) -> Conversation | None:
        """The customer's open conversation as read ahead (None: none, or not read ahead)."""
        return self._open.get(customer_id)

    def _may_reopen(self, conversation: Conversation | None) -> Conversation | None:
        if conversation is not None:
            self._open.pop(conversation.customer_id, None)
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        return self._may_reopen(self.s.get(Conversation, conversation_id))

    def open_of(self, customer_id: str) -> Conversation | None:
        if customer_id in self._open:
            conv = self._open[customer_id]
            if conv is None or conv.status == "open":
                return conv
        return self.s.scalar(select(Conversation).where(Conversation.customer_id == customer_id,
                                                        Conversation.status == "open"))

    def last_resolved_of(self, customer_id: str) -> Conversation | None:
        self._open.pop(customer_id, None)
        return self.s.scalar(select(Conversation).where(Conversation.customer_id == customer_id,
                                                        Conversation.resolved_at.is_not(None))
                             .order_by(Conversation.resolved_at.desc()).limit(1))

    def by_reference(self, reference: str) -> Conversation | None:
        return self._may_reopen(self.s.scalar(select(Conversation).where(Conversation.reference == reference)))

    def add(self, conversation: Conversation) -> None:
        if conversation.status == "open":
            self._open[conversation.customer_id] = conversation
        else:
            self._open.pop(conversation.customer_id, None)
        self._pending.add(conversation)


class _SqlMessages:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending
        #: Provider ids read ahead (`read_ahead`): stored then (with the message's id), or not; those
        #: this unit of work stores itself are asked again (`_added`), as is everything after a
        #: rolled-back savepoint.
        self._stored: dict[tuple[str, str], str] = {}
        self._absent: set[tuple[str, str]] = set()
        self._added: set[tuple[str, str]] = set()

    def read_ahead(self, keys: Sequence[tuple[str, str]]) -> None:
        """One query for the idempotency keys of a whole batch, instead of one per message. A
        message another replica stores meanwhile fails this one's insert on uq_message_external,
        and its retry alone finds it stored: exactly once, as with a look-up per message."""
        wanted = set(keys)
        if not wanted:
            return
        if _postgresql(self.s):
            rows = _read(self.s, _stored_ahead(), _pairs(wanted, "channel", "external_id"))
        else:
            rows = self.s.execute(_stored_of(tuple_(Message.channel, Message.external_id).in_(list(wanted))))
        self._stored = {(channel, external_id): message_id for channel, external_id, message_id in rows}
        self._absent = wanted - self._stored.keys()

    def stored(self, key: tuple[str, str]) -> bool:
        """Whether the message was stored when read ahead."""
        return key in self._stored

    def forget(self) -> None:
        self._stored.clear()
        self._absent.clear()

    def get(self, message_id: str) -> Message | None:
        return self.s.get(Message, message_id)

    def stored_id(self, channel: str, external_id: str) -> str | None:
        key = (channel, external_id)
        if key in self._stored:
            return self._stored[key]  # stored messages stay: nothing in the message path deletes one
        if key in self._absent and key not in self._added:
            return None
        return self.s.scalar(select(Message.id).where(Message.channel == channel, Message.external_id == external_id))

    def customer_message(self, channel: str, external_id: str) -> Message | None:
        return self.s.scalar(select(Message).where(Message.channel == channel, Message.external_id == external_id,
                                                   Message.direction == "in").with_for_update())

    def email_conversation_ids(self, external_ids: Sequence[str], limit: int) -> list[str]:
        return list(self.s.scalars(select(Message.conversation_id).where(
            Message.channel == "email", Message.external_id.in_(list(external_ids)))
            .order_by(Message.received_at.desc()).limit(limit)))

    def add(self, message: Message) -> None:
        self._added.add((message.channel, message.external_id))
        self._pending.add(message)


class _SqlRoster:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending
        self._read: tuple[tuple[str, ...], Standing] | None = None

    def standing(self, agent_ids: tuple[str, ...]) -> Standing:
        """Read once per unit of work, then kept up to date by `add_assignment`: a batch that opens
        several conversations asks once, and each of its decisions still sees the ones before it.
        What other replicas or the agent API change meanwhile is seen by the next batch (they race
        as before: the one-open-conversation index, not the standing, keeps one owner each)."""
        if self._read is None or self._read[0] != agent_ids:
            self._read = (agent_ids, self._query(agent_ids))
        read = self._read[1]
        return Standing(dict(read.availability), dict(read.loads), dict(read.last_assigned))

    def forget(self) -> None:
        self._read = None

    def _query(self, agent_ids: tuple[str, ...]) -> Standing:
        """One round trip: per agent their own availability (agent API, overrides the config's
        status), their open conversations (the (owner_id, status) index) and their last assignment
        (one max() on the (agent_id, assigned_at) index from its end: a GROUP BY over every
        assignment ever made would grow with history)."""
        standing = Standing()
        if not agent_ids:
            return standing
        # It counts conversations and assignments: held-back rows of other tables (the customer and
        # identity of a batch's first new customer) may stay held until the commit.
        keep = not any(model in self._pending.rows for model in (Conversation, Assignment))
        values = self.s.execute(_roster_query(agent_ids), execution_options={_KEEP_PENDING: keep}).one()
        for i, agent_id in enumerate(agent_ids):
            status, load, last_at = values[3 * i: 3 * i + 3]
            if status is not None:
                standing.availability[agent_id] = status
            if load:
                standing.loads[agent_id] = load
            if last_at is not None:
                standing.last_assigned[agent_id] = last_at
        return standing

    def add_assignment(self, assignment: Assignment) -> None:
        # The standing as the query would read it now: an assignment comes with its conversation
        # opened (or reopened) under that agent.
        if self._read is not None and assignment.agent_id is not None:
            read, agent = self._read[1], assignment.agent_id
            read.loads[agent] = read.loads.get(agent, 0) + 1
            last = read.last_assigned.get(agent)
            read.last_assigned[agent] = assignment.assigned_at if last is None else max(last, assignment.assigned_at)
        self._pending.add(assignment)


@functools.lru_cache(maxsize=8)
def _roster_query(agent_ids: tuple[str, ...]) -> Select:
    """Built once per roster: a fresh statement per message costs more CPU than running it."""
    columns = []
    for agent_id in agent_ids:
        columns += [
            select(AgentAvailability.status).where(AgentAvailability.agent_id == agent_id).scalar_subquery(),
            select(func.count()).select_from(Conversation)
            .where(Conversation.owner_id == agent_id, Conversation.status == "open").scalar_subquery(),
            select(func.max(Assignment.assigned_at, type_=UTCDateTime())).where(Assignment.agent_id == agent_id)
            .scalar_subquery(),
        ]
    return select(*columns)


class _SqlOutbox:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending

    def events_of(self, source_message_id: str) -> list[RouterOutbox]:
        return list(self.s.scalars(select(RouterOutbox).where(RouterOutbox.source_message_id == source_message_id)
                                   .order_by(RouterOutbox.created_at, RouterOutbox.message_id)))

    def add(self, row: RouterOutbox) -> None:
        self._pending.add(row)


class _SqlBuckets:
    def __init__(self, s: Session):
        self.s = s
        #: The rows this transaction claimed (locked) and may have changed since: taken again as
        #: they are, with no statement (a row re-read would lose the change not yet written).
        self._claimed: dict[str, SenderBucket] = {}
        #: Keys a batch's messages are expected to claim (`expect`), with each one's time.
        self._expected: dict[str, datetime] = {}

    def expect(self, keys: dict[str, datetime]) -> None:
        """The buckets a batch handled at once will likely claim: claimed with the first claim, in
        one statement instead of one per message. A key claimed and not used is a full bucket made
        a little early, which is what a claim makes anyway."""
        self._expected = keys

    def forget(self) -> None:
        self._claimed.clear()
        self._expected.clear()

    def claim(self, keys: Sequence[str], tokens: float, at: datetime) -> list[SenderBucket]:
        """One INSERT … ON CONFLICT DO UPDATE … RETURNING for every key (it locks existing rows, as
        `_SqlCalls.claim` does): two router replicas with messages of one sender take turns instead
        of both reading a full bucket. A key this transaction claimed already is locked already; the
        first claim takes the expected ones too. The rows are locked in the order of their keys, the
        same in every replica."""
        wanted = {key: at for key in keys if key not in self._claimed}
        if wanted:
            wanted = {**{k: t for k, t in self._expected.items() if k not in self._claimed}, **wanted}
            self._expected = {}
            rows = [{"key": key, "tokens": tokens, "at": wanted[key]} for key in sorted(wanted)]
            # Core, not the ORM's bulk upsert (which sends a statement per row): the rows as the
            # database has them join the session, which writes their changes at the commit.
            claimed = self.s.connection().execute(_bucket_claim(self.s.get_bind().dialect.name), rows)
            for key, tokens_now, at_now in claimed:
                row = self.s.identity_map.get(identity_key(SenderBucket, key))
                if row is not None:  # read before a savepoint rolled back: as populate_existing would
                    set_committed_value(row, "tokens", tokens_now)
                    set_committed_value(row, "at", at_now)
                else:
                    row = SenderBucket(key=key, tokens=tokens_now, at=at_now)
                    make_transient_to_detached(row)
                    self.s.add(row)
                self._claimed[key] = row
        return [self._claimed[key] for key in keys]


@functools.lru_cache(maxsize=2)
def _bucket_claim(dialect: str) -> Insert:
    """The buckets' upsert, built once: its rows are parameters (SQLAlchemy's "insertmanyvalues"
    sends one multi-row VALUES, in their order, which is the order the rows are locked in), so it
    is compiled once instead of once per batch."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(SenderBucket)
    table = SenderBucket.__table__.c
    return stmt.on_conflict_do_update(index_elements=[table.key], set_={"key": stmt.excluded.key}).returning(
        table.key, table.tokens, table.at)


class _SqlCalls:
    def __init__(self, s: Session, pending: _Pending):
        self.s, self._pending = s, pending

    def claim(self, call_sid: str) -> PhoneCall:
        """INSERT … ON CONFLICT DO UPDATE, not DO NOTHING: it waits for a concurrent inserter to
        commit and locks an existing row as well, so the notices of one call are handled one after
        the other. SQLite (embedded mode) has one writer at a time."""
        stmt = _insert(self.s)(PhoneCall).values(call_sid=call_sid)
        self.s.execute(stmt.on_conflict_do_update(index_elements=[PhoneCall.call_sid],
                                                  set_={"call_sid": stmt.excluded.call_sid}))
        call = self.s.get(PhoneCall, call_sid, populate_existing=True)
        assert call is not None  # just written in this transaction
        return call

    def task(self, call_sid: str) -> CallbackTask | None:
        return self.s.scalar(select(CallbackTask).where(CallbackTask.call_sid == call_sid))

    def open_task(self, call_sid: str) -> CallbackTask | None:
        return self.s.scalar(select(CallbackTask).where(CallbackTask.call_sid == call_sid,
                                                        CallbackTask.done_at.is_(None)))

    def add_task(self, task: CallbackTask) -> None:
        self._pending.add(task)


class _SqlSurveys:
    def __init__(self, s: Session):
        self.s = s
        #: (channel, address) pairs read ahead (`read_ahead`) that no survey went to.
        self._none: set[tuple[str, str]] = set()

    def read_ahead(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Which of a batch's senders were ever sent a survey, in one query on the (channel,
        address) index: most never were, and their messages then ask nothing more of surveys.
        Survey rows are the router's own (`record_result`), so only its own writes change this."""
        wanted = set(pairs)
        if not wanted:
            return
        if _postgresql(self.s):
            rows = _read(self.s, _surveyed_ahead(), _pairs(wanted, "channel", "address"))
        else:
            rows = self.s.execute(_surveyed_of(tuple_(ConversationSurvey.channel, ConversationSurvey.address)
                                               .in_(list(wanted))))
        surveyed = {(channel, address) for channel, address in rows}
        self._none = wanted - surveyed

    def forget(self) -> None:
        self._none.clear()

    def _never(self, channels: Sequence[str], address: str) -> bool:
        return all((channel, address) in self._none for channel in channels)

    def last_sent(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None:
        if self._never(channels, address):
            return None
        return self.s.scalar(select(ConversationSurvey).where(
            ConversationSurvey.channel.in_(list(channels)), ConversationSurvey.address == address,
            ConversationSurvey.sent_at.is_not(None), ConversationSurvey.sent_at >= since)
            .order_by(ConversationSurvey.sent_at.desc()).limit(1))

    def last_answered(self, channels: Sequence[str], address: str, since: datetime) -> ConversationSurvey | None:
        if self._never(channels, address):
            return None
        return self.s.scalar(select(ConversationSurvey).where(
            ConversationSurvey.channel.in_(list(channels)), ConversationSurvey.address == address,
            ConversationSurvey.answered_at.is_not(None), ConversationSurvey.answered_at >= since)
            .order_by(ConversationSurvey.answered_at.desc()).limit(1))

    def record_result(self, result: SurveyResult) -> None:
        self.forget()  # a survey sent just now: ask the database again
        record_survey_result(self.s, result)


class SqlRouterUnitOfWork:
    """One SQLAlchemy session and its transaction (begun on enter, as shared.db.transaction does);
    `commit` ends it, leaving without one rolls back.

    New rows are held back (`_Pending`) and written a table at a time: before any read (a query may
    be about them), at the end of a savepoint, at `flush` and at the commit. A batch handled at once
    (`prepare(..., at_once=True)`) writes them all at its commit: a unique index another replica
    took meanwhile fails the whole batch there, and the caller handles it again message by message."""

    customers: Customers
    conversations: Conversations
    messages: Messages
    roster: Roster
    outbox: Outbox
    buckets: Buckets
    calls: Calls
    surveys: Surveys

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions
        self._stack = contextlib.ExitStack()
        self._at_once = False

    def __enter__(self) -> SqlRouterUnitOfWork:
        self.session = s = self._stack.enter_context(self._sessions())
        self._transaction: SessionTransaction = s.begin()
        self.savepoints = s.get_bind().dialect.name != "sqlite"
        self._pending = pending = _Pending(s)
        event.listen(s, "do_orm_execute", self._before_execute)
        self._stack.callback(event.remove, s, "do_orm_execute", self._before_execute)
        self._messages, self._roster, self._surveys = _SqlMessages(s, pending), _SqlRoster(s, pending), _SqlSurveys(s)
        self._customers, self._conversations = _SqlCustomers(s, pending), _SqlConversations(s, pending)
        self.customers, self.conversations, self.messages = self._customers, self._conversations, self._messages
        self._buckets = _SqlBuckets(s)
        self.roster, self.outbox, self.buckets = self._roster, _SqlOutbox(s, pending), self._buckets
        self.calls, self.surveys = _SqlCalls(s, pending), self._surveys
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._pending.clear()
            if self._transaction.is_active:
                self._transaction.rollback()
        finally:
            self._stack.close()

    def _before_execute(self, state: ORMExecuteState) -> None:
        """A statement may be about rows still held back (a read, an INSERT … SELECT): they are
        written first, as the ORM's autoflush would (it runs after this hook). The buckets' upsert
        is about none of them and leaves them held (`_KEEP_PENDING`)."""
        if self._pending.rows and not state.execution_options.get(_KEEP_PENDING):
            self._pending.write()

    def prepare(self, messages: Sequence[InboundMessage], *, at_once: bool = False) -> None:
        """Three queries for the batch: which of its messages are stored (the idempotency key), which
        of its senders were ever sent a survey, and its senders' customers with their open
        conversations, instead of those per message."""
        self._at_once = at_once
        self._messages.read_ahead([(m.channel, m.external_id) for m in messages])
        # A stored one (a redelivery) asks for its stored events only.
        messages = [m for m in messages if not self._messages.stored((m.channel, m.external_id))]
        self._customers.read_ahead([(i.kind, i.value) for m in messages
                                    for i in (m.sender, sender_identity(m), *m.linked_identities)], self._conversations)
        self._surveys.read_ahead([(channel, m.reply_to) for m in messages if m.reply_to
                                  for channel in answer_channels(m.channel)])
        if at_once:
            self._buckets.expect(self._notice_buckets(messages))

    def _notice_buckets(self, messages: Sequence[InboundMessage]) -> dict[str, datetime]:
        """The flood buckets of the messages likely to join an open conversation (their sender's
        customer has one, as read ahead): each such message takes a token (handlers._earns_notice)."""
        expected: dict[str, datetime] = {}
        for m in messages:
            if m.automatic:
                continue
            sender = sender_identity(m)
            customer = self._customers.known(sender.kind, sender.value)
            if customer is not None and self._conversations.known_open_of(customer.id) is not None:
                for key in flood.keys(customer.id, sender.kind, sender.value):
                    expected.setdefault(key, m.received_at)
        return expected

    def forget(self) -> None:
        """Drops what was read ahead: the following look-ups ask the database."""
        self._messages.forget()
        self._customers.forget()
        self._conversations.forget()
        self._surveys.forget()
        self._roster.forget()
        self._buckets.forget()

    def flush(self) -> None:
        self._pending.write()
        self.session.flush()

    def claim(self) -> None:
        if not self._at_once:
            self.flush()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        # pysqlite's own transaction handling breaks SAVEPOINTs: callers ask `savepoints` first.
        try:
            with self.session.begin_nested():
                yield
                self._pending.write()
        except BaseException:
            # What was read ahead may count rows the rollback took back: ask the database again.
            self._pending.clear()
            self.forget()
            raise

    def commit(self) -> None:
        self._pending.write()
        self._transaction.commit()

    def rollback(self) -> None:
        self._pending.clear()
        self._transaction.rollback()
