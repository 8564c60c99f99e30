"""The notifier's rules without a database: what customers and agents receive, and when.

The real handlers, ticker jobs and texts run on the in-memory unit of work and outbox edge
(tests/support/notifier_fakes.py); each test asserts what a user would notice: a message in their
chat or mailbox, in their language, once, on their shift. The example config's people: Maria owns
conversations on Telegram (shift Wed–Sat, notices in Bulgarian), Taras on Telegram (12:00–20:00,
Ukrainian), Jonas by e-mail (Mon–Thu and Sat), Anna leads the support team by e-mail (Polish).
The SQL, the sending lock and two replicas racing are the PostgreSQL tests' (tests/integration).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier.bootstrap import build_ticker
from services.notifier.handlers import handle_batch, handle_event
from services.notifier.models import AgentNotice
from services.notifier.promises import LEASE
from services.notifier.senders import TransientSendError
from shared import contracts
from shared.contracts import (
    AddressSuppressed,
    ConversationAssigned,
    ConversationMessage,
    ConversationOpened,
    ConversationReply,
    ConversationResolved,
    Envelope,
    MailReport,
)
from tests.support.notifier_fakes import InMemoryNotifier, in_memory_notifier

WARSAW = ZoneInfo("Europe/Warsaw")
CUSTOMER = "42"  # the customer's Telegram chat
MARIA_CHAT, TARAS_CHAT = "100200301", "100200300"
ANNA_MAIL, JONAS_MAIL = "anna@northwind.example", "jonas@northwind.example"
REFERENCE = "SB-ABCDEFGHIJ"


def w(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in Warsaw, November 2026: the 24th is a Tuesday, the 27th a Friday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=WARSAW)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now.astimezone(UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(w(25, 10))  # Wednesday 10:00: Maria and Anna on shift


@pytest.fixture
def notifier(example_config, clock) -> InMemoryNotifier:
    # CSAT for every conversation: the NPS sample is the survey unit tests' (test_surveys.py).
    config = replace(example_config, survey=replace(example_config.survey, nps_sample=0.0))
    return in_memory_notifier(config, clock)


def tick(notifier: InMemoryNotifier, clock: Clock, at: datetime) -> None:
    clock.now = at
    build_ticker(notifier.deps).tick_once()


def telegram(notifier: InMemoryNotifier, chat: str) -> list[str]:
    return notifier.senders["telegram"].to(chat)


def mail(notifier: InMemoryNotifier, address: str) -> list[str]:
    return notifier.senders["email"].to(address)


def opened(at: datetime, *, owner: str | None = "maria", conv: str = "conv-1", due: datetime | None = None,
           channel: str = "telegram", reply_to: str = CUSTOMER) -> Envelope:
    # Delivery: 4 business hours promised, from `at` (the router's count, in business time).
    ev = ConversationOpened(
        conversation_id=conv, opening=1, reference=REFERENCE, customer_id="cust-1", customer_name="Piotr Nowak",
        channel=channel, reply_to=reply_to, language="pl", category="delivery", owner_id=owner, owner_name=None,
        assignment_reason="test", received_at=at, promise_due=due or at + timedelta(hours=4),
        inbound_message_id=f"in-{conv}", acknowledge=True, excerpt="Gdzie jest moja paczka?", team_id="support")
    return Envelope.wrap(ev, message_id=f"ev-{conv}", correlation_id="corr", occurred_at=at)


def message(at: datetime, *, owner: str = "maria", n: int = 2) -> Envelope:
    ev = ConversationMessage(conversation_id="conv-1", owner_id=owner, channel="telegram",
                             excerpt="Czy paczka wyszła?", received_at=at, inbound_message_id=f"in-{n}",
                             reference=REFERENCE, customer_name="Piotr Nowak", promise_due=None)
    return Envelope.wrap(ev, message_id=f"msg-{n}", correlation_id="corr", occurred_at=at)


def assigned(at: datetime, *, owner: str, previous: str, due: datetime | None) -> Envelope:
    ev = ConversationAssigned(conversation_id="conv-1", opening=1, owner_id=owner, team_id="support",
                              previous_owner_id=previous, reason="manual", assigned_at=at, channel="telegram",
                              category="delivery", reference=REFERENCE, customer_name="Piotr Nowak",
                              promise_due=due)
    return Envelope.wrap(ev, message_id=f"as-{owner}", correlation_id="corr", occurred_at=at)


def reply(at: datetime, *, agent: str = "maria") -> Envelope:
    ev = ConversationReply(reply_id=f"r-{at:%d%H%M}", conversation_id="conv-1", channel="telegram",
                           reply_to=CUSTOMER, reply_from=None, text="Paczka wyszła dziś rano.", agent_id=agent,
                           language="pl")
    return Envelope.wrap(ev, message_id=f"reply-{at:%d%H%M}", correlation_id="corr", occurred_at=at)


def resolved(at: datetime, *, conv: str = "conv-1", human: bool = True) -> Envelope:
    ev = ConversationResolved(conversation_id=conv, customer_id="cust-1", channel="telegram", reply_to=CUSTOMER,
                              language="pl", owner_id="maria", resolved_at=at, human_replied=human, opening=1,
                              customer_name="Piotr Nowak")
    return Envelope.wrap(ev, message_id=f"res-{conv}", correlation_id="corr", occurred_at=at)


def opt_out(at: datetime) -> Envelope:
    ev = contracts.SurveyOptOut(channel="telegram", external_id="stop-1", address=CUSTOMER, received_at=at,
                                customer_id="cust-1")
    return Envelope.wrap(ev, message_id="opt-1", correlation_id="corr", occurred_at=at)


# --- a new conversation ---------------------------------------------------------------------------


def test_a_new_conversation_is_acknowledged_once_in_polish_with_the_promise_and_its_owner_is_told(
        notifier, clock) -> None:
    handle_event(opened(w(25, 10)), notifier.deps)
    handle_event(opened(w(25, 10)), notifier.deps)  # the same event again: a redelivery

    [ack] = telegram(notifier, CUSTOMER)
    assert "Dziękujemy za wiadomość" in ack and "dziś do godz. 14:00" in ack and REFERENCE in ack
    [notice] = telegram(notifier, MARIA_CHAT)  # in Bulgarian, her first language with notices
    assert "Възложено Ви е ново запитване" in notice and REFERENCE in notice and "14:00" in notice
    assert mail(notifier, ANNA_MAIL) == []  # the lead hears of owned conversations only when a promise lapses


def test_a_conversation_nobody_owns_is_told_to_the_team_lead(notifier) -> None:
    handle_event(opened(w(25, 10), owner=None), notifier.deps)

    assert len(telegram(notifier, CUSTOMER)) == 1
    [notice] = mail(notifier, ANNA_MAIL)
    assert REFERENCE in notice and "Customer support" in notice


def test_an_owner_off_shift_is_told_when_the_shift_starts_and_the_customer_at_once(notifier, clock) -> None:
    clock.now = w(24, 10)  # Tuesday: Maria works Wednesday to Saturday
    handle_event(opened(w(24, 10), due=w(25, 12)), notifier.deps)
    assert len(telegram(notifier, CUSTOMER)) == 1
    assert telegram(notifier, MARIA_CHAT) == []

    tick(notifier, clock, w(25, 8, 59))
    assert telegram(notifier, MARIA_CHAT) == []
    tick(notifier, clock, w(25, 9))
    tick(notifier, clock, w(25, 9, 1))
    [notice] = telegram(notifier, MARIA_CHAT)
    assert REFERENCE in notice


def test_the_acknowledgement_the_customer_reads_says_the_promise_as_of_when_it_leaves(notifier, clock) -> None:
    # Sent after the promised time (a backlog): never a time that has gone by.
    clock.now = w(25, 14, 30)
    handle_event(opened(w(25, 10)), notifier.deps)
    [ack] = telegram(notifier, CUSTOMER)
    assert "do godz. 14:00" not in ack and "jak najszybciej" in ack and REFERENCE in ack


def test_at_most_three_acknowledgements_a_day_to_one_customer(notifier) -> None:
    for n in range(4):
        handle_event(opened(w(25, 10, n), conv=f"conv-{n}"), notifier.deps)
    assert len(telegram(notifier, CUSTOMER)) == 3  # limits.ack_daily_cap
    assert len(telegram(notifier, MARIA_CHAT)) == 4  # the owner hears of every one


def test_a_bounced_acknowledgement_stops_mail_to_that_address_and_agents_are_told(notifier, clock) -> None:
    piotr = "piotr@example.pl"
    handle_event(opened(w(25, 10), channel="email", reply_to=piotr), notifier.deps)
    assert len(mail(notifier, piotr)) == 1
    [row] = [r for r in notifier.uow.outbox.all if r.address == piotr]  # what our Message-ID is
    bounce = MailReport(original_message_id=row.provider_message_id, kind="bounce", permanent=True,
                        reason="550 5.1.1 user unknown", occurred_at=w(25, 10, 1), recipient=piotr)
    [told] = handle_event(Envelope.wrap(bounce, message_id="bounce-1", correlation_id="corr",
                                        occurred_at=w(25, 10, 1)), notifier.deps)
    assert told.type == AddressSuppressed.TYPE and told.payload.address == piotr

    clock.now = w(25, 11)
    handle_event(opened(w(25, 11), conv="conv-2", channel="email", reply_to=piotr), notifier.deps)
    assert len(mail(notifier, piotr)) == 1  # the first acknowledgement only


def test_a_batch_of_new_conversations_is_acknowledged_once_each_and_capped_across_it(notifier) -> None:
    # Five conversations of one customer in one batch (their claims made together): three
    # acknowledgements, as one by one; the owner hears of every one; the batch again sends nothing.
    batch = [opened(w(25, 10, n), conv=f"conv-{n}") for n in range(5)]
    assert handle_batch(batch, notifier.deps) == [[]] * 5
    assert handle_batch(batch, notifier.deps) == [[]] * 5  # redelivered
    assert len(telegram(notifier, CUSTOMER)) == 3  # limits.ack_daily_cap
    assert len(telegram(notifier, MARIA_CHAT)) == 5
    assert {n.status for n in notifier.uow.notices.all} == {"sent"}


def test_a_batch_of_openings_and_customer_messages_tells_the_owner_of_each_once_in_order(notifier) -> None:
    handle_event(opened(w(25, 10)), notifier.deps)
    # conv-1's next messages (the first of them claimed with conv-2's opening), conv-2 opening.
    batch = [message(w(25, 10, 5), n=2), opened(w(25, 10, 5), conv="conv-2", reply_to="chat-2"),
             message(w(25, 10, 6), n=3)]
    assert handle_batch(batch, notifier.deps) == [[]] * 3
    assert handle_batch(batch, notifier.deps) == [[]] * 3  # redelivered
    notices = telegram(notifier, MARIA_CHAT)
    assert len(notices) == 4  # conv-1 assigned, its two messages, conv-2 assigned
    assert "Czy paczka wyszła?" in notices[1] and "Czy paczka wyszła?" in notices[2]
    assert len(telegram(notifier, "chat-2")) == 1
    assert {n.status for n in notifier.uow.notices.all} == {"sent"}


def test_an_event_of_a_batch_that_fails_its_claim_fails_alone(notifier) -> None:
    real = notifier.deps.compose_ack

    def compose(ev: ConversationOpened, at: datetime) -> str:
        if ev.conversation_id == "conv-1":
            raise ValueError("a template that cannot be rendered")
        return real(ev, at)

    notifier.deps.compose_ack = compose
    batch = [opened(w(25, 10, n), conv=f"conv-{n}", reply_to=f"chat-{n}") for n in range(3)]
    results = handle_batch(batch, notifier.deps)
    assert isinstance(results[1], ValueError) and results[0] == results[2] == []
    assert len(telegram(notifier, "chat-0")) == len(telegram(notifier, "chat-2")) == 1
    assert telegram(notifier, "chat-1") == []  # the worker retries that event alone
    notifier.deps.compose_ack = real
    assert handle_batch([batch[1]], notifier.deps) == [[]]
    assert len(telegram(notifier, "chat-1")) == 1
    assert len(telegram(notifier, MARIA_CHAT)) == 3  # each notice once


def test_an_owners_notice_is_not_held_back_by_the_acknowledgement_waiting_for_a_retry(notifier) -> None:
    notifier.senders["telegram"].failures = [TransientSendError("502 from Bot API")]
    with pytest.raises(TransientSendError):
        handle_event(opened(w(25, 10)), notifier.deps)
    assert telegram(notifier, CUSTOMER) == []
    assert len(telegram(notifier, MARIA_CHAT)) == 1
    handle_event(opened(w(25, 10)), notifier.deps)  # the bus's retry
    assert len(telegram(notifier, CUSTOMER)) == 1 and len(telegram(notifier, MARIA_CHAT)) == 1


# --- while it is open -----------------------------------------------------------------------------


def test_the_customers_next_message_is_told_to_the_owner_once(notifier) -> None:
    handle_event(opened(w(25, 10)), notifier.deps)
    handle_event(message(w(25, 10, 5)), notifier.deps)
    handle_event(message(w(25, 10, 5)), notifier.deps)

    assignment, new_message = telegram(notifier, MARIA_CHAT)
    assert "Czy paczka wyszła?" in new_message and REFERENCE in new_message
    assert len(telegram(notifier, CUSTOMER)) == 1  # the customer is not acknowledged again


def test_a_reassigned_conversation_is_told_to_the_new_owner_and_the_old_owners_waiting_notice_dropped(
        notifier, clock) -> None:
    clock.now = w(24, 10)  # Tuesday: Maria's notice waits for Wednesday
    handle_event(opened(w(24, 10), due=w(25, 12)), notifier.deps)
    clock.now = w(24, 13)  # Taras is on shift 12:00–20:00
    handle_event(assigned(w(24, 13), owner="taras", previous="maria", due=w(25, 12)), notifier.deps)

    [notice] = telegram(notifier, TARAS_CHAT)  # in Ukrainian
    assert REFERENCE in notice
    tick(notifier, clock, w(25, 9, 30))
    assert telegram(notifier, MARIA_CHAT) == []


def test_a_reassignment_after_the_first_reply_tells_the_new_owner_without_a_promise_and_blocks_no_other_notice(
        notifier, clock) -> None:
    # Wednesday: Maria owns it and replies; then it moves to Taras, whose shift starts at 12:00. The
    # promise is met, so the router's event has no due time (services/router/operations.py, assign).
    handle_event(opened(w(25, 10)), notifier.deps)
    clock.now = w(25, 10, 30)
    handle_event(reply(w(25, 10, 30)), notifier.deps)
    clock.now = w(25, 10, 45)
    handle_event(assigned(w(25, 10, 45), owner="taras", previous="maria", due=None), notifier.deps)
    clock.now = w(25, 11)
    handle_event(opened(w(25, 11), owner="taras", conv="conv-2"), notifier.deps)  # due 15:00
    assert telegram(notifier, TARAS_CHAT) == []  # both wait for his shift

    tick(notifier, clock, w(25, 12))  # one tick finds both due

    reassigned, new = telegram(notifier, TARAS_CHAT)  # in Ukrainian
    assert reassigned.startswith("Вам призначено") and REFERENCE in reassigned
    assert "Відповісти потрібно" not in reassigned and "None" not in reassigned  # the promise is met
    assert new.startswith("Вам призначено") and "Відповісти потрібно" in new and "15:00" in new
    tick(notifier, clock, w(25, 12, 10))
    assert len(telegram(notifier, TARAS_CHAT)) == 2  # and nothing comes twice


def test_a_notice_that_cannot_be_rendered_is_recorded_failed_and_the_ticks_other_notices_go_out(
        notifier, clock, caplog) -> None:
    # Tuesday: Maria's notices wait for her Wednesday 09:00 shift. The first one claimed has fields
    # its kind cannot render (a reminder stored without its due time).
    clock.now = w(24, 10)
    broken = AgentNotice(idempotency_key="notice:warn:conv-9:1", kind="promise_warning", conversation_id="conv-9",
                         agent_id="maria", fields={"reference": "SB-BROKEN"}, not_before=w(25, 9), status="pending",
                         attempts=0, correlation_id="corr", created_at=w(24, 10))
    notifier.uow.notices.add(broken)
    handle_event(opened(w(24, 10), due=w(25, 12)), notifier.deps)

    tick(notifier, clock, w(25, 9))

    [notice] = telegram(notifier, MARIA_CHAT)
    assert REFERENCE in notice
    assert broken.status == "failed" and "missing promise_due" in (broken.last_error or "")
    assert any("conv-9" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    tick(notifier, clock, w(25, 9) + LEASE + timedelta(minutes=1))  # not tried again, nothing sent twice
    assert len(telegram(notifier, MARIA_CHAT)) == 1 and broken.status == "failed"
    assert [r.idempotency_key for r in notifier.uow.outbox.all if r.address == MARIA_CHAT] == \
        ["notice:assigned:conv-1:1:maria"]


def test_a_notice_whose_send_breaks_unexpectedly_holds_back_no_other_and_is_sent_once_after_its_lease(
        notifier, clock) -> None:
    clock.now = w(24, 10)  # Tuesday: both notices wait for Maria's Wednesday shift
    handle_event(opened(w(24, 10), due=w(25, 12)), notifier.deps)
    handle_event(opened(w(24, 10), conv="conv-2", due=w(25, 12)), notifier.deps)
    notifier.senders["telegram"].failures.append(RuntimeError("a bug in the provider's library"))

    tick(notifier, clock, w(25, 9))
    assert len(telegram(notifier, MARIA_CHAT)) == 1  # the second one went out
    tick(notifier, clock, w(25, 9, 1))
    assert len(telegram(notifier, MARIA_CHAT)) == 1  # the first waits for its lease to end
    tick(notifier, clock, w(25, 9) + LEASE)
    tick(notifier, clock, w(25, 9) + 3 * LEASE)
    assert len(telegram(notifier, MARIA_CHAT)) == 2
    assert sorted((r.conversation_id, r.status) for r in notifier.uow.outbox.all if r.address == MARIA_CHAT) == \
        [("conv-1", "sent"), ("conv-2", "sent")]


def test_a_reply_reaches_the_customer_and_keeps_the_promise_no_reminder_no_breach(notifier, clock) -> None:
    # Friday 10:00, Jonas owns it: due 14:00, the reminder at 13:00 would wait for his Saturday shift.
    clock.now = w(27, 10)
    handle_event(opened(w(27, 10), owner="jonas"), notifier.deps)
    tick(notifier, clock, w(27, 13, 5))  # the reminder is made, held until Saturday 10:00
    clock.now = w(27, 13, 30)
    handle_event(reply(w(27, 13, 30), agent="jonas"), notifier.deps)
    tick(notifier, clock, w(27, 14, 30))
    tick(notifier, clock, w(28, 10, 30))

    ack, answer = telegram(notifier, CUSTOMER)
    assert answer == "Paczka wyszła dziś rano."
    [assignment] = mail(notifier, JONAS_MAIL)  # the assignment on his shift; the reminder dropped
    assert REFERENCE in assignment
    assert mail(notifier, ANNA_MAIL) == []  # no breach: the promise was kept
    [promise] = notifier.uow.promises.table.rows
    assert promise.status == "kept"


# --- promises lapsing -----------------------------------------------------------------------------


def test_a_promise_about_to_lapse_reminds_the_owner_and_a_lapsed_one_tells_owner_and_lead_once(
        notifier, clock) -> None:
    handle_event(opened(w(25, 10)), notifier.deps)  # due 14:00, reminder at 75 %: 13:00
    tick(notifier, clock, w(25, 12, 59))
    assert len(telegram(notifier, MARIA_CHAT)) == 1  # the assignment only

    tick(notifier, clock, w(25, 13))
    reminder = telegram(notifier, MARIA_CHAT)[-1]
    assert len(telegram(notifier, MARIA_CHAT)) == 2 and REFERENCE in reminder and "14:00" in reminder
    assert mail(notifier, ANNA_MAIL) == []

    tick(notifier, clock, w(25, 14))
    tick(notifier, clock, w(25, 14, 5))
    tick(notifier, clock, w(25, 15))
    assert len(telegram(notifier, MARIA_CHAT)) == 3  # her breach notice, once
    [breach] = mail(notifier, ANNA_MAIL)
    assert "Niedotrzymana obietnica" in breach and REFERENCE in breach


# --- after resolution: the survey -----------------------------------------------------------------


def test_a_resolved_conversation_gets_one_survey_after_the_delay(notifier, clock) -> None:
    clock.now = w(25, 11)
    handle_event(resolved(w(25, 11)), notifier.deps)
    handle_event(resolved(w(25, 11)), notifier.deps)  # the resolution comes twice

    tick(notifier, clock, w(25, 11, 59))
    assert telegram(notifier, CUSTOMER) == []
    tick(notifier, clock, w(25, 12))
    tick(notifier, clock, w(25, 13))
    [survey] = telegram(notifier, CUSTOMER)
    assert "Piotr" in survey
    [(_, _, options)] = notifier.senders["telegram"].sent
    assert [label for label, _ in options["buttons"][0]] == ["1", "2", "3", "4", "5"]


def test_a_customer_who_opted_out_gets_no_survey(notifier, clock) -> None:
    clock.now = w(25, 11)
    handle_event(resolved(w(25, 11)), notifier.deps)
    handle_event(opt_out(w(25, 11, 30)), notifier.deps)  # "stop" before the survey is due
    clock.now = w(25, 16)
    handle_event(resolved(w(25, 16), conv="conv-2"), notifier.deps)  # and a later conversation

    tick(notifier, clock, w(25, 18))
    assert telegram(notifier, CUSTOMER) == []


def test_no_survey_when_no_human_replied(notifier, clock) -> None:
    clock.now = w(25, 11)
    handle_event(resolved(w(25, 11), human=False), notifier.deps)
    tick(notifier, clock, w(25, 13))
    assert telegram(notifier, CUSTOMER) == []
