"""/metrics on the real RabbitMQ and PostgreSQL: what an operator's dashboard reads moves with the traffic.

One webhook goes gateway → router → notifier; after each stage we scrape /metrics the way
Prometheus does and check the counters, the per-stage latency histograms and the queue depths
(read from the broker on scrape). Counters are process-wide, so the tests compare before and after.
"""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.bootstrap import build as build_gateway
from services.notifier import bootstrap as notifier
from services.router import bootstrap as router
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import EVENTS, declare
from shared.db import make_engine, migrate, session_factory
from shared.metrics import QueueDepthCollector
from shared.service import service_app
from shared.settings import load_settings
from shared.web import health_blueprint, start_metrics_server
from tests.support.tcpproxy import TcpProxy
from tests.support.wait import until

pytestmark = pytest.mark.integration

SECRET = "metrics-secret"


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, keyed by name and sorted labels."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.get_data(as_text=True)) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def telegram_update(update_id: int, user: int, text: str) -> dict:
    return {"update_id": update_id, "message": {
        "message_id": 1, "date": int(time.time()), "text": text,
        "from": {"id": user, "is_bot": False, "first_name": "Ann", "language_code": "en"},
        "chat": {"id": user, "type": "private", "first_name": "Ann"}}}


@pytest.fixture
def stack(example_config, rabbit_url, pg_url, tmp_path):
    settings = load_settings({"BROKER_URL": rabbit_url, "DATABASE_URL": pg_url, "TELEGRAM_WEBHOOK_SECRET": SECRET,
                              "SWITCHBOARD_SPOOL_DIR": str(tmp_path)})
    with connect(rabbit_url) as conn:
        declare(conn)
    engine = make_engine(pg_url)
    migrate(engine)
    gateway, intake = build_gateway(settings, example_config, clock=lambda: datetime.now(UTC))
    # The consumer services' HTTP app, as shared/service.py builds it.
    consumer_app = Flask("consumer")
    consumer_app.register_blueprint(health_blueprint({}, broker_url=rabbit_url))
    publisher = Publisher(rabbit_url)
    stop = threading.Event()
    workers = {
        "router": router.build_worker(rabbit_url, router.build_deps(example_config, session_factory(engine)), publisher),
        "notifier": notifier.build_worker(rabbit_url, notifier.build_deps(
            example_config, session_factory(engine), notifier.build_senders(settings, example_config,
                                                                            sandbox_out=io.StringIO()),
            lambda: datetime.now(UTC)), publisher),
    }
    threads: list[threading.Thread] = []

    def start(name: str) -> None:
        t = threading.Thread(target=workers[name].run, args=(stop,), daemon=True)
        t.start()
        threads.append(t)
        assert workers[name].ready.wait(20)

    yield gateway.test_client(), consumer_app.test_client(), start, publisher
    stop.set()
    for t in threads:
        t.join(timeout=10)
    publisher.close()
    intake.publisher.close()
    intake.spool.close()
    engine.dispose()


