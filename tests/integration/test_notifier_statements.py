"""The notifier's round trips for a batch of new conversations, counted on PostgreSQL (issue 15: the
notifier's CPU per message was mostly its per-event statements and transactions). The claims of
a batch's conversation.opened events — promises, agent notices, acknowledgements and the notices'
outbox rows — are a fixed number of set-based statements in one transaction, whatever the batch's
size, and the notices' statuses after the sends one more. A change that adds a statement per
event fails here, naming the statements: make it a decision, with the reason in the commit.

The sends themselves (the outbox's sending lock and record, services.notifier.outbox.deliver) are
not counted here: they go through a stand-in that records each send on a connection of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select, update

from services.notifier.handlers import NotifierDeps, handle_batch
from services.notifier.models import AgentNotice, Outbox, Promise
from services.notifier.senders import Registry
from shared.contracts import ConversationMessage, ConversationOpened, Envelope
from shared.db import make_engine

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # a Monday morning: Anna, who owns them, is on shift
BATCH = 16


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    commits: int = 0


@contextmanager
def counted(engine: Engine) -> Iterator[Counted]:
    """Every statement the notifier's sessions send meanwhile, and their commits."""
    seen = Counted()

    def statement(_conn, _cursor, text, _params, _context, _executemany) -> None:
        seen.statements.append(" ".join(text.split())[:120])

    def commit(_conn) -> None:
        seen.commits += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


@pytest.fixture
def deps(example_config, sessions, pg_url) -> Iterator[NotifierDeps]:
    """The notifier with a stand-in for the provider edge: each send is recorded as sent on an
    engine of its own, which the counts leave out (the outbox's sending is another test's)."""
    edge = make_engine(pg_url)
    sent: list[int] = []

    def deliver(row_id, deps, *, claimed=None, compose=None) -> str:
        assert claimed is not None and claimed.waits_for is None
        with edge.begin() as connection:
            connection.execute(update(Outbox).where(Outbox.id == row_id).values(status="sent", sent_at=AT))
        sent.append(row_id)
        return "sent"

    notifier = NotifierDeps(config=example_config, sessions=sessions, senders=Registry({}),
                            compose_ack=lambda ev, at: f"ack {ev.conversation_id}", clock=lambda: AT, deliver=deliver)
    notifier.sent = sent  # type: ignore[attr-defined]
    yield notifier
    edge.dispose()


def opened(n: int) -> Envelope:
    conv = f"conv-{n}"
    ev = ConversationOpened(
        conversation_id=conv, opening=1, reference=f"SB-{n:010d}", customer_id=f"cust-{n}", customer_name="Piotr",
        channel="telegram", reply_to=f"chat-{n}", language="en", category="delivery", owner_id="anna",
        owner_name="Anna Kowalska", assignment_reason="r", received_at=AT, promise_due=AT + timedelta(hours=4),
        inbound_message_id=f"in-{n}", acknowledge=True)
    return Envelope.wrap(ev, message_id=f"ev-{n}", correlation_id=f"c-{n}", occurred_at=AT)


def message(n: int) -> Envelope:
    ev = ConversationMessage(conversation_id=f"conv-{n}", owner_id="anna", channel="telegram", excerpt="and?",
                             received_at=AT, inbound_message_id=f"in-{n}-2", reference=f"SB-{n:010d}",
                             customer_name="Piotr", promise_due=AT + timedelta(hours=4))
    return Envelope.wrap(ev, message_id=f"ev-{n}-2", correlation_id=f"c-{n}", occurred_at=AT)


