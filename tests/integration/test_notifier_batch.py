"""A micro-batch of the notifier's events: sends to different conversations are in flight together,
each conversation's messages leave in the order they were written, and everything is sent once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.notifier.handlers import NotifierDeps, WaitingForEarlier, handle_batch
from services.notifier.models import AgentNotice, Outbox
from services.notifier.senders import Registry, SendResult, TransientSendError
from services.notifier.senders.sandbox import SandboxSender
from shared.contracts import ConversationOpened, ConversationReply, Envelope

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


class SlowProvider:
    """A provider that takes `latency` seconds per call, and remembers how many calls it had at once."""

    channel = "telegram"

    def __init__(self, latency: float, fail: set[str] | None = None):
        self.latency = latency
        self.fail = set(fail or ())
        self.sent: list[tuple[str, str]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def send(self, address, text, *, options=None) -> SendResult:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.latency)
            if text in self.fail:
                self.fail.discard(text)
                raise TransientSendError("502 from provider")
            with self._lock:
                self.sent.append((address, text))
                return SendResult(provider_message_id=str(len(self.sent)))
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8, thread_name_prefix="test-send") as executor:
        yield executor


def make_deps(config, sessions, sender, pool) -> NotifierDeps:
    agents = SandboxSender("email", out=open("/dev/null", "w"))  # the owner's notices: not what is tested
    return NotifierDeps(config=config, sessions=sessions, senders=Registry({"telegram": sender, "email": agents}),
                        compose_ack=lambda ev, at: f"ack {ev.conversation_id}", clock=lambda: AT, send_pool=pool)


def opened(conv: str) -> Envelope:
    ev = ConversationOpened(
        conversation_id=conv, opening=1, reference="SB-ABC", customer_id=f"u-{conv}", customer_name="Anna",
        channel="telegram", reply_to=f"chat-{conv}", language="en", category="delivery", owner_id="anna",
        owner_name="Anna Kowalska", assignment_reason="r", received_at=AT, promise_due=AT + timedelta(hours=4),
        inbound_message_id=f"m-{conv}", acknowledge=True)
    return Envelope.wrap(ev, message_id=f"e-{conv}", correlation_id=f"c-{conv}", occurred_at=AT)


def reply(conv: str, n: int) -> Envelope:
    ev = ConversationReply(reply_id=f"r-{conv}-{n}", conversation_id=conv, channel="telegram", reply_to=f"chat-{conv}",
                           reply_from=None, text=f"reply {n} in {conv}", agent_id="anna", language="en")
    return Envelope.wrap(ev, message_id=f"e-r-{conv}-{n}", correlation_id=f"c-{conv}", occurred_at=AT)


def batch() -> list[Envelope]:
    # Six conversations, interleaved as the queue would hold them; three messages in each of two.
    return [opened("a"), opened("b"), reply("a", 1), opened("c"), opened("d"), reply("a", 2), reply("b", 1),
            opened("e"), opened("f"), reply("b", 2)]


def texts_to(sender: SlowProvider, conv: str) -> list[str]:
    return [text for address, text in sender.sent if address == f"chat-{conv}"]


def test_a_batch_sends_conversations_at_once_each_in_order_and_once(example_config, sessions, pool) -> None:
    sender = SlowProvider(latency=0.2)
    deps = make_deps(example_config, sessions, sender, pool)
    results = handle_batch(batch(), deps)
    assert results == [[]] * 10
    assert texts_to(sender, "a") == ["ack a", "reply 1 in a", "reply 2 in a"]
    assert texts_to(sender, "b") == ["ack b", "reply 1 in b", "reply 2 in b"]
    assert sorted(texts_to(sender, c)[0] for c in "cdef") == ["ack c", "ack d", "ack e", "ack f"]
    assert sender.most_in_flight > 1  # the six conversations did not wait for each other
    # The batch redelivered (a consumer killed before its ack): nothing goes out again.
    assert handle_batch(batch(), deps) == [[]] * 10
    assert len(sender.sent) == 10
    with sessions() as s:
        assert set(s.scalars(select(Outbox.status).where(Outbox.kind != "notice"))) == {"sent"}


def test_a_failed_send_is_that_events_alone_and_its_conversation_waits_for_it(example_config, sessions, pool) -> None:
    sender = SlowProvider(latency=0.05, fail={"reply 1 in a"})
    deps = make_deps(example_config, sessions, sender, pool)
    results = handle_batch(batch(), deps)
    # The failed send is retried by the bus; the next of its conversation waits for it, in order.
    assert isinstance(results[2], TransientSendError) and isinstance(results[5], WaitingForEarlier)
    assert [r for i, r in enumerate(results) if i not in (2, 5)] == [[]] * 8
    assert texts_to(sender, "a") == ["ack a"] and len(texts_to(sender, "b")) == 3
    # The bus's retries, in the order they come back: each leaves once, in the order written.
    assert handle_batch([reply("a", 1), reply("a", 2)], deps) == [[], []]
    assert texts_to(sender, "a") == ["ack a", "reply 1 in a", "reply 2 in a"]


def test_without_a_pool_a_batch_is_handled_one_event_after_another(example_config, sessions) -> None:
    sender = SlowProvider(latency=0.01)
    deps = make_deps(example_config, sessions, sender, None)
    assert handle_batch(batch(), deps) == [[]] * 10
    assert sender.most_in_flight == 1 and len(sender.sent) == 10


def test_two_replicas_on_the_same_batch_send_each_message_once(example_config, sessions, pool) -> None:
    # A batch redelivered to a second replica while the first still has it: both claim it at once.
    # One replica's claims win; the other finds their keys taken (its set-based claim gives way and
    # it claims the events one by one, finding the rows) and sends nothing twice.
    sender = SlowProvider(latency=0.05)
    agents = RecordingAgents()
    deps = [make_deps(example_config, sessions, sender, pool) for _ in range(2)]
    for d in deps:
        d.senders = Registry({"telegram": sender, "email": agents})
    events = [opened(c) for c in "abcdefgh"]
    start = threading.Barrier(2)
    results: list = [None, None]

    def replica(k: int) -> None:
        start.wait()
        results[k] = handle_batch(events, deps[k])

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(text for _, text in sender.sent) == [f"ack {c}" for c in "abcdefgh"]
    assert len(agents.sent) == 8  # the owner's notice of each conversation, once
    with sessions() as s:
        assert set(s.scalars(select(Outbox.status))) == {"sent"}
        assert set(s.scalars(select(AgentNotice.status))) == {"sent"}
    # Whatever a replica could not send now (the other held the row) comes back to it as a retry.
    for outcome in results[0] + results[1]:
        assert outcome == [] or isinstance(outcome, TransientSendError), outcome


class RecordingAgents:
    channel = "email"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, address, text, *, options=None) -> SendResult:
        with self._lock:
            self.sent.append(address)
            return SendResult(provider_message_id=f"mail-{len(self.sent)}")
