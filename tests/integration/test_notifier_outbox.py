"""The notifier's outbox against the real PostgreSQL: each acknowledgement sent at most once."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.notifier import outbox
from services.notifier.handlers import (
    MAX_SEND_ATTEMPTS,
    SENDING_LOCK,
    NotifierDeps,
    UnknownEvent,
    WaitingForEarlier,
    handle_batch,
    handle_event,
)
from services.notifier.models import Outbox
from services.notifier.senders import PermanentSendError, Registry, SendResult, TransientSendError
from services.notifier.senders.sandbox import SandboxSender
from shared.contracts import (
    ConversationOpened,
    ConversationReply,
    Envelope,
    Identity,
    InboundMessage,
    Redirected,
)
from shared.db import make_engine, migrate, session_factory
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


class FlakySender:
    """A fake sender that fails the way providers do, then succeeds."""

    channel = "telegram"

    def __init__(self, failures: list[Exception]):
        self.failures = list(failures)
        self.sent: list[tuple[str, str]] = []

    def send(self, address, text, *, options=None) -> SendResult:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((address, text))
        return SendResult(provider_message_id=str(len(self.sent)))


def make_deps(config, sessions, sender) -> NotifierDeps:
    # The owner (Anna) is told of the assignment by e-mail; these tests are about the customer's messages.
    agents = SandboxSender("email", out=open("/dev/null", "w"))
    return NotifierDeps(config=config, sessions=sessions, senders=Registry({"telegram": sender, "email": agents}),
                        compose_ack=lambda ev, at: f"Thanks {ev.customer_name}, reference {ev.reference}",
                        clock=lambda: AT)


def opened(conv: str = "conv-1", opening: int = 1, reply_to: str = "42", acknowledge: bool = True) -> Envelope:
    ev = ConversationOpened(
        conversation_id=conv, opening=opening, reference="SB-ABC", customer_id="u1", customer_name="Anna",
        channel="telegram", reply_to=reply_to, language="en", category="delivery", owner_id="anna",
        owner_name="Anna Kowalska", assignment_reason="r", received_at=AT, promise_due=AT + timedelta(hours=4),
        inbound_message_id="m1", acknowledge=acknowledge)
    return Envelope.wrap(ev, message_id=f"e-{conv}-{opening}", correlation_id="c", occurred_at=AT)


def rows(sessions) -> list[Outbox]:
    with sessions() as s:
        return list(s.scalars(select(Outbox).where(Outbox.kind != "notice").order_by(Outbox.id)))


def test_acknowledgement_is_sent_once_even_when_the_event_comes_twice(example_config, sessions) -> None:
    sender = SandboxSender("telegram", out=open("/dev/null", "w"))
    deps = make_deps(example_config, sessions, sender)
    handle_event(opened(), deps)
    handle_event(opened(), deps)
    assert [(r.address, r.text) for r in sender.sent] == [("42", "Thanks Anna, reference SB-ABC")]
    [row] = rows(sessions)
    assert row.status == "sent" and row.idempotency_key == "ack:conv-1:1" and row.provider_message_id


def test_a_reopened_conversation_is_acknowledged_again(example_config, sessions) -> None:
    sender = FlakySender([])
    deps = make_deps(example_config, sessions, sender)
    handle_event(opened(opening=1), deps)
    handle_event(opened(opening=2), deps)
    assert len(sender.sent) == 2


def test_transient_failure_keeps_it_pending_and_asks_for_a_retry(example_config, sessions) -> None:
    sender = FlakySender([TransientSendError("502 from provider")])
    deps = make_deps(example_config, sessions, sender)
    with pytest.raises(TransientSendError):
        handle_event(opened(), deps)
    [row] = rows(sessions)
    assert row.status == "pending" and row.attempts == 1 and "502" in row.last_error
    handle_event(opened(), deps)  # the bus's retry
    assert len(sender.sent) == 1 and rows(sessions)[0].status == "sent"


def test_permanent_failure_is_recorded_and_not_retried(example_config, sessions) -> None:
    sender = FlakySender([PermanentSendError("bot was blocked by the user")])
    deps = make_deps(example_config, sessions, sender)
    handle_event(opened(), deps)  # no exception: nothing for the bus to retry
    handle_event(opened(), deps)
    [row] = rows(sessions)
    assert row.status == "failed" and "blocked" in row.last_error and sender.sent == []


def test_a_rejected_bot_token_is_not_stored_in_the_error(example_config, sessions, fake_bot_api) -> None:
    # python-telegram-bot names the token in InvalidToken when getMe answers 401.
    from services.notifier.senders.telegram import TelegramSender

    token = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    fake_bot_api.reject_token = True
    sender = TelegramSender(token, api_base=fake_bot_api.base_url, timeout=5)
    try:
        handle_event(opened(), make_deps(example_config, sessions, sender))
    finally:
        sender.close()
    [row] = rows(sessions)
    assert row.status == "failed" and "rejected" in row.last_error
    assert token not in row.last_error and "AAHdqTcv" not in row.last_error


def test_no_acknowledgement_when_the_router_says_not_to(example_config, sessions) -> None:
    sender = FlakySender([])
    handle_event(opened(acknowledge=False), make_deps(example_config, sessions, sender))
    assert sender.sent == [] and rows(sessions) == []


def test_daily_cap_per_customer(example_config, sessions) -> None:
    sender = FlakySender([])
    deps = make_deps(example_config, sessions, sender)
    cap = example_config.limits.ack_daily_cap
    for i in range(cap + 2):
        handle_event(opened(conv=f"conv-{i}"), deps)
    assert len(sender.sent) == cap
    assert [r.status for r in rows(sessions)][cap:] == ["skipped", "skipped"]


def test_unknown_event_type_is_an_error_not_a_silent_200(example_config, sessions) -> None:
    msg = InboundMessage(channel="telegram", external_id="1:1", sender=Identity("telegram", "1"), reply_to="1",
                         received_at=AT)
    with pytest.raises(UnknownEvent):
        handle_event(Envelope.wrap(msg, message_id="x", correlation_id="c", occurred_at=AT),
                     make_deps(example_config, sessions, FlakySender([])))


def status(sid: str, word: str, code: str | None = None) -> Envelope:
    from shared.contracts import DeliveryStatus

    st = DeliveryStatus(channel="telegram", provider_message_id=sid, status=word, occurred_at=AT, error_code=code)
    return Envelope.wrap(st, message_id=f"s-{sid}-{word}", correlation_id="c", occurred_at=AT)


def test_delivery_status_only_moves_forward(example_config, sessions) -> None:
    deps = make_deps(example_config, sessions, FlakySender([]))
    handle_event(opened(), deps)
    sid = rows(sessions)[0].provider_message_id
    for word in ("sent", "delivered", "sent", "queued"):  # late and repeated callbacks
        handle_event(status(sid, word), deps)
    assert rows(sessions)[0].delivery_status == "delivered"
    handle_event(status("unknown-sid", "failed"), deps)  # not ours: ignored, not an error


def test_an_opted_out_number_is_suppressed_and_never_tried_again(example_config, sessions) -> None:
    from services.notifier.senders.twilio_sms import OptedOut

    sender = FlakySender([OptedOut("21610: unsubscribed recipient", address="42")])
    deps = make_deps(example_config, sessions, sender)
    handle_event(opened(conv="a"), deps)
    handle_event(opened(conv="b"), deps)  # a later conversation with the same customer
    first, second = rows(sessions)
    assert first.status == "failed" and second.status == "skipped" and "opted out" in second.last_error
    assert sender.sent == []


def redirected(message_id: str = "ig-1") -> Envelope:
    """A message on Instagram, a redirect-mode channel in the example config."""
    ev = Redirected(channel="instagram", reply_to="17841400000000001", language="en", received_at=AT,
                    inbound_message_id=message_id)
    return Envelope.wrap(ev, message_id=message_id, correlation_id="c", occurred_at=AT)


def test_a_redirect_note_given_up_on_is_sent_once_when_replayed_from_the_dlq(example_config, sessions) -> None:
    sender = FlakySender([TransientSendError("503 from provider")] * MAX_SEND_ATTEMPTS)
    deps = NotifierDeps(config=example_config, sessions=sessions, senders=Registry({"instagram": sender}),
                        compose_ack=lambda ev, at: "never used", clock=lambda: AT)
    for _ in range(MAX_SEND_ATTEMPTS):  # the first try and the bus's retries, each failing
        with pytest.raises(TransientSendError):
            handle_event(redirected(), deps)
    [row] = rows(sessions)
    assert row.status == "dead" and row.attempts == MAX_SEND_ATTEMPTS and sender.sent == []

    handle_event(redirected(), deps)  # `switchboard dlq replay`: the same event once more
    assert len(sender.sent) == 1 and "https://m.me/northwind" in sender.sent[0][1]
    assert rows(sessions)[0].status == "sent"

    handle_event(redirected(), deps)  # replayed (or redelivered) again: it was sent, so nothing
    handle_event(redirected("ig-2"), deps)  # the customer writes again: one note per address, ever
    assert len(sender.sent) == 1


def reply(n: int, conv: str = "conv-1") -> Envelope:
    ev = ConversationReply(reply_id=f"r{n}", conversation_id=conv, channel="telegram", reply_to="42", reply_from=None,
                           text=f"reply {n}", agent_id="anna", language="en")
    return Envelope.wrap(ev, message_id=f"e-r{n}", correlation_id="c", occurred_at=AT)


def test_a_conversations_messages_leave_in_the_order_they_were_written(example_config, sessions) -> None:
    sender = FlakySender([TransientSendError("502 from provider")])
    deps = make_deps(example_config, sessions, sender)
    with pytest.raises(TransientSendError):
        handle_event(reply(1), deps)  # the provider fails: the first reply stays pending
    with pytest.raises(WaitingForEarlier):
        handle_event(reply(2), deps)  # the second is not tried before the first is sent
    first, second = rows(sessions)
    assert second.status == "pending" and second.attempts == 1 and f"message {first.id} " in second.last_error
    handle_event(reply(3, conv="conv-2"), deps)  # another conversation is not held up
    assert [text for _, text in sender.sent] == ["reply 3"]

    handle_event(reply(1), deps)  # the bus's retries, the first one's first
    handle_event(reply(2), deps)
    assert [text for _, text in sender.sent] == ["reply 3", "reply 1", "reply 2"]
    assert [r.status for r in rows(sessions)] == ["sent", "sent", "sent"]


class SlowSender(FlakySender):
    """Holds the first send until released: a provider call still in flight."""

    def __init__(self):
        super().__init__([])
        self.calling, self.release = threading.Event(), threading.Event()

    def send(self, address, text, *, options=None) -> SendResult:
        if not self.calling.is_set():
            self.calling.set()
            assert self.release.wait(10), "the test never released the first send"
        return super().send(address, text, options=options)


@dataclasses.dataclass
class InFlight:
    """An acknowledgement whose first copy is in the provider's call (`SlowSender`), on a thread."""

    sender: SlowSender
    deps: NotifierDeps
    thread: threading.Thread

    def finish(self) -> None:
        """The provider answers; the first copy records the send."""
        self.sender.release.set()
        self.thread.join(10)


