"""The outbox: every outbound message is claimed, then sent, then recorded — at most once.

The interface, for every part of the notifier that sends (the event handlers, agent notices,
surveys):
- `claim(uow, key, build_row, now)`: in the caller's unit of work, find the row of an idempotency key
  or make it (skipped with the reason when the address is suppressed or the caller refuses), and
  say whether to send it now (`Claim.send`), with the conversation's order checked;
- `deliver(row_id, deps)`: send one pending (or dead, on a DLQ replay) row through its channel's
  sender under the row's sending lock, and record the outcome; raises `TransientSendError` (and its
  `WaitingForEarlier`) to have the bus retry;
- `suppress(...)` and `announcing_suppressions()`: addresses never to write to again, and the
  events that tell the router of the ones an event ran into;
- `send_options(...)`: what a sender needs beyond address and text, stored with the row.

A redelivered event finds the key and sends nothing that was sent; a transient failure leaves the
row pending and raises, so the bus retries it with backoff (out of tries it is "dead", and
`switchboard dlq replay` tries it again); a permanent failure is recorded and not retried.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Update, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from services.notifier.deps import NotifierDeps
from services.notifier.models import Outbox, Suppression
from services.notifier.senders import ChannelBusy, PermanentSendError, Sender, TransientSendError
from services.notifier.unit_of_work import NotifierUnitOfWork, OutboxFound, OutboxRepository, SqlOutbox
from shared.contracts import AddressSuppressed, Envelope, derive_id
from shared.db import engine_of, transaction
from shared.metrics import MESSAGES_OUT
from shared.redact import mask_secrets

log = logging.getLogger(__name__)

#: The suppressions made while one event is handled (an SMS opt-out a send ran into): told to the
#: router with the event's results, so agents see them (services.router.automatic). Per consumer
#: thread; unset outside an event (the ticker's sends), where a suppression is only recorded.
_suppressed_here: ContextVar[list[Envelope] | None] = ContextVar("suppressed_here", default=None)


@contextmanager
def announcing_suppressions() -> Iterator[list[Envelope]]:
    """The list that collects, while one event is handled in this context, the AddressSuppressed
    events its sends ran into (see `suppress`)."""
    announced: list[Envelope] = []
    token = _suppressed_here.set(announced)
    try:
        yield announced
    finally:
        _suppressed_here.reset(token)


def send_options(channel: str, reply_from: str | None, last_customer_message_at: datetime, *,
                 email: dict | None = None) -> dict | None:
    """What a sender needs beyond address and text, stored with the outbox row (JSON)."""
    options: dict = {}
    if channel == "email":
        options.update(email or {})
    elif channel == "whatsapp":
        # Free-form WhatsApp messages only within 24 h of the customer's last message.
        options["last_customer_message_at"] = last_customer_message_at.isoformat()
        if reply_from:
            options["phone_number_id"] = reply_from
    elif reply_from:
        options["from"] = reply_from
    return options or None


def _suppressed(uow: NotifierUnitOfWork, channel: str, address: str, now: datetime) -> str | None:
    row = uow.suppressions.get(channel, address)
    if row is None or (row.until is not None and row.until <= now):
        return None
    return row.reason


def suppress(deps: NotifierDeps, channel: str, address: str, reason: str, until: datetime | None = None, *,
             conversation_id: str | None = None) -> None:
    """Never write to this address again (until `until`): opted out, or bouncing. Within an event,
    the router is told as well (`AddressSuppressed`), to show it in `conversation_id`."""
    with transaction(deps.sessions) as s:
        row = s.scalar(select(Suppression).where(Suppression.channel == channel, Suppression.address == address))
        if row is None:
            s.add(Suppression(channel=channel, address=address, reason=reason, created_at=deps.clock(), until=until))
        else:
            row.reason, row.until = reason, until
    announced = _suppressed_here.get()
    if announced is not None:
        ev = AddressSuppressed(channel=channel, address=address, reason=reason, suppressed_at=deps.clock(),
                               conversation_id=conversation_id)
        announced.append(Envelope.wrap(ev, message_id=derive_id("event", ev.TYPE, channel, address, reason),
                                       correlation_id=f"suppressed:{channel}", occurred_at=ev.suppressed_at))


@dataclass(frozen=True)
class Claimed:
    """What a sender needs of a pending outbox row, as the claiming transaction just read it."""

    channel: str
    address: str
    body: str
    options: dict
    conversation_id: str | None = None
    #: An earlier message of the conversation to the same address, not sent yet: this one waits.
    #: The claiming transaction has already counted the attempt.
    waits_for: int | None = None


#: Tries per outbound message (the bus's retries with backoff, capped at 5 minutes apart: about
#: 20 minutes in all, enough for a provider's outage); then the message is dead-lettered and its
#: outbox row marked "dead" — `switchboard dlq replay` sends it again.
MAX_SEND_ATTEMPTS = 12
#: Outbox states a (re)delivered event sends: pending, or dead (a replay from the DLQ).
SENDABLE = ("pending", "dead")


@dataclass(frozen=True)
class Claim:
    """An outbox row as `claim` found or made it, committed with the caller's transaction."""

    row_id: int
    status: str
    created: bool  # made by this claim (a redelivered event finds it)
    send: Claimed | None  # what to send now; None: nothing (sent, failed, skipped, or not this event's)