def test_a_batch_of_new_conversations_and_of_their_next_messages_is_claimed_in_a_few_set_based_statements(
        deps, sessions) -> None:
    engine = sessions.kw["bind"]
    batch = [opened(n) for n in range(BATCH)]

    # One transaction for the claims: which promises exist, which notice keys; INSERT the promises,
    # the notices (Anna's, due now: claimed as they are inserted); which outbox keys exist, which
    # addresses are suppressed, the acknowledgements of the day (the cap); INSERT the outbox rows
    # (acknowledgements and notices); the conversations' pending rows (their order). After the
    # sends, one UPDATE of the notices' statuses, in a transaction of its own.
    with counted(engine) as seen:
        assert handle_batch(batch, deps) == [[]] * BATCH
    assert len(seen.statements) == 10, "\n".join(seen.statements)
    assert seen.commits == 2
    assert len(deps.sent) == 2 * BATCH  # each conversation's acknowledgement and Anna's notice
    with sessions() as s:
        assert s.scalar(select(Promise.id).where(Promise.conversation_id == "conv-3")) is not None
        assert set(s.scalars(select(AgentNotice.status))) == {"sent"}
        assert s.scalar(select(AgentNotice.attempts).where(AgentNotice.conversation_id == "conv-3")) == 1
        assert sorted(s.scalars(select(Outbox.kind).where(Outbox.status == "sent"))) == ["ack"] * BATCH + ["notice"] * BATCH

    # The batch redelivered: its promises and its acknowledgements' rows are found; nothing is sent.
    with counted(engine) as seen:
        assert handle_batch(batch, deps) == [[]] * BATCH
    assert len(seen.statements) == 2, "\n".join(seen.statements)
    assert seen.commits == 1
    assert len(deps.sent) == 2 * BATCH

    # The customers write again: Anna hears of each message. Which notice keys exist; INSERT the
    # notices (claimed); which outbox keys exist; INSERT their outbox rows; the pending rows of the
    # conversations. After the sends, the notices' statuses.
    with counted(engine) as seen:
        assert handle_batch([message(n) for n in range(BATCH)], deps) == [[]] * BATCH
    assert len(seen.statements) == 6, "\n".join(seen.statements)
    assert seen.commits == 2
    assert len(deps.sent) == 3 * BATCH


def test_a_batch_of_outbox_rows_keeps_its_send_options_and_a_value_too_long_fails_instead_of_being_cut(
        sessions) -> None:
    """The rows go in as one array per column (unnest): the options come back as the sender's
    dict, a key held already is left out, and an address longer than its column fails the INSERT
    (the batch is then claimed one by one, and only that event fails)."""
    from sqlalchemy.exc import DataError

    from services.notifier.unit_of_work import SqlNotifierUnitOfWork

    def row(key: str, address: str, options: dict | None) -> dict:
        return {"idempotency_key": key, "kind": "ack", "conversation_id": "conv-1", "customer_id": None,
                "channel": "sms", "address": address, "body": "Thanks", "status": "pending", "last_error": None,
                "options": options, "correlation_id": "c-1", "source_message_id": "in-1", "created_at": AT}

    with SqlNotifierUnitOfWork(sessions) as uow:
        first = uow.outbox.insert_new([row("k1", "+48600000001", {"from": "+48221002030"}),
                                       row("k2", "+48600000002", None)])
    with SqlNotifierUnitOfWork(sessions) as uow:
        again = uow.outbox.insert_new([row("k1", "+48600000001", None), row("k3", "+48600000003", {})])
    assert set(first) == {"k1", "k2"} and set(again) == {"k3"}
    with sessions() as s:
        stored = {r.idempotency_key: r for r in s.scalars(select(Outbox))}
    assert stored["k1"].options == {"from": "+48221002030"} and stored["k1"].attempts == 0
    assert stored["k2"].options is None and stored["k3"].options == {}
    with pytest.raises(DataError), SqlNotifierUnitOfWork(sessions) as uow:
        uow.outbox.insert_new([row("k4", "+48" + "6" * 400, None)])


def test_a_notice_waiting_for_its_agents_shift_is_sent_once_when_its_event_comes_again_on_shift(deps, sessions) -> None:
    """A redelivered batch finds its notices by key: one still pending and due by now is claimed
    and sent with the batch, once; sent, it is not sent again."""
    deps.clock = lambda: AT - timedelta(days=1)  # Sunday: Anna is off, her notices wait for her shift
    batch = [message(n) for n in range(3)]
    assert handle_batch(batch, deps) == [[]] * 3
    assert deps.sent == []
    with sessions() as s:
        assert list(s.scalars(select(AgentNotice.status))) == ["pending"] * 3
    deps.clock = lambda: AT  # Monday morning, on shift: the same events come again
    assert handle_batch(batch, deps) == [[]] * 3
    assert len(deps.sent) == 3
    assert handle_batch(batch, deps) == [[]] * 3
    assert len(deps.sent) == 3
    with sessions() as s:
        assert list(s.scalars(select(AgentNotice.status))) == ["sent"] * 3