@pytest.fixture
def in_flight(example_config, sessions):
    sender = SlowSender()
    deps = make_deps(example_config, sessions, sender)
    first = threading.Thread(target=handle_event, args=(opened(), deps))
    first.start()
    sending = InFlight(sender, deps, first)
    try:
        assert sender.calling.wait(10)
        yield sending
    finally:
        sending.finish()


def test_two_copies_of_an_event_in_hand_at_once_send_one_acknowledgement(in_flight, sessions) -> None:
    # A delivery whose ack was lost in a broker outage comes back while the first is still sending.
    handle_event(opened(), in_flight.deps)  # the second copy finds the row pending, and being sent
    assert in_flight.sender.sent == []
    in_flight.finish()
    assert in_flight.sender.sent == [("42", "Thanks Anna, reference SB-ABC")]
    assert [r.status for r in rows(sessions)] == ["sent"]


def test_a_consumer_that_dies_mid_send_frees_the_row_for_the_redelivery(example_config, sessions, pg_url) -> None:
    sender = FlakySender([])
    deps = make_deps(example_config, sessions, sender)
    with pytest.raises(TransientSendError):
        handle_event(opened(), make_deps(example_config, sessions, FlakySender([TransientSendError("timeout")])))
    [row] = rows(sessions)
    # Another notifier process holds the row's sending lock, as if in the provider's call.
    other = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s, %s)", (SENDING_LOCK, row.id))
    handle_event(opened(), deps)
    assert sender.sent == []
    other.close()  # killed: its connection, and the lock, go with it
    handle_event(opened(), deps)  # the redelivery
    assert len(sender.sent) == 1 and rows(sessions)[0].status == "sent"


