"""The gateway with the broker gone: accepted messages are spooled on disk, then forwarded in
order when the broker is back — nothing accepted is lost."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kombu import Connection

from services.gateway.intake import Intake
from services.gateway.spool import Spool
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import ROUTER_INBOUND, declare, work_queue
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)


def env(n: int) -> Envelope:
    msg = InboundMessage(channel="telegram", external_id=f"1:{n}", sender=Identity("telegram", "42"), reply_to="42",
                         received_at=AT, text=f"message {n}")
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="c", occurred_at=AT)


def queued_texts(url: str) -> list[str]:
    out = []
    with Connection(url) as conn, conn.SimpleQueue(work_queue(ROUTER_INBOUND, rabbit=True), no_ack=False) as q:
        while True:
            try:
                m = q.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - Empty
                return out
            out.append(m.payload["payload"]["text"])
            m.ack()


@pytest.fixture
def proxied(rabbit_url):
    with connect(rabbit_url) as conn:
        declare(conn)
    proxy = TcpProxy("127.0.0.1", 5672)
    vhost = rabbit_url.rsplit("/", 1)[1]
    yield proxy, f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    proxy.close()


def test_broker_down_spools_then_forwards_in_order(proxied, rabbit_url, tmp_path) -> None:
    proxy, url = proxied
    intake = Intake(Publisher(url, confirm_timeout=2), Spool(tmp_path / "spool.sqlite"))
    assert intake.accept(env(1)) == "published"
    proxy.cut()
    assert intake.accept(env(2)) == "spooled"
    proxy.restore()
    # Still spooled behind message 2 even though the broker is back: arrival order is kept.
    assert intake.accept(env(3)) == "spooled"
    assert intake.spool.pending == 2
    assert intake.forwarder.drain_once() == 2
    assert intake.spool.pending == 0
    assert intake.accept(env(4)) == "published"
    assert queued_texts(rabbit_url) == ["message 1", "message 2", "message 3", "message 4"]


def test_spool_survives_a_restart_of_the_gateway(proxied, rabbit_url, tmp_path) -> None:
    proxy, url = proxied
    proxy.cut()
    first = Intake(Publisher(url, confirm_timeout=2), Spool(tmp_path / "spool.sqlite"))
    assert first.accept(env(5)) == "spooled"
    first.spool.close()  # the gateway process dies
    proxy.restore()
    second = Intake(Publisher(url), Spool(tmp_path / "spool.sqlite"))
    assert second.spool.pending == 1
    assert second.forwarder.drain_once() == 1
    assert queued_texts(rabbit_url) == ["message 5"]


def test_a_spooled_message_keeps_the_arrival_the_gateway_stamped(proxied, rabbit_url, tmp_path) -> None:
    """Arrival is stamped once, when the gateway accepted the webhook: a message that waited in the
    spool through a broker outage reaches the router with that time, and Telegram's own date
    beside it — the promise is counted from when the customer reached us."""
    import json

    from services.gateway.channels import RawRequest
    from services.gateway.channels.telegram import TelegramAdapter

    proxy, url = proxied
    update = {"update_id": 804299001, "message": {
        "message_id": 5, "date": 1795020900, "text": "Where is my parcel?",  # two days before AT
        "from": {"id": 42, "is_bot": False, "first_name": "Olena"}, "chat": {"id": 42, "type": "private"}}}
    request = RawRequest(url="https://support.example/webhooks/telegram", headers={}, form={},
                         body=json.dumps(update).encode(), received_at=AT)
    [msg] = TelegramAdapter(secret="s", bot_id="1").parse(request)
    envelope = Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="c", occurred_at=AT)
    intake = Intake(Publisher(url, confirm_timeout=2), Spool(tmp_path / "spool.sqlite"))
    proxy.cut()
    assert intake.accept(envelope) == "spooled"
    proxy.restore()
    assert intake.forwarder.drain_once() == 1  # minutes or hours later: the time travels in the message
    with Connection(rabbit_url) as conn, conn.SimpleQueue(work_queue(ROUTER_INBOUND, rabbit=True), no_ack=False) as q:
        m = q.get(timeout=5)
        payload = m.payload["payload"]
        m.ack()
    assert datetime.fromisoformat(payload["received_at"]) == AT
    assert datetime.fromisoformat(payload["sent_at"]) == datetime.fromtimestamp(1795020900, UTC)
