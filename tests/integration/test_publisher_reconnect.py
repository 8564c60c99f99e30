"""A publisher whose kept connection died while idle (the broker restarted, a proxy cut it) publishes
the next message on a fresh connection instead of reporting the broker unavailable; and the test
proxy itself keeps idle connections open."""

from __future__ import annotations

import time

import pytest

from shared.bus.publisher import Publisher, connect
from shared.bus.topology import ROUTER_INBOUND, declare
from tests.integration.test_bus import count, inbound_envelope
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxied(rabbit_url):
    proxy = TcpProxy("127.0.0.1", 5672)
    vhost = rabbit_url.rsplit("/", 1)[1]
    yield proxy, f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    proxy.close()


@pytest.mark.parametrize("shared_confirms", [False, True])
def test_publish_after_a_broker_blip_is_confirmed_not_refused(proxied, rabbit_url, shared_confirms) -> None:
    proxy, url = proxied
    with connect(rabbit_url) as conn:
        declare(conn)
    publisher = Publisher(url, confirm_timeout=5, shared_confirms=shared_confirms)
    publisher.publish(inbound_envelope(1))
    proxy.cut()  # the kept connection dies, as in a broker restart
    proxy.restore()
    publisher.publish(inbound_envelope(2))  # raised BusUnavailable before: the gateway spooled it
    publisher.close()
    assert count(rabbit_url, ROUTER_INBOUND.name) == 2


def test_proxy_keeps_an_idle_connection(proxied, rabbit_url) -> None:
    proxy, url = proxied
    with connect(rabbit_url) as conn:
        declare(conn)
    with connect(url) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        time.sleep(6)  # longer than the proxy's connect timeout, which used to cut idle connections
        assert channel.queue_declare(queue=ROUTER_INBOUND.name, passive=True).message_count == 0
