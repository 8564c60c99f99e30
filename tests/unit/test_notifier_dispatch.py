"""The notifier's dispatch table: every event its queue is bound to has a handler (one missing would
send those events to the DLQ as UnknownEvent), and it handles nothing else."""

from __future__ import annotations

from services.notifier import promises
from services.notifier.handlers import HANDLERS
from shared.bus.topology import NOTIFIER_EVENTS
from shared.contracts import PAYLOAD_TYPES


def _event_types() -> set[str]:
    return {event_type for event_type, _version in PAYLOAD_TYPES}


def _bound_to_the_notifier(event_type: str) -> bool:
    # The queue's bindings are "<prefix>.#" topic patterns.
    return any(event_type.startswith(key.removesuffix("#")) for key in NOTIFIER_EVENTS.bindings)


def test_every_event_the_notifiers_queue_receives_has_a_handler_and_no_other() -> None:
    received = {t for t in _event_types() if _bound_to_the_notifier(t)}
    assert received and set(HANDLERS) == received


def test_every_event_a_promise_follows_is_handled() -> None:
    assert set(promises.TRACKED) <= set(HANDLERS)

