"""The notifier's unit of work: the repositories its notifying rules read and write, and one commit.

The rules (services.notifier.promises, survey_flow, customer_messages and the outbox's claim) decide
what to record for an event, which notices to plan, when a survey is due, whether to acknowledge;
they take a `NotifierUnitOfWork` instead of a Session, so tests/unit runs them against an
in-memory one (tests/support/notifier_fakes.py) and the PostgreSQL tests are left for the SQL.

`SqlNotifierUnitOfWork` is the one in production: one session, one transaction, and each
repository method is exactly one of the statements the rules ran before (the throughput work counts
round trips: none is added, none is split). Like shared.db.transaction it commits on a clean exit
and rolls back on an exception; `commit()` and `rollback()` are there for a caller that must settle
earlier. The provider send and its sending lock are not here: they stay at the edge
(services.notifier.outbox.deliver).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from services.notifier.models import AgentNotice, Outbox, Promise, Suppression, Survey, SurveyOptOut
from shared.db import Base, UTCDateTime
from shared.db.bulk import ROWS, column_default, recordset_insert, rows_document


class PromiseRepository(Protocol):
    def for_update(self, conversation_id: str, opening: int) -> Promise | None: ...
    def latest_for_update(self, conversation_id: str) -> Promise | None:
        """The conversation's promise of its latest opening, locked."""
    def unclosed_for_update(self, conversation_id: str) -> Sequence[Promise]: ...
    def add(self, promise: Promise) -> None: ...
    def existing(self, openings: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of these (conversation, opening) have a promise: one statement for a batch."""
    def insert_new(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the promises (column values) whose opening has none; how many were inserted."""
    def to_breach(self, now: datetime, limit: int) -> Sequence[Promise]:
        """Open promises due by `now`, earliest first, claimed (SKIP LOCKED: another ticker takes others)."""
    def to_warn(self, now: datetime, limit: int) -> Sequence[Promise]:
        """Open, unwarned promises past their warning time and not yet due, claimed likewise."""


class OutboxFound(Protocol):
    """What the batch's claims read of an outbox row found by key (an Outbox, or a row of it)."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def options(self) -> dict | None: ...
    @property
    def conversation_id(self) -> str | None: ...


class NoticeFound(Protocol):
    """What the batch's claims read of a notice found by key (an AgentNotice, or a row of it)."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...


class NoticeRepository(Protocol):
    def by_key(self, key: str) -> AgentNotice | None: ...
    def add(self, notice: AgentNotice) -> None:
        """Stored at once: the notice has its id when this returns."""
    def by_keys(self, keys: Collection[str]) -> Mapping[str, NoticeFound]:
        """The notices of these keys, as much of each as the batch's claims read."""
    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert the notices (column values) whose key is new; their ids by key (a key another
        transaction holds is left out)."""
    def record_outcomes(self, outcomes: Sequence[tuple[int, str | None]], now: datetime) -> None:
        """After their sends, in one statement: each notice's status (None: its outbox row's), one
        more attempt, the outbox row's last error and, when sent, the time it was sent."""
    def get(self, notice_id: int) -> AgentNotice | None: ...
    def one(self, notice_id: int) -> AgentNotice: ...
    def cancel_pending(self, conversation_id: str, *, agent_id: str | None = None,
                       kinds: Iterable[str] | None = None) -> None:
        """Pending notices of the conversation (of one agent, of some kinds) are cancelled."""
    def due(self, now: datetime, limit: int, ids: Iterable[int] | None = None) -> Sequence[AgentNotice]:
        """Pending notices due by `now` (among `ids`), earliest first, claimed (SKIP LOCKED)."""