def claim(uow: NotifierUnitOfWork, key: str, build_row: Callable[[], Outbox], now: datetime, *,
          refuse: Callable[[], str | None] | None = None, only_for_source: str | None = None) -> Claim:
    """Find the outbox row of `key`, or make it with `build_row()`; decide whether to send it now.

    A new row is skipped, with the reason recorded, when its address is suppressed or `refuse()`
    names a reason. An existing row is sent again while it is pending (a bus retry) or dead (a DLQ
    replay); with `only_for_source`, only when that event (message id) is the one that made it."""
    row = uow.outbox.by_key(key)
    created = row is None
    if row is None:
        row = build_row()
        suppressed = _suppressed(uow, row.channel, row.address, now)
        reason = f"the address is suppressed: {suppressed}" if suppressed else (refuse() if refuse else None)
        if reason:
            row.status, row.last_error = "skipped", reason
        uow.outbox.add(row)
    send = None
    if row.status in SENDABLE and (only_for_source is None or row.source_message_id == only_for_source):
        send = _claimed(uow.outbox, row)
    return Claim(row.id, row.status, created, send)


class Contended(Exception):
    """A key `claim_many` was inserting was taken meanwhile by another transaction (a second
    replica on the same event): the caller rolls back and claims its events again one by one."""


@dataclass
class Draft:
    """A row for `claim_many`: its column values, and whether the recipient is screened (a
    suppressed address or the caller's refusal skips it: a customer's message; an agent's notice
    is not)."""

    values: dict[str, Any]
    screened: bool = True


def claim_many(uow: NotifierUnitOfWork, drafts: Sequence[Draft], now: datetime, *,
               refuse: Callable[[dict[str, Any]], str | None] | None = None) -> list[Claim]:
    """`claim` for many keys at once, in set-based statements whatever their number: the rows
    found by key, the suppressions of the new rows' addresses, one multi-row INSERT of the new
    rows, and the conversations' pending rows for the order check. `refuse(values)` is asked of
    each new screened row that is not suppressed, in the order given. The keys must be distinct.

    Raises `Contended` (nothing is to be sent then) when another transaction inserted a key
    between the look-up and the insert."""
    found = uow.outbox.by_keys([d.values["idempotency_key"] for d in drafts]) if drafts else {}
    new = [d.values for d in drafts if d.values["idempotency_key"] not in found]
    screened = [d.values for d in drafts if d.screened and d.values["idempotency_key"] not in found]
    reasons = uow.suppressions.reasons_at({(v["channel"], v["address"]) for v in screened}, now) if screened else {}
    for values in screened:
        suppressed = reasons.get((values["channel"], values["address"]))
        reason = f"the address is suppressed: {suppressed}" if suppressed else (refuse(values) if refuse else None)
        if reason:
            values["status"], values["last_error"] = "skipped", reason
    ids = uow.outbox.insert_new(new) if new else {}
    if len(ids) < len(new):
        raise Contended(f"outbox keys taken meanwhile: {sorted(v['idempotency_key'] for v in new if v['idempotency_key'] not in ids)}")
    sendable = [d.values for d in drafts if _status(d.values, found) in SENDABLE]
    conversations = {v["conversation_id"] for v in sendable if v["conversation_id"] is not None}
    pending: dict[tuple[str, str, str], list[int]] = {}
    for row_id, conversation, channel, address in (uow.outbox.pending_of(conversations) if conversations else ()):
        pending.setdefault((conversation, channel, address), []).append(row_id)
    claims = []
    for draft in drafts:
        key = draft.values["idempotency_key"]
        row = found.get(key)
        row_id = row.id if row is not None else ids[key]
        status = _status(draft.values, found)
        send = None
        if status in SENDABLE:
            # As `_claimed`: after this row is inserted, under read committed, in the claiming transaction.
            values = draft.values if row is None else {c: getattr(row, c) for c in _SENT_COLUMNS}
            waits_for = None
            if values["conversation_id"] is not None:
                earlier = [i for i in pending.get((values["conversation_id"], values["channel"], values["address"]), ())
                           if i < row_id]
                waits_for = min(earlier) if earlier else None
                if waits_for is not None:
                    _count_attempt(uow.outbox.one(row_id), "pending", error=_waiting(waits_for))
            send = Claimed(values["channel"], values["address"], values["body"], dict(values["options"] or {}),
                           values["conversation_id"], waits_for)
        claims.append(Claim(row_id, status, row is None, send))
    return claims


