"""Publishing envelopes with publisher confirms.

`publish` returns only after RabbitMQ confirmed the message (it is then on disk in a quorum
queue), and raises `BusUnavailable` otherwise; callers decide what to do (the gateway spools).
Connections are per thread because a kombu connection is not thread-safe and the web server
answers webhooks on several threads.

A cluster: `BROKER_URL` may name several nodes, kombu's failover form
`amqp://u:p@node1//;amqp://u:p@node2//;amqp://u:p@node3//`. Every (re)connection tries them in
turn (`ensure_connected`), so a client whose node died or paused carries on with a surviving one;
a publish cut off with its connection was not confirmed, so it is retried on a fresh connection
or the caller spools it. A message published twice is harmless: every consumer dedupes on its id.

`publish_many` sends a batch and waits for its confirms once: py-amqp's confirm_publish waits for
each message's basic.ack before sending the next (a broker round trip and a quorum-queue write per
message), so a batch gets a channel of its own in confirm mode, sends every message, then collects
the broker's basic.ack/basic.nack frames (which may each confirm several, `multiple`) until the last
delivery tag is confirmed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from amqp.exceptions import RecoverableConnectionError
from kombu import Connection, Exchange

from shared.bus.topology import EVENTS, declare
from shared.contracts import Envelope, encode

log = logging.getLogger(__name__)


class BusUnavailable(Exception):
    """The broker did not confirm the publish (down, unreachable, or it refused the message)."""


#: Where each connection starts in a failover list (tests pin it).
_start = random.Random()


def connect(url: str, *, confirm: bool = True, heartbeat: int = 0) -> Connection:
    nodes = url.split(";")
    if len(nodes) > 1:
        # Each connection starts at a random node and then tries the others in order: clients
        # spread over the cluster instead of all crowding the first node (and all failing over
        # at once when it goes).
        k = _start.randrange(len(nodes))
        url = ";".join(nodes[k:] + nodes[:k])
    options: dict[str, Any] = {"confirm_publish": confirm} if url.startswith(("amqp", "pyamqp")) else {}
    if url.startswith("memory"):
        # The in-process transport polls; 1 s (kombu's default) would dominate embedded latency.
        options["polling_interval"] = 0.01
    return Connection(url, transport_options=options, connect_timeout=5, heartbeat=heartbeat)


def ensure_connected(conn: Connection, *, timeout: float | None = None) -> None:
    """Connect to the first node of the URL that answers: each node of a failover URL once, in
    order, without sleeping between them (kombu sleeps only after a whole round failed); a single
    node gets one retry, as before."""
    conn.ensure_connection(max_retries=max(1, len(conn.alt) - 1), timeout=timeout)


class Publisher:
    def __init__(self, url: str, *, confirm_timeout: float = 10.0, declare_topology: bool = False):
        self.url = url
        self.confirm_timeout = confirm_timeout
        # The gateway's publisher declares the topology on every new connection: after a failover,
        # or against a broker that lost its definitions, its first publish must not go to an
        # exchange that is not there (the consumers declare theirs when they reconnect).
        self.declare_topology = declare_topology
        self._local = threading.local()

    def _producer(self):
        producer = getattr(self._local, "producer", None)
        if producer is None:
            conn = connect(self.url)
            ensure_connected(conn)
            if self.declare_topology:
                try:
                    declare(conn)
                except Exception:
                    conn.release()
                    raise
            producer = conn.Producer()
            self._local.conn, self._local.producer = conn, producer
        return producer

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = self._local.producer = None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - the connection is already broken; nothing to save
                pass

    def publish(self, envelope: Envelope, *, exchange: Exchange = EVENTS, routing_key: str | None = None,
                headers: dict[str, Any] | None = None, expiration: float | None = None) -> None:
        self.publish_raw(encode(envelope), exchange=exchange, routing_key=routing_key or envelope.type,
                         message_id=envelope.message_id, correlation_id=envelope.correlation_id,
                         headers=headers, expiration=expiration)

    def publish_raw(self, body: Any, *, exchange: Exchange | str, routing_key: str, message_id: str | None = None,
                    correlation_id: str | None = None, headers: dict[str, Any] | None = None,
                    expiration: float | None = None, content_type: str | None = None) -> None:
        # Raw bytes with their own content type (a poison body on its way to a DLQ) pass unchanged.
        encoding = {"content_type": content_type, "content_encoding": "binary"} if content_type else {"serializer": "json"}
        for attempt in (1, 2):
            reused = getattr(self._local, "producer", None) is not None
            try:
                self._producer().publish(
                    body, exchange=exchange, routing_key=routing_key, delivery_mode=2, **encoding,
                    message_id=message_id, correlation_id=correlation_id, headers=headers or {},
                    expiration=expiration, confirm_timeout=self.confirm_timeout, retry=False,
                )
                return
            except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"; the caller keeps the message
                self._reset()
                # A kept connection may have died while idle (broker restarted, a proxy's idle cut):
                # one more try on a fresh one. Not after a confirm timeout: that broker is there but slow.
                # A message published twice is harmless: every consumer dedupes on its id.
                stale = (reused and isinstance(exc, (OSError, RecoverableConnectionError))
                         and not isinstance(exc, TimeoutError))
                if attempt == 2 or not stale:
                    raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def publish_many(self, envelopes: Sequence[Envelope]) -> None:
        """Publish every envelope to EVENTS under its type, and return once the broker confirmed all
        of them; `BusUnavailable` if any was refused or not confirmed in time (some may have been
        taken: the caller publishes the batch again, and the consumers dedupe)."""
        if len(envelopes) <= 1 or not self.url.startswith(("amqp", "pyamqp")):
            for envelope in envelopes:  # one message, or kombu's memory transport: no confirms to overlap
                self.publish(envelope)
            return
        for attempt in (1, 2):
            reused = getattr(self._local, "batch", None) is not None
            try:
                self._batch_channel().publish(envelopes, self.confirm_timeout)
                return
            except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"
                self._reset_batch()
                stale = (reused and isinstance(exc, (OSError, RecoverableConnectionError))
                         and not isinstance(exc, TimeoutError))
                if attempt == 2 or not stale:
                    raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _batch_channel(self) -> _ConfirmChannel:
        batch = getattr(self._local, "batch", None)
        if batch is None:
            conn = connect(self.url, confirm=False)
            try:
                ensure_connected(conn)
                if self.declare_topology:
                    declare(conn)
                batch = _ConfirmChannel(conn)
            except Exception:
                conn.release()
                raise
            self._local.batch = batch
        return batch

    def _reset_batch(self) -> None:
        batch = getattr(self._local, "batch", None)
        self._local.batch = None
        if batch is not None:
            try:
                batch.conn.release()
            except Exception:  # noqa: BLE001 - the connection is already broken; nothing to save
                pass

    def close(self) -> None:
        self._reset()
        self._reset_batch()


class _ConfirmChannel:
    """A channel in confirm mode whose confirms are collected, not awaited one by one. The broker
    numbers a confirm channel's publishes 1, 2, 3, …; basic.ack(tag, multiple) confirms that one, or
    every one up to it."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.channel = conn.channel()
        self.channel.confirm_select()
        self.producer = conn.Producer(channel=self.channel)
        self.sent = 0  # the last delivery tag the broker gave a publish of ours
        self.acked = 0  # every tag up to here is settled (confirmed or refused)
        self._settled: set[int] = set()  # single confirms above `acked`, when they come out of order
        self.refused: list[int] = []
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.acked = max(self.acked, tag)
        else:
            self._settled.add(tag)
        while self.acked + 1 in self._settled:
            self.acked += 1
        self._settled = {t for t in self._settled if t > self.acked}

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.refused.append(delivery_tag)
        self._settle(delivery_tag, multiple)

    def publish(self, envelopes: Sequence[Envelope], timeout: float) -> None:
        self.refused.clear()
        for envelope in envelopes:
            self.producer.publish(
                encode(envelope), exchange=EVENTS, routing_key=envelope.type, delivery_mode=2, serializer="json",
                message_id=envelope.message_id, correlation_id=envelope.correlation_id, headers={}, retry=False)
            self.sent += 1
        deadline = time.monotonic() + timeout
        while self.acked < self.sent:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.sent - self.acked} of {len(envelopes)} publishes not confirmed in {timeout}s")
            self.conn.drain_events(timeout=left)
        if self.refused:
            raise BusUnavailable(f"the broker refused {len(self.refused)} of {len(envelopes)} messages (basic.nack)")
