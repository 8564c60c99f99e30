"""`switchboard dlq list|replay` against the real RabbitMQ: a failing message is dead-lettered and
listed with its error; once the cause is fixed, replaying it gets it handled, once — and the
notifier's outbox sends a message it had given up on, once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.cli import main
from services.notifier.handlers import MAX_SEND_ATTEMPTS, NotifierDeps, handle_event
from services.notifier.models import Outbox
from services.notifier.senders import Registry, SendResult, TransientSendError
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import EVENTS, NOTIFIER_EVENTS
from shared.contracts import ConversationResolved, Envelope, Redirected
from shared.db import make_engine, migrate, session_factory
from tests.support.wait import until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def resolved(n: int) -> Envelope:
    ev = ConversationResolved(conversation_id=f"conv-{n}", customer_id="c", channel="telegram", reply_to="42",
                              language="en", owner_id="anna", resolved_at=AT, human_replied=True)
    return Envelope.wrap(ev, message_id=f"msg-{n}", correlation_id=f"corr-{n}", occurred_at=AT)


def dlq_list(capsys, *args: str) -> list[dict]:
    assert main(["dlq", "list", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@contextmanager
def notifier_worker(rabbit_url: str, handler: Callable[[Envelope], list[Envelope]]) -> Iterator[Publisher]:
    """A consumer of notifier.events running `handler`, dead-lettering at its first failure;
    yields a publisher to the same broker."""
    publisher = Publisher(rabbit_url)
    worker = Worker(url=rabbit_url, spec=NOTIFIER_EVENTS, handler=handler, publisher=publisher, max_attempts=1,
                    name="test")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(20)
        yield publisher
    finally:
        stop.set()
        thread.join(10)
        publisher.close()


def test_poisoned_message_is_listed_then_replayed_and_handled_once(rabbit_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BROKER_URL", rabbit_url)
    handled: list[str] = []
    broken = threading.Event()
    broken.set()

    def handler(envelope: Envelope) -> list[Envelope]:
        if broken.is_set():
            raise RuntimeError("database password expired")
        handled.append(envelope.message_id)
        return []

    with notifier_worker(rabbit_url, handler) as publisher:
        publisher.publish(resolved(1))
        # Poison too: not an envelope at all. It is listed with its contract error.
        publisher.publish_raw({"hello": "world"}, exchange=EVENTS, routing_key="conversation.junk", message_id="junk-1")
        letters = until(lambda: (lambda got: got if len(got) == 2 else None)(dlq_list(capsys)),
                        message="two dead letters")
        by_id = {d["message_id"]: d for d in letters}
        assert by_id["msg-1"] == {"queue": "notifier.events", "message_id": "msg-1", "type": "conversation.resolved",
                                  "error": "RuntimeError: database password expired", "attempts": 1}
        assert by_id["junk-1"]["error"].startswith("contract:") and by_id["junk-1"]["type"] is None
        assert dlq_list(capsys) == letters  # listing takes nothing away
        assert handled == []

        assert main(["dlq", "list", "--queue", "notifier.events"]) == 0  # the human table
        table = capsys.readouterr().out
        assert "msg-1" in table and "database password expired" in table and "2 dead letter(s)" in table

        broken.clear()  # the cause is fixed
        assert main(["dlq", "replay", "--queue", "notifier.events.dlq", "--id", "msg-1"]) == 0
        assert "replayed msg-1 (conversation.resolved) to notifier.events" in capsys.readouterr().out
        until(lambda: handled == ["msg-1"], message="the replayed message handled")
        assert [d["message_id"] for d in dlq_list(capsys)] == ["junk-1"]
        assert handled == ["msg-1"]  # once

        assert main(["dlq", "replay", "--id", "msg-1"]) == 1  # gone from the DLQ: nothing to replay
        assert "no dead letter" in capsys.readouterr().err
        assert main(["dlq", "list", "--queue", "nope"]) == 2
        assert "unknown queue" in capsys.readouterr().err


class Instagram:
    """The Graph API for Instagram: down (503) while `outage` is set."""

    channel = "instagram"

    def __init__(self) -> None:
        self.outage = threading.Event()
        self.sent: list[tuple[str, str]] = []

    def send(self, address: str, text: str, *, options=None) -> SendResult:
        if self.outage.is_set():
            raise TransientSendError("503 from the Graph API")
        self.sent.append((address, text))
        return SendResult(provider_message_id=f"mid-{len(self.sent)}")


def test_a_redirect_note_dead_lettered_after_its_last_try_is_sent_once_when_replayed(
        rabbit_url, pg_url, example_config, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BROKER_URL", rabbit_url)
    engine = make_engine(pg_url)
    migrate(engine)
    instagram = Instagram()
    instagram.outage.set()
    deps = NotifierDeps(config=example_config, sessions=session_factory(engine),
                        senders=Registry({"instagram": instagram}), compose_ack=lambda ev, at: "never used",
                        clock=lambda: AT)
    note = Envelope.wrap(Redirected(channel="instagram", reply_to="17841400000000001", language="en",
                                    received_at=AT, inbound_message_id="ig-1"),
                         message_id="ig-1", correlation_id="corr-ig-1", occurred_at=AT)

    def status() -> list[tuple]:
        with deps.sessions() as s:
            return [tuple(r) for r in s.execute(select(Outbox.status, Outbox.attempts))]

    handled: list[str] = []

    def handler(envelope: Envelope) -> list[Envelope]:
        events = handle_event(envelope, deps)
        handled.append(envelope.message_id)
        return events

    # The tries before the last one, as the bus's retries would make them.
    for _ in range(MAX_SEND_ATTEMPTS - 1):
        with pytest.raises(TransientSendError):
            handle_event(note, deps)
    try:
        with notifier_worker(rabbit_url, handler) as publisher:
            publisher.publish(note)  # the last try fails too: the note is given up on and dead-lettered
            until(lambda: [d["message_id"] for d in dlq_list(capsys)] == ["ig-1"], message="the note dead-lettered")
            assert status() == [("dead", MAX_SEND_ATTEMPTS)] and instagram.sent == []

            instagram.outage.clear()  # the Graph API is back
            assert main(["dlq", "replay", "--id", "ig-1"]) == 0
            until(lambda: handled == ["ig-1"], message="the replayed note handled")
            assert [address for address, _ in instagram.sent] == ["17841400000000001"]
            assert status()[0][0] == "sent"

            publisher.publish(note)  # a second copy (a crash between the replay's publish and its ack)
            until(lambda: handled == ["ig-1", "ig-1"], message="the copy handled")
            assert len(instagram.sent) == 1
    finally:
        engine.dispose()
