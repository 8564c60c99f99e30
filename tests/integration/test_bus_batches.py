"""Micro-batches against the real RabbitMQ: a batch is one unit of work, its events are published
with their confirms awaited together, its deliveries acked with one multiple ack; a poison message
or a failing message is set apart alone and the others are handled once."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import amqp
import pytest

from shared.bus.consumer import ATTEMPTS_HEADER, ERROR_HEADER, Worker
from shared.bus.publisher import BusUnavailable, Publisher, connect
from shared.bus.topology import EVENTS, ROUTER_INBOUND, declare
from shared.contracts import ConversationOpened, Envelope, derive_id
from tests.integration.test_bus import AT, count, drain, inbound_envelope
from tests.support.wait import until

pytestmark = pytest.mark.integration

N = 12


def event_for(env: Envelope) -> Envelope:
    ev = ConversationOpened(
        conversation_id="c-" + env.message_id, opening=1, reference="SB-X", customer_id="u", customer_name=None,
        channel="telegram", reply_to="42", language="en", category="other", owner_id=None, owner_name=None,
        assignment_reason="r", received_at=AT, promise_due=AT, inbound_message_id=env.message_id, acknowledge=True)
    return Envelope.wrap(ev, message_id=derive_id("event", ev.TYPE, env.message_id),
                         correlation_id=env.correlation_id, occurred_at=AT)


class Store:
    """A batch handler over a stand-in for the database: a batch's writes are kept only when the
    whole call returns (its commit), and a message already stored returns its stored events."""

    def __init__(self, fails: Callable | None = None):
        self.kept: Counter[str] = Counter()  # message id → times its effects were committed
        self.batches: list[list[str]] = []
        self.fails = fails or (lambda env, batch: None)
        self.lock = threading.Lock()

    def __call__(self, envelopes: Sequence[Envelope]) -> list[list[Envelope] | Exception]:
        ids = [e.message_id for e in envelopes]
        with self.lock:
            self.batches.append(ids)
        results: list[list[Envelope] | Exception] = []
        writes = []
        for env in envelopes:
            problem = self.fails(env, ids)
            if problem == "raise":
                raise RuntimeError(f"the batch broke on {env.correlation_id}")  # nothing of it is kept
            if isinstance(problem, Exception):
                results.append(problem)  # this message alone rolled back (its savepoint)
                continue
            if env.message_id not in self.kept:
                writes.append(env.message_id)
            results.append([event_for(env)])
        with self.lock:  # the commit
            self.kept.update(writes)
        return results


def start(url: str, handler, *, publisher: Publisher | None = None, **kw) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    worker = Worker(url=url, spec=ROUTER_INBOUND, batch_handler=handler, publisher=publisher or Publisher(url),
                    batch_size=kw.pop("batch_size", 32), batch_wait=kw.pop("batch_wait", 0.5), **kw)
    # Under a loaded machine a delivery may come a little later than the next: the tests' batches
    # wait longer for it, so that a batch is what was queued.
    worker.batch_poll = 0.2
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    assert worker.ready.wait(15)
    return stop, t


def queued(url: str, n: int, *, poison_at: int | None = None) -> list[Envelope]:
    """n messages waiting in router.inbound before any consumer is there, so one batch can take them all."""
    with connect(url) as conn:
        declare(conn)
    pub = Publisher(url)
    envelopes = []
    for i in range(n):
        if i == poison_at:
            pub.publish_raw({"type": "inbound.message", "version": 1, "payload": {}}, exchange=EVENTS,
                            routing_key="inbound.message")
        else:
            env = inbound_envelope(100 + i)
            pub.publish(env)
            envelopes.append(env)
    until(lambda: count(url, "router.inbound") == n, message="all queued")
    return envelopes


def unacked(url: str, queue: str) -> int:
    vhost = url.rsplit("/", 1)[1]
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages_unacknowledged",
                          "--formatter", "json"], capture_output=True, text=True, check=True).stdout
    return next(int(q["messages_unacknowledged"]) for q in json.loads(out) if q["name"] == queue)


def events_in(url: str) -> Counter[str]:
    return Counter(m.properties["message_id"] for m in drain(url, "notifier.events"))


def stop_worker(stop: threading.Event, t: threading.Thread) -> None:
    stop.set()
    t.join(10)


def test_a_batch_is_handled_once_published_together_and_acked_with_one_multiple_ack(
        rabbit_url: str, monkeypatch) -> None:
    acks: list[tuple[int, bool]] = []
    real_ack = amqp.Channel.basic_ack

    def spy(self, delivery_tag, multiple=False, *a, **kw):
        acks.append((delivery_tag, multiple))
        return real_ack(self, delivery_tag, multiple, *a, **kw)

    monkeypatch.setattr(amqp.Channel, "basic_ack", spy)
    envelopes = queued(rabbit_url, N)
    store = Store()
    stop, t = start(rabbit_url, store)
    try:
        until(lambda: sum(store.kept.values()) == N, message="the batch handled")
        until(lambda: count(rabbit_url, "router.inbound") == 0 and unacked(rabbit_url, "router.inbound") == 0,
              message="nothing left ready or unacked")
    finally:
        stop_worker(stop, t)
    assert store.batches == [[e.message_id for e in envelopes]]  # one batch, in delivery order
    assert acks == [(N, True)]  # one basic.ack for the twelve deliveries
    assert events_in(rabbit_url) == Counter(event_for(e).message_id for e in envelopes)


def test_a_poison_message_goes_to_the_dlq_alone_and_the_others_are_handled_once(rabbit_url: str) -> None:
    envelopes = queued(rabbit_url, N, poison_at=5)
    store = Store()
    stop, t = start(rabbit_url, store)
    try:
        until(lambda: count(rabbit_url, "router.inbound.dlq") == 1, message="poison dead-lettered")
        until(lambda: sum(store.kept.values()) == N - 1, message="the others handled")
        until(lambda: count(rabbit_url, "router.inbound") == 0 and unacked(rabbit_url, "router.inbound") == 0,
              message="all settled")
    finally:
        stop_worker(stop, t)
    assert store.kept == Counter(e.message_id for e in envelopes)  # each of the N-1 exactly once
    assert len(store.batches) == 1
    [dead] = drain(rabbit_url, "router.inbound.dlq")
    assert "contract" in dead.headers[ERROR_HEADER]
    assert events_in(rabbit_url) == Counter(event_for(e).message_id for e in envelopes)


@pytest.mark.parametrize("how", ["the message fails alone", "the whole batch raises"])
def test_a_failing_message_alone_is_retried_and_the_others_are_handled_once(rabbit_url: str, how: str) -> None:
    envelopes = queued(rabbit_url, N)
    bad = envelopes[7]
    seen_bad: list[int] = []

    def fails(env: Envelope, batch: list[str]):
        if env.message_id != bad.message_id:
            return None
        seen_bad.append(len(batch))
        if how == "the message fails alone":
            return ConnectionError("the provider is down") if len(seen_bad) == 1 else None
        # Raises the batch it is in, until it was tried alone once (and went to its retry tier).
        return "raise" if seen_bad.count(1) < 2 else None

    store = Store(fails)
    stop, t = start(rabbit_url, store)
    try:
        until(lambda: store.kept[bad.message_id] == 1, timeout=30, message="the failing message retried and handled")
        until(lambda: count(rabbit_url, "router.inbound") == 0 and unacked(rabbit_url, "router.inbound") == 0,
              message="all settled")
    finally:
        stop_worker(stop, t)
    assert store.kept == Counter(e.message_id for e in envelopes)  # every message's effects exactly once
    assert count(rabbit_url, "router.inbound.dlq") == 0
    # It came back through the retry tier, alone, after the others were done.
    assert store.batches[-1] == [bad.message_id]
    assert events_in(rabbit_url) == Counter(event_for(e).message_id for e in envelopes)
    if how == "the whole batch raises":
        # Split in halves down to the one message (the others' halves handled on the way), then its retry.
        assert seen_bad == [N, 6, 3, 2, 1, 1]
    else:
        assert seen_bad == [N, 1]


def test_a_failing_message_that_keeps_failing_ends_in_the_dlq_alone(rabbit_url: str) -> None:
    envelopes = queued(rabbit_url, 6)
    bad = envelopes[2]
    store = Store(lambda env, batch: ValueError("no such thing") if env.message_id == bad.message_id else None)
    stop, t = start(rabbit_url, store, max_attempts=2)
    try:
        until(lambda: count(rabbit_url, "router.inbound.dlq") == 1, timeout=30, message="dead-lettered")
    finally:
        stop_worker(stop, t)
    assert store.kept == Counter(e.message_id for e in envelopes if e is not bad)
    [dead] = drain(rabbit_url, "router.inbound.dlq")
    assert dead.properties["message_id"] == bad.message_id
    assert dead.headers[ATTEMPTS_HEADER] == 2
    assert "no such thing" in dead.headers[ERROR_HEADER]


class DiesOnce(Publisher):
    """A worker that dies between its commit and its publish (the publish_many never happens):
    the whole batch stays unacked."""

    def __init__(self, url: str):
        super().__init__(url)
        self.died = False

    def publish_many(self, envelopes: Sequence[Envelope]) -> None:
        if not self.died:
            self.died = True
            # Half of the events made it out before the end: the redelivery publishes them again.
            super().publish_many(envelopes[: len(envelopes) // 2])
            raise BusUnavailable("the process died here")
        super().publish_many(envelopes)


def test_a_batch_cut_off_after_its_commit_is_redelivered_and_changes_nothing_twice(rabbit_url: str) -> None:
    envelopes = queued(rabbit_url, N)
    store = Store()
    stop, t = start(rabbit_url, store, publisher=DiesOnce(rabbit_url))
    try:
        until(lambda: len(store.batches) >= 2 and count(rabbit_url, "router.inbound") == 0
              and unacked(rabbit_url, "router.inbound") == 0, timeout=30, message="redelivered and settled")
    finally:
        stop_worker(stop, t)
    ids = [e.message_id for e in envelopes]
    assert store.batches[:2] == [ids, ids]  # the whole batch again, after the reconnect
    assert store.kept == Counter(ids)  # committed once: the redelivery found them stored
    events = events_in(rabbit_url)
    # Every event is there; the six published before the cut twice, which the consumers dedupe by id.
    assert set(events) == {event_for(e).message_id for e in envelopes}
    assert sum(events.values()) == N + N // 2


def test_publish_many_waits_for_every_confirm(rabbit_url: str) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url)
    envelopes = [event_for(inbound_envelope(200 + i)) for i in range(100)]
    pub.publish_many(envelopes)
    # Confirmed means in the queue: no wait needed.
    assert count(rabbit_url, "notifier.events") == 100
    pub.publish_many(envelopes[:3])  # the same channel again, its delivery tags going on
    assert count(rabbit_url, "notifier.events") == 103
    pub.close()


def test_publish_many_to_a_dead_broker_raises_bus_unavailable() -> None:
    with pytest.raises(BusUnavailable):
        Publisher("amqp://guest:guest@127.0.0.1:1/").publish_many([inbound_envelope(1), inbound_envelope(2)])


def test_one_worker_in_several_threads_keeps_each_channels_batches_apart(rabbit_url: str) -> None:
    # A service runs one Worker in several consumer threads, each on its own connection: a delivery
    # tag means something only on its own channel, so no thread may gather or ack another's.
    envelopes = queued(rabbit_url, 90)
    store = Store()
    stop = threading.Event()
    worker = Worker(url=rabbit_url, spec=ROUTER_INBOUND, batch_handler=store, publisher=Publisher(rabbit_url),
                    batch_size=8, batch_wait=0.05)
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        until(lambda: count(rabbit_url, "router.inbound") == 0 and unacked(rabbit_url, "router.inbound") == 0
              and sum(store.kept.values()) == 90, timeout=60, message="all handled and acked")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert store.kept == Counter(e.message_id for e in envelopes)
    # Each delivered once: no channel was closed by an ack of a tag it never gave (which redelivers).
    handled = Counter(i for batch in store.batches for i in batch)
    assert handled == Counter(e.message_id for e in envelopes)
    assert events_in(rabbit_url) == Counter(event_for(e).message_id for e in envelopes)
