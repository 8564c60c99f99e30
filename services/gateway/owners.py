"""Whom a ringing call goes to: the gateway's own read model of phone → owner, filled from the bus.

The router publishes `ownership.phone` whenever the owner of a customer's open conversation changes
(opened or reopened, transferred, handed over, drained from the queue, resolved) for a customer with
a phone identity (services/router/ownership.py). The gateway's consumer keeps one row per phone
number in its own table, `gateway_phone_owners`, and the voice adapter asks it at each call
(services/gateway/channels/twilio_voice.py). Nothing here reads the router's tables.

The bus may deliver the events of one phone in any order (retries, competing consumers): a row only
moves forward (`supersedes`). The read is a short, read-only query with tight timeouts, made on
demand: a gateway whose database or broker is down still answers calls, and any failure means
"unknown", so the call rings the team's phone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    String,
    Table,
    bindparam,
    create_engine,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import GATEWAY_OWNERS
from shared.contracts import Envelope, PhoneOwnership
from shared.db import Base, UTCDateTime, make_engine, normalise_url

log = logging.getLogger(__name__)

#: Seconds: a caller is listening to silence while this runs.
QUERY_TIMEOUT_SECONDS = 2


class PhoneOwner(Base):
    """One phone number: the conversation its customer has (had) open and its owner then."""

    __tablename__ = "gateway_phone_owners"

    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(36))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    open: Mapped[bool] = mapped_column(Boolean)
    sequence: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- the projection rule (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What the table holds for a phone, as far as ordering goes."""

    sequence: int
    open: bool


def supersedes(event: PhoneOwnership, known: Known | None) -> bool:
    """Whether an event replaces what is known of a phone.

    A later assignment (higher sequence) always does: a new owner, a reopening, a new conversation.
    At the same sequence only a resolution does, over the open state it closes; a second copy of
    what is known changes nothing, and an older event arriving late never undoes a newer one.
    """
    if known is None:
        return True
    if event.sequence != known.sequence:
        return event.sequence > known.sequence
    return known.open and not event.open


def rings(owner_id: str | None, is_open: bool) -> str | None:
    """The agent a call from a phone rings: the owner while the conversation is open; else nobody in
    particular, and the team's phone rings."""
    return owner_id if is_open else None


# --- the consumer ------------------------------------------------------------------------------------


def record(envelope: Envelope, engine: Callable[[], Engine]) -> list[Envelope]:
    """One event applied (a batch of one, see record_batch); publishes nothing."""
    result = record_batch([envelope], engine)[0]
    assert not isinstance(result, Exception)  # record_batch raises, it never returns a failure
    return result


def record_batch(envelopes: Sequence[Envelope], engine: Callable[[], Engine]) -> list[list[Envelope] | Exception]:
    """The gateway.owners batch handler: a batch's events applied in one transaction, with the same
    outcome as `record` one event after the other. A mixed-channel load opens a conversation per
    new phone number, and a transaction per event cost the gateway ~1.1 ms of CPU each.

    The batch's rows are locked in phone order (as `record` does), the events applied in delivery
    order to what is known in memory (`supersedes`, so a batch holding a phone's events out of order
    still only moves forward), then each phone's final row written: one INSERT for the new phones,
    one UPDATE (executemany) for the known ones. A phone inserted meanwhile by another consumer
    raises RowAppeared: the worker splits the batch, and alone the event orders itself as before."""
    events: list[PhoneOwnership] = []
    for envelope in envelopes:
        if isinstance(envelope.payload, PhoneOwnership):
            events.append(envelope.payload)
        else:
            log.warning("gateway.owners got a %s event: not one of ours, dropped", envelope.type)
    results: list[list[Envelope] | Exception] = [[] for _ in envelopes]
    if not events:
        return results
    table = cast(Table, PhoneOwner.__table__)
    phones = sorted({phone for event in events for phone in event.phones})
    with engine().begin() as conn:
        found = conn.execute(select(table.c.phone, table.c.sequence, table.c.open).where(table.c.phone.in_(phones))
                             .order_by(table.c.phone).with_for_update())
        known: dict[str, Known] = {row.phone: Known(row.sequence, row.open) for row in found}
        existing = set(known)
        final: dict[str, dict] = {}
        for event in events:
            for phone in sorted(set(event.phones)):
                if not supersedes(event, known.get(phone)):
                    continue
                known[phone] = Known(event.sequence, event.open)
                final[phone] = dict(conversation_id=event.conversation_id, owner_id=rings(event.owner_id, event.open),
                                    open=event.open, sequence=event.sequence, changed_at=event.changed_at)
        new = [{"phone": phone, **values} for phone, values in sorted(final.items()) if phone not in existing]
        changed = [{"b_phone": phone, **values} for phone, values in sorted(final.items()) if phone in existing]
        if new:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(table).values(new).on_conflict_do_nothing(index_elements=["phone"]).returning(table.c.phone)
            if len(conn.execute(stmt).all()) != len(new):
                raise RowAppeared("a phone's owner row appeared while recording it: retried")
        if changed:
            conn.execute(update(table).where(table.c.phone == bindparam("b_phone")), changed)
    return results


class RowAppeared(Exception):
    """Another consumer inserted a phone's row meanwhile (see record_batch)."""


def build_worker(broker_url: str, engine: Callable[[], Engine] | None, publisher: Publisher) -> Worker:
    """The gateway.owners consumer. Without a database of the deployment's (services mode on the
    default SQLite file, which would be the gateway's own empty one) it still drains the queue, so
    nothing piles up, and calls ring the team."""
    if engine is None:
        def drop(envelope: Envelope) -> list[Envelope]:
            log.debug("no database: %s dropped, calls ring the team", envelope.type)
            return []
        return Worker(url=broker_url, spec=GATEWAY_OWNERS, handler=drop, publisher=publisher, prefetch=8,
                      name="gateway-owners")
    # One consumer; under load (a new phone per SMS conversation) its events come in batches, each
    # one short transaction (record_batch).
    return Worker(url=broker_url, spec=GATEWAY_OWNERS, batch_handler=partial(record_batch, engine=engine),
                  publisher=publisher, batch_size=32, name="gateway-owners")


# --- the read -------------------------------------------------------------------------------------


def gateway_engine(database_url: str) -> Engine:
    """The gateway's engine: small, with short connect timeouts. Made lazily by the callers, so a
    gateway whose database is down still starts."""
    url = normalise_url(database_url)
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True,
                             connect_args={"connect_timeout": QUERY_TIMEOUT_SECONDS})
    return make_engine(url, pool_size=2)


def lazy_engine(database_url: str) -> Callable[[], Engine]:
    lock = threading.Lock()
    made: list[Engine] = []

    def engine() -> Engine:
        with lock:
            if not made:
                made.append(gateway_engine(database_url))
            return made[0]

    return engine


def owner_lookup(engine: Callable[[], Engine]) -> Callable[[str], str | None]:
    """caller's E.164 number → the agent id owning their open conversation, or None."""

    def lookup(phone: str) -> str | None:
        with engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET TRANSACTION READ ONLY"))
                conn.execute(text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_SECONDS * 1000}"))
            row = conn.execute(select(PhoneOwner.owner_id, PhoneOwner.open).where(PhoneOwner.phone == phone)).first()
            conn.rollback()
        return rings(row.owner_id, row.open) if row is not None else None

    return lookup
