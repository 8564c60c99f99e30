"""The router's micro-batches against the real PostgreSQL and RabbitMQ: a batch routes exactly as
one message at a time would, a failing message rolls back alone, redelivery changes nothing, and two
batching replicas still give every conversation exactly one owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.router.handlers import RouterDeps, handle_inbound, handle_inbound_batch
from services.router.models import Assignment, Conversation, Customer, Identity, Message, RouterOutbox
from services.router.operations import resolve
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.contracts import Envelope, InboundMessage, derive_id
from shared.contracts import Identity as Sender
from shared.db import make_engine, migrate, session_factory
from tests.integration.test_router_store import count, envelope, fake_classify
from tests.support import infra
from tests.support.db import assert_one_open_conversation_and_owner_each
from tests.support.routers import router_replicas
from tests.support.wait import until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a Monday morning: the shop is open


def interleaved(customers: int, per_customer: int) -> list[Envelope]:
    """Each customer's messages among the others', as they arrive from several people at once."""
    return [envelope(100 * c + k, AT + timedelta(seconds=k), user=f"u{c}",
                     text="Where is my parcel?" if k == 0 else f"and also {k}")
            for k in range(per_customer) for c in range(customers)]


def fresh_deps(example_config, classify=fake_classify) -> tuple[RouterDeps, str]:
    name, url = infra.new_database()
    engine = make_engine(url)
    migrate(engine)
    return RouterDeps(config=example_config, sessions=session_factory(engine), classify=classify,
                      detect_language=lambda text, hints: "en"), name


def stored_rows(deps: RouterDeps) -> dict:
    with deps.sessions() as s:
        return {
            "messages": [(m.id, m.conversation_id) for m in s.scalars(select(Message).order_by(Message.id))],
            "conversations": s.scalar(select(func.count()).select_from(Conversation)),
            "customers": s.scalar(select(func.count()).select_from(Customer)),
            "assignments": s.scalar(select(func.count()).select_from(Assignment)),
            "outbox": sorted(s.scalars(select(RouterOutbox.message_id))),
        }


def test_a_batch_routes_exactly_as_one_message_at_a_time(example_config) -> None:
    envelopes = interleaved(customers=4, per_customer=3)
    envelopes.insert(5, envelopes[1])  # a duplicate delivery inside the batch
    one_by_one, db1 = fresh_deps(example_config)
    batched, db2 = fresh_deps(example_config)
    try:
        singles = [handle_inbound(e, one_by_one) for e in envelopes]
        results = handle_inbound_batch(envelopes, batched)
        assert not [r for r in results if isinstance(r, Exception)]
        # The same events for every message (ids are derived from the inbound message), in order.
        assert [[(ev.type, ev.message_id) for ev in r] for r in results if not isinstance(r, Exception)] == \
            [[(ev.type, ev.message_id) for ev in r] for r in singles]
        assert stored_rows(batched) == stored_rows(one_by_one)
        rows = stored_rows(batched)
        assert rows["customers"] == rows["conversations"] == rows["assignments"] == 4
        assert len(rows["messages"]) == 12
        # A customer's first message opened the conversation; the later ones joined it, in order.
        opened = {ev.message_id for r in results if not isinstance(r, Exception) for ev in r
                  if ev.type == "conversation.opened"}
        assert len(opened) == 4

        again = handle_inbound_batch(envelopes, batched)  # the whole batch redelivered
        assert [[ev.message_id for ev in r] for r in again if not isinstance(r, Exception)] == \
            [[ev.message_id for ev in r] for r in results if not isinstance(r, Exception)]
        assert stored_rows(batched) == rows
    finally:
        for deps, name in ((one_by_one, db1), (batched, db2)):
            deps.sessions.kw["bind"].dispose()
            infra.drop_database(name)


def test_a_message_that_fails_in_its_batch_rolls_back_alone(example_config) -> None:
    def classify(text, subject, language, channel):
        if "boom" in text:
            raise RuntimeError("the classifier broke on this one")
        return fake_classify(text, subject, language, channel)

    deps, name = fresh_deps(example_config, classify)
    try:
        envelopes = [envelope(1, AT, user="a"), envelope(2, AT, user="b", text="boom"), envelope(3, AT, user="c"),
                     envelope(4, AT + timedelta(seconds=1), user="a", text="and the invoice?")]
        results = handle_inbound_batch(envelopes, deps)
        assert isinstance(results[1], RuntimeError)
        assert [r[0].type for r in results if not isinstance(r, Exception)] == \
            ["conversation.opened", "conversation.opened", "conversation.message"]
        with deps.sessions() as s:
            # Nothing of b's message is kept: not its customer, not its identity, not the message.
            assert s.scalar(select(func.count()).select_from(Identity).where(Identity.value == "b")) == 0
            assert {m for m in s.scalars(select(Message.id))} == {envelopes[i].message_id for i in (0, 2, 3)}
        assert count(deps.sessions, Conversation) == 2
        # Its retry, alone, once the classifier is well again, routes it as usual.
        [retried] = handle_inbound_batch([envelope(2, AT, user="b", text="boom fixed")], RouterDeps(
            config=deps.config, sessions=deps.sessions, classify=fake_classify, detect_language=deps.detect_language))
        assert isinstance(retried, list) and retried[0].type == "conversation.opened"
    finally:
        deps.sessions.kw["bind"].dispose()
        infra.drop_database(name)


def test_two_batching_routers_racing_on_the_same_customers(example_config, rabbit_url, pg_url) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    with connect(rabbit_url) as conn:
        declare(conn)
    customers, per_customer = 12, 5
    pub = Publisher(rabbit_url)
    # Interleaved and all queued first: each replica's batches hold messages of every customer.
    for k in range(per_customer):
        for c in range(customers):
            msg = InboundMessage(channel="telegram", external_id=f"1:{c}:{k}", sender=Sender("telegram", f"c{c}"),
                                 reply_to=f"c{c}", received_at=AT + timedelta(seconds=k), text="Where is my parcel?")
            env = Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="x",
                                occurred_at=AT)
            pub.publish(env)
            if k == 2 and c == 3:
                pub.publish(env)  # a duplicate from the gateway
    sessions = session_factory(engine)

    def settled() -> bool:
        with sessions() as s:
            stored = s.scalar(select(func.count()).select_from(Message))
        with connect(rabbit_url) as conn:
            waiting = conn.default_channel.queue_declare(queue="router.inbound", passive=True).message_count
        return stored == customers * per_customer and waiting == 0

    with router_replicas(example_config, rabbit_url, pg_url, classify=fake_classify, batched=True, batch_size=8):
        until(settled, timeout=120, interval=0.2, message="every message stored")
    assert_one_open_conversation_and_owner_each(sessions, customers)
    with sessions() as s:
        # Every customer message once, in its one conversation.
        assert s.scalar(select(func.count(func.distinct(Message.conversation_id)))) == customers
    assert count(sessions, Customer) == customers
    engine.dispose()


def test_a_batch_sees_its_own_openings_and_reopenings(example_config) -> None:
    """What a batch reads ahead (customers, open conversations, the roster) follows its own writes: a
    customer's resolved conversation reopened by one message is joined by their next message in the
    same batch, a new customer's second message joins the conversation their first opened, and the
    owners are those one message at a time gives (the roster's loads count the batch's assignments)."""
    one_by_one, db1 = fresh_deps(example_config)
    batched, db2 = fresh_deps(example_config)
    try:
        batch = [envelope(2, AT + timedelta(minutes=10), user="a", text="still no parcel"),
                 envelope(3, AT + timedelta(minutes=10), user="b"),
                 envelope(4, AT + timedelta(minutes=10), user="c", text="my parcel is late"),
                 envelope(5, AT + timedelta(minutes=11), user="a", text="order 48213"),
                 envelope(6, AT + timedelta(minutes=11), user="b", text="order 777")] + [
                 envelope(10 + k, AT + timedelta(minutes=12), user=f"n{k}") for k in range(6)]
        outcomes = []
        for deps, handle in ((one_by_one, lambda: [handle_inbound(e, one_by_one) for e in batch]),
                             (batched, lambda: handle_inbound_batch(batch, batched))):
            [first] = handle_inbound(envelope(1, AT, user="a"), deps)
            with deps.sessions.begin() as s:
                conv = s.get(Conversation, first.payload.conversation_id)
                resolve(s, example_config, conv, at=AT + timedelta(minutes=5), correlation_id="r")
            results = handle()
            assert not [r for r in results if isinstance(r, Exception)]
            outcomes.append([[(ev.type, ev.payload.conversation_id, ev.payload.owner_id) for ev in r] for r in results])
            reopened = results[0][0].payload
            assert reopened.conversation_id == first.payload.conversation_id and reopened.opening == 2
        assert outcomes[1] == outcomes[0]
        assert [[t for t, _, _ in r] for r in outcomes[1]] == \
            [["conversation.opened"]] * 3 + [["conversation.message"]] * 2 + [["conversation.opened"]] * 6
        assert len({owner for r in outcomes[1] for _, _, owner in r}) > 1  # the loads moved them on
        (_, conv_a, _), (_, conv_b, _) = outcomes[1][0][0], outcomes[1][1][0]
        assert outcomes[1][3][0][1] == conv_a and outcomes[1][4][0][1] == conv_b
        # The same rows (the resolution's own event has an id of its own in each database).
        assert {**stored_rows(batched), "outbox": None} == {**stored_rows(one_by_one), "outbox": None}
    finally:
        for deps, name in ((one_by_one, db1), (batched, db2)):
            deps.sessions.kw["bind"].dispose()
            infra.drop_database(name)


def test_a_customer_another_replica_opened_meanwhile_is_joined_when_the_batch_is_redone(example_config) -> None:
    """A batch writes its new rows at its commit: when another replica stored the same customer in the
    meantime, the commit fails on the identity's unique index and the batch is handled again, message
    by message. Nothing fails then: the customer's message joins the conversation the other replica
    opened, the others open theirs, and nobody has two customers or two open conversations."""
    raced: list[Envelope] = []

    def classify(text, subject, language, channel):
        if "race" in text and not raced:  # another replica takes customer "a" while this batch works
            raced.extend(handle_inbound(envelope(9, AT, user="a"), other))
        return fake_classify(text, subject, language, channel)

    deps, name = fresh_deps(example_config, classify)
    other = RouterDeps(config=deps.config, sessions=deps.sessions, classify=fake_classify,
                       detect_language=deps.detect_language)
    try:
        batch = [envelope(1, AT, user="b"), envelope(2, AT, user="a", text="a race, my parcel"), envelope(3, AT, user="c")]
        results = handle_inbound_batch(batch, deps)
        assert not [r for r in results if isinstance(r, Exception)], results
        [opened_elsewhere] = raced
        assert [r[0].type for r in results] == ["conversation.opened", "conversation.message", "conversation.opened"]
        assert results[1][0].payload.conversation_id == opened_elsewhere.payload.conversation_id
        assert count(deps.sessions, Customer) == 3 and count(deps.sessions, Conversation) == 3
        assert count(deps.sessions, Message) == 4
        assert_one_open_conversation_and_owner_each(deps.sessions, 3)
    finally:
        deps.sessions.kw["bind"].dispose()
        infra.drop_database(name)


def test_a_burst_in_one_batch_notifies_the_owner_as_one_message_at_a_time_would(example_config) -> None:
    """A batch claims its senders' flood buckets together and changes them in memory until its
    commit: a sender's burst inside one batch still tells the owner only of the first `notice_burst`
    messages, and a next batch continues from what the first left."""
    one_by_one, db1 = fresh_deps(example_config)
    batched, db2 = fresh_deps(example_config)
    try:
        first = [envelope(1, AT, user="a"), envelope(2, AT, user="b")]
        burst = [envelope(10 + k, AT + timedelta(seconds=1 + k), user="a" if k % 3 else "b", text=f"line {k}")
                 for k in range(12)]
        later = [envelope(40 + k, AT + timedelta(minutes=3, seconds=k), user="a", text=f"later {k}") for k in range(3)]
        singles = [handle_inbound(e, one_by_one) for e in first + burst + later]
        results = [r for b in (first, burst, later) for r in handle_inbound_batch(b, batched)]
        assert not [r for r in results if isinstance(r, Exception)]
        assert [[ev.message_id for ev in r] for r in results] == [[ev.message_id for ev in r] for r in singles]
        assert example_config.limits.notice_burst == 5
        # Eight lines of a's: five told, then silence; four of b's: all told.
        assert sum(1 for r in results[2:14] if r) == 5 + 4
    finally:
        for deps, name in ((one_by_one, db1), (batched, db2)):
            deps.sessions.kw["bind"].dispose()
            infra.drop_database(name)


def test_a_sender_joining_before_and_after_a_failing_message_takes_turns_on_one_bucket(example_config) -> None:
    """Redone message by message, a batch whose poison message falls between two messages of one
    sender: the second claims the sender's bucket again after the rollback and sees what the first
    took, as one message at a time would."""
    def classify(text, subject, language, channel):
        if "boom" in text:
            raise RuntimeError("the classifier broke on this one")
        return fake_classify(text, subject, language, channel)

    one_by_one, db1 = fresh_deps(example_config, classify)
    batched, db2 = fresh_deps(example_config, classify)
    try:
        first = [envelope(1, AT, user="a")]
        batch = [envelope(10 + k, AT + timedelta(seconds=1 + k), user="a", text=f"line {k}") for k in range(4)] + [
            envelope(20, AT + timedelta(seconds=6), user="b", text="boom")] + [
            envelope(30 + k, AT + timedelta(seconds=7 + k), user="a", text=f"more {k}") for k in range(4)]
        singles = []
        for e in first + batch:
            try:
                singles.append([ev.message_id for ev in handle_inbound(e, one_by_one)])
            except RuntimeError:
                singles.append("failed")
        handle_inbound_batch(first, batched)
        results = handle_inbound_batch(batch, batched)
        assert ["failed" if isinstance(r, Exception) else [ev.message_id for ev in r] for r in results] == singles[1:]
        assert sum(1 for r in results if not isinstance(r, Exception) and r) == example_config.limits.notice_burst
    finally:
        for deps, name in ((one_by_one, db1), (batched, db2)):
            deps.sessions.kw["bind"].dispose()
            infra.drop_database(name)
