"""The consumer base: one queue, one handler, ack only after the handler's transaction committed.

A handler takes an Envelope, does its work in one database transaction and returns the envelopes
to publish once that transaction has committed. The worker then publishes them (with confirms) and
only then acks the delivery, so a crash at any point means redelivery, never loss; handlers are
idempotent (keyed on the message id), so redelivery means no duplicates either.

Failures:
- a body that does not match its contract is poison: straight to Q.dlq, acked;
- a handler exception is retried: the message is republished, with an attempt counter in its
  headers, to the retry tier (a holding queue with a fixed TTL, see topology) that fits its delay
  — the backoff, or the exception's `retry_after` (a provider's flood control or HTTP 429
  Retry-After) when that is longer — and acked only after that publish was confirmed; after
  `max_attempts` it goes to Q.dlq with the last error in its headers;
- a crash of the process leaves the message unacked: RabbitMQ redelivers it, and the quorum
  queue's delivery limit dead-letters a message that keeps killing its consumers.

Micro-batches (a `batch_handler`, RabbitMQ only): after the first delivery the worker takes what
its prefetch already holds, up to `batch_size` messages or `batch_wait` seconds; the batch closes
as soon as no further delivery is at hand (`BATCH_POLL`), so a lone message waits for nobody. The
batch handler does the batch as one unit of work and returns, per message, its events or the
exception that message failed with alone (its own work rolled back). The worker then settles the
failures one by one as above, publishes every event of the others with their confirms awaited
together (`Publisher.publish_many`), and acks them with one basic.ack(last tag, multiple). If the
batch handler raises, nothing of the batch was kept: the batch is split in halves, each handled
again, down to the one message that fails, which alone goes to its retry tier or Q.dlq. A crash
mid-batch leaves the whole batch unacked: it is redelivered, and the handlers' idempotency turns
what was already committed into a re-publish of its stored events.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from kombu import Connection
from kombu.message import Message

from shared.bus.publisher import BusUnavailable, Publisher, connect, ensure_connected
from shared.bus.topology import (
    PLUMBING,
    QueueSpec,
    choose_tier,
    declare,
    is_rabbitmq,
    retry_route,
    work_queue,
)
from shared.contracts import ContractError, Envelope, decode
from shared.log import correlated
from shared.metrics import BATCH_SIZE, DEAD_LETTERS, MESSAGES_HANDLED, RETRIES, label, observe_stage
from shared.redact import mask_secrets

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], list[Envelope]]
#: A batch's unit of work: per message (in the order given) its events, or the exception it failed with.
BatchHandler = Callable[[Sequence[Envelope]], list["list[Envelope] | Exception"]]

#: How long a gathering batch waits for one more delivery before it counts the prefetch as empty.
BATCH_POLL = 0.001

ATTEMPTS_HEADER = "x-switchboard-attempts"
ERROR_HEADER = "x-switchboard-error"


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: spreads retries of a burst of failures apart."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def retry_after_of(exc: BaseException) -> float | None:
    """The seconds the failure asks to wait (its `retry_after`), if it says; duck-typed, because
    shared/ does not know the services' exceptions (the notifier's TransientSendError carries it)."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, timedelta):  # python-telegram-bot's RetryAfter with PTB_TIMEDELTA=1
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


@dataclass
class _Delivery:
    body: object
    message: Message
    headers: dict
    attempts: int
    envelope: Envelope


