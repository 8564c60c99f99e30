"""Dead letters: what is in each `Q.dlq`, and replaying it to `Q` once its cause is fixed.

`switchboard dlq list|replay` (services/cli.py) is the operator's view. A dead letter keeps its
body, message id and correlation id; the consumer put its last error and attempt count in headers
(shared/bus/consumer.py), RabbitMQ's delivery limit adds `x-death` / `x-delivery-count`.

Reading a queue in AMQP 0-9-1 means taking messages: both operations take every message of the
DLQ unacknowledged on one channel, so nothing is lost and nothing is seen twice. Listing then
closes the channel, which puts them all back. Replaying publishes a chosen one to the work queue
(through the plumbing exchange, routing key = the queue's name, with publisher confirms) and
acks it in the DLQ only after the broker confirmed that publish, so a crash in between leaves a
copy in both places (consumers dedupe on the message id), never in neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.bus.consumer import ATTEMPTS_HEADER, ERROR_HEADER
from shared.bus.publisher import Publisher, connect, ensure_connected
from shared.bus.topology import PLUMBING, QUEUES, QueueSpec, declare

REPLAYED_HEADER = "x-switchboard-replayed"
#: Broker bookkeeping of the earlier life; a replayed message starts afresh (its attempts too).
_DROPPED_HEADERS = (ATTEMPTS_HEADER, ERROR_HEADER, "x-death", "x-first-death-exchange", "x-first-death-queue",
                    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
                    "x-delivery-count")


class UnknownQueue(ValueError):
    pass


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the work queue it was dead-lettered from
    message_id: str | None
    type: str | None
    error: str | None
    attempts: int
    body: bytes
    content_type: str | None
    correlation_id: str | None
    headers: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"queue": self.queue, "message_id": self.message_id, "type": self.type, "error": self.error,
                "attempts": self.attempts}


def specs(queue: str | None) -> list[QueueSpec]:
    """The work queues meant: all, or one named as "notifier.events" or "notifier.events.dlq"."""
    if queue is None:
        return list(QUEUES.values())
    name = queue.removesuffix(".dlq")
    if name not in QUEUES:
        known = ", ".join(sorted(QUEUES))
        raise UnknownQueue(f"unknown queue {queue!r} (known: {known})")
    return [QUEUES[name]]


def _dead_letter(spec: QueueSpec, raw: Any) -> DeadLetter:
    props = dict(raw.properties or {})
    headers = dict(props.get("application_headers") or {})
    body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode()
    kind, message_id = None, props.get("message_id")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            kind = parsed.get("type") if isinstance(parsed.get("type"), str) else None
            message_id = message_id or parsed.get("message_id")
    except ValueError:
        pass  # undecodable poison: listed all the same
    # The consumer's count of failed attempts. Not x-delivery-count: on a quorum DLQ that counts our
    # own listings (each returns the messages to the queue).
    attempts = int(headers.get(ATTEMPTS_HEADER) or 0)
    error = headers.get(ERROR_HEADER)
    if error is None and headers.get("x-first-death-reason"):
        # Dead-lettered by RabbitMQ itself: the message kept killing its consumer (delivery limit).
        error = f"rabbitmq: {headers['x-first-death-reason']}"
    return DeadLetter(queue=spec.name, message_id=message_id, type=kind,
                      error=error.decode() if isinstance(error, bytes) else error, attempts=attempts, body=body,
                      content_type=props.get("content_type"), correlation_id=props.get("correlation_id"),
                      headers=headers)


@contextmanager
def _taken(url: str, spec: QueueSpec, limit: int) -> Iterator[tuple[Any, list[tuple[int, DeadLetter]]]]:
    """Every message of spec's DLQ (up to `limit`), unacked; closing the channel returns the rest."""
    with connect(url, confirm=False) as conn:
        ensure_connected(conn)
        declare(conn)  # a fresh vhost has no DLQ yet: then it is simply empty
        channel = conn.channel()
        try:
            taken: list[tuple[int, DeadLetter]] = []
            while len(taken) < limit:
                raw = channel.basic_get(queue=spec.dlq, no_ack=False)
                if raw is None:
                    break
                taken.append((raw.delivery_tag, _dead_letter(spec, raw)))
            yield channel, taken
        finally:
            channel.close()


def list_dead(url: str, queue: str | None = None, *, limit: int = 10_000) -> list[DeadLetter]:
    """Every dead letter, oldest first, left where it is."""
    found: list[DeadLetter] = []
    for spec in specs(queue):
        with _taken(url, spec, limit) as (_, taken):
            found.extend(letter for _, letter in taken)
    return found


def replay(url: str, queue: str | None = None, *, message_id: str | None = None, everything: bool = False,
           limit: int = 10_000) -> list[DeadLetter]:
    """Republish to its work queue, then remove from the DLQ, the message `message_id` (or all)."""
    if not everything and not message_id:
        raise ValueError("say which: a message id, or everything")
    replayed: list[DeadLetter] = []
    publisher = Publisher(url)
    try:
        for spec in specs(queue):
            with _taken(url, spec, limit) as (channel, taken):
                for tag, letter in taken:
                    if not everything and letter.message_id != message_id:
                        continue
                    headers = {k: v for k, v in letter.headers.items() if k not in _DROPPED_HEADERS}
                    headers[REPLAYED_HEADER] = int(letter.headers.get(REPLAYED_HEADER) or 0) + 1
                    publisher.publish_raw(letter.body, exchange=PLUMBING, routing_key=spec.name,
                                          message_id=letter.message_id, correlation_id=letter.correlation_id,
                                          headers=headers, content_type=letter.content_type or "application/json")
                    channel.basic_ack(tag)  # only after the broker confirmed the copy
                    replayed.append(letter)
    finally:
        publisher.close()
    return replayed