def test_a_reply_after_the_whatsapp_window_goes_as_the_template_in_the_customers_language(
        example_config, sessions) -> None:
    whatsapp = dataclasses.replace(example_config.channels["whatsapp"], reply_template="support_reply",
                                   reply_template_language="en", reply_template_languages=("pl", "uk"))
    config = dataclasses.replace(example_config, channels={**example_config.channels, "whatsapp": whatsapp})
    sender = FlakySender([])
    sender.channel = "whatsapp"
    deps = NotifierDeps(config=config, sessions=sessions, senders=Registry({"whatsapp": sender}),
                        compose_ack=lambda ev, at: "never used", clock=lambda: AT)
    for n, language in ((1, "pl"), (2, "de")):
        ev = ConversationReply(reply_id=f"wa{n}", conversation_id=f"conv-{n}", channel="whatsapp",
                               reply_to="48601234567", reply_from=None, text="Your parcel left today", agent_id="anna",
                               language=language, last_customer_message_at=AT - timedelta(days=2))
        handle_event(Envelope.wrap(ev, message_id=f"e-wa{n}", correlation_id="c", occurred_at=AT), deps)
    polish, german = rows(sessions)
    assert polish.options["fallback_template"] == {"name": "support_reply", "language": "pl"}
    assert german.options["fallback_template"] == {"name": "support_reply", "language": "en"}  # not approved in German


