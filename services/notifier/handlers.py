"""The notifier's events consumer: a dispatch table from event type to its handler.

Each outbound message goes through the outbox (services.notifier.outbox: claim, send, record, at
most once); the handlers decide what is sent: the customer's messages (customer_messages), the
providers' reports (delivery_reports), promises and agent notices (promises), surveys
(survey_flow).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from services.notifier import customer_messages, delivery_reports, outbox, promises, survey_flow
from services.notifier.deps import NotifierDeps
from services.notifier.outbox import (
    MAX_SEND_ATTEMPTS,
    SENDING_LOCK,
    Claim,
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

log = logging.getLogger(__name__)

# Named here too: the consumer's wiring and its callers know the notifier by this module.
__all__ = ["HANDLERS", "MAX_SEND_ATTEMPTS", "SENDING_LOCK", "NotifierDeps", "UnknownEvent", "WaitingForEarlier",
           "handle_batch", "handle_event"]


class UnknownEvent(Exception):
    """An event type this notifier has no handler for: a wiring mistake, so it goes to the DLQ."""


#: An event's handler: returns the events to publish, and adds to the list the agent notices it
#: made that are due now, claimed with their outbox rows (sent once the event is handled, after
#: the customer's message).
Handler = Callable[[Envelope, NotifierDeps, list[tuple[promises.ClaimedNotice, Claim]]], list[Envelope]]


def _promises_first(then: Callable[[Envelope, NotifierDeps], list[Envelope]] | None = None) -> Handler:
    """Promises and agent notices are stored first (database only, their own transaction), so that
    a promise is tracked even when the customer's message keeps failing; then `then`, if any."""
    def handle(envelope: Envelope, deps: NotifierDeps,
               notices: list[tuple[promises.ClaimedNotice, Claim]]) -> list[Envelope]:
        notices += promises.record(envelope, deps)
        return then(envelope, deps) if then is not None else []
    return handle


def _alone(handler: Callable[[Envelope, NotifierDeps], list[Envelope]]) -> Handler:
    """An event that means nothing for promises and agent notices."""
    def handle(envelope: Envelope, deps: NotifierDeps,
               notices: list[tuple[promises.ClaimedNotice, Claim]]) -> list[Envelope]:
        return handler(envelope, deps)
    return handle


def _claimed_together(envelope: Envelope, deps: NotifierDeps,
                      notices: list[tuple[promises.ClaimedNotice, Claim]]) -> list[Envelope]:
    # The promise and notices are recorded, and the notices due now claimed, in the transaction that
    # claims the acknowledgement: one commit before the sends (customer_messages.claim_events).
    return customer_messages.claim_and_send(envelope, deps)


