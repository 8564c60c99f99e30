"""Promise tracking and agent notices against the real PostgreSQL: reminders at 75 %, breaches to
owner and lead, notices held until the agent's shift, each sent once however often the ticker runs."""

from __future__ import annotations

import email
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.notifier.bootstrap import build_ticker
from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import AgentNotice, Outbox, Promise
from services.notifier.promises import MAX_ATTEMPTS, check_promises, deliver_notices
from services.notifier.senders import PermanentSendError, Registry, SendResult, TransientSendError
from services.notifier.senders.email import SmtpSender
from services.router.handlers import RouterDeps, handle_inbound
from shared.contracts import (
    ConversationMessage,
    ConversationOpened,
    ConversationReply,
    ConversationResolved,
    Envelope,
    Identity,
    InboundMessage,
    derive_id,
)
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

WARSAW = ZoneInfo("Europe/Warsaw")
MARIA_CHAT, ANNA_MAIL, TARAS_CHAT = "100200301", "anna@northwind.example", "100200300"


def w(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=WARSAW)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now.astimezone(UTC)


@dataclass
class Recorder:
    """A sender that records like the sandbox and can be told to fail the way providers do."""

    channel: str
    failures: list[Exception] = field(default_factory=list)
    failing: str | None = None  # only this address fails, when set
    sent: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, address, text, *, options=None) -> SendResult:
        with self.lock:
            if self.failures and self.failing in (None, address):
                raise self.failures.pop(0)
            self.sent.append((address, text))
            return SendResult(provider_message_id=f"{self.channel}-{len(self.sent)}")

    def to(self, address: str) -> list[str]:
        with self.lock:
            return [text for a, text in self.sent if a == address]


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def telegram() -> Recorder:
    return Recorder("telegram")


@pytest.fixture
def clock() -> Clock:
    return Clock(w(25, 10))


@pytest.fixture
def deps(example_config, sessions, telegram, smtp, clock) -> NotifierDeps:
    mail = SmtpSender("127.0.0.1", smtp.port, None, None, from_address="Switchboard <support@northwind.example>",
                      domain="northwind.example", security="none")
    return NotifierDeps(config=example_config, sessions=sessions,
                        senders=Registry({"telegram": telegram, "email": mail}),
                        compose_ack=lambda ev, at: f"Thanks, reference {ev.reference}", clock=clock)


def opened(at: datetime, *, owner: str | None = "maria", conv: str = "conv-1", opening: int = 1,
           due: datetime | None = None, team: str | None = "support") -> Envelope:
    ev = ConversationOpened(
        conversation_id=conv, opening=opening, reference="SB-ABCDEFGHIJ", customer_id="cust-1",
        customer_name="Piotr Nowak", channel="telegram", reply_to="42", language="pl", category="delivery",
        owner_id=owner, owner_name=None, assignment_reason="test", received_at=at,
        promise_due=due or at + timedelta(hours=4), inbound_message_id=f"in-{conv}-{opening}", acknowledge=True,
        excerpt="Gdzie jest moja paczka?", team_id=team)
    return Envelope.wrap(ev, message_id=f"ev-{conv}-{opening}", correlation_id="corr", occurred_at=at)


def reply(conv: str, at: datetime) -> Envelope:
    ev = ConversationReply(reply_id=f"r-{at:%H%M}", conversation_id=conv, channel="telegram", reply_to="42",
                           reply_from=None, text="Your parcel is on its way.", agent_id="maria", language="pl")
    return Envelope.wrap(ev, message_id=f"reply-{conv}-{at:%H%M}", correlation_id="corr", occurred_at=at)


def mails_to(smtp: SmtpServer, address: str) -> list[str]:
    return [email.message_from_bytes(r.content, policy=policy.default).get_content() for r in smtp.to(address)]


def subjects_to(smtp: SmtpServer, address: str) -> list[str]:
    return [str(email.message_from_bytes(r.content, policy=policy.default)["Subject"]) for r in smtp.to(address)]


def promise(sessions, conv: str = "conv-1") -> Promise:
    with sessions() as s:
        return s.scalar(select(Promise).where(Promise.conversation_id == conv).order_by(Promise.opening.desc()))


def breaches() -> float:
    return REGISTRY.get_sample_value("switchboard_promises_breached_total",
                                     {"team": "support", "category": "delivery"}) or 0.0


