"""The bus against the real RabbitMQ: topology, confirms, ack-after-handler, retries, dead letters."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from kombu import Connection, Queue

from services.notifier.senders import TransientSendError
from shared.bus.consumer import ATTEMPTS_HEADER, ERROR_HEADER, Worker
from shared.bus.publisher import BusUnavailable, Publisher, connect
from shared.bus.topology import (
    DELIVERY_LIMIT,
    EVENTS,
    PLUMBING,
    QUEUES,
    RETRY_TIERS,
    ROUTER_INBOUND,
    declare,
    retry_queue,
)
from shared.contracts import ConversationOpened, Envelope, Identity, InboundMessage, derive_id
from tests.support.wait import until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)
#: Seconds a retry tier may let a message out before this process's clock says its TTL is over:
#: RabbitMQ expires a queue's messages by the broker's own clock and timer (CI saw 3 ms early on a
#: 1 s tier and 41 ms on a 5 s tier). Not a shorter wait: a tenth of the shortest tier at most.
BROKER_TTL_SLACK = 0.1


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
        # No classic queue any more: one would be lost with its node, and could not even be
        # declared while that node is down (the services would not start on the survivors).
        assert spec.retry not in info
        assert not {spec.legacy_retry_tier(t) for t in RETRY_TIERS} & set(info)
        for tier in RETRY_TIERS:
            held = info[spec.retry_tier(tier)]
            # A retry waiting out its delay survives a node's loss, and its way back to Q too.
            assert held["type"] == "quorum"
            args = arguments(held)
            assert int(args["x-message-ttl"]) == tier * 1000
            assert args["x-dead-letter-routing-key"] == spec.name
            assert args["x-dead-letter-strategy"] == "at-least-once"
    assert {q["type"] for q in info.values()} == {"quorum"}


def arguments(queue: dict) -> dict:
    raw = queue["arguments"]  # rabbitmqctl gives [name, type, value] triples
    return raw if isinstance(raw, dict) else {a[0]: a[-1] for a in raw}


def test_confirmed_publish_lands_in_the_bound_queue(rabbit_url: str) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url)
    pub.publish(inbound_envelope(1))
    until(lambda: count(rabbit_url, "router.inbound") == 1, message="message in router.inbound")
    assert count(rabbit_url, "notifier.events") == 0


def test_a_batch_publish_carries_what_a_lone_publish_does(rabbit_url: str) -> None:
    """A batch goes to py-amqp without kombu's producer: a consumer must not tell its messages apart."""
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url)
    pub.publish(inbound_envelope(1))
    pub.publish_many([inbound_envelope(2), inbound_envelope(3)])
    got = drain(rabbit_url, "router.inbound")
    assert [m.payload["payload"]["text"] for m in got] == ["message 1", "message 2", "message 3"]

    def seen(m) -> dict:
        return {k: v for k, v in m.properties.items() if k not in ("message_id", "correlation_id")} | {
            "content_type": m.content_type, "content_encoding": m.content_encoding, "headers": m.headers}

    assert seen(got[1]) == seen(got[2]) == seen(got[0])
    assert [m.properties["message_id"] for m in got] == [inbound_envelope(n).message_id for n in (1, 2, 3)]
    assert [m.properties["correlation_id"] for m in got] == ["corr-1", "corr-2", "corr-3"]
    assert got[1].properties["delivery_mode"] == 2  # persistent, as every publish


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
    assert len(calls) == 3  # the first try and two retries through router.inbound's retry tiers
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


def test_a_long_wait_does_not_hold_back_a_short_one(rabbit_url: str) -> None:
    # "slow" has failed many times already: its next backoff is minutes. "quick" fails for the
    # first time right after it: its backoff is about a second. With one holding queue and
    # per-message TTLs, quick waited behind slow until slow expired.
    failed: dict[str, list[float]] = {"slow": [], "quick": []}

    def handler(env: Envelope) -> list[Envelope]:
        which = "slow" if env.correlation_id == "corr-20" else "quick"
        failed[which].append(time.monotonic())
        raise ConnectionError("provider is down")

    _, stop, t = run_worker(rabbit_url, handler, max_attempts=20)
    try:
        pub = Publisher(rabbit_url)
        pub.publish(inbound_envelope(20), headers={ATTEMPTS_HEADER: 9})  # next backoff 150..300 s
        until(lambda: failed["slow"], message="the slow one failed")
        pub.publish(inbound_envelope(21))
        until(lambda: len(failed["quick"]) >= 2, timeout=20, message="the quick one retried")
    finally:
        stop.set()
        t.join(10)
    first, second = failed["quick"][:2]
    assert 1.0 - BROKER_TTL_SLACK <= second - first < 1.0 + 4  # a first retry always waits in the 1 s tier
    assert len(failed["slow"]) == 1  # still waiting in its own tier, behind nobody and holding back nobody
    assert count(rabbit_url, ROUTER_INBOUND.retry_tier(120)) + count(rabbit_url, ROUTER_INBOUND.retry_tier(300)) == 1


def test_a_provider_retry_after_is_honoured(rabbit_url: str) -> None:
    tries: list[float] = []

    def handler(env: Envelope) -> list[Envelope]:
        tries.append(time.monotonic())
        if len(tries) == 1:
            # What the Telegram sender raises on flood control (RetryAfter) or a 429 Retry-After.
            raise TransientSendError("telegram flood control: retry after 5s", retry_after=5)
        return []

    _, stop, t = run_worker(rabbit_url, handler)
    try:
        Publisher(rabbit_url).publish(inbound_envelope(22))
        until(lambda: len(tries) == 2, timeout=20, message="the retry after retry_after")
        until(lambda: count(rabbit_url, "router.inbound") == 0, message="acked")
    finally:
        stop.set()
        t.join(10)
    waited = tries[1] - tries[0]
    assert 5.0 - BROKER_TTL_SLACK <= waited < 5.0 + 4  # not before the provider allows, nor a backoff tier later
    assert count(rabbit_url, "router.inbound.dlq") == 0


def test_a_message_left_in_the_legacy_retry_queue_still_comes_back(rabbit_url: str) -> None:
    # A broker upgraded with messages waiting in Q.retry (per-message TTL): they must not be stranded,
    # although Q.retry is no longer declared: its own arguments bring them back.
    with connect(rabbit_url) as conn:
        retry_queue(ROUTER_INBOUND)(conn.default_channel).declare()
        declare(conn)
    Publisher(rabbit_url).publish(inbound_envelope(23), exchange=PLUMBING, routing_key=ROUTER_INBOUND.retry,
                                  headers={ATTEMPTS_HEADER: 1}, expiration=0.5)
    seen: list[str] = []
    _, stop, t = run_worker(rabbit_url, lambda env: seen.append(env.correlation_id) or [])
    try:
        until(lambda: seen == ["corr-23"], timeout=15, message="the legacy retry delivered")
    finally:
        stop.set()
        t.join(10)


def test_in_memory_a_retry_goes_straight_back_to_the_queue() -> None:
    # The embedded mode's transport has no TTLs or dead-lettering, so no tiers: a retry (even one
    # asking for retry_after) is republished to Q itself.
    url = "memory://"
    tries: list[str] = []

    def handler(env: Envelope) -> list[Envelope]:
        tries.append(env.correlation_id)
        if len(tries) == 1:
            raise TransientSendError("429", retry_after=60)
        return []

    _, stop, t = run_worker(url, handler)
    try:
        Publisher(url).publish(inbound_envelope(24))
        until(lambda: tries == ["corr-24", "corr-24"], timeout=10, message="retried in memory")
    finally:
        stop.set()
        t.join(10)
