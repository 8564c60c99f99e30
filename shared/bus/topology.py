"""The whole bus topology, declared in one place, idempotently, by every service at start.

    gateway ──"inbound.message"──▶ [switchboard] (topic)
                                      │ inbound.#            ┌──────────────────────────────┐
                                      ├──────────────────▶ router.inbound (quorum) ──▶ router
                                      │ conversation.#       └─────┬──────────────▲────────┘
                                      └──────────────────▶ notifier.events (quorum) ──▶ notifier
    gateway ──"delivery.status"──▶ [switchboard] ── delivery.# ──▶ notifier.events
    gateway, router ──"survey.answer", "survey.opt_out"──▶ [switchboard] ── survey.# ──▶ notifier.events

    [switchboard.direct] (direct), routing key = queue name, carries the plumbing of each queue Q:
      Q.retry   a holding queue: a failed message waits there for its backoff (per-message TTL),
                then RabbitMQ dead-letters it back to Q;
      Q.dlq     dead letters: poison messages, messages out of attempts, and (via the quorum
                queue's delivery limit) messages that crashed their consumer too often.

Naming convention: `<service>.<purpose>` for work queues, `.retry` and `.dlq` suffixes for their
plumbing. Declaring twice is harmless; declaring with different arguments fails loudly at start
(RabbitMQ's PRECONDITION_FAILED), which is what we want.

The in-memory transport of the embedded mode has no TTL or dead-lettering: there a retry goes
straight back to Q (see `retry_route`), and the delivery limit does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu import Connection, Exchange, Queue

EVENTS = Exchange("switchboard", type="topic", durable=True)
PLUMBING = Exchange("switchboard.direct", type="direct", durable=True)

#: How many times RabbitMQ delivers one message before dead-lettering it. Handler failures are
#: counted by the consumer (headers) and go through Q.retry; this limit is the safety net for a
#: message that kills its consumer process (no code runs to count that).
DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]  # routing keys on EVENTS

    @property
    def retry(self) -> str:
        return f"{self.name}.retry"

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


ROUTER_INBOUND = QueueSpec("router.inbound", ("inbound.#",))
NOTIFIER_EVENTS = QueueSpec("notifier.events", ("conversation.#", "delivery.#", "survey.#"))

QUEUES: dict[str, QueueSpec] = {q.name: q for q in (ROUTER_INBOUND, NOTIFIER_EVENTS)}


def is_rabbitmq(conn: Connection) -> bool:
    return conn.transport.driver_type == "amqp"


def work_queue(spec: QueueSpec, rabbit: bool) -> Queue:
    """The queue a service consumes; bound to its event keys and to its own name for retries."""
    args = {}
    if rabbit:
        args = {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": PLUMBING.name,
            "x-dead-letter-routing-key": spec.dlq,
        }
    from kombu import binding

    bindings = [binding(EVENTS, routing_key=key) for key in spec.bindings]
    bindings.append(binding(PLUMBING, routing_key=spec.name))
    return Queue(spec.name, bindings=bindings, durable=True, queue_arguments=args or None)


def retry_queue(spec: QueueSpec) -> Queue:
    # Classic, not quorum: it only holds messages for their backoff and then dead-letters them.
    return Queue(spec.retry, exchange=PLUMBING, routing_key=spec.retry, durable=True,
                 queue_arguments={"x-dead-letter-exchange": PLUMBING.name, "x-dead-letter-routing-key": spec.name})


def dead_letter_queue(spec: QueueSpec, rabbit: bool) -> Queue:
    args = {"x-queue-type": "quorum"} if rabbit else None
    return Queue(spec.dlq, exchange=PLUMBING, routing_key=spec.dlq, durable=True, queue_arguments=args)


def retry_route(spec: QueueSpec, rabbit: bool) -> str:
    """Where a failed message is published to wait for its next attempt."""
    return spec.retry if rabbit else spec.name


def declare(conn: Connection) -> None:
    """Declare every exchange and queue. Every service calls it at start; repeating is harmless."""
    rabbit = is_rabbitmq(conn)
    with conn.channel() as channel:
        EVENTS(channel).declare()
        PLUMBING(channel).declare()
        for spec in QUEUES.values():
            work_queue(spec, rabbit)(channel).declare()
            if rabbit:
                retry_queue(spec)(channel).declare()
            dead_letter_queue(spec, rabbit)(channel).declare()