def test_lifecycle_assignment_warning_at_75_percent_then_breach_to_owner_and_lead(deps, clock, telegram, smtp,
                                                                                    sessions) -> None:
    ticker = build_ticker(deps)
    handle_event(opened(w(25, 10)), deps)  # Wednesday 10:00: Maria on shift, 4 h promised → 14:00
    [assigned] = telegram.to(MARIA_CHAT)
    assert "SB-ABCDEFGHIJ" in assigned and "Piotr Nowak" in assigned and "14:00" in assigned
    assert telegram.to("42") == ["Thanks, reference SB-ABCDEFGHIJ"]  # the customer's acknowledgement

    clock.now = w(25, 12, 59)
    ticker.tick_once()
    assert len(telegram.to(MARIA_CHAT)) == 1  # not yet 75 %

    before = breaches()
    for now in (w(25, 13), w(25, 13, 0, 5)):  # 75 % of 4 h: 13:00; a second tick changes nothing
        clock.now = now
        ticker.tick_once()
    warning = telegram.to(MARIA_CHAT)[1:]
    assert len(warning) == 1 and "75" in warning[0] and "SB-ABCDEFGHIJ" in warning[0]
    assert mails_to(smtp, ANNA_MAIL) == []  # the lead hears only of a breach

    for now in (w(25, 14), w(25, 14, 0, 5), w(25, 15)):
        clock.now = now
        ticker.tick_once()
    assert len(telegram.to(MARIA_CHAT)) == 3
    [lead_mail] = mails_to(smtp, ANNA_MAIL)
    assert "SB-ABCDEFGHIJ" in lead_mail and "Maria Georgieva" in lead_mail  # who owns it
    assert "[SB-ABCDEFGHIJ]" in subjects_to(smtp, ANNA_MAIL)[0]  # the token the gateway threads a reply by
    assert breaches() == before + 1

    p = promise(sessions)
    assert p.status == "breached" and p.breached_at == w(25, 14) and p.warned_at == w(25, 13)
    assert p.kept_at is None and p.lead_id == "anna" and p.warn_at == w(25, 13)
    with sessions() as s:
        keys = sorted(s.scalars(select(Outbox.idempotency_key).where(Outbox.kind == "notice")))
    assert keys == ["notice:assigned:conv-1:1:maria", "notice:breach:conv-1:1:anna",
                    "notice:breach:conv-1:1:maria", "notice:warn:conv-1:1"]

    handle_event(opened(w(25, 10)), deps)  # the event redelivered: nothing new
    assert len(telegram.to(MARIA_CHAT)) == 3 and len(telegram.to("42")) == 1


def test_the_first_reply_before_the_due_time_keeps_the_promise(deps, clock, telegram, smtp, sessions) -> None:
    ticker = build_ticker(deps)
    handle_event(opened(w(25, 10)), deps)
    clock.now = w(25, 11)
    handle_event(reply("conv-1", w(25, 11)), deps)
    handle_event(reply("conv-1", w(25, 11, 30)), deps)  # a second reply changes nothing
    for now in (w(25, 13), w(25, 14), w(25, 18)):
        clock.now = now
        ticker.tick_once()
    p = promise(sessions)
    assert p.status == "kept" and p.kept_at == w(25, 11) and p.warned_at is None and p.breached_at is None
    assert len(telegram.to(MARIA_CHAT)) == 1 and mails_to(smtp, ANNA_MAIL) == []  # only the assignment


def test_a_call_back_keeps_the_promise_like_a_reply(deps, clock, telegram, smtp, sessions) -> None:
    from shared.contracts import ConversationCalledBack

    ticker = build_ticker(deps)
    handle_event(opened(w(25, 10)), deps)
    called = ConversationCalledBack(conversation_id="conv-1", agent_id="maria", phone="+48601234567",
                                    called_at=w(25, 11))
    clock.now = w(25, 11)
    assert handle_event(Envelope.wrap(called, message_id="called-1", correlation_id="corr", occurred_at=w(25, 11)),
                        deps) == []  # nothing is sent to the customer: they were just spoken to
    for now in (w(25, 13), w(25, 14), w(25, 18)):
        clock.now = now
        ticker.tick_once()
    p = promise(sessions)
    assert p.status == "kept" and p.kept_at == w(25, 11) and p.warned_at is None and p.breached_at is None
    assert telegram.to("42") == ["Thanks, reference SB-ABCDEFGHIJ"]  # the acknowledgement only
    assert len(telegram.to(MARIA_CHAT)) == 1 and mails_to(smtp, ANNA_MAIL) == []  # no reminder, no breach


