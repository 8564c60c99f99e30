"""The gateway's publisher: webhooks answered on several threads share one confirm channel, and
whichever finds it free sends what the others queued meanwhile (shared/bus/publisher.py). Each
caller still returns only once its own message is confirmed, or raises BusUnavailable (the gateway
then spools it): nothing is lost, and nobody waits forever."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from shared.bus.publisher import BusUnavailable, Publisher, connect
from shared.bus.topology import EVENTS, ROUTER_INBOUND, declare
from shared.contracts import encode
from tests.integration.test_bus import count, drain, inbound_envelope

pytestmark = pytest.mark.integration

THREADS, EACH = 8, 40


def publish_from_threads(pub: Publisher, base: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def webhook_thread(k: int) -> None:
        for i in range(EACH):
            env = inbound_envelope(base + k * EACH + i)
            try:
                pub.publish_raw(encode(env), exchange=EVENTS, routing_key=env.type, message_id=env.message_id,
                                correlation_id=env.correlation_id)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=webhook_thread, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a publishing thread never returned"
    return errors


def connections(url: str) -> int:
    vhost = url.rsplit("/", 1)[1]
    out = subprocess.run(["rabbitmqctl", "list_connections", "-q", "vhost", "--formatter", "json"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for c in json.loads(out or "[]") if c.get("vhost") == vhost)


def test_every_thread_returns_once_its_message_is_confirmed_on_one_connection(rabbit_url: str) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url, shared_confirms=True)
    assert publish_from_threads(pub, 1000) == []
    # Returned means confirmed: every message is in the queue already, once.
    assert count(rabbit_url, ROUTER_INBOUND.name) == THREADS * EACH
    assert connections(rabbit_url) == 1  # eight webhook threads, one connection to the broker
    pub.close()
    ids = [m.properties["message_id"] for m in drain(rabbit_url, ROUTER_INBOUND.name)]
    assert len(ids) == len(set(ids)) == THREADS * EACH


def test_with_the_broker_away_every_thread_is_told_and_none_hangs() -> None:
    pub = Publisher("amqp://guest:guest@127.0.0.1:1/", shared_confirms=True)
    errors = publish_from_threads(pub, 5000)
    assert len(errors) == THREADS * EACH
    assert all(isinstance(e, BusUnavailable) for e in errors)


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="Linux only")
def test_a_batch_leaves_its_connection_uncorked(rabbit_url: str) -> None:
    """A batch is sent corked (in full TCP segments, not one per message), and uncorked at its end:
    a socket left corked would hold the next lone publish back for the kernel's 200 ms."""
    with connect(rabbit_url) as conn:
        declare(conn)
    pub = Publisher(rabbit_url)
    pub.publish_many([inbound_envelope(7000 + i) for i in range(20)])
    sock = pub._local.batch.conn.connection.transport.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    assert count(rabbit_url, ROUTER_INBOUND.name) == 20
    pub.close()
