"""The gateway's phone → owner table filled a batch at a time (owners.record_batch): the same rows as
the events applied one by one, whatever the order of a phone's events inside the batch. Real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.gateway import owners
from shared.contracts import Envelope, Identity, InboundMessage, PhoneOwnership
from shared.db import make_engine, migrate

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ANNA_CALLER, JONAS_CALLER, NEW_CALLER = "+48601000001", "+48601000002", "+48601000003"


@pytest.fixture
def engine(pg_url):
    made = make_engine(pg_url)
    migrate(made)
    gateway = owners.gateway_engine(pg_url)
    yield gateway
    gateway.dispose()
    made.dispose()


def wrapped(n: int, phones: tuple[str, ...], sequence: int, owner: str | None, is_open: bool = True) -> Envelope:
    event = PhoneOwnership(conversation_id=f"c{sequence}", phones=phones, owner_id=owner, open=is_open,
                           sequence=sequence, changed_at=AT)
    return Envelope.wrap(event, message_id=f"e{n}", correlation_id="c", occurred_at=AT)


def rows(engine) -> dict[str, tuple]:
    table = owners.PhoneOwner.__table__
    with engine.connect() as conn:
        return {r.phone: (r.owner_id, r.open, r.sequence) for r in conn.execute(select(table))}


def test_a_batch_leaves_the_rows_the_events_one_by_one_would(engine) -> None:
    first = [wrapped(1, (ANNA_CALLER,), 5, "anna"), wrapped(2, (JONAS_CALLER,), 5, "jonas")]
    assert owners.record_batch(first, lambda: engine) == [[], []]
    stray = Envelope.wrap(InboundMessage(channel="sms", external_id="x", sender=Identity("phone", NEW_CALLER),
                                         sender_name=None, reply_to=NEW_CALLER, received_at=AT, sent_at=AT, text="hi"),
                          message_id="stray", correlation_id="c", occurred_at=AT)
    second = [
        wrapped(3, (ANNA_CALLER,), 7, "jonas"),  # a transfer…
        wrapped(4, (ANNA_CALLER,), 6, "anna"),  # …whose older assignment arrives after it: ignored
        wrapped(5, (JONAS_CALLER,), 5, "jonas", is_open=False),  # resolved: the team rings
        stray,  # not ours: dropped, the rest kept
        wrapped(6, (NEW_CALLER, JONAS_CALLER), 8, "anna"),  # a new phone, and jonas's caller reopened
        wrapped(7, (NEW_CALLER,), 8, "anna"),  # the same event again changes nothing
    ]
    assert owners.record_batch(second, lambda: engine) == [[]] * 6
    assert rows(engine) == {ANNA_CALLER: ("jonas", True, 7), JONAS_CALLER: ("anna", True, 8),
                            NEW_CALLER: ("anna", True, 8)}
    assert owners.owner_lookup(lambda: engine)(JONAS_CALLER) == "anna"


def test_a_batch_whose_new_phone_appeared_meanwhile_is_retried(engine) -> None:
    owners.record_batch([wrapped(1, (NEW_CALLER,), 5, "anna")], lambda: engine)
    # As if another consumer inserted the row between this batch's read and its write: the read sees none.
    table = owners.PhoneOwner.__table__
    real_select = owners.select
    try:
        owners.select = lambda *cols: real_select(*cols).where(table.c.phone == "nobody")  # type: ignore[assignment]
        with pytest.raises(owners.RowAppeared):
            owners.record_batch([wrapped(3, (NEW_CALLER,), 6, "jonas")], lambda: engine)
    finally:
        owners.select = real_select  # type: ignore[assignment]
    assert rows(engine) == {NEW_CALLER: ("anna", True, 5)}  # nothing of the failed batch was kept