def test_a_late_first_reply_ends_the_promise_breached(deps, clock, sessions) -> None:
    handle_event(opened(w(25, 10)), deps)
    clock.now = w(25, 15)
    handle_event(reply("conv-1", w(25, 15)), deps)  # the ticker never ran: still breached
    p = promise(sessions)
    assert p.status == "breached" and p.kept_at == w(25, 15) and p.breached_at == w(25, 14)


def test_an_acknowledgement_is_not_a_first_response(deps, clock, telegram, sessions) -> None:
    handle_event(opened(w(25, 10)), deps)
    assert telegram.to("42")  # acknowledged...
    assert promise(sessions).status == "open" and promise(sessions).kept_at is None  # ...but nobody answered


def test_resolving_closes_the_promise_and_cancels_waiting_notices(deps, clock, telegram, smtp, sessions) -> None:
    # Tuesday 18:00: Maria is off until Wednesday 09:00, so her assignment notice waits.
    clock.now = w(24, 18)
    handle_event(opened(w(24, 18), due=w(25, 13)), deps)
    assert telegram.to(MARIA_CHAT) == []
    ev = ConversationResolved(conversation_id="conv-1", customer_id="cust-1", channel="telegram", reply_to="42",
                              language="pl", owner_id="maria", resolved_at=w(24, 18, 30), human_replied=False)
    handle_event(Envelope.wrap(ev, message_id="res-1", correlation_id="c", occurred_at=w(24, 18, 30)), deps)
    clock.now = w(25, 15)
    build_ticker(deps).tick_once()
    assert telegram.to(MARIA_CHAT) == [] and mails_to(smtp, ANNA_MAIL) == []
    assert promise(sessions).status == "closed"


def test_a_queued_conversation_is_reported_to_the_lead(deps, clock, smtp, sessions) -> None:
    handle_event(opened(w(25, 10), owner=None), deps)
    [mail] = mails_to(smtp, ANNA_MAIL)
    assert "SB-ABCDEFGHIJ" in mail and "Customer support" in mail  # the team's name
    clock.now = w(25, 13)
    check_promises(clock(), deps)
    deliver_notices(clock(), deps)
    assert len(mails_to(smtp, ANNA_MAIL)) == 2  # with nobody owning it, the lead gets the reminder


def test_a_new_customer_message_reaches_an_off_shift_owner_when_their_shift_starts(deps, clock, telegram) -> None:
    # Monday 10:00: Taras's shift starts at 12:00.
    clock.now = w(23, 10)
    ev = ConversationMessage(conversation_id="conv-1", owner_id="taras", channel="telegram",
                             excerpt="One more thing: the order number is 48213", received_at=w(23, 10),
                             inbound_message_id="in-2", reference="SB-ABCDEFGHIJ", customer_name="Piotr Nowak",
                             promise_due=w(23, 16))
    envelope = Envelope.wrap(ev, message_id="msg-2", correlation_id="c", occurred_at=w(23, 10))
    handle_event(envelope, deps)
    handle_event(envelope, deps)
    ticker = build_ticker(deps)
    clock.now = w(23, 11, 59, 59)
    ticker.tick_once()
    assert telegram.to(TARAS_CHAT) == []
    clock.now = w(23, 12, 0, 3)
    ticker.tick_once()
    ticker.tick_once()
    [notice] = telegram.to(TARAS_CHAT)
    assert "48213" in notice and "SB-ABCDEFGHIJ" in notice