HANDLERS: dict[str, Handler] = {
    ConversationOpened.TYPE: _claimed_together,
    ConversationMessage.TYPE: _claimed_together,  # agents' notices only
    # Promises and agents' notices first: promises.record does what there is to do.
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


#: Events whose claims are made together for a batch (customer_messages.claim_events).
CLAIMED_TOGETHER = (ConversationOpened.TYPE, ConversationMessage.TYPE)


def handle_event(envelope: Envelope, deps: NotifierDeps) -> list[Envelope]:
    """Handle one event; return the events to publish: the handler's, then the suppressions its
    sends ran into (an SMS opt-out), which the router shows to agents."""
    handler = HANDLERS.get(envelope.type)
    if handler is None:
        raise UnknownEvent(f"no notifier handler for {envelope.type!r}")
    with announcing_suppressions() as announced:
        notices: list[tuple[promises.ClaimedNotice, Claim]] = []
        result = handler(envelope, deps, notices)
        if notices:
            # Claimed with the event's record; out at once rather than at the next tick.
            promises.record_sent(promises.send_claimed(notices, deps, deps.clock()), deps, deps.clock())
        return result + announced


def handle_batch(envelopes: Sequence[Envelope], deps: NotifierDeps) -> list[list[Envelope] | Exception]:
    """A micro-batch from the consumer: per event (in the order given) its events to publish, or
    the exception it failed with alone (the worker retries or dead-letters that one by itself).

    Sends are in flight together while a conversation's messages still leave in order: the events
    of one conversation are handled one after another, in the order they came; different
    conversations at once on `deps.send_pool`.

    The conversation.opened and .message events that lead their conversation's lane are claimed
    first, together, in one transaction of set-based statements (promises, agent notices, the
    acknowledgements' and due notices' outbox rows: customer_messages.claim_events), committed
    before any send; if that transaction fails, they are claimed again one by one, so a poison
    event fails alone. Their rows are then sent under one sending transaction (their locks taken
    in one round trip, their records written in one UPDATE and COMMIT when all are sent), before
    the lanes' other events.
    The notices' statuses after the sends are recorded in one statement for the batch. Every other
    event is handled exactly as `handle_event` handles it alone — its own claim in the outbox, its
    sending lock, its record — so exactly once and the outbox's order rule (WaitingForEarlier, for
    a conversation's messages in other batches or consumers) are what they are for one event."""
    results: list[list[Envelope] | Exception] = [[] for _ in envelopes]
    lanes = list(_by_conversation(envelopes).values())
    # Only a lane's first event: a conversation's later events wait for its earlier ones' sends.
    claimed = _claim_together(envelopes, [lane[0] for lane in lanes if envelopes[lane[0]].type in CLAIMED_TOGETHER],
                               deps, results)
    # The claimed rows' event, for the rows whose records could not be written.
    rows = {row_id: i for i, claims in claimed.items() for row_id in customer_messages.rows_to_send(claims)}

    def run(indexes: list[int], sending: outbox.SendingTogether | None = None) -> None:
        for i in indexes:
            envelope = envelopes[i]
            with correlated(envelope.correlation_id):
                try:
                    if i in claimed:
                        with announcing_suppressions() as announced:
                            customer_messages.send_claimed(claimed[i], deps, sending=sending)
                            results[i] = list(announced)
                    elif not isinstance(results[i], Exception):  # else: its claim failed
                        results[i] = handle_event(envelope, deps)
                except Exception as exc:  # noqa: BLE001 - this event's failure alone, settled by the worker
                    results[i] = exc

    # First the claimed events (each leads its lane) at once, under one sending transaction for
    # all their rows (outbox.sending_together: their locks in one round trip, their records in one
    # UPDATE and COMMIT); then the lanes' other events, each as handle_event handles it alone —
    # after the records, so that a conversation's next message finds its acknowledgement sent.
    with outbox.sending_together(deps, list(rows)) as sending:
        if sending is None:  # each send takes its own lock: every lane whole, at once
            _at_once(deps, lanes, run)
        else:
            _at_once(deps, [[i] for i in claimed], lambda lane: run(lane, sending))
    if sending is not None:
        _log_sent(envelopes, claimed, sending.sent())
        if sending.error is not None:
            for row_id in sending.unrecorded:  # sent, not recorded: the event's retry records them
                results[rows[row_id]] = sending.error
        _at_once(deps, [lane[1:] if lane[0] in claimed else lane for lane in lanes], run)
    outcomes = [outcome for claims in claimed.values() for outcome in claims.outcomes]
    try:
        promises.record_sent(outcomes, deps, deps.clock())
    except Exception:  # noqa: BLE001 - the sends are recorded on their outbox rows; the ticker settles the notices
        # Their leases end and the ticker takes them again: their outbox rows, sent, are not sent again.
        log.exception("the statuses of %d agent notices were not recorded; the ticker settles them", len(outcomes))
    return results


def _log_sent(envelopes: Sequence[Envelope], claimed: dict[int, customer_messages.EventClaims],
              sent: dict[int, dict]) -> None:
    """One line per event for what its claimed rows sent (production logs at INFO: a line costs
    about as much CPU as a tenth of an event's handling, and an event sends an acknowledgement
    and a notice), with the event's correlation id and the outbox rows."""
    if not sent or not log.isEnabledFor(logging.INFO):
        return
    for i, claims in claimed.items():
        what = [("acknowledgement", claims.ack)] if claims.ack is not None else []
        what += [("agent notice", claim) for _, claim in claims.notices]
        done = [(kind, claim.row_id, claim.send.channel) for kind, claim in what
                if claim.row_id in sent and claim.send is not None]
        if done:
            with correlated(envelopes[i].correlation_id):
                log.info("sent %s", ", ".join(f"{kind} on {channel}" for kind, _, channel in done),
                         extra={"outbox_ids": [row_id for _, row_id, _ in done]})


def _at_once(deps: NotifierDeps, lanes: list[list[int]], run: Callable[[list[int]], None]) -> None:
    """`run` each lane (its events in order), the lanes at once on `deps.send_pool`."""
    lanes = [lane for lane in lanes if lane]
    if deps.send_pool is None or len(lanes) <= 1:
        for lane in lanes:
            run(lane)
    else:
        for future in [deps.send_pool.submit(run, lane) for lane in lanes]:
            future.result()  # run() keeps every Exception: only a BaseException comes out here


def _claim_together(envelopes: Sequence[Envelope], indexes: list[int], deps: NotifierDeps,
                    results: list[list[Envelope] | Exception]) -> dict[int, customer_messages.EventClaims]:
    """The batch's events `indexes` claimed in one transaction; when it fails (a poison event, a
    key another replica took meanwhile), each alone, a failure kept in `results`."""
    if not indexes:
        return {}
    if len(indexes) > 1:
        try:
            with deps.uow() as uow:
                together = customer_messages.claim_events(uow, [envelopes[i] for i in indexes], deps, deps.clock())
            return dict(zip(indexes, together, strict=True))
        except Exception as exc:  # noqa: BLE001 - rolled back; claimed again one by one below
            log.warning("the batch's %d events failed to claim together (%s: %s); claiming them one by one",
                        len(indexes), type(exc).__name__, str(exc)[:300])
    alone = {}
    for i in indexes:
        with correlated(envelopes[i].correlation_id):
            try:
                with deps.uow() as uow:
                    [alone[i]] = customer_messages.claim_events(uow, [envelopes[i]], deps, deps.clock())
            except Exception as exc:  # noqa: BLE001 - this event's failure alone, settled by the worker
                results[i] = exc
    return alone


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
