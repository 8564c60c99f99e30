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

`shared_confirms` (the gateway): concurrent `publish_raw` calls from several threads share one
confirm channel and its confirm waits. A caller queues its message; whichever caller finds the
channel free sends every message queued meanwhile, its own and the others', and awaits their
confirms together; the others wait for that outcome. Alone, a caller sends and waits as before; with
eight webhooks in flight, the broker gets them in one burst and confirms them with a few
`multiple` acks instead of one round trip (and one quorum write) each. A batch that is not
confirmed fails every caller in it (each spools its message; one the broker did take is published
again from the spool, and the consumers dedupe).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import amqp
from amqp.exceptions import RecoverableConnectionError
from kombu import Connection, Exchange
from kombu.utils.json import dumps as json_dumps

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
    def __init__(self, url: str, *, confirm_timeout: float = 10.0, declare_topology: bool = False,
                 shared_confirms: bool = False):
        self.url = url
        self.confirm_timeout = confirm_timeout
        # The in-memory transport has no confirms to share: there it publishes as before.
        self._shared = _SharedConfirms(self) if shared_confirms and url.startswith(("amqp", "pyamqp")) else None
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
        if self._shared is not None:
            self._shared.publish(_Outgoing(body, exchange, routing_key, message_id, correlation_id, headers or {},
                                           expiration, content_type))
            return
        for attempt in (1, 2):
            reused = getattr(self._local, "producer", None) is not None
            try:
                self._producer().publish(
                    body, exchange=exchange, routing_key=routing_key, delivery_mode=2, **_encoding(content_type),
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
        outgoing = [_Outgoing(encode(e), EVENTS, e.type, e.message_id, e.correlation_id) for e in envelopes]
        self._send(outgoing, self._local)

    def _send(self, outgoing: Sequence[_Outgoing], holder: Any) -> None:
        """Send on `holder.batch` (made when missing), confirms awaited together; one more try on a
        fresh connection when a kept one turns out dead."""
        for attempt in (1, 2):
            reused = getattr(holder, "batch", None) is not None
            try:
                self._batch_channel(holder).publish(outgoing, self.confirm_timeout)
                return
            except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"
                self._reset_batch(holder)
                stale = (reused and isinstance(exc, (OSError, RecoverableConnectionError))
                         and not isinstance(exc, TimeoutError))
                if attempt == 2 or not stale:
                    raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _batch_channel(self, holder: Any) -> _ConfirmChannel:
        batch = getattr(holder, "batch", None)
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
            holder.batch = batch
        return batch

    @staticmethod
    def _reset_batch(holder: Any) -> None:
        batch = getattr(holder, "batch", None)
        holder.batch = None
        if batch is not None:
            try:
                batch.conn.release()
            except Exception:  # noqa: BLE001 - the connection is already broken; nothing to save
                pass

    def close(self) -> None:
        self._reset()
        self._reset_batch(self._local)
        if self._shared is not None:
            self._shared.close()


def _encoding(content_type: str | None) -> dict[str, Any]:
    # Raw bytes with their own content type (a poison body on its way to a DLQ) pass unchanged.
    return {"content_type": content_type, "content_encoding": "binary"} if content_type else {"serializer": "json"}


def _exchange_name(exchange: Exchange | str) -> str:
    return exchange.name if isinstance(exchange, Exchange) else exchange


def _json_message(m: _Outgoing) -> amqp.Message:
    """The message kombu's producer makes of a JSON body (its serializer, its default priority,
    persistent), without going through it."""
    properties: dict[str, Any] = {}
    if m.expiration is not None:
        properties["expiration"] = str(int(m.expiration * 1000))
    return amqp.Message(json_dumps(m.body), priority=0, content_type="application/json", content_encoding="utf-8",
                        application_headers=m.headers or {}, delivery_mode=2, message_id=m.message_id,
                        correlation_id=m.correlation_id, **properties)


@dataclass(eq=False)
class _Outgoing:
    """One message to publish, and (shared confirms) its caller's outcome."""

    body: Any
    exchange: Exchange | str
    routing_key: str
    message_id: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    expiration: float | None = None
    content_type: str | None = None
    done: bool = False
    error: BaseException | None = None


class _SharedConfirms:
    """One confirm channel for every thread: the caller that finds it free sends what is queued (see
    the module's docstring). No thread of its own: with one caller at a time nothing is handed over."""

    def __init__(self, publisher: Publisher):
        self.publisher = publisher
        self.batch: _ConfirmChannel | None = None  # the channel, used only by the thread holding `_channel`
        self._channel = threading.Lock()
        self._changed = threading.Condition()  # guards `_queue` and every queued item's outcome
        self._queue: list[_Outgoing] = []

    def publish(self, item: _Outgoing) -> None:
        with self._changed:
            self._queue.append(item)
        while True:
            if self._channel.acquire(blocking=False):
                try:
                    with self._changed:
                        batch, self._queue = self._queue, []
                    if batch:  # empty when an earlier sender took ours along
                        self._send(batch)
                finally:
                    self._channel.release()
                    with self._changed:
                        # Outcomes are in, and the channel is free for whoever queued meanwhile.
                        self._changed.notify_all()
            else:
                with self._changed:
                    # A sender has the channel: wait for our outcome, or for the channel to be free
                    # (our message was queued after that sender took its batch). The timeout is only
                    # a safety net; every change notifies.
                    self._changed.wait_for(lambda: item.done or not self._channel.locked(), timeout=1.0)
            if item.done:
                break
        if item.error is not None:
            raise item.error

    def _send(self, batch: list[_Outgoing]) -> None:
        # Every item gets an outcome whatever happens here: a caller waits for it.
        error: BaseException | None = BusUnavailable("the publish was interrupted")
        try:
            self.publisher._send(batch, self)
            error = None
        except BusUnavailable as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"; the callers decide
            error = BusUnavailable(f"{type(exc).__name__}: {exc}")
        finally:
            with self._changed:
                for item in batch:
                    item.error, item.done = error, True

    def close(self) -> None:
        with self._channel:
            self.publisher._reset_batch(self)


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

    @contextlib.contextmanager
    def _corked(self, several: bool) -> Iterator[None]:
        """py-amqp writes each message (its three frames) with a send of its own, and the socket has
        TCP_NODELAY: a batch went out as one TCP segment per message, each a read for the broker.
        Corked (Linux), the kernel sends the batch in full segments when uncorked."""
        sock = getattr(getattr(self.conn.connection, "transport", None), "sock", None)
        if not several or sock is None or not hasattr(socket, "TCP_CORK"):
            yield
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            yield
        finally:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:  # the connection broke meanwhile: the publish fails on its own
                pass

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

    def publish(self, outgoing: Sequence[_Outgoing], timeout: float) -> None:
        self.refused.clear()
        with self._corked(len(outgoing) > 1):
            for m in outgoing:
                if m.content_type is None:
                    # JSON, the usual case: straight to py-amqp with the properties kombu's producer
                    # would give it (it adds a serializer look-up, an exchange check and a property
                    # dict per message, for nothing on a channel we made and declared ourselves).
                    self.channel.basic_publish(_json_message(m), exchange=_exchange_name(m.exchange),
                                               routing_key=m.routing_key)
                else:
                    self.producer.publish(
                        m.body, exchange=m.exchange, routing_key=m.routing_key, delivery_mode=2,
                        **_encoding(m.content_type), message_id=m.message_id, correlation_id=m.correlation_id,
                        headers=m.headers, expiration=m.expiration, retry=False)
                self.sent += 1
        deadline = time.monotonic() + timeout
        while self.acked < self.sent:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.sent - self.acked} of {len(outgoing)} publishes not confirmed in {timeout}s")
            self.conn.drain_events(timeout=left)
        if self.refused:
            raise BusUnavailable(f"the broker refused {len(self.refused)} of {len(outgoing)} messages (basic.nack)")