def test_saturday_23_00_owner_starts_first_on_monday_and_hears_nothing_before(example_config, deps, clock, smtp,
                                                                             telegram, sessions) -> None:
    """Issue 4's acceptance, through the router and the notifier on one database."""

    @dataclass
    class Verdict:
        category: str = "delivery"
        confidence: float = 0.9
        reason: dict = field(default_factory=dict)

    router = RouterDeps(config=example_config, sessions=sessions, classify=lambda *a: Verdict(),
                        detect_language=lambda text, hints: "pl")
    at = w(21, 23)  # Saturday 23:00
    msg = InboundMessage(channel="telegram", external_id="1:1", sender=Identity("telegram", "42"), reply_to="42",
                         received_at=at, text="Gdzie jest moja paczka?", sender_name="Piotr", language_hint="pl")
    [event] = handle_inbound(Envelope.wrap(msg, message_id=derive_id("telegram", "1:1"), correlation_id="c",
                                           occurred_at=at), router)
    assert event.payload.owner_id == "anna" and event.payload.team_id == "support"
    assert event.payload.promise_due == w(23, 13)  # 4 business hours from Monday 09:00

    clock.now = at
    handle_event(event, deps)
    assert len(telegram.to("42")) == 1  # the customer is acknowledged at once
    ticker = build_ticker(deps)
    for now in (w(21, 23, 0, 5), w(22, 12), w(23, 8, 59, 59)):
        clock.now = now
        ticker.tick_once()
        assert mails_to(smtp, ANNA_MAIL) == [], f"a notice reached the owner at {now}"
    with sessions() as s:
        waiting = s.scalar(select(AgentNotice))
    assert waiting.status == "pending" and waiting.not_before == w(23, 9)

    clock.now = w(23, 9, 0, 5)  # the first tick after her shift starts
    ticker.tick_once()
    [assigned] = mails_to(smtp, ANNA_MAIL)
    assert "SB-" in assigned and "13:00" in assigned
    p = promise(sessions, event.payload.conversation_id)
    assert p.warn_at == w(23, 12) and p.due_at == w(23, 13)  # business time only: 75 % on Monday
    clock.now = w(23, 12)
    ticker.tick_once()
    assert len(mails_to(smtp, ANNA_MAIL)) == 2  # the reminder, on shift

    # The next message in the open conversation is a conversation.message, and Anna hears of it.
    msg2 = InboundMessage(channel="telegram", external_id="1:2", sender=Identity("telegram", "42"), reply_to="42",
                          received_at=w(23, 12, 10), text="Numer zamówienia 48213", language_hint="pl")
    [joined] = handle_inbound(Envelope.wrap(msg2, message_id=derive_id("telegram", "1:2"), correlation_id="c2",
                                            occurred_at=w(23, 12, 10)), router)
    assert joined.type == "conversation.message" and joined.payload.owner_id == "anna"
    clock.now = w(23, 12, 10)
    handle_event(joined, deps)
    assert "48213" in mails_to(smtp, ANNA_MAIL)[-1]


def test_two_tickers_racing_send_every_notice_once(deps, clock, telegram, smtp, sessions) -> None:
    for i in range(15):
        handle_event(opened(w(25, 10), conv=f"conv-{i}"), deps)
    assert len(telegram.to(MARIA_CHAT)) == 15
    clock.now = w(25, 14, 1)  # every promise past due at once
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            start.wait()
            ticker = build_ticker(deps)
            ticker.tick_once()
            ticker.tick_once()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    # One breach notice per conversation to the owner and one to the lead; no warnings (too late).
    assert len(telegram.to(MARIA_CHAT)) == 15 + 15 and len(smtp.to(ANNA_MAIL)) == 15
    with sessions() as s:
        assert set(s.scalars(select(Promise.status))) == {"breached"}
        assert set(s.scalars(select(AgentNotice.status))) == {"sent"}
        keys = list(s.scalars(select(Outbox.idempotency_key).where(Outbox.kind == "notice")))
    assert sorted(keys) == sorted({*(f"notice:{what}:conv-{i}:1:{who}" for i in range(15)
                                     for what, who in (("assigned", "maria"), ("breach", "maria"), ("breach", "anna")))})


