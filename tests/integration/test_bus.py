"""The bus against the real RabbitMQ: topology, confirms, ack-after-handler, retries, dead letters."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import UTC, datetime

import pytest
from kombu import Connection, Queue

from shared.bus.consumer import ATTEMPTS_HEADER, ERROR_HEADER, Worker
from shared.bus.publisher import BusUnavailable, Publisher, connect
from shared.bus.topology import DELIVERY_LIMIT, EVENTS, PLUMBING, QUEUES, ROUTER_INBOUND, declare
from shared.contracts import ConversationOpened, Envelope, Identity, InboundMessage, derive_id
from tests.support.wait import until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)


def inbound_envelope(n: int) -> Envelope:
    msg = InboundMessage(channel="telegram", external_id=f"1:{n}", sender=Identity("telegram", "42"), reply_to="42",
                         received_at=AT, text=f"message {n}")
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=f"corr-{n}",
                         occurred_at=AT)


def queue_info(url: str) -> dict[str, dict]:
    vhost = url.rsplit("/", 1)[1]
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "type", "arguments", "messages",
                          "--formatter", "json"], capture_output=True, text=True, check=True).stdout
    return {q["name"]: q for q in json.loads(out)}


def count(url: str, queue_name: str) -> int:
    with Connection(url) as conn:
        return conn.default_channel.queue_declare(queue=queue_name, passive=True).message_count


def drain(url: str, queue_name: str) -> list:
    got = []
    with Connection(url) as conn:
        q = Queue(queue_name, exchange=PLUMBING, routing_key=queue_name, no_declare=True)
        with conn.SimpleQueue(q) as sq:
            while True:
                try:
                    m = sq.get(timeout=0.5)
                except Exception:  # noqa: BLE001 - kombu's Empty
                    return got
                got.append(m)
                m.ack()


def test_declare_is_idempotent_and_uses_quorum_queues(rabbit_url: str) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
        declare(conn)  # twice is harmless
    info = queue_info(rabbit_url)
    for spec in QUEUES.values():
        assert info[spec.name]["type"] == "quorum"
        raw = info[spec.name]["arguments"]  # rabbitmqctl gives [name, type, value] triples
        args = raw if isinstance(raw, dict) else {a[0]: a[-1] for a in raw}
        assert int(args["x-delivery-limit"]) == DELIVERY_LIMIT
        assert args["x-dead-letter-routing-key"] == spec.dlq
        assert info[spec.dlq]["type"] == "quorum"
        assert spec.retry in info


def test_confirmed_publish_lands_in_the_bound_queue(rabbit_url: str) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url)
    pub.publish(inbound_envelope(1))
    until(lambda: count(rabbit_url, "router.inbound") == 1, message="message in router.inbound")
    assert count(rabbit_url, "notifier.events") == 0


def test_publish_to_a_dead_broker_raises_bus_unavailable() -> None:
    pub = Publisher("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(BusUnavailable):
        pub.publish(inbound_envelope(1))


def run_worker(url: str, handler, **kw) -> tuple[Worker, threading.Event, threading.Thread]:
    stop = threading.Event()
    worker = Worker(url=url, spec=ROUTER_INBOUND, handler=handler, publisher=Publisher(url), **kw)
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    assert worker.ready.wait(15)
    return worker, stop, t


def test_handler_events_are_published_then_the_message_acked(rabbit_url: str) -> None:
    seen = []

    def handler(env: Envelope) -> list[Envelope]:
        seen.append(env)
        ev = ConversationOpened(
            conversation_id="c", opening=1, reference="SB-X", customer_id="u", customer_name=None, channel="telegram",
            reply_to="42", language="en", category="other", owner_id=None, owner_name=None, assignment_reason="r",
            received_at=AT, promise_due=AT, inbound_message_id=env.message_id, acknowledge=True)
        return [Envelope.wrap(ev, message_id="e-" + env.message_id, correlation_id=env.correlation_id,
                              occurred_at=AT)]

    _, stop, t = run_worker(rabbit_url, handler)
    try:
        Publisher(rabbit_url).publish(inbound_envelope(7))
        until(lambda: count(rabbit_url, "notifier.events") == 1, message="event published")
        assert [e.correlation_id for e in seen] == ["corr-7"]
        assert count(rabbit_url, "router.inbound") == 0  # acked
    finally:
        stop.set()
        t.join(10)


def test_failing_handler_is_retried_then_dead_lettered_with_its_error(rabbit_url: str) -> None:
    calls = []

    def handler(env: Envelope) -> list[Envelope]:
        calls.append(env.message_id)
        raise RuntimeError("database is on fire")

    _, stop, t = run_worker(rabbit_url, handler, max_attempts=3)
    try:
        Publisher(rabbit_url).publish(inbound_envelope(8))
        until(lambda: count(rabbit_url, "router.inbound.dlq") == 1, timeout=30,
              message="message dead-lettered")
    finally:
        stop.set()
        t.join(10)
    assert len(calls) == 3  # the first try and two retries through router.inbound.retry
    [dead] = drain(rabbit_url, "router.inbound.dlq")
    assert dead.headers[ATTEMPTS_HEADER] == 3
    assert "database is on fire" in dead.headers[ERROR_HEADER]
    assert dead.payload["message_id"] == inbound_envelope(8).message_id  # the original, intact


def test_handler_that_recovers_processes_the_message_once(rabbit_url: str) -> None:
    calls = []

    def handler(env: Envelope) -> list[Envelope]:
        calls.append(env.message_id)
        if len(calls) == 1:
            raise ConnectionError("transient")
        return []

    _, stop, t = run_worker(rabbit_url, handler)
    try:
        Publisher(rabbit_url).publish(inbound_envelope(9))
        until(lambda: len(calls) == 2, timeout=15, message="second attempt")
        until(lambda: count(rabbit_url, "router.inbound") == 0, message="acked")
    finally:
        stop.set()
        t.join(10)
    assert count(rabbit_url, "router.inbound.dlq") == 0


@pytest.mark.parametrize("body, content_type, problem", [
    ({"type": "inbound.message", "version": 1, "payload": {}}, None, "contract"),
    (b"\x00\x01 not json", "application/octet-stream", "decode"),
])
def test_poison_goes_straight_to_the_dead_letter_queue(rabbit_url: str, body, content_type, problem) -> None:
    calls = []
    _, stop, t = run_worker(rabbit_url, lambda env: calls.append(env) or [])
    try:
        Publisher(rabbit_url).publish_raw(body, exchange=EVENTS, routing_key="inbound.message",
                                          content_type=content_type)
        until(lambda: count(rabbit_url, "router.inbound.dlq") == 1, message="poison dead-lettered")
    finally:
        stop.set()
        t.join(10)
    assert calls == []
    [dead] = drain(rabbit_url, "router.inbound.dlq")
    assert problem in dead.headers[ERROR_HEADER]
