"""Every Prometheus metric of Switchboard, defined once; served at /metrics by each service.

Latency is measured per stage from the webhook: the envelope's `occurred_at` is the moment the
gateway received the webhook (the router's events carry the inbound message's time), so
"routed" and "sent" latencies are `now - occurred_at` and the stages add up to the customer's wait:

    webhook ──published──▶ bus ──routed──▶ router ──sent──▶ provider API

Counters and histograms live in the process-wide default registry (one process per service).
The queue depth is not a counter we keep but a reading of the broker, taken on scrape (passive
queue declarations on one kept connection), so it is right whichever replica is scraped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Seconds; the spec's goal is an acknowledgement within a second, so resolve well below that.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

MESSAGES_IN = Counter(
    "switchboard_messages_in_total",
    "Customer messages accepted at the gateway, by channel and outcome (published, spooled).",
    ["channel", "outcome"],
)
WEBHOOKS_REJECTED = Counter(
    "switchboard_webhooks_rejected_total",
    "Webhooks refused before anything was published (forbidden, malformed, too_large).",
    ["adapter", "reason"],
)
MESSAGES_HANDLED = Counter(
    "switchboard_messages_handled_total",
    "Bus messages handled and acked by a consumer, by queue, envelope type and channel.",
    ["queue", "type", "channel"],
)
MESSAGES_OUT = Counter(
    "switchboard_messages_out_total",
    "Outbound messages to customers, by channel and outcome (sent, failed, skipped).",
    ["channel", "outcome"],
)
STAGE_LATENCY = Histogram(
    "switchboard_stage_latency_seconds",
    "Seconds from the webhook to the end of a stage (published, routed, sent), by channel.",
    ["stage", "channel"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "switchboard_consumer_batch_size",
    "Messages per micro-batch a batching consumer handled as one unit of work, by queue.",
    ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
RETRIES = Counter(
    "switchboard_retries_total",
    "Handler failures sent to the queue's retry holding queue for another attempt.",
    ["queue"],
)
DEAD_LETTERS = Counter(
    "switchboard_dead_letters_total",
    "Messages moved to a dead-letter queue, by queue and reason (contract, decode, exhausted).",
    ["queue", "reason"],
)
PROMISES_BREACHED = Counter(
    "switchboard_promises_breached_total",
    "Conversations whose promised answer time passed without a human answer, by team and category.",
    ["team", "category"],
)


def label(value: object) -> str:
    """A label value that is never empty or None (Prometheus would show an empty string)."""
    return str(value) if value not in (None, "") else "none"


def observe_stage(stage: str, channel: str | None, since: datetime, now: datetime) -> None:
    """Record the time from `since` (the webhook) to `now` for one stage; a clock skew counts as 0."""
    STAGE_LATENCY.labels(stage, label(channel)).observe(max(0.0, (now - since).total_seconds()))


def promise_breached(team: str | None, category: str | None) -> None:
    PROMISES_BREACHED.labels(label(team), label(category)).inc()


class QueueDepthCollector(Collector):
    """`switchboard_queue_depth{queue}` and `switchboard_queue_consumers{queue}`, read on scrape.

    A passive declare asks the broker about a queue without creating or changing it. When the
    broker does not answer, `switchboard_broker_up` is 0 and the depths are absent (not zero: an
    unknown depth must not look like an empty queue on a dashboard).

    One broker connection serves every scrape (a new AMQP connection per scrape costs the broker a
    handshake and a connection churn anybody who can reach /metrics could drive); it is opened on
    the first scrape, and again only after it failed. Scrapes in parallel take turns on it.
    """

    def __init__(self, broker_url: str, queues: Iterable[str], timeout: float = 2.0):
        self.broker_url = broker_url
        self.queues = list(queues)
        self.timeout = timeout
        self._conn: Any = None
        self._channel: Any = None
        self._lock = threading.Lock()

    def _read(self) -> dict[str, tuple[int, int]] | None:
        """{queue: (messages, consumers)}, or None when the broker did not answer."""
        from shared.bus.publisher import connect

        try:
            if self._conn is None:
                self._conn = connect(self.broker_url, confirm=False)
                self._conn.ensure_connection(max_retries=1, timeout=self.timeout)
                self._channel = self._conn.channel()
            found: dict[str, tuple[int, int]] = {}
            for queue in self.queues:
                try:
                    _, messages, attached = self._channel.queue_declare(queue=queue, passive=True)
                except Exception as exc:  # noqa: BLE001 - a queue not declared yet has no depth to show
                    if not self._conn.connected:
                        raise
                    log.debug("queue %s not readable: %s", queue, exc)
                    # AMQP closes the channel on NOT_FOUND: take a fresh one for the next queue.
                    self._channel = self._conn.channel()
                    continue
                found[queue] = (messages, attached)
            return found
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the broker does not
            log.warning("queue depth unavailable: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("switchboard_broker_up", "1 when the broker answered this scrape's queue reads.")
        depth = GaugeMetricFamily("switchboard_queue_depth", "Messages ready in the queue, read from the broker.",
                                  labels=["queue"])
        consumers = GaugeMetricFamily("switchboard_queue_consumers", "Consumers attached to the queue.",
                                      labels=["queue"])
        with self._lock:  # one connection, one scrape at a time on it
            found = self._read()
        up.add_metric([], 0 if found is None else 1)
        for queue, (messages, attached) in (found or {}).items():
            depth.add_metric([queue], messages)
            consumers.add_metric([queue], attached)
        yield up
        yield depth
        yield consumers


def all_queue_names() -> list[str]:
    from shared.bus.topology import QUEUES

    return [name for spec in QUEUES.values() for name in (spec.name, *spec.retry_tiers, spec.dlq)]


class Scrape:
    """What /metrics answers: the process's metrics plus, given a broker, the queue depths (one
    collector, so one broker connection, for the life of the process's endpoint)."""

    def __init__(self, broker_url: str | None = None):
        self.queue_depths = QueueDepthCollector(broker_url, all_queue_names()) if broker_url else None
        self._registry = CollectorRegistry(auto_describe=False)
        if self.queue_depths is not None:
            self._registry.register(self.queue_depths)

    def render(self) -> tuple[bytes, str]:
        body = generate_latest(REGISTRY)
        if self.queue_depths is not None:
            body += generate_latest(self._registry)
        return body, CONTENT_TYPE_LATEST


def render(broker_url: str | None = None) -> tuple[bytes, str]:
    """One scrape with a collector of its own: for a one-off reading (a CLI, a test), never per request."""
    scrape = Scrape(broker_url)
    try:
        return scrape.render()
    finally:
        if scrape.queue_depths is not None:
            scrape.queue_depths.close()