class OutageDuringSend(FlakySender):
    """The provider takes the message, and the database goes away meanwhile: the proxy between
    the notifier and PostgreSQL is cut during the call, and restored `back_after` seconds later."""

    def __init__(self, proxy: TcpProxy, back_after: float | None):
        super().__init__([])
        self.proxy, self.back_after = proxy, back_after

    def send(self, address, text, *, options=None) -> SendResult:
        result = super().send(address, text, options=options)
        if len(self.sent) == 1:
            self.proxy.cut()
            if self.back_after is not None:
                threading.Timer(self.back_after, self.proxy.restore).start()
        return result


@pytest.fixture
def proxied_sessions(pg_url):
    url = make_url(pg_url)
    migrate_engine = make_engine(pg_url)
    migrate(migrate_engine)
    migrate_engine.dispose()
    proxy = TcpProxy(url.host, url.port or 5432)
    engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    yield proxy, session_factory(engine)
    proxy.close()
    engine.dispose()
    # The sends this process made while the database was away, by row id, are this database's:
    # row ids of the next test's database must not be taken for them.
    outbox._unrecorded.clear()


def test_a_message_sent_while_the_database_went_away_is_recorded_when_it_is_back_not_sent_again(
        example_config, proxied_sessions) -> None:
    proxy, sessions = proxied_sessions
    sender = OutageDuringSend(proxy, back_after=1.5)
    handle_event(opened(), make_deps(example_config, sessions, sender))  # waits for the database, then records
    handle_event(opened(), make_deps(example_config, sessions, sender))  # a redelivery finds it sent
    assert sender.sent == [("42", "Thanks Anna, reference SB-ABC")]
    assert [r.status for r in rows(sessions)] == ["sent"]


@pytest.fixture
def long_outage(example_config, proxied_sessions, monkeypatch):
    """(proxy, sessions, sender, deps): the database goes away during the send and stays away past
    the record's patience, until the test restores the proxy."""
    monkeypatch.setattr(outbox, "RECORD_PATIENCE", 0.5)
    proxy, sessions = proxied_sessions
    sender = OutageDuringSend(proxy, back_after=None)
    return proxy, sessions, sender, make_deps(example_config, sessions, sender)


