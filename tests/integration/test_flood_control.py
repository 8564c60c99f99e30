"""Flood control against the real PostgreSQL: a burst from one sender is stored in full but tells
the owner only at the flood control's pace; the acknowledgement cap holds per customer across
addresses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.notifier.handlers import handle_event
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Message, SenderBucket
from tests.integration.test_notifier_outbox import FlakySender, make_deps, opened, rows
from tests.integration.test_router_store import WARSAW, datetime, envelope, fake_classify

pytestmark = pytest.mark.integration

MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)


@pytest.fixture
def router(example_config, sessions) -> RouterDeps:
    return RouterDeps(config=example_config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")


def types(events) -> list[str]:
    return [e.type for e in events]


def test_a_burst_is_stored_but_notifies_the_owner_only_at_a_pace(router, sessions) -> None:
    events = [handle_inbound(envelope(i, MONDAY + timedelta(seconds=i), text=f"line {i} of my order"), router)
              for i in range(20)]
    assert types(events[0]) == ["conversation.opened"]
    notices = [e for batch in events[1:] for e in batch]
    # The config's limits: 5 notices in a row, then one per 2 minutes.
    assert types(notices) == ["conversation.message"] * 5
    assert [n.payload.excerpt for n in notices] == [f"line {i} of my order" for i in range(1, 6)]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 20  # nothing accepted is lost
    # Two minutes later the sender earns a notice again; someone else was never held back.
    assert types(handle_inbound(envelope(20, MONDAY + timedelta(seconds=19 + 120)), router)) == ["conversation.message"]
    assert types(handle_inbound(envelope(21, MONDAY + timedelta(seconds=20), user="77"), router)) == [
        "conversation.opened"]
    assert types(handle_inbound(envelope(22, MONDAY + timedelta(seconds=21), user="77"), router)) == [
        "conversation.message"]


def test_a_redelivered_message_gives_the_same_events_and_takes_no_token(router, sessions) -> None:
    first = [handle_inbound(envelope(i, MONDAY + timedelta(seconds=i)), router) for i in range(3)]
    with sessions() as s:
        before = {b.key: b.tokens for b in s.scalars(select(SenderBucket))}
    again = handle_inbound(envelope(2, MONDAY + timedelta(seconds=2)), router)
    assert [e.message_id for e in again] == [e.message_id for e in first[2]]
    with sessions() as s:
        assert {b.key: b.tokens for b in s.scalars(select(SenderBucket))} == before
    assert set(before) == {k for k in before if k.startswith(("customer:", "address:telegram:42"))}


def test_the_acknowledgement_cap_holds_per_customer_across_addresses(example_config, sessions) -> None:
    sender = FlakySender([])
    notifier = make_deps(example_config, sessions, sender)
    cap = example_config.limits.ack_daily_cap
    # One customer writing from a new address each time (the router knows they are one customer).
    for i in range(cap + 2):
        handle_event(opened(conv=f"conv-{i}", reply_to=f"4{i}"), notifier)
    assert len(sender.sent) == cap
    assert [r.status for r in rows(sessions)][cap:] == ["skipped", "skipped"]