class Worker:
    def __init__(self, *, url: str, spec: QueueSpec, handler: Handler | None = None, publisher: Publisher,
                 max_attempts: int = 8, prefetch: int = 16, name: str | None = None, stage: str | None = None,
                 rng: random.Random | None = None, batch_handler: BatchHandler | None = None,
                 batch_size: int = 32, batch_wait: float = 0.010):
        if (handler is None) == (batch_handler is None):
            raise ValueError("a worker takes a handler or a batch_handler")
        self.url = url
        self.spec = spec
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = max(1, batch_size)
        self.batch_wait = max(0.0, batch_wait)
        self.publisher = publisher
        self.max_attempts = max_attempts
        # A batch is what the prefetch holds: it must be able to hold a whole one.
        self.prefetch = max(prefetch, self.batch_size) if batch_handler is not None else prefetch
        self.batch_poll = BATCH_POLL
        self.name = name or spec.name
        # The latency stage this consumer completes (e.g. "routed"), measured from the webhook.
        self.stage = stage
        self.ready = threading.Event()
        self._rng = rng or random.Random()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; reconnect with backoff whenever the broker goes away."""
        failures = 0
        while not stop.is_set():
            try:
                with connect(self.url, heartbeat=30) as conn:
                    ensure_connected(conn)
                    # On whichever node answered: after a failover the topology is (re)declared there.
                    declare(conn)
                    # Connected: the next failure starts the backoff afresh instead of waiting the
                    # ceiling after every later hiccup of a long-running process.
                    failures = 0
                    self._rabbit = is_rabbitmq(conn)
                    self._consume(conn, stop)
                    failures = 0
            except Exception as exc:  # noqa: BLE001 - any broker failure: wait and reconnect, never die
                self.ready.clear()
                failures += 1
                delay = backoff(failures, base=0.5, cap=10.0)
                log.warning("consumer %s lost the broker (%s: %s); reconnecting in %.1fs",
                            self.name, type(exc).__name__, exc, delay)
                stop.wait(delay)

    def _consume(self, conn: Connection, stop: threading.Event) -> None:
        queue = work_queue(self.spec, self._rabbit)
        batching = self.batch_handler is not None
        # This connection's deliveries being gathered: one list per run, because a service runs one
        # Worker in several threads, each with its own connection and channel, whose delivery tags
        # mean nothing on another's channel.
        pending: list[_Delivery] = []
        with conn.Consumer([queue], callbacks=[partial(self._collect, pending) if batching else self._on_message],
                           prefetch_count=self.prefetch, accept=["json"], on_decode_error=self._on_decode_error):
            self.ready.set()
            log.info("consumer %s ready", self.name)
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    if self._rabbit:
                        conn.heartbeat_check()
                    continue
                if batching and pending:
                    self._gather(conn, pending)
                    batch = pending[:]
                    pending.clear()
                    self._handle_batch(batch)
        # Leaving the `with` cancels the consumer: unacked deliveries go back to the queue.
        self.ready.clear()

    # -- a micro-batch -----------------------------------------------------------------------

    def _collect(self, pending: list[_Delivery], body, message) -> None:
        """A delivery joins the batch being gathered; poison goes to Q.dlq at once, alone."""
        headers = dict(message.headers or {})
        envelope = self._decode_or_dead_letter(body, message, headers)
        if envelope is not None:
            pending.append(_Delivery(body, message, headers, int(headers.get(ATTEMPTS_HEADER, 0) or 0), envelope))

    def _gather(self, conn: Connection, pending: list[_Delivery]) -> None:
        """More deliveries while the prefetch has them at hand, up to batch_size or batch_wait.
        In memory (embedded mode) a batch is one message: that transport ignores a multiple ack."""
        if not self._rabbit:
            return
        deadline = time.monotonic() + self.batch_wait
        while len(pending) < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                conn.drain_events(timeout=min(left, self.batch_poll))
            except TimeoutError:
                return  # nothing more at hand: the batch goes now

    def _handle_batch(self, batch: list[_Delivery]) -> None:
        BATCH_SIZE.labels(self.spec.name).observe(len(batch))
        results = self._results(batch)
        done: list[tuple[_Delivery, list[Envelope]]] = []
        for delivery, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                # Settled (and acked) alone before the multiple ack below, which must not cover it.
                with correlated(delivery.envelope.correlation_id):
                    self._retry_or_dead_letter(delivery.body, delivery.message, delivery.headers, delivery.attempts,
                                               result)
            else:
                done.append((delivery, result))
        if not done:
            return
        # A failure here propagates: the batch stays unacked and comes back; the handler returns the
        # same stored events again, and the consumers dedupe.
        self.publisher.publish_many([event for _, events in done for event in events])
        if self._rabbit:
            # Every delivery of this channel up to the last tag is either in `done` or settled above.
            last = max((d.message for d, _ in done), key=lambda m: m.delivery_tag)
            last.ack(multiple=True)
        else:
            for delivery, _ in done:
                delivery.message.ack()
        now = datetime.now(UTC)
        for delivery, _ in done:
            envelope = delivery.envelope
            channel = getattr(envelope.payload, "channel", None)
            MESSAGES_HANDLED.labels(self.spec.name, envelope.type, label(channel)).inc()
            if self.stage:
                observe_stage(self.stage, channel, envelope.occurred_at, now)

    def _results(self, batch: list[_Delivery]) -> list[list[Envelope] | Exception]:
        """The batch handler's results; when it raises, those of each half, down to single messages."""
        assert self.batch_handler is not None
        try:
            results = self.batch_handler([d.envelope for d in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch handler gave {len(results)} results for {len(batch)} messages")
            return results
        except Exception as exc:  # noqa: BLE001 - the batch's failure is one of its messages', not the worker's
            if len(batch) == 1:
                return [exc]
            log.warning("a batch of %d on %s failed (%s: %s): splitting it", len(batch), self.spec.name,
                        type(exc).__name__, mask_secrets(str(exc))[:300])
            half = len(batch) // 2
            return self._results(batch[:half]) + self._results(batch[half:])

    # -- one delivery ------------------------------------------------------------------------

    def _on_message(self, body, message) -> None:
        headers = dict(message.headers or {})
        attempts = int(headers.get(ATTEMPTS_HEADER, 0) or 0)
        envelope = self._decode_or_dead_letter(body, message, headers)
        if envelope is None:
            return
        assert self.handler is not None
        with correlated(envelope.correlation_id):
            try:
                events = self.handler(envelope)
            except Exception as exc:  # noqa: BLE001 - the handler's failure is the message's, not the worker's
                self._retry_or_dead_letter(body, message, headers, attempts, exc)
                return
            for event in events:
                # A failure here propagates: the delivery stays unacked and comes back; the
                # handler returns the same stored events again, and the consumers dedupe.
                self.publisher.publish(event)
            message.ack()
            channel = getattr(envelope.payload, "channel", None)
            MESSAGES_HANDLED.labels(self.spec.name, envelope.type, label(channel)).inc()
            if self.stage:
                observe_stage(self.stage, channel, envelope.occurred_at, datetime.now(UTC))

    def _decode_or_dead_letter(self, body, message, headers: dict) -> Envelope | None:
        """The delivery's envelope; a body that breaks its contract is poison: to Q.dlq, acked, None."""
        try:
            return decode(body)
        except ContractError as exc:
            log.error("poison message on %s: %s", self.spec.name, exc)
            self._dead_letter(body, message, headers, f"contract: {exc}")
            DEAD_LETTERS.labels(self.spec.name, "contract").inc()
            return None

    def _on_decode_error(self, message, exc: Exception) -> None:
        log.error("undecodable message on %s: %s", self.spec.name, exc)
        self._dead_letter(message.body, message, dict(message.headers or {}), f"decode: {exc}",
                          content_type=message.content_type or "application/octet-stream")
        DEAD_LETTERS.labels(self.spec.name, "decode").inc()

    def _retry_or_dead_letter(self, body, message, headers, attempts: int, exc: Exception) -> None:
        error = mask_secrets(f"{type(exc).__name__}: {exc}")[:1000]
        attempts += 1
        if attempts >= self.max_attempts:
            log.error("message on %s failed %d times, dead-lettered: %s", self.spec.name, attempts, error,
                      exc_info=exc)
            self._dead_letter(body, message, {**headers, ATTEMPTS_HEADER: attempts}, error)
            DEAD_LETTERS.labels(self.spec.name, "exhausted").inc()
            return
        retry_after = retry_after_of(exc)
        delay = max(backoff(attempts, rng=self._rng), retry_after or 0.0)
        # Never earlier than the provider asked; a retry_after past the largest tier waits that
        # tier and, if the provider still refuses, asks again (one more attempt spent).
        tier = choose_tier(delay, at_least=retry_after or 0.0, u=self._rng.random())
        log.warning("handler on %s failed (attempt %d of %d), retrying in %ds (backoff or retry_after %.1fs): %s",
                    self.spec.name, attempts, self.max_attempts, tier, delay, error, exc_info=exc)
        if not self._rabbit:
            # In memory there is no TTL to wait in: pause here a little instead (embedded only).
            time.sleep(min(delay, 0.5))
        self._republish(body, message, {**headers, ATTEMPTS_HEADER: attempts, ERROR_HEADER: error},
                        retry_route(self.spec, self._rabbit, tier))
        RETRIES.labels(self.spec.name).inc()

    def _dead_letter(self, body, message, headers, error: str, content_type: str | None = None) -> None:
        self._republish(body, message, {**headers, ERROR_HEADER: error[:1000]}, self.spec.dlq,
                        content_type=content_type)

    def _republish(self, body, message, headers, routing_key: str, content_type: str | None = None) -> None:
        try:
            self.publisher.publish_raw(
                body, exchange=PLUMBING, routing_key=routing_key, message_id=message.properties.get("message_id"),
                correlation_id=message.properties.get("correlation_id"), headers=headers,
                content_type=content_type,
            )
        except BusUnavailable:
            # Not moved: leave it unacked so that it is redelivered rather than lost.
            message.requeue()
            raise
        message.ack()