def test_a_send_left_unrecorded_by_a_long_outage_is_recorded_by_the_retry_not_sent_again(long_outage) -> None:
    proxy, sessions, sender, deps = long_outage
    with pytest.raises(DBAPIError):
        handle_event(opened(), deps)  # the database is still away: the bus is to retry the event
    proxy.restore()
    handle_event(opened(), deps)  # the bus's retry
    assert len(sender.sent) == 1
    [row] = rows(sessions)
    assert row.status == "sent" and row.provider_message_id == "1"


def test_an_acknowledgement_retried_later_is_worded_for_the_moment_it_leaves(example_config, sessions) -> None:
    """Drafted on Saturday evening, refused by the provider until Monday afternoon: what leaves
    then says neither "closed" nor a promised time that is already past, and the outbox keeps
    the text that was sent."""
    from services.notifier.ack import compose_ack

    warsaw = example_config.business_calendar.tz
    saturday_evening = datetime(2026, 11, 21, 16, 0, tzinfo=warsaw)
    now = [saturday_evening]
    sender = FlakySender([TransientSendError("502 from provider")])
    agents = SandboxSender("email", out=open("/dev/null", "w"))
    deps = NotifierDeps(config=example_config, sessions=sessions,
                        senders=Registry({"telegram": sender, "email": agents}),
                        compose_ack=lambda ev, at: compose_ack(ev, at, config=example_config), clock=lambda: now[0])
    event = dataclasses.replace(opened().payload, owner_id=None, received_at=saturday_evening,
                                promise_due=datetime(2026, 11, 23, 13, 0, tzinfo=warsaw))
    envelope = Envelope.wrap(event, message_id="e-late", correlation_id="c", occurred_at=saturday_evening)
    with pytest.raises(TransientSendError):
        handle_event(envelope, deps)
    assert "will be back on Monday, 23 November, at 09:00" in rows(sessions)[0].body  # the draft
    now[0] = datetime(2026, 11, 23, 14, 0, tzinfo=warsaw)
    handle_event(envelope, deps)  # the bus's retry, two days on
    [(_, text)] = sender.sent
    assert "will reply to you personally as soon as possible." in text
    assert "closed" not in text and "13:00" not in text and "09:00 " not in text
    [row] = rows(sessions)
    assert row.status == "sent" and row.body == text


def _lock_is_free(pg_url: str, row_id: int) -> bool:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as probe:
        free = probe.execute("SELECT pg_try_advisory_lock(%s, %s)", (SENDING_LOCK, row_id)).fetchone()[0]
        if free:
            probe.execute("SELECT pg_advisory_unlock(%s, %s)", (SENDING_LOCK, row_id))
        return bool(free)


def _open_transactions(pg_url: str) -> int:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as probe:
        return probe.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND state LIKE 'idle in transaction%%'").fetchone()[0]


def test_the_sending_lock_is_held_through_the_call_and_free_once_the_row_reads_sent(
        in_flight, sessions, pg_url) -> None:
    # What another notifier process sees of a send in progress: the lock taken, then the row sent.
    [row] = rows(sessions)
    assert row.status == "pending" and not _lock_is_free(pg_url, row.id)
    in_flight.finish()
    [row] = rows(sessions)
    assert row.status == "sent" and _lock_is_free(pg_url, row.id)