_SENT_COLUMNS = ("channel", "address", "body", "options", "conversation_id")


def _status(values: dict[str, Any], found: Mapping[str, OutboxFound]) -> str:
    row = found.get(values["idempotency_key"])
    return row.status if row is not None else values["status"]


def _claimed(rows: OutboxRepository, row: Outbox) -> Claimed:
    """The row to send, read in the claiming transaction, with the per-conversation order checked
    there too: one transaction instead of a second session for the check. An earlier pending row
    of the conversation is visible to this query exactly when it was to the separate one (both run
    after this row is flushed, under read committed), so the order holds as it did."""
    waits_for = None
    if row.conversation_id is not None:
        waits_for = rows.earlier_unsent(row)
        if waits_for is not None:
            _count_attempt(row, "pending", error=_waiting(waits_for))
    return Claimed(row.channel, row.address, row.body, dict(row.options or {}), row.conversation_id, waits_for)


class WaitingForEarlier(TransientSendError):
    """A customer's messages leave in the order they were written: this one waits (through the
    bus's retry with backoff) until the earlier ones to the same address are sent or given up."""


def _waiting(earlier: int) -> str:
    # Pending includes "being sent right now by another consumer": either way it goes first.
    return f"message {earlier} of this conversation is not sent yet"


def deliver(row_id: int, deps: NotifierDeps, *, claimed: Claimed | None = None,
            compose: Callable[[datetime], str] | None = None,
            sending: SendingTogether | None = None) -> str | None:
    """Send one pending outbox row; raise TransientSendError to have the bus retry it.

    `claimed`: the row as the caller's committed claim read it (pending or dead, its order checked),
    which spares reading it again. `compose`: the text as of a moment, rendered again just before
    the provider is called (an acknowledgement talks about "now"); the row records what was sent.
    Returns the row's new status ("sent", "failed"), or None when it was not pending.
    `sending`: the batch's sending transaction (`sending_together`), when it holds this row's lock.

    `deps.deliver`, when given, is called instead: the unit tests' in-memory provider edge."""
    if deps.deliver is not None:
        result: str | None = deps.deliver(row_id, deps, claimed=claimed, compose=compose)
        return result
    if claimed is None:
        with transaction(deps.sessions) as s:
            row = s.get(Outbox, row_id)
            # "dead": out of tries and dead-lettered; a replay from the DLQ tries it again.
            if row is None or row.status not in SENDABLE:
                return None
            claimed = _claimed(SqlOutbox(s), row)
    if claimed.waits_for is not None:
        raise WaitingForEarlier(_waiting(claimed.waits_for))
    channel, address, body, options = claimed.channel, claimed.address, claimed.body, dict(claimed.options)
    if "last_customer_message_at" in options:
        options["now"] = deps.clock().isoformat()
    try:
        with deps.senders.slot(channel) as sender:
            return _send(row_id, sender, channel, address, body, options, deps, compose=compose, sending=sending)
    except ChannelBusy as exc:
        # Not sent, and counted as a try like any transient failure: the row's attempts must keep
        # pace with the bus's, which dead-letters at the same number.
        _finish(deps, row_id, "pending", error=str(exc))
        raise


