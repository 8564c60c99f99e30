"""The whole bus topology, declared in one place, idempotently, by every service at start.

    gateway ──"inbound.message"──▶ [switchboard] (topic)
                                      │ inbound.#            ┌──────────────────────────────┐
                                      ├──────────────────▶ router.inbound (quorum) ──▶ router
                                      │ conversation.#       └─────┬──────────────▲────────┘
                                      └──────────────────▶ notifier.events (quorum) ──▶ notifier
    gateway ──"delivery.status"──▶ [switchboard] ── delivery.# ──▶ notifier.events
    gateway, router ──"survey.answer", "survey.opt_out"──▶ [switchboard] ── survey.# ──▶ notifier.events
    notifier ──"feedback.survey_result"──▶ [switchboard] ── feedback.# ──▶ router.inbound (the KPIs' surveys)
    router ──"delivery.mail_report"──▶ [switchboard] ── delivery.# ──▶ notifier.events (a bounce of our mail)
    notifier ──"suppression.address"──▶ [switchboard] ── suppression.# ──▶ router.inbound (shown to agents)
    router ──"ownership.phone"──▶ [switchboard] ── ownership.# ──▶ gateway.owners ──▶ gateway (whom a call rings)

    [switchboard.direct] (direct), routing key = queue name, carries the plumbing of each queue Q:

      consumer ── failed, wait ~d ──▶ Q.wait.<T>s (quorum, x-message-ttl T) ── expires ──▶ Q
                                      T in RETRY_TIERS = 1, 5, 15, 60, 120, 300 seconds
      Q.dlq     dead letters: poison messages, messages out of attempts, and (via the quorum
                queue's delivery limit) messages that crashed their consumer too often.

Every queue is a quorum queue, on one broker as on a cluster: RabbitMQ runs quorum queues on a
single node too, so there is no queue-type setting and the single broker runs what the cluster
runs. On a cluster each is a Raft group with a member on every node (the default initial group
size is the cluster's size), so a message confirmed to a publisher is on a majority of nodes and
every queue stays available while a majority is up.

Why tiers: RabbitMQ expires messages only at the head of a queue, so with one holding queue and
per-message TTLs a message waiting 300 s at the head held back one due in 1 s behind it. Each tier
has one queue-level TTL, so within a tier FIFO order is expiry order; the consumer picks the tier
for each retry's delay (`choose_tier`).

Why the tiers are quorum queues with at-least-once dead-lettering (RabbitMQ >= 3.10): a retry
waiting out its delay is an accepted message like any other. In a classic queue it lived on one
node and died with it; a quorum tier survives the loss of any one node of three. Expiry hands the
message back to Q by dead-lettering, which by default is at-most-once (a leader change between
the expiry and Q's confirm drops it); `x-dead-letter-strategy: at-least-once` keeps it in the tier
until Q confirmed it (it needs `x-overflow: reject-publish`). A message dead-lettered twice is
harmless: every consumer dedupes on its id. The work queues' own dead-lettering (delivery limit ->
Q.dlq) stays at-most-once: it is the safety net for a message that keeps killing its consumer, and
adding the argument to an existing queue would be refused; an operator can set it by policy.

Earlier brokers had classic tiers `Q.retry.<T>s` and a single `Q.retry` (per-message TTL). They are
no longer declared (a classic queue whose node is down cannot be declared, which would stop a
service starting on a cluster that lost that node); where they exist, their own arguments still
dead-letter what waits in them back to Q.

Naming convention: `<service>.<purpose>` for work queues, `.wait.<T>s` and `.dlq` suffixes for
their plumbing. Declaring twice is harmless; declaring with different arguments fails loudly at
start (RabbitMQ's PRECONDITION_FAILED), which is what we want — and why the quorum tiers have new
names instead of new arguments on the old classic ones.

The in-memory transport of the embedded mode has no TTL or dead-lettering: there a retry goes
straight back to Q (see `retry_route`), and the delivery limit does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from kombu import Connection, Exchange, Queue

EVENTS = Exchange("switchboard", type="topic", durable=True)
PLUMBING = Exchange("switchboard.direct", type="direct", durable=True)

#: How many times RabbitMQ delivers one message before dead-lettering it. Handler failures are
#: counted by the consumer (headers) and go through the retry tiers; this limit is the safety net
#: for a message that kills its consumer process (no code runs to count that).
DELIVERY_LIMIT = 20

#: The delays (seconds) a retry can wait, one holding queue each. 1 s for a first quick retry;
#: 300 s is the backoff's cap; from 5 s up each tier is at most 4x the one below, so rounding a
#: provider's retry_after up to a tier waits at most 4x longer than asked, and a
#: burst of failures spreads over neighbouring tiers (see `choose_tier`). Few tiers, because each
#: is one more (mostly empty) queue per work queue. Changing a tier's value means a new queue name,
#: so existing brokers never see different arguments on an existing queue.
RETRY_TIERS: tuple[int, ...] = (1, 5, 15, 60, 120, 300)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]  # routing keys on EVENTS

    @property
    def retry(self) -> str:
        """The legacy single holding queue: not declared, drained on upgraded brokers, never published to."""
        return f"{self.name}.retry"

    def legacy_retry_tier(self, seconds: int) -> str:
        """The classic tier of earlier versions: not declared, drains by its own arguments."""
        return f"{self.name}.retry.{seconds}s"

    def retry_tier(self, seconds: int) -> str:
        return f"{self.name}.wait.{seconds}s"

    @property
    def retry_tiers(self) -> tuple[str, ...]:
        return tuple(self.retry_tier(t) for t in RETRY_TIERS)

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


ROUTER_INBOUND = QueueSpec("router.inbound", ("inbound.#", "feedback.#", "suppression.#"))
NOTIFIER_EVENTS = QueueSpec("notifier.events", ("conversation.#", "delivery.#", "survey.#"))
#: The gateway's read model of who owns a caller's conversation (services/gateway/owners.py).
GATEWAY_OWNERS = QueueSpec("gateway.owners", ("ownership.#",))

QUEUES: dict[str, QueueSpec] = {q.name: q for q in (ROUTER_INBOUND, NOTIFIER_EVENTS, GATEWAY_OWNERS)}


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
    """The legacy holding queue as earlier versions declared it (no longer declared at start;
    the upgrade test uses it to make an upgraded broker)."""
    return Queue(spec.retry, exchange=PLUMBING, routing_key=spec.retry, durable=True,
                 queue_arguments={"x-dead-letter-exchange": PLUMBING.name, "x-dead-letter-routing-key": spec.name})


def retry_tier_queue(spec: QueueSpec, seconds: int) -> Queue:
    # The TTL is the queue's, never the message's, so the head is always the first to expire.
    # Quorum with at-least-once dead-lettering: see the module's docstring.
    name = spec.retry_tier(seconds)
    return Queue(name, exchange=PLUMBING, routing_key=name, durable=True, queue_arguments={
        "x-queue-type": "quorum",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": PLUMBING.name,
        "x-dead-letter-routing-key": spec.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        # Twelve tiers' leaders spread over the nodes instead of all on the declaring one.
        "x-queue-leader-locator": "balanced",
    })


def choose_tier(delay: float, *, at_least: float = 0.0, u: float, tiers: tuple[int, ...] = RETRY_TIERS) -> int:
    """The tier a retry due in `delay` seconds waits in; `u` is a uniform draw in [0, 1).

    Tiers not below `at_least` (a provider's retry_after) are the candidates; past the largest
    tier, the largest. Between two candidates the delay is rounded randomly, up with probability
    proportional to its distance from the lower one: the expected wait stays `delay`, and the
    jitter of a burst of failures survives as a spread over two neighbouring tiers instead of
    collapsing onto one (which would retry them all in the same instant).
    """
    candidates = [t for t in tiers if t >= at_least] or [max(tiers)]
    if delay <= candidates[0]:
        return candidates[0]
    for lower, upper in pairwise(candidates):
        if delay <= upper:
            return upper if u < (delay - lower) / (upper - lower) else lower
    return candidates[-1]


def dead_letter_queue(spec: QueueSpec, rabbit: bool) -> Queue:
    args = {"x-queue-type": "quorum"} if rabbit else None
    return Queue(spec.dlq, exchange=PLUMBING, routing_key=spec.dlq, durable=True, queue_arguments=args)


def retry_route(spec: QueueSpec, rabbit: bool, tier: int) -> str:
    """Where a failed message is published to wait `tier` seconds for its next attempt; in memory,
    where nothing expires, straight back to Q."""
    return spec.retry_tier(tier) if rabbit else spec.name


def declare(conn: Connection) -> None:
    """Declare every exchange and queue. Every service calls it at start; repeating is harmless."""
    rabbit = is_rabbitmq(conn)
    with conn.channel() as channel:
        EVENTS(channel).declare()
        PLUMBING(channel).declare()
        for spec in QUEUES.values():
            work_queue(spec, rabbit)(channel).declare()
            if rabbit:
                for seconds in RETRY_TIERS:
                    retry_tier_queue(spec, seconds)(channel).declare()
            dead_letter_queue(spec, rabbit)(channel).declare()