def test_no_sending_transaction_is_left_open_whatever_became_of_the_send(example_config, sessions, pg_url) -> None:
    # A transaction left open would keep the row's lock, and the row unsendable, for good.
    failing = make_deps(example_config, sessions, FlakySender([TransientSendError("timeout"),
                                                                PermanentSendError("blocked")]))
    with pytest.raises(TransientSendError):
        handle_event(opened("conv-1"), failing)  # a failed try
    handle_event(opened("conv-2", reply_to="43"), failing)  # a permanent failure
    sender = FlakySender([])
    deps = make_deps(example_config, sessions, sender)
    handle_event(opened("conv-1"), deps)  # the retry sends it
    handle_event(opened("conv-1"), deps)  # a redelivery finds it sent
    [first, second] = rows(sessions)
    holder = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    holder.execute("UPDATE outbox SET status = 'pending' WHERE id = %s", (second.id,))
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (SENDING_LOCK, second.id))
    handle_event(opened("conv-2", reply_to="43"), deps)  # being sent elsewhere: nothing sent here
    holder.close()
    assert sender.sent == [("42", "Thanks Anna, reference SB-ABC")]
    assert [r.status for r in rows(sessions)] == ["sent", "pending"]
    assert _open_transactions(pg_url) == 0
    assert _lock_is_free(pg_url, first.id) and _lock_is_free(pg_url, second.id)


