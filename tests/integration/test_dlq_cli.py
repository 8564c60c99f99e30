"""`switchboard dlq list|replay` against the real RabbitMQ: a failing message is dead-lettered and
listed with its error; once the cause is fixed, replaying it gets it handled, once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from services.cli import main
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import EVENTS, NOTIFIER_EVENTS
from shared.contracts import ConversationResolved, Envelope
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

    publisher = Publisher(rabbit_url)
    worker = Worker(url=rabbit_url, spec=NOTIFIER_EVENTS, handler=handler, publisher=publisher, max_attempts=1,
                    name="test")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(20)
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
    finally:
        stop.set()
        thread.join(10)
        publisher.close()