#: The first half of the advisory lock key that makes sending an outbox row exclusive (the second
#: half is the row's id; PostgreSQL keeps two-int keys apart from the migrations' one-bigint key).
SENDING_LOCK = 0x5342
#: One round trip (the simple query protocol, whose statements each take a snapshot of their own):
#: open the sending transaction, take the row's lock for it, and only then read the row's status,
#: so the read sees whatever the lock's previous holder committed before letting it go. (In one
#: statement the read's snapshot would be older than the lock.) Both values are integers.
_LOCK_AND_READ = "BEGIN; SELECT pg_try_advisory_xact_lock({ns}, {id}); SELECT status FROM outbox WHERE id = {id}"
#: One round trip: the record, and the COMMIT that makes it visible and then frees the lock (a
#: transaction's locks go after its commit is visible to all). Guarded like `_mark_sent`.
_RECORD_SENT = ("UPDATE outbox SET status = 'sent', attempts = attempts + 1, provider_message_id = %(pid)s, "
                "sent_at = %(sent_at)s{body} WHERE id = %(id)s AND status <> 'sent'; COMMIT")
_sending_here: set[int] = set()  # the same, within one process, for a database without advisory locks
_local_lock = threading.Lock()  # guards _sending_here and _unrecorded

#: Records a send (the values `_send` made) in the sending transaction; raises DBAPIError.
Recorder = Callable[[dict], None]


@contextmanager
def _sending(sessions: sessionmaker[Session], row_id: int) -> Iterator[Recorder | None]:
    """How to record the send, holding the row's sending lock; None when another consumer holds
    it, or the row is no longer pending.

    Two copies of one event can be in hand at once — a delivery whose ack was lost in a broker
    outage comes back while its retry copy is also due, or the router republished the event — and
    both would find the row pending. The copy that holds the lock sends; the other sends nothing:
    the holder's own delivery stays unacked until it is recorded or retried, so the row is never
    left behind. On PostgreSQL the lock is a transaction's, the transaction stays open through the
    provider's call (no row written, no snapshot kept: nothing held back), and the record's COMMIT
    ends it: the lock is never free while the row reads pending after a send. It dies with its
    connection, so a consumer killed mid-send (or a database restart) frees the row at once for
    the redelivery; the status is read once the lock is held, because the holder before us may
    have just recorded the row sent. Two round trips in all (lock and read; record and commit).
    The database must not end idle transactions sooner than a provider's call may take
    (idle_in_transaction_session_timeout, off by default): that would free the lock mid-send."""
    # A connection of the sessions' engine, without a Session around it: only statements run here.
    with engine_of(sessions).connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        if connection.dialect.name == "postgresql":
            with _sending_on_postgres(connection, row_id) as recorder:
                yield recorder
        else:
            with _sending_locally(connection, row_id) as local:
                yield local


@contextmanager
def _sending_on_postgres(connection: Connection, row_id: int) -> Iterator[Recorder | None]:
    # psycopg itself: SQLAlchemy runs one statement per call, and these are several per round trip.
    # The connection is in autocommit, so the BEGIN and COMMIT are ours alone.
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)

    def recorder(sent: dict) -> None:
        query = _RECORD_SENT.format(body=", body = %(body)s" if "body" in sent else "")
        with _translated(raw, query), psycopg.ClientCursor(raw) as cursor:  # bound here: one round trip
            cursor.execute(query, {"id": row_id, "pid": sent["provider_message_id"], "sent_at": sent["sent_at"],
                                   "body": sent.get("body")})

    try:
        query = _LOCK_AND_READ.format(ns=SENDING_LOCK, id=int(row_id))
        with _translated(raw, query), raw.cursor() as cursor:
            cursor.execute(query)
            cursor.nextset()
            held = _first(cursor.fetchone())
            cursor.nextset()
            status = _first(cursor.fetchone())
        if not held:
            log.info("outbox row is being sent by another consumer; this copy of its event sends nothing",
                     extra={"outbox_id": row_id})
            yield None
            return
        yield _unless_recorded(row_id, status, recorder)
    finally:
        # Still open when nothing was recorded in it (not held, not pending, a failed send, a failed
        # record: the failures are recorded on other connections while the lock is still held).
        _end(connection, raw)


def _first(row: tuple | None) -> object:
    return row[0] if row is not None else None