def test_a_claimed_message_is_sent_with_two_round_trips_to_the_database(example_config, sessions, monkeypatch) -> None:
    """Issue 15: the sending lock with the status read, then the record with its commit. A change
    that adds a round trip to every send fails here, naming the statements: make it a decision."""
    deps = make_deps(example_config, sessions, FlakySender([]))
    with sessions.begin() as s:
        row = Outbox(idempotency_key="k", kind="ack", conversation_id=None, channel="telegram", address="42",
                     body="drafted", status="pending", attempts=0, correlation_id="c", source_message_id="m",
                     created_at=AT)
        s.add(row)
    claimed = outbox.Claimed("telegram", "42", "drafted", {}, None, None)
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor, query, params=None, **kwargs):
        if str(query) not in (";", "SELECT 1"):  # the pool's ping of a connection idle a while: not the send's
            sent.append(" ".join(str(query).split()))
        return execute(cursor, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    assert outbox.deliver(row.id, deps, claimed=claimed, compose=lambda at: "as of now") == "sent"
    monkeypatch.undo()
    assert len(sent) == 2, sent
    lock_and_read, record = sent
    assert lock_and_read.startswith(f"BEGIN; SELECT pg_try_advisory_xact_lock({SENDING_LOCK}, {row.id}); "
                                    f"SELECT status FROM outbox WHERE id = {row.id}"), sent
    assert record.startswith("UPDATE outbox SET status = 'sent'") and record.endswith("; COMMIT"), sent
    [stored] = rows(sessions)
    assert stored.status == "sent" and stored.body == "as of now" and stored.attempts == 1


def test_the_embedded_modes_sqlite_sends_a_message_once_and_records_it(example_config, tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'switchboard.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    sender = FlakySender([])
    deps = make_deps(example_config, sessions, sender)
    try:
        handle_event(opened(), deps)
        handle_event(opened(), deps)  # a redelivery
        assert sender.sent == [("42", "Thanks Anna, reference SB-ABC")]
        [row] = rows(sessions)
        assert row.status == "sent" and row.attempts == 1 and row.provider_message_id == "1"
    finally:
        engine.dispose()


class ByAddressSender(FlakySender):
    """Fails each send to an address of `failures` with its exception, the first time; sends
    every other (from any thread)."""

    def __init__(self, failures: dict[str, Exception]):
        super().__init__([])
        self.by_address = dict(failures)
        self._lock = threading.Lock()

    def send(self, address, text, *, options=None) -> SendResult:
        with self._lock:
            failure = self.by_address.pop(address, None)
            if failure is not None:
                raise failure
            self.sent.append((address, text))
            return SendResult(provider_message_id=f"tg-{address}")


def new_conversations(n: int) -> list[Envelope]:
    """Openings of `n` customers' conversations, each to its own chat (chat 100, 101, ...)."""
    batch = []
    for i in range(n):
        envelope = opened(conv=f"conv-{i}", reply_to=str(100 + i))
        batch.append(dataclasses.replace(envelope, payload=dataclasses.replace(envelope.payload, customer_id=f"u{i}")))
    return batch


def test_a_batchs_sends_take_their_locks_in_one_round_trip_and_are_recorded_with_one_commit(
        example_config, sessions, pg_url, monkeypatch) -> None:
    """Issue 15: one sending transaction for the batch's claimed rows (the acknowledgements and
    Anna's notices, by e-mail): the locks with the statuses, then every record and the COMMIT."""
    sender = ByAddressSender({})
    deps = make_deps(example_config, sessions, sender)
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor, query, params=None, **kwargs):
        statements.append(" ".join(str(query).split()))
        return execute(cursor, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    with ThreadPoolExecutor(4) as pool:
        deps.send_pool = pool
        assert handle_batch(new_conversations(5), deps) == [[]] * 5
    deps.send_pool = None
    monkeypatch.undo()
    locks = [s for s in statements if "pg_try_advisory_xact_lock" in s]
    records = [s for s in statements if s.startswith("UPDATE outbox")]
    assert len(locks) == 1 and len(records) == 1, statements
    assert records[0].endswith("; COMMIT")
    assert sorted(sender.sent) == [(str(100 + i), "Thanks Anna, reference SB-ABC") for i in range(5)]
    stored = rows(sessions)
    assert [(r.status, r.attempts, r.provider_message_id) for r in stored] == [
        ("sent", 1, f"tg-{100 + i}") for i in range(5)]
    assert all(r.sent_at == AT for r in stored)
    assert _open_transactions(pg_url) == 0 and all(_lock_is_free(pg_url, r.id) for r in stored)

    assert handle_batch(new_conversations(5), deps) == [[]] * 5  # redelivered: nothing sent again
    assert len(sender.sent) == 5


def test_a_failed_send_in_a_batch_loses_no_other_record_and_a_row_held_elsewhere_is_not_sent(
        example_config, sessions, pg_url) -> None:
    sender = ByAddressSender({"100": TransientSendError("timeout"), "101": PermanentSendError("bot was blocked")})
    deps = make_deps(example_config, sessions, sender)
    results = handle_batch(new_conversations(4), deps)
    assert isinstance(results[0], TransientSendError) and results[1:] == [[]] * 3
    assert [(r.address, r.status, r.attempts) for r in rows(sessions)] == [
        ("100", "pending", 1), ("101", "failed", 1), ("102", "sent", 1), ("103", "sent", 1)]
    assert _open_transactions(pg_url) == 0

    # The bus's retry of the first, while another consumer holds the lock of a fifth's row.
    batch = new_conversations(5)
    assert handle_batch(batch[4:], make_deps(example_config, sessions, FlakySender([TransientSendError("x")]))) \
        != [[]]
    held = rows(sessions)[4]
    holder = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (SENDING_LOCK, held.id))
    try:
        assert handle_batch([batch[0], batch[4]], deps) == [[], []]
    finally:
        holder.close()
    assert sorted(address for address, _ in sender.sent) == ["100", "102", "103"]  # not 104: being sent elsewhere
    assert [r.status for r in rows(sessions)] == ["sent", "failed", "sent", "sent", "pending"]
    assert _open_transactions(pg_url) == 0


def test_a_batch_sent_while_the_database_went_away_is_recorded_when_it_is_back_not_sent_again(
        example_config, proxied_sessions) -> None:
    proxy, sessions = proxied_sessions
    sender = OutageDuringSend(proxy, back_after=1.5)
    deps = make_deps(example_config, sessions, sender)
    assert handle_batch(new_conversations(3), deps) == [[]] * 3  # waits for the database, then records
    assert handle_batch(new_conversations(3), deps) == [[]] * 3  # a redelivery finds them sent
    assert len(sender.sent) == 3
    assert [r.status for r in rows(sessions)] == ["sent"] * 3


def test_a_batch_left_unrecorded_by_a_long_outage_is_recorded_by_the_retries_not_sent_again(long_outage) -> None:
    proxy, sessions, sender, deps = long_outage
    results = handle_batch(new_conversations(2), deps)
    assert all(isinstance(result, DBAPIError) for result in results)  # the bus is to retry both
    proxy.restore()
    assert handle_batch(new_conversations(2), deps) == [[]] * 2  # the bus's retries
    assert len(sender.sent) == 2
    assert [(r.status, r.provider_message_id) for r in rows(sessions)] == [("sent", "1"), ("sent", "2")]
