"""The roll-up marks (kpi_dirty_days) a conversation's change leaves, as the router's batches make
them: one transaction, a SAVEPOINT per message. A day is marked once per transaction, however many
of its conversations the transaction writes; a mark that a rolled-back savepoint took with it is
written again by the next change of that day, so no change goes unmarked."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from services.router import kpi_store  # noqa: F401 - registers the flush hook that writes the marks
from services.router.models import Conversation, Customer, KpiDirtyDay
from shared.db import transaction

pytestmark = pytest.mark.integration

DAY = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
OTHER_DAY = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)


def add_conversation(s, cid: str, opened_at: datetime) -> None:
    s.add(Customer(id=f"cust-{cid}", name=None, created_at=opened_at))
    s.flush()
    s.add(Conversation(id=cid, reference=f"SB-{cid}", customer_id=f"cust-{cid}", status="open", opening=1,
                       channel="telegram", reply_to="42", language="en", category="other", category_reason={},
                       owner_id=None, team_id=None, assignment_reason="test", opened_at=opened_at,
                       promise_due=opened_at, last_message_at=opened_at))


def marks(sessions) -> list[date]:
    with sessions() as s:
        return sorted(s.scalars(select(KpiDirtyDay.utc_day)))


def test_a_batch_marks_each_day_it_touches_once(sessions) -> None:
    with transaction(sessions) as s:
        for i in range(10):
            with s.begin_nested():
                add_conversation(s, f"c{i}", DAY if i % 3 else OTHER_DAY)
    assert marks(sessions) == [DAY.date(), OTHER_DAY.date()]


def test_a_mark_rolled_back_with_its_savepoint_is_written_again(sessions) -> None:
    with transaction(sessions) as s:
        with pytest.raises(RuntimeError), s.begin_nested():
            add_conversation(s, "failed", DAY)
            s.flush()  # its mark is written here, inside the savepoint …
            raise RuntimeError("this message fails alone")
        with s.begin_nested():  # … and rolled back with it: the next message of that day marks it again
            add_conversation(s, "kept", DAY)
    assert marks(sessions) == [DAY.date()]
    with sessions() as s:
        assert s.scalars(select(Conversation.id)).all() == ["kept"]


def test_every_transaction_marks_for_itself(sessions) -> None:
    # The job deletes the marks it saw: a later transaction's change must leave its own.
    for cid in ("a", "b"):
        with transaction(sessions) as s:
            add_conversation(s, cid, DAY)
    assert marks(sessions) == [DAY.date(), DAY.date()]
    with transaction(sessions) as s:
        conv = s.get(Conversation, "a")
        assert conv is not None
        conv.status = "resolved"
    assert marks(sessions) == [DAY.date()] * 3