def _end(connection: Connection, raw: psycopg.Connection) -> None:
    """End the sending transaction if it is still open (nothing was recorded in it): its lock goes
    with it. A broken connection is thrown away, never pooled."""
    status = raw.info.transaction_status
    if status == psycopg.pq.TransactionStatus.IDLE:
        return
    if status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
        try:
            raw.execute("ROLLBACK")
            return
        except psycopg.Error:
            pass
    # The connection broke (a database restart took the lock with it).
    connection.invalidate()


@contextmanager
def _translated(raw: psycopg.Connection, statement: str) -> Iterator[None]:
    """psycopg's errors as SQLAlchemy raises them: callers (and _record_later's retry) know DBAPIError."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error, connection_invalidated=raw.broken) from exc


def _unless_recorded(row_id: int, status: object, recorder: Recorder) -> Recorder | None:
    """`recorder` when the row, as read under its lock, is to be sent; None when it was sent — by
    another consumer, or by this process while the database was away (then recorded now)."""
    if status not in SENDABLE:
        return None
    with _local_lock:
        unrecorded = _unrecorded.get(row_id)
    if unrecorded is None:
        return recorder
    recorder(unrecorded)
    with _local_lock:
        _unrecorded.pop(row_id, None)
    log.info("recorded a message sent during a database outage; not sending it again", extra={"outbox_id": row_id})
    return None


@contextmanager
def _sending_locally(connection: Connection, row_id: int) -> Iterator[Recorder | None]:
    """`_sending` on a database without advisory locks (SQLite, the embedded mode: one process)."""
    with _local_lock:
        held = row_id not in _sending_here
        _sending_here.add(row_id)
    if not held:
        yield None
        return
    try:
        status = connection.scalar(select(Outbox.status).where(Outbox.id == row_id))

        def recorder(sent: dict) -> None:
            connection.execute(_mark_sent(row_id, sent))

        yield _unless_recorded(row_id, status, recorder)
    finally:
        with _local_lock:
            _sending_here.discard(row_id)


#: One round trip for a batch's rows, as `_LOCK_AND_READ` for one: open the sending transaction,
#: try every row's lock, and only then (a statement of its own, so a snapshot of its own) read
#: their statuses. The ids are integers, written into the query.
_LOCK_AND_READ_MANY = ("BEGIN; SELECT id, pg_try_advisory_xact_lock({ns}, id) FROM unnest(ARRAY[{ids}]::int[]) AS id; "
                       "SELECT id, status FROM outbox WHERE id = ANY(ARRAY[{ids}]::int[])")
#: One round trip: the batch's records, one UPDATE from a JSON list, and the COMMIT that makes them
#: visible and then frees the locks. Guarded like `_mark_sent`; a row without a recomposed body
#: keeps its own. The ids are also written in as an array (integers): PostgreSQL guesses 100 rows
#: for any jsonb_to_recordset, and against an outbox of a few thousand rows it then joined by a
#: sequential scan of the whole table (4 ms a batch at 5,000 rows); `id = ANY(ARRAY[…])` is an
#: index scan of the primary key at any size.
_RECORD_MANY = ("UPDATE outbox AS o SET status = 'sent', attempts = o.attempts + 1, provider_message_id = s.pid, "
                "sent_at = s.sent_at, body = COALESCE(s.body, o.body) "
                "FROM jsonb_to_recordset(%(sent)s::jsonb) AS s(id int, pid text, sent_at timestamptz, body text) "
                "WHERE o.id = ANY(ARRAY[{ids}]::int[]) AND o.id = s.id AND o.status <> 'sent'; COMMIT")


class SendingTogether:
    """The sending locks of a batch's claimed rows, held by one transaction (`sending_together`):
    each send of the batch records itself here, and the records are written with one UPDATE and
    one COMMIT when the batch's sends are over. Shared by the batch's sending threads."""

    def __init__(self, held: dict[int, object], covered: set[int]):
        self._held = held  # row → its status, read under its lock
        self._covered = covered  # every row asked for: held here, or by another consumer
        self._sent: dict[int, dict] = {}
        self._lock = threading.Lock()
        #: Set when the records could not be written, even on new connections within
        #: RECORD_PATIENCE: the events of `unrecorded` rows are to be retried (which records them).
        self.error: Exception | None = None
        self.unrecorded: set[int] = set()

    def covers(self, row_id: int) -> bool:
        return row_id in self._covered

    def recorder(self, row_id: int) -> Recorder | None:
        """As `_sending` yields it: how to record the row's send, or None when another consumer
        holds its lock or it is no longer pending."""
        if row_id not in self._held:
            log.info("outbox row is being sent by another consumer; this copy of its event sends nothing",
                     extra={"outbox_id": row_id})
            return None

        def record(sent: dict) -> None:
            with self._lock:
                self._sent[row_id] = sent
        return _unless_recorded(row_id, self._held[row_id], record)

    def sent(self) -> dict[int, dict]:
        with self._lock:
            return dict(self._sent)


@contextmanager
def sending_together(deps: NotifierDeps, row_ids: Sequence[int]) -> Iterator[SendingTogether | None]:
    """The sending lock of every row in `row_ids` (claimed, to be sent now), taken in one round
    trip by one transaction that stays open while the rows are sent (on any threads, each with
    `deliver(..., sending=...)`) and records them all at the end: two round trips and one commit
    for a batch instead of two round trips and a commit per send. The lock keeps its meaning
    (`_sending`): a row's lock is free only once its record is committed, or the transaction is
    gone with its connection. A send that fails is recorded on another connection meanwhile, as
    with `_sending`, so one failure loses no other record.

    The price: a send is recorded when the batch's last send is over, not at once, so a consumer
    killed meanwhile leaves every row the batch sent pending, and the redelivery sends them again
    (the one way a message goes out twice, already there for one send's call and record).

    None (each send takes its own lock) off PostgreSQL, with the unit tests' provider edge, with
    nothing to send, or when the lock's round trip fails."""
    ids = sorted({int(i) for i in row_ids})
    if deps.deliver is not None or not ids:
        yield None
        return
    engine = engine_of(deps.sessions)
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        together = None
        try:
            try:
                together = _lock_and_read_many(raw, ids)
            except DBAPIError as exc:
                log.warning("the batch's sending locks were not taken together (%s); each send takes its own", exc)
            if together is None:
                yield None
                return
            try:
                yield together
            finally:
                _record_together(deps, raw, together)
        finally:
            _end(connection, raw)


def _lock_and_read_many(raw: psycopg.Connection, ids: list[int]) -> SendingTogether:
    query = _LOCK_AND_READ_MANY.format(ns=SENDING_LOCK, ids=",".join(str(i) for i in ids))
    with _translated(raw, query), raw.cursor() as cursor:
        cursor.execute(query)
        cursor.nextset()
        locked = {row_id for row_id, held in cursor.fetchall() if held}
        cursor.nextset()
        statuses: dict[int, object] = dict(cursor.fetchall())
    return SendingTogether({i: statuses.get(i) for i in locked}, set(ids))


def _record_together(deps: NotifierDeps, raw: psycopg.Connection, together: SendingTogether) -> None:
    sent = together.sent()
    if not sent:
        return  # nothing to record: the transaction is rolled back, and its locks go
    document = json.dumps([{"id": row_id, "pid": values["provider_message_id"],
                            "sent_at": values["sent_at"].isoformat(), "body": values.get("body")}
                           for row_id, values in sent.items()])
    query = _RECORD_MANY.format(ids=",".join(str(int(row_id)) for row_id in sent))
    try:
        with _translated(raw, query), psycopg.ClientCursor(raw) as cursor:  # bound here: one round trip
            cursor.execute(query, {"sent": document})
    except DBAPIError as exc:
        # The kept connection died during the sends (a database restart or outage).
        log.warning("recording %d sent messages on a kept connection failed (%s); retrying on new ones",
                    len(sent), exc)
        try:
            _record_many_later(deps, sent)
        except DBAPIError as later:
            together.error, together.unrecorded = later, set(sent)


#: Seconds a consumer keeps trying to record a message the provider took, while the database is
#: away, before it leaves that to the event's retry: a send is worth waiting for, not repeating.
RECORD_PATIENCE = 20.0
#: Sent but not recorded yet (the database went away during the provider's call), by outbox row,
#: with the values to record: the event's retry in this process records them instead of sending.
_unrecorded: dict[int, dict] = {}


#: `attempts + 1` in an UPDATE: an expression is immutable, so one serves every send.
_ONE_MORE_ATTEMPT = Outbox.attempts + 1


def _mark_sent(row_id: int, sent: dict) -> Update:
    # Guarded: whoever recorded it first (this consumer's retry, the holder of the lock) keeps its values.
    return update(Outbox).where(Outbox.id == row_id, Outbox.status != "sent").values(sent)


def _record_later(deps: NotifierDeps, row_id: int, sent: dict) -> None:
    _record_many_later(deps, {row_id: sent})


def _record_many_later(deps: NotifierDeps, sent: dict[int, dict]) -> None:
    """Record sends (by outbox row) on new connections, retrying while the database is away, for
    up to RECORD_PATIENCE seconds; then raise DBAPIError, and the event's retry records them."""
    with _local_lock:
        _unrecorded.update(sent)
    retrying = Retrying(stop=stop_after_delay(RECORD_PATIENCE), wait=wait_exponential(multiplier=0.2, max=2.0),
                        retry=retry_if_exception_type(DBAPIError), reraise=True)
    for attempt in retrying:
        with attempt, transaction(deps.sessions) as s:
            for row_id, values in sent.items():
                s.execute(_mark_sent(row_id, values))
    with _local_lock:
        for row_id in sent:
            _unrecorded.pop(row_id, None)


def _send(row_id: int, sender: Sender, channel: str, address: str, body: str, options: dict,
          deps: NotifierDeps, *, compose: Callable[[datetime], str] | None = None,
          sending: SendingTogether | None = None) -> str | None:
    # A kill -9 between the provider's accepting the message and our recording it is the one way a
    # message goes out twice (the redelivery finds the row still pending). So the connection that
    # records it is taken (and pinged) before the call, and the record is one round trip right after
    # it (the UPDATE and the COMMIT of the sending transaction) instead of a checkout, a ping and a
    # read-modify-write transaction.
    together = sending is not None and sending.covers(row_id)
    lock = nullcontext(sending.recorder(row_id)) if sending is not None and together else \
        _sending(deps.sessions, row_id)
    with lock as record_sent:
        if record_sent is None:
            return None
        recomposed = compose(deps.clock()) if compose is not None else None
        if recomposed is not None:
            body = recomposed
        try:
            result = sender.send(address, body, options=options)
        except PermanentSendError as exc:
            if getattr(exc, "opted_out", False):
                suppress(deps, channel, address, f"opted out: {exc}", conversation_id=_conversation_of(deps, row_id))
            _finish(deps, row_id, "failed", error=str(exc))
            MESSAGES_OUT.labels(channel, "failed").inc()
            log.warning("permanent send failure on %s: %s", channel, exc, extra={"outbox_id": row_id})
            return "failed"
        except TransientSendError as exc:
            _finish(deps, row_id, "pending", error=str(exc))
            raise
        sent = {"status": "sent", "attempts": _ONE_MORE_ATTEMPT, "provider_message_id": result.provider_message_id,
                "sent_at": deps.clock()}
        if recomposed is not None:
            sent["body"] = recomposed  # what the customer got, not what was drafted at the claim
        try:
            record_sent(sent)
        except DBAPIError as exc:
            # The kept connection died during the call (a database restart or outage).
            log.warning("recording a sent message on a kept connection failed (%s); retrying on new ones", exc,
                        extra={"outbox_id": row_id})
            _record_later(deps, row_id, sent)
    MESSAGES_OUT.labels(channel, "sent").inc()
    if not together:  # a batch's sends are logged one line per event, by handlers.handle_batch
        log.info("sent %s on %s", "message", channel, extra={"outbox_id": row_id})
    return "sent"


def _conversation_of(deps: NotifierDeps, row_id: int) -> str | None:
    with deps.sessions() as s:
        return s.scalar(select(Outbox.conversation_id).where(Outbox.id == row_id))


def _finish(deps: NotifierDeps, row_id: int, status: str, *, error: str | None = None) -> None:
    """Record a try that did not send ("pending" or "failed"); a sent one is `_send`'s UPDATE."""
    with transaction(deps.sessions) as s:
        _count_attempt(s.get_one(Outbox, row_id), status, error=error)


def _count_attempt(row: Outbox, status: str, *, error: str | None = None) -> None:
    row.attempts += 1
    if status == "pending" and row.attempts >= MAX_SEND_ATTEMPTS:
        # The bus dead-letters it now: it must not hold back the conversation's later messages.
        status = "dead"
    row.status = status
    if error:
        row.last_error = mask_secrets(error)[:2000]