def test_counters_histograms_and_queue_depths_follow_a_message(stack) -> None:
    gateway, consumer, start, _ = stack
    before = scrape(gateway)
    assert value(before, "switchboard_broker_up") == 1
    assert value(before, "switchboard_queue_depth", queue="router.inbound") == 0

    answer = gateway.post("/webhooks/telegram", json=telegram_update(5001, 77001, "Where is my parcel?"),
                          headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert answer.status_code == 200
    at_gateway = scrape(gateway)
    assert value(at_gateway, "switchboard_messages_in_total", channel="telegram", outcome="published") == \
        value(before, "switchboard_messages_in_total", channel="telegram", outcome="published") + 1
    assert value(at_gateway, "switchboard_stage_latency_seconds_count", stage="published", channel="telegram") == \
        value(before, "switchboard_stage_latency_seconds_count", stage="published", channel="telegram") + 1
    # Nobody consumes yet: the message waits in the router's queue, and the broker says so.
    assert value(at_gateway, "switchboard_queue_depth", queue="router.inbound") == 1
    assert value(at_gateway, "switchboard_queue_consumers", queue="router.inbound") == 0

    start("router")
    observed = value(before, "switchboard_stage_latency_seconds_count", stage="routed", channel="telegram") + 1
    # The counters move just after the event's publish was confirmed and the message acked (the
    # latency last): wait for the queue depth and the latency together.
    routed = until(lambda: (s := scrape(consumer)) and value(s, "switchboard_queue_depth", queue="notifier.events") == 1
                   and value(s, "switchboard_stage_latency_seconds_count", stage="routed", channel="telegram") >= observed
                   and s, timeout=20, message="the routed event waiting for the notifier, counted")
    assert value(routed, "switchboard_queue_depth", queue="router.inbound") == 0
    assert value(routed, "switchboard_queue_consumers", queue="router.inbound") == 1
    assert value(routed, "switchboard_messages_handled_total", queue="router.inbound", type="inbound.message",
                 channel="telegram") == value(before, "switchboard_messages_handled_total", queue="router.inbound",
                                              type="inbound.message", channel="telegram") + 1
    assert value(routed, "switchboard_stage_latency_seconds_count", stage="routed", channel="telegram") == \
        value(before, "switchboard_stage_latency_seconds_count", stage="routed", channel="telegram") + 1
    # The routed latency is measured from the webhook: never less than the published one's smallest bucket.
    assert value(routed, "switchboard_stage_latency_seconds_sum", stage="routed", channel="telegram") > \
        value(before, "switchboard_stage_latency_seconds_sum", stage="routed", channel="telegram")

    start("notifier")
    # The sent latency is observed last, just after the send was recorded: wait for it.
    sent = until(lambda: (s := scrape(consumer)) and value(s, "switchboard_stage_latency_seconds_count", stage="sent",
                                                           channel="telegram")
                 > value(before, "switchboard_stage_latency_seconds_count", stage="sent", channel="telegram") and s,
                 timeout=20, message="the acknowledgement sent")
    assert value(sent, "switchboard_messages_out_total", channel="telegram", outcome="sent") == \
        value(before, "switchboard_messages_out_total", channel="telegram", outcome="sent") + 1
    assert value(sent, "switchboard_stage_latency_seconds_count", stage="sent", channel="telegram") == \
        value(before, "switchboard_stage_latency_seconds_count", stage="sent", channel="telegram") + 1
    assert value(sent, "switchboard_queue_depth", queue="notifier.events") == 0
    # Defined for the notifier's promise tracking, and exported from the start (HELP/TYPE lines).
    assert "switchboard_promises_breached_total" in consumer.get("/metrics").get_data(as_text=True)


def test_rejected_webhooks_and_dead_letters_are_counted(stack) -> None:
    gateway, consumer, start, publisher = stack
    before = scrape(gateway)
    bad = gateway.post("/webhooks/telegram", json=telegram_update(5002, 77002, "hi"),
                       headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
    assert bad.status_code == 403
    malformed = gateway.post("/webhooks/telegram", data=b"{not json", content_type="application/json",
                             headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert malformed.status_code == 400
    after = scrape(gateway)
    for reason in ("forbidden", "malformed"):
        assert value(after, "switchboard_webhooks_rejected_total", adapter="telegram", reason=reason) == \
            value(before, "switchboard_webhooks_rejected_total", adapter="telegram", reason=reason) + 1
    assert value(after, "switchboard_messages_in_total", channel="telegram", outcome="published") == \
        value(before, "switchboard_messages_in_total", channel="telegram", outcome="published")
    assert value(after, "switchboard_queue_depth", queue="router.inbound") == 0  # nothing published

    # A body that is no envelope at all: the router dead-letters it at once.
    publisher.publish_raw({"not": "an envelope"}, exchange=EVENTS, routing_key="inbound.message", message_id="poison-1")
    start("router")
    counted = value(before, "switchboard_dead_letters_total", queue="router.inbound", reason="contract") + 1
    # The counter moves just after the broker confirmed the dead-lettering: wait for both.
    dead = until(lambda: (s := scrape(consumer)) and value(s, "switchboard_queue_depth", queue="router.inbound.dlq") == 1
                 and value(s, "switchboard_dead_letters_total", queue="router.inbound", reason="contract") >= counted
                 and s, timeout=20, message="the poison message in the DLQ, counted")
    assert value(dead, "switchboard_dead_letters_total", queue="router.inbound", reason="contract") == counted


def test_metrics_answer_while_the_broker_is_unreachable(example_config, tmp_path) -> None:
    app = Flask("consumer")
    app.register_blueprint(health_blueprint({}, broker_url="amqp://guest:guest@127.0.0.1:1//"))
    samples = scrape(app.test_client())
    assert value(samples, "switchboard_broker_up") == 0
    # An unknown depth is absent, not a reassuring zero.
    assert not any(name == "switchboard_queue_depth" for name, _ in samples)


def _through(proxy: TcpProxy, url: str) -> str:
    return url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")


def test_scrapes_share_one_broker_connection(rabbit_url) -> None:
    with connect(rabbit_url) as conn:
        declare(conn)
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        app = Flask("consumer")
        app.register_blueprint(health_blueprint({}, broker_url=_through(proxy, rabbit_url)))
        client = app.test_client()
        for _ in range(5):
            assert value(scrape(client), "switchboard_broker_up") == 1
        assert proxy.accepted == 1  # today's main: one AMQP connection per scrape

        # Every scrape reads the broker afresh on the one connection; a broken one is replaced.
        depths = QueueDepthCollector(_through(proxy, rabbit_url), ["router.inbound"])
        Publisher(rabbit_url).publish_raw({"not": "an envelope"}, exchange=EVENTS, routing_key="inbound.message",
                                          message_id="depth-1")
        readings = [{m.name: m.samples for m in depths.collect()} for _ in range(3)]
        assert all(r["switchboard_queue_depth"][0].value == 1 for r in readings) and proxy.accepted == 2
        proxy.cut()
        assert next(iter(depths.collect())).samples[0].value == 0  # broker_up
        proxy.restore()
        assert next(iter(depths.collect())).samples[0].value == 1 and proxy.accepted == 3
        depths.close()
    finally:
        proxy.close()


def test_metrics_on_their_own_port_and_not_on_the_services(rabbit_url) -> None:
    settings = load_settings({"BROKER_URL": rabbit_url, "METRICS_PORT": "0"})
    server = start_metrics_server(settings, "127.0.0.1")
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert answer.status_code == 200 and "switchboard_broker_up 1.0" in answer.text
        assert "switchboard_messages_in_total" in answer.text
    finally:
        server.stop(grace=1)
    service = service_app("router", settings, {}).test_client()
    assert service.get("/metrics").status_code == 404 and service.get("/healthz").status_code == 200
    assert load_settings({}).metrics_port is None  # unset: /metrics stays on each service's port