class OutboxRepository(Protocol):
    def by_key(self, key: str) -> Outbox | None: ...
    def has_key(self, key: str) -> bool: ...
    def add(self, row: Outbox) -> None:
        """Stored at once: the row has its id when this returns."""
    def by_keys(self, keys: Collection[str]) -> Mapping[str, OutboxFound]:
        """The rows of these keys, as much of each as the batch's claims read."""
    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert the rows (column values) whose key is new; their ids by key (a key another
        transaction holds is left out)."""
    def pending_of(self, conversation_ids: Collection[str]) -> Sequence[tuple[int, str, str, str]]:
        """The pending rows of these conversations: (id, conversation, channel, address)."""
    def recent_acks(self, recipients: Collection[tuple[str, str]], customers: Collection[str],
                    since: datetime) -> Sequence[tuple[str, str, str, str | None]]:
        """Acknowledgements pending or sent since `since` to any of these (channel, address) or
        customers: (key, channel, address, customer id): the daily cap's count, for a batch."""
    def get(self, row_id: int) -> Outbox | None: ...
    def one(self, row_id: int) -> Outbox: ...
    def earlier_unsent(self, row: Outbox) -> int | None:
        """A pending row of the same conversation to the same address, older than `row`: it goes first."""
    def last_email_ack(self, conversation_id: str) -> Outbox | None: ...
    def by_provider_id(self, channels: Sequence[str], provider_message_id: str) -> Outbox | None:
        """The row a provider's report is about: the id it gave the message, on one of `channels`."""


class SuppressionRepository(Protocol):
    def get(self, channel: str, address: str) -> Suppression | None: ...
    def reason_at(self, channel: str, address: str, now: datetime) -> str | None:
        """Why the address is suppressed at `now`, or None."""
    def reasons_at(self, addresses: Collection[tuple[str, str]], now: datetime) -> dict[tuple[str, str], str]:
        """`reason_at` for a batch: the suppressed ones among these (channel, address)."""
    def add(self, suppression: Suppression) -> None: ...


class SurveyRepository(Protocol):
    def exists(self, conversation_id: str, opening: int) -> bool: ...
    def add(self, survey: Survey) -> None: ...
    def get(self, survey_id: int) -> Survey | None: ...
    def due(self, now: datetime, limit: int) -> Sequence[Survey]:
        """Scheduled surveys due by `now`, earliest first, claimed (SKIP LOCKED)."""
    def sending(self, limit: int) -> Sequence[Survey]: ...
    def by_token(self, token: str, *, for_update: bool = False) -> Survey | None: ...
    def last_sent_at(self, customer_id: str, exclude: int | None = None) -> datetime | None:
        """When this customer last got (or is being sent) a survey: the cooldown counts from it."""
    def opt_out_scheduled(self, customer_id: str | None, channel: str, address: str) -> None:
        """The customer's (or, without one, the address's) scheduled surveys become opted_out."""


class SurveyOptOutRepository(Protocol):
    def any_for(self, customer_id: str | None, channel: str, address: str) -> bool: ...
    def by_address(self, channel: str, address: str) -> SurveyOptOut | None: ...
    def add(self, opt_out: SurveyOptOut) -> None: ...


class NotifierUnitOfWork(Protocol):
    # Read-only: an implementation's own repository classes satisfy them.
    @property
    def promises(self) -> PromiseRepository: ...
    @property
    def notices(self) -> NoticeRepository: ...
    @property
    def outbox(self) -> OutboxRepository: ...
    @property
    def suppressions(self) -> SuppressionRepository: ...
    @property
    def surveys(self) -> SurveyRepository: ...
    @property
    def opt_outs(self) -> SurveyOptOutRepository: ...

    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


# --- SQL ------------------------------------------------------------------------------------------


