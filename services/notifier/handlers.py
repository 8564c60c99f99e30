"""The notifier's events consumer: a dispatch table from event type to its handler.

Each outbound message goes through the outbox (services.notifier.outbox: claim, send, record, at
most once); the handlers decide what is sent: the customer's messages (customer_messages), the
providers' reports (delivery_reports), promises and agent notices (promises), surveys
(survey_flow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.notifier import customer_messages, delivery_reports, promises, survey_flow
from services.notifier.deps import NotifierDeps
from services.notifier.outbox import (
    MAX_SEND_ATTEMPTS,
    SENDING_LOCK,
    WaitingForEarlier,
    announcing_suppressions,
)
from shared.contracts import (
    ConversationAssigned,
    ConversationCalledBack,
    ConversationMessage,
    ConversationOpened,
    ConversationReply,
    ConversationResolved,
    DeliveryStatus,
    Envelope,
    MailReport,
    Redirected,
    SurveyAnswer,
    SurveyOptOut,
)
from shared.log import correlated

# Named here too: the consumer's wiring and its callers know the notifier by this module.
__all__ = ["HANDLERS", "MAX_SEND_ATTEMPTS", "SENDING_LOCK", "NotifierDeps", "UnknownEvent", "WaitingForEarlier",
           "handle_batch", "handle_event"]


class UnknownEvent(Exception):
    """An event type this notifier has no handler for: a wiring mistake, so it goes to the DLQ."""


#: An event's handler: returns the events to publish, and adds to the list the agent notices it
#: made that are due now (sent once the event is handled, after the customer's message).
Handler = Callable[[Envelope, NotifierDeps, list[int]], list[Envelope]]


def _promises_first(then: Callable[[Envelope, NotifierDeps], list[Envelope]] | None = None) -> Handler:
    """Promises and agent notices are stored first (database only, their own transaction), so that
    a promise is tracked even when the customer's message keeps failing; then `then`, if any."""
    def handle(envelope: Envelope, deps: NotifierDeps, notices: list[int]) -> list[Envelope]:
        notices += promises.record(envelope, deps)
        return then(envelope, deps) if then is not None else []
    return handle


def _alone(handler: Callable[[Envelope, NotifierDeps], list[Envelope]]) -> Handler:
    """An event that means nothing for promises and agent notices."""
    def handle(envelope: Envelope, deps: NotifierDeps, notices: list[int]) -> list[Envelope]:
        return handler(envelope, deps)
    return handle


def _acknowledge(envelope: Envelope, deps: NotifierDeps, notices: list[int]) -> list[Envelope]:
    # The promise and notices are recorded in the transaction that claims the acknowledgement: it
    # commits before the send all the same, with one commit per event instead of two.
    return customer_messages.acknowledge(envelope, deps, notices=notices)


HANDLERS: dict[str, Handler] = {
    ConversationOpened.TYPE: _acknowledge,
    # Promises and agents' notices only: promises.record does what there is to do.
    ConversationMessage.TYPE: _promises_first(),
    ConversationAssigned.TYPE: _promises_first(),
    ConversationCalledBack.TYPE: _promises_first(),
    ConversationReply.TYPE: _promises_first(customer_messages.send_reply),
    ConversationResolved.TYPE: _promises_first(survey_flow.schedule_survey),
    Redirected.TYPE: _alone(customer_messages.redirect),
    DeliveryStatus.TYPE: _alone(delivery_reports.record_delivery),
    MailReport.TYPE: _alone(delivery_reports.record_mail_report),
    SurveyAnswer.TYPE: _alone(survey_flow.record_answer),
    SurveyOptOut.TYPE: _alone(survey_flow.record_opt_out),
}


def handle_event(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """Handle one event; return the events to publish: the handler's, then the suppressions its
    sends ran into (an SMS opt-out), which the router shows to agents."""
    handler = HANDLERS.get(envelope.type)
    if handler is None:
        raise UnknownEvent(f"no notifier handler for {envelope.type!r}")
    with announcing_suppressions() as announced:
        notices: list[int] = []
        result = handler(envelope, deps, notices)
        promises.send_now(notices, deps)
        return result + announced


def handle_batch(envelopes: Sequence[Envelope], deps: NotifierDeps) -> list[list[Envelope] | Exception]:
    """A micro-batch from the consumer: per event (in the order given) its events to publish, or
    the exception it failed with alone (the worker retries or dead-letters that one by itself).

    Sends are in flight together while a conversation's messages still leave in order: the events
    of one conversation are handled one after another, in the order they came; different
    conversations at once on `deps.send_pool`. Each event is handled exactly as `handle_event`
    handles it alone — its own claim in the outbox, its sending lock, its record — so exactly once
    and the outbox's order rule (WaitingForEarlier, for a conversation's messages in other batches
    or consumers) are what they are for one event."""
    results: list[list[Envelope] | Exception] = [[] for _ in envelopes]

    def run(indexes: list[int]) -> None:
        for i in indexes:
            envelope = envelopes[i]
            with correlated(envelope.correlation_id):
                try:
                    results[i] = handle_event(envelope, deps)
                except Exception as exc:  # noqa: BLE001 - this event's failure alone, settled by the worker
                    results[i] = exc

    lanes = list(_by_conversation(envelopes).values())
    if deps.send_pool is None or len(lanes) == 1:
        for lane in lanes:
            run(lane)
    else:
        for future in [deps.send_pool.submit(run, lane) for lane in lanes]:
            future.result()  # run() keeps every Exception: only a BaseException comes out here
    return results


def _by_conversation(envelopes: Sequence[Envelope]) -> dict[str, list[int]]:
    """The batch's events (their indexes, in order) by what orders them: the conversation, else the
    address written to (a redirect note), else nothing (a delivery status: a lane of its own)."""
    lanes: dict[str, list[int]] = {}
    for i, envelope in enumerate(envelopes):
        payload = envelope.payload
        conversation = getattr(payload, "conversation_id", None)
        address = getattr(payload, "reply_to", None) or getattr(payload, "address", None)
        if conversation:
            key = f"conversation:{conversation}"
        elif address:
            key = f"address:{getattr(payload, 'channel', '')}:{address}"
        else:
            key = f"event:{i}"
        lanes.setdefault(key, []).append(i)
    return lanes