def test_transient_failures_retry_with_backoff_then_dead_permanent_ones_are_recorded(deps, clock, telegram,
                                                                                     sessions) -> None:
    # The customer's acknowledgement fails: the bus will retry that; the promise is tracked already
    # and Maria's notice is tried all the same (her news does not wait for the customer's retry).
    # It fails too, once: it waits for the ticker, backed off.
    telegram.failures = [TransientSendError("502 from Bot API"), TransientSendError("502"),
                         TransientSendError("429", retry_after=30)]
    with pytest.raises(TransientSendError):
        handle_event(opened(w(25, 10), conv="flaky"), deps)
    assert promise(sessions, "flaky").status == "open" and telegram.sent == []

    clock.now = w(25, 10, 0, 1)
    with sessions() as s:
        notice = s.scalar(select(AgentNotice).where(AgentNotice.idempotency_key == "notice:assigned:flaky:1:maria"))
    assert notice.status == "pending" and notice.attempts == 1 and "502" in notice.last_error
    assert notice.not_before > clock()  # backed off
    assert deliver_notices(clock(), deps) == 0 and len(telegram.failures) == 1  # not tried before its time
    clock.now = notice.not_before + timedelta(seconds=1)
    deliver_notices(clock(), deps)  # 429 with retry-after 30 s
    with sessions() as s:
        notice = s.get(AgentNotice, notice.id)
    assert notice.attempts == 2 and notice.not_before >= clock() + timedelta(seconds=30)
    clock.now = notice.not_before
    assert deliver_notices(clock(), deps) == 1
    assert len(telegram.to(MARIA_CHAT)) == 1

    # Out of attempts: dead, with its last error, and the outbox row says so.
    clock.now = w(25, 11)
    telegram.failures, telegram.failing = [TransientSendError("timeout")] * (MAX_ATTEMPTS + 2), MARIA_CHAT
    handle_event(opened(w(25, 11), conv="down"), deps)  # the ack goes out; Maria's notice fails (1)
    for _ in range(MAX_ATTEMPTS):
        clock.now += timedelta(hours=1)
        deliver_notices(clock(), deps)
    with sessions() as s:
        notice = s.scalar(select(AgentNotice).where(AgentNotice.idempotency_key == "notice:assigned:down:1:maria"))
        row = s.scalar(select(Outbox).where(Outbox.idempotency_key == notice.idempotency_key))
    assert notice.status == "dead" and notice.attempts == MAX_ATTEMPTS and "timeout" in notice.last_error
    assert row.status == "dead"

    # Permanent (Maria blocked the bot): recorded, never retried.
    telegram.failures = [PermanentSendError("bot was blocked by the user")]
    clock.now = w(26, 10)
    handle_event(Envelope.wrap(ConversationMessage(
        conversation_id="flaky", owner_id="maria", channel="telegram", excerpt="hello", received_at=w(26, 10),
        inbound_message_id="in-b2", reference="SB-ABCDEFGHIJ"), message_id="m-b2", correlation_id="c",
        occurred_at=w(26, 10)), deps)
    with sessions() as s:
        notice = s.scalar(select(AgentNotice).where(AgentNotice.idempotency_key == "notice:message:in-b2:maria"))
    assert notice.status == "failed" and "blocked" in notice.last_error
    clock.now += timedelta(hours=1)
    sent = len(telegram.sent)
    assert deliver_notices(clock(), deps) == 0 and len(telegram.sent) == sent


def assigned(at: datetime, *, to: str | None, previous: str | None = "maria", conv: str = "conv-1",
             due: datetime | None = None) -> Envelope:
    from shared.contracts import ConversationAssigned

    ev = ConversationAssigned(conversation_id=conv, opening=1, owner_id=to, team_id="support",
                              previous_owner_id=previous, reason="transfer: by anna", assigned_at=at,
                              channel="telegram", category="delivery", reference="SB-ABCDEFGHIJ",
                              customer_name="Piotr Nowak", promise_due=due)
    return Envelope.wrap(ev, message_id=f"as-{conv}-{to}-{at:%H%M}", correlation_id="corr", occurred_at=at)


def test_a_transfer_moves_the_promise_and_tells_the_new_owner_once(deps, clock, telegram, sessions) -> None:
    handle_event(opened(w(25, 10)), deps)  # Maria owns it, due 14:00
    clock.now = w(25, 12, 30)
    transfer = assigned(w(25, 12, 30), to="taras", due=w(25, 14))
    handle_event(transfer, deps)
    handle_event(transfer, deps)  # redelivered: still one notice
    [told] = telegram.to(TARAS_CHAT)
    assert "SB-ABCDEFGHIJ" in told and "Piotr Nowak" in told
    assert promise(sessions).owner_id == "taras"

    # The 75 % reminder and the breach now go to Taras, not to Maria.
    ticker = build_ticker(deps)
    for now in (w(25, 13), w(25, 14, 0, 5)):
        clock.now = now
        ticker.tick_once()
    assert len(telegram.to(TARAS_CHAT)) == 3 and len(telegram.to(MARIA_CHAT)) == 1


def test_back_to_the_queue_tells_the_lead(deps, clock, telegram, smtp, sessions) -> None:
    handle_event(opened(w(25, 10)), deps)
    handle_event(assigned(w(25, 11), to=None, due=w(25, 14)), deps)
    assert promise(sessions).owner_id is None
    [queued] = mails_to(smtp, ANNA_MAIL)
    assert "SB-ABCDEFGHIJ" in queued