class SqlPromises:
    def __init__(self, s: Session):
        self.s = s

    def for_update(self, conversation_id: str, opening: int) -> Promise | None:
        return self.s.scalar(select(Promise).where(Promise.conversation_id == conversation_id,
                                                   Promise.opening == opening).with_for_update())

    def latest_for_update(self, conversation_id: str) -> Promise | None:
        return self.s.scalar(select(Promise).where(Promise.conversation_id == conversation_id)
                             .order_by(Promise.opening.desc()).limit(1).with_for_update())

    def unclosed_for_update(self, conversation_id: str) -> Sequence[Promise]:
        return self.s.scalars(select(Promise).where(Promise.conversation_id == conversation_id,
                                                    Promise.closed_at.is_(None)).with_for_update()).all()

    def add(self, promise: Promise) -> None:
        self.s.add(promise)

    def existing(self, openings: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
        if _postgresql(self.s):
            conversations, numbers = zip(*openings, strict=True) if openings else ((), ())
            rows = _core(self.s, _PG.promises_existing, {"conversations": list(conversations), "openings": list(numbers)})
        else:
            rows = self.s.execute(select(Promise.conversation_id, Promise.opening).where(
                tuple_(Promise.conversation_id, Promise.opening).in_(list(openings))))
        return {(conversation, opening) for conversation, opening in rows}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> int:
        return len(_insert_new(self.s, Promise, rows, ("conversation_id", "opening"), ("id",)))

    def to_breach(self, now: datetime, limit: int) -> Sequence[Promise]:
        return self.s.scalars(select(Promise).where(Promise.status == "open", Promise.due_at <= now)
                              .order_by(Promise.due_at).limit(limit).with_for_update(skip_locked=True)).all()

    def to_warn(self, now: datetime, limit: int) -> Sequence[Promise]:
        return self.s.scalars(select(Promise).where(Promise.status == "open", Promise.warned_at.is_(None),
                                                    Promise.warn_at <= now, Promise.due_at > now)
                              .order_by(Promise.warn_at).limit(limit).with_for_update(skip_locked=True)).all()


class SqlNotices:
    def __init__(self, s: Session):
        self.s = s

    def by_key(self, key: str) -> AgentNotice | None:
        return self.s.scalar(select(AgentNotice).where(AgentNotice.idempotency_key == key))

    def add(self, notice: AgentNotice) -> None:
        self.s.add(notice)
        self.s.flush()

    def get(self, notice_id: int) -> AgentNotice | None:
        return self.s.get(AgentNotice, notice_id)

    def by_keys(self, keys: Collection[str]) -> Mapping[str, NoticeFound]:
        if _postgresql(self.s):
            # Four columns, no ORM objects: the claims only read these (a batch's new notices are
            # mostly not found at all, and an ORM load of the whole row cost ~2x a Core read).
            return {row.idempotency_key: row for row in _core(self.s, _PG.notices_by_keys, {"keys": list(keys)})}
        rows = self.s.scalars(select(AgentNotice).where(AgentNotice.idempotency_key.in_(list(keys))))
        return {row.idempotency_key: row for row in rows}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        inserted = _insert_new(self.s, AgentNotice, rows, ("idempotency_key",), ("id", "idempotency_key"))
        return {key: row_id for row_id, key in inserted}

    def record_outcomes(self, outcomes: Sequence[tuple[int, str | None]], now: datetime) -> None:
        if _postgresql(self.s):
            _core(self.s, _PG.notices_record_outcomes, {"ids": [notice_id for notice_id, _ in outcomes],
                                                         "statuses": [status for _, status in outcomes], "now": now})
            return
        row = select(Outbox).where(Outbox.idempotency_key == AgentNotice.idempotency_key).correlate(AgentNotice)
        given = {notice_id: status for notice_id, status in outcomes if status is not None}
        status = func.coalesce(case(given, value=AgentNotice.id) if given else None,
                               row.with_only_columns(Outbox.status).scalar_subquery())
        self.s.execute(update(AgentNotice).where(AgentNotice.id.in_([notice_id for notice_id, _ in outcomes])).values(
            status=status, attempts=AgentNotice.attempts + 1,
            last_error=row.with_only_columns(Outbox.last_error).scalar_subquery(),
            sent_at=case((status == "sent", func.coalesce(row.with_only_columns(Outbox.sent_at).scalar_subquery(),
                                                          now)), else_=AgentNotice.sent_at)))

    def one(self, notice_id: int) -> AgentNotice:
        return self.s.get_one(AgentNotice, notice_id)

    def cancel_pending(self, conversation_id: str, *, agent_id: str | None = None,
                       kinds: Iterable[str] | None = None) -> None:
        query = update(AgentNotice).where(AgentNotice.conversation_id == conversation_id)
        if agent_id is not None:
            query = query.where(AgentNotice.agent_id == agent_id)
        query = query.where(AgentNotice.status == "pending")
        if kinds is not None:
            query = query.where(AgentNotice.kind.in_(tuple(kinds)))
        self.s.execute(query.values(status="cancelled"))

    def due(self, now: datetime, limit: int, ids: Iterable[int] | None = None) -> Sequence[AgentNotice]:
        query = select(AgentNotice).where(AgentNotice.status == "pending", AgentNotice.not_before <= now)
        if ids is not None:
            query = query.where(AgentNotice.id.in_(list(ids)))
        return self.s.scalars(query.order_by(AgentNotice.not_before).limit(limit)
                              .with_for_update(skip_locked=True)).all()


class SqlOutbox:
    def __init__(self, s: Session):
        self.s = s

    def by_key(self, key: str) -> Outbox | None:
        return self.s.scalar(select(Outbox).where(Outbox.idempotency_key == key))

    def has_key(self, key: str) -> bool:
        return self.s.scalar(select(Outbox.id).where(Outbox.idempotency_key == key)) is not None

    def add(self, row: Outbox) -> None:
        self.s.add(row)
        self.s.flush()

    def by_keys(self, keys: Collection[str]) -> Mapping[str, OutboxFound]:
        if _postgresql(self.s):
            # The columns the claims read, no ORM objects (as SqlNotices.by_keys): a batch's keys
            # are mostly new, and the ORM's query cost about twice the Core one even finding none.
            return {row.idempotency_key: row for row in _core(self.s, _PG.outbox_by_keys, {"keys": list(keys)})}
        rows = self.s.scalars(select(Outbox).where(Outbox.idempotency_key.in_(list(keys))))
        return {row.idempotency_key: row for row in rows}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        inserted = _insert_new(self.s, Outbox, rows, ("idempotency_key",), ("id", "idempotency_key"))
        return {key: row_id for row_id, key in inserted}

    def pending_of(self, conversation_ids: Collection[str]) -> Sequence[tuple[int, str, str, str]]:
        if _postgresql(self.s):
            return [tuple(r) for r in _core(  # type: ignore[misc]
                self.s, _PG.outbox_pending_of, {"conversations": list(conversation_ids)})]
        return [tuple(r) for r in self.s.execute(  # type: ignore[misc]
            select(Outbox.id, Outbox.conversation_id, Outbox.channel, Outbox.address).where(
                Outbox.conversation_id.in_(list(conversation_ids)), Outbox.status == "pending"))]

    def recent_acks(self, recipients: Collection[tuple[str, str]], customers: Collection[str],
                    since: datetime) -> Sequence[tuple[str, str, str, str | None]]:
        if _postgresql(self.s):
            channels, addresses = zip(*recipients, strict=True) if recipients else ((), ())
            return [tuple(r) for r in _core(self.s, _PG.outbox_recent_acks, {  # type: ignore[misc]
                "channels": list(channels), "addresses": list(addresses), "customers": list(customers),
                "since": since})]
        who: ColumnElement[bool] = tuple_(Outbox.channel, Outbox.address).in_(list(recipients))
        if customers:
            who = or_(who, Outbox.customer_id.in_(list(customers)))
        return [tuple(r) for r in self.s.execute(  # type: ignore[misc]
            select(Outbox.idempotency_key, Outbox.channel, Outbox.address, Outbox.customer_id).where(
                Outbox.kind == "ack", who, Outbox.created_at >= since, Outbox.status.in_(("pending", "sent"))))]

    def get(self, row_id: int) -> Outbox | None:
        return self.s.get(Outbox, row_id)

    def one(self, row_id: int) -> Outbox:
        return self.s.get_one(Outbox, row_id)

    def earlier_unsent(self, row: Outbox) -> int | None:
        return self.s.scalar(select(Outbox.id).where(
            Outbox.conversation_id == row.conversation_id, Outbox.channel == row.channel,
            Outbox.address == row.address, Outbox.status == "pending", Outbox.id < row.id).limit(1))

    def last_email_ack(self, conversation_id: str) -> Outbox | None:
        return self.s.scalar(select(Outbox).where(Outbox.conversation_id == conversation_id, Outbox.kind == "ack",
                                                  Outbox.channel == "email").order_by(Outbox.id.desc()).limit(1))

    def by_provider_id(self, channels: Sequence[str], provider_message_id: str) -> Outbox | None:
        return self.s.scalar(select(Outbox).where(Outbox.channel.in_(tuple(channels)),
                                                  Outbox.provider_message_id == provider_message_id))


class SqlSuppressions:
    def __init__(self, s: Session):
        self.s = s

    def get(self, channel: str, address: str) -> Suppression | None:
        return self.s.scalar(select(Suppression).where(Suppression.channel == channel,
                                                       Suppression.address == address))

    def reason_at(self, channel: str, address: str, now: datetime) -> str | None:
        return self.s.scalar(select(Suppression.reason).where(
            Suppression.channel == channel, Suppression.address == address,
            or_(Suppression.until.is_(None), Suppression.until > now)))

    def reasons_at(self, addresses: Collection[tuple[str, str]], now: datetime) -> dict[tuple[str, str], str]:
        if _postgresql(self.s):
            channels, numbers = zip(*addresses, strict=True) if addresses else ((), ())
            rows = _core(self.s, _PG.suppressions_reasons_at,
                         {"channels": list(channels), "addresses": list(numbers), "now": now})
            return {(channel, address): reason for channel, address, reason in rows}
        rows = self.s.execute(select(Suppression.channel, Suppression.address, Suppression.reason).where(
            tuple_(Suppression.channel, Suppression.address).in_(list(addresses)),
            or_(Suppression.until.is_(None), Suppression.until > now)))
        return {(channel, address): reason for channel, address, reason in rows}

    def add(self, suppression: Suppression) -> None:
        self.s.add(suppression)


class SqlSurveys:
    def __init__(self, s: Session):
        self.s = s

    def exists(self, conversation_id: str, opening: int) -> bool:
        return self.s.scalar(select(Survey.id).where(Survey.conversation_id == conversation_id,
                                                     Survey.opening == opening)) is not None

    def add(self, survey: Survey) -> None:
        self.s.add(survey)

    def get(self, survey_id: int) -> Survey | None:
        return self.s.get(Survey, survey_id)

    def due(self, now: datetime, limit: int) -> Sequence[Survey]:
        return list(self.s.scalars(select(Survey).where(Survey.status == "scheduled", Survey.due_at <= now)
                                   .order_by(Survey.due_at).limit(limit).with_for_update(skip_locked=True)))

    def sending(self, limit: int) -> Sequence[Survey]:
        return self.s.scalars(select(Survey).where(Survey.status == "sending").limit(limit)).all()

    def by_token(self, token: str, *, for_update: bool = False) -> Survey | None:
        query = select(Survey).where(Survey.token == token)
        return self.s.scalar(query.with_for_update() if for_update else query)

    def last_sent_at(self, customer_id: str, exclude: int | None = None) -> datetime | None:
        query = select(Survey.sent_at, Survey.due_at).where(Survey.customer_id == customer_id,
                                                            Survey.status.in_(("sending", "sent", "answered")))
        if exclude is not None:
            query = query.where(Survey.id != exclude)
        times = [sent or due for sent, due in self.s.execute(query)]
        return max(times, default=None)

    def opt_out_scheduled(self, customer_id: str | None, channel: str, address: str) -> None:
        who = or_(Survey.customer_id == customer_id, (Survey.channel == channel) & (Survey.address == address)) \
            if customer_id else ((Survey.channel == channel) & (Survey.address == address))
        self.s.execute(update(Survey).where(Survey.status == "scheduled", who)
                       .values(status="opted_out", reason="the customer opted out of surveys"))


class SqlSurveyOptOuts:
    def __init__(self, s: Session):
        self.s = s

    def any_for(self, customer_id: str | None, channel: str, address: str) -> bool:
        by_address = (SurveyOptOut.channel == channel) & (SurveyOptOut.address == address)
        who = or_(SurveyOptOut.customer_id == customer_id, by_address) if customer_id else by_address
        return (self.s.scalar(select(func.count()).select_from(SurveyOptOut).where(who)) or 0) > 0

    def by_address(self, channel: str, address: str) -> SurveyOptOut | None:
        return self.s.scalar(select(SurveyOptOut).where(SurveyOptOut.channel == channel,
                                                        SurveyOptOut.address == address))

    def add(self, opt_out: SurveyOptOut) -> None:
        self.s.add(opt_out)


def _insert_new(s: Session, model: type[Base], rows: Sequence[dict[str, Any]], unique: tuple[str, ...],
                returning: tuple[str, ...]) -> list[Any]:
    """INSERT `rows`, skipping (ON CONFLICT DO NOTHING) a row whose `unique` columns another row
    holds — committed, or being inserted by a transaction it then waits for; the `returning`
    columns of the rows inserted, in no particular order. One statement for the rows, built once
    per table and set of columns.

    On PostgreSQL the rows go as one JSON document (shared/db/bulk.py: INSERT … SELECT FROM
    jsonb_to_recordset(:rows), the router's batch inserts too). SQLite (embedded mode) keeps the
    multi-row VALUES (SQLAlchemy's "insertmanyvalues")."""
    dialect = s.get_bind().dialect.name
    table = cast(Table, model.__table__)
    if dialect != "postgresql":
        return list(s.execute(_values_insert(table, unique, returning), list(rows)))
    names = tuple(dict.fromkeys(name for row in rows for name in row))
    if any(len(row) != len(names) for row in rows):
        # A column some rows leave out gets its default, as in a VALUES list.
        defaults = {name: column_default(table.c[name]) for name in names}
        rows = [defaults | row for row in rows]
    statement = recordset_insert(table, names, unique=unique, returning=returning)
    return list(_core(s, statement, {ROWS: rows_document(rows)}))


@functools.lru_cache(maxsize=16)
def _values_insert(table: Table, unique: tuple[str, ...], returning: tuple[str, ...]) -> Insert:
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(unique)).returning(
        *(table.c[c] for c in returning))


def _postgresql(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _core(s: Session, statement: Executable, parameters: dict[str, Any]) -> Any:
    """A Core statement of the batch path on the session's connection, in its transaction: what
    Session.execute would do for it (the ORM's execution hooks, the UPDATE's synchronisation of
    loaded objects, none of which these statements need) cost ~70-150 us of CPU per statement, and a
    batch's claims run about ten. Pending ORM changes are flushed first, as Session.execute's
    autoflush does, so the statement sees them."""
    s.flush()
    return s.connection().execute(statement, parameters)


def _texts(name: str) -> BindParameter[Any]:
    return bindparam(name, type_=postgresql.ARRAY(Text()))


class _PG:
    """The batch look-ups on PostgreSQL, built once: each takes its keys as arrays (= ANY(:keys),
    a join with unnest(:a, :b) for pairs), so the text is the same whatever the number of keys —
    converted once by psycopg, prepared once by PostgreSQL — where an IN list was re-rendered by
    SQLAlchemy and re-parsed by psycopg for each batch, and a tuple IN was built again from its
    pairs each time. SQLite (embedded mode) keeps the IN lists in the methods."""

    _pairs = func.unnest(_texts("conversations"), bindparam("openings", type_=postgresql.ARRAY(Integer()))) \
        .table_valued("conversation_id", "opening").render_derived()
    promises_existing = select(Promise.conversation_id, Promise.opening).where(
        tuple_(Promise.conversation_id, Promise.opening).in_(select(_pairs.c.conversation_id, _pairs.c.opening)))
    notices_by_keys = select(AgentNotice.id, AgentNotice.idempotency_key, AgentNotice.status,
                             AgentNotice.not_before).where(AgentNotice.idempotency_key == any_(_texts("keys")))
    outbox_by_keys = select(Outbox.id, Outbox.idempotency_key, Outbox.status, Outbox.channel, Outbox.address,
                            Outbox.body, Outbox.options, Outbox.conversation_id).where(
        Outbox.idempotency_key == any_(_texts("keys")))
    outbox_pending_of = select(Outbox.id, Outbox.conversation_id, Outbox.channel, Outbox.address).where(
        Outbox.conversation_id == any_(_texts("conversations")), Outbox.status == "pending")
    _recipients = func.unnest(_texts("channels"), _texts("addresses")).table_valued("channel", "address") \
        .render_derived()
    # The recipients' pair IN (unnest) inside an OR is a hashed subplan, which no index serves: the
    # whole outbox was read for every batch (44 ms at 200,000 rows). Their channels and addresses
    # as = ANY beside it (a superset the pair test narrows) make that arm an index condition of
    # ix_outbox_recipient, and the OR a BitmapOr with ix_outbox_customer (0.2 ms).
    outbox_recent_acks = select(Outbox.idempotency_key, Outbox.channel, Outbox.address, Outbox.customer_id).where(
        Outbox.kind == "ack", or_(and_(Outbox.channel == any_(_texts("channels")), Outbox.address == any_(_texts("addresses")),
                                       tuple_(Outbox.channel, Outbox.address).in_(
                                           select(_recipients.c.channel, _recipients.c.address))),
                                  Outbox.customer_id == any_(_texts("customers"))),
        Outbox.created_at >= bindparam("since", type_=UTCDateTime()), Outbox.status.in_(("pending", "sent")))
    _addresses = func.unnest(_texts("channels"), _texts("addresses")).table_valued("channel", "address") \
        .render_derived()
    suppressions_reasons_at = select(Suppression.channel, Suppression.address, Suppression.reason).where(
        tuple_(Suppression.channel, Suppression.address).in_(select(_addresses.c.channel, _addresses.c.address)),
        or_(Suppression.until.is_(None), Suppression.until > bindparam("now", type_=UTCDateTime())))
    _outcomes = func.unnest(bindparam("ids", type_=postgresql.ARRAY(Integer())), _texts("statuses")) \
        .table_valued("id", "status").render_derived()
    _row = select(Outbox).where(Outbox.idempotency_key == AgentNotice.idempotency_key).correlate(AgentNotice)
    _status = func.coalesce(_outcomes.c.status, _row.with_only_columns(Outbox.status).scalar_subquery())
    notices_record_outcomes = update(AgentNotice).where(AgentNotice.id == _outcomes.c.id).values(
        status=_status, attempts=AgentNotice.attempts + 1,
        last_error=_row.with_only_columns(Outbox.last_error).scalar_subquery(),
        sent_at=case((_status == "sent", func.coalesce(_row.with_only_columns(Outbox.sent_at).scalar_subquery(),
                                                       bindparam("now", type_=UTCDateTime()))),
                     else_=AgentNotice.sent_at))


class SqlNotifierUnitOfWork:
    """One session and its transaction; the repositories over it."""

    session: Session
    promises: SqlPromises
    notices: SqlNotices
    outbox: SqlOutbox
    suppressions: SqlSuppressions
    surveys: SqlSurveys
    opt_outs: SqlSurveyOptOuts

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def __enter__(self) -> Self:
        self.session = self._sessions()
        self.session.begin()
        self.promises = SqlPromises(self.session)
        self.notices = SqlNotices(self.session)
        self.outbox = SqlOutbox(self.session)
        self.suppressions = SqlSuppressions(self.session)
        self.surveys = SqlSurveys(self.session)
        self.opt_outs = SqlSurveyOptOuts(self.session)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # As shared.db.transaction: commit on a clean exit (an early return included), roll back on
        # any exception; the session is closed either way.
        try:
            if exc_type is None:
                self.session.commit()
            else:
                self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
