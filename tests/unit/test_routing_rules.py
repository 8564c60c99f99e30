"""The router's routing and notifying rules (services/router/handlers.py) on an in-memory unit of
work (tests/support/router_uow.py): no database, no broker. Each test says what a customer or an
agent would notice: the events the notifier gets (an acknowledgement, an owner's notice), the owner,
the category and the promise. The SQL behind the same rules stays tested against PostgreSQL in
tests/integration/test_router_*.py.

The roster is the example config's (deploy/switchboard.yaml): anna (pl en ru; Mon–Fri 9–17),
taras (uk ru en pl; Mon–Fri 12–20), jonas (lt en de; Mon–Thu 9–17, Sat 10–14), maria (bg en de ru;
Wed–Fri 9–17, Sat 10–14); the shop is open Mon–Fri 9–17 and Sat 10–14, Warsaw time. A delivery
question is promised an answer in 4 business hours, anything else in 8; a resolved conversation
reopens within 7 days; a sender's 5 messages in a row each tell the owner, then one per 2 minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import sessionmaker

from services.router.handlers import RouterDeps, handle_inbound, handle_inbound_batch
from services.router.kpi_store import record_resolution
from shared.contracts import (
    ConversationOpened,
    Envelope,
    Identity,
    InboundMessage,
    Redirected,
    SurveyAnswer,
    SurveyOptOut,
    SurveyResult,
    derive_id,
)
from tests.support.classify import Verdict
from tests.support.router_uow import RouterStore

WARSAW = ZoneInfo("Europe/Warsaw")
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)
MONDAY_13 = datetime(2026, 11, 23, 13, 0, tzinfo=WARSAW)
SATURDAY_NIGHT = datetime(2026, 11, 21, 23, 0, tzinfo=WARSAW)


def classify(text, subject, language, channel) -> Verdict:
    """A stand-in for the classifier: parcels are deliveries, the rest is "other"."""
    return Verdict("delivery", reason={"rule": "parcel"}) if "parcel" in (text or "").lower() else Verdict("other", 0.2)


@pytest.fixture
def store() -> RouterStore:
    return RouterStore()


@pytest.fixture
def deps(example_config, store) -> RouterDeps:
    # An unbound sessionmaker: any SQL at all would fail, so these tests prove the rules need none.
    return RouterDeps(config=example_config, sessions=sessionmaker(), classify=classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en", unit_of_work=store.unit_of_work)


def telegram(n: int, at: datetime, *, user: str = "42", text: str = "Where is my parcel?", lang: str = "pl") -> Envelope:
    msg = InboundMessage(channel="telegram", external_id=f"1:{n}", sender=Identity("telegram", user), reply_to=user,
                         received_at=at, text=text, sender_name="Piotr", language_hint=lang)
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=f"c{n}",
                         occurred_at=at)


def email(n: int, at: datetime, *, sender: str = "ola@example.com", text: str = "Where is my parcel?",
          subject: str = "Parcel", verified: bool = True, **extra) -> Envelope:
    meta = {"sender_auth": {"verified": verified}, **extra.pop("meta", {})}
    msg = InboundMessage(channel="email", external_id=f"<m{n}@example.com>", sender=Identity("email", sender),
                         reply_to=sender, received_at=at, text=text, subject=subject, language_hint="pl", meta=meta,
                         **extra)
    return Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id=f"e{n}", occurred_at=at)


def message(channel: str, external_id: str, at: datetime, *, sender: str, text: str = "", **extra) -> Envelope:
    msg = InboundMessage(channel=channel, external_id=external_id, sender=Identity(channel, sender), reply_to=sender,
                         received_at=at, text=text, **extra)
    return Envelope.wrap(msg, message_id=derive_id(channel, external_id), correlation_id=f"x-{external_id}",
                         occurred_at=at)


def only(events: list[Envelope], type_: str):
    assert [e.type for e in events] == [type_]
    return events[0].payload


def resolve(store: RouterStore, conversation_id: str, at: datetime) -> None:
    """An agent resolves the conversation (what services/router/operations.py does to its row)."""
    record_resolution(store.conversations[conversation_id], at)


# --- opening, joining, reopening ------------------------------------------------------------------------


def test_a_new_message_opens_one_conversation_with_category_owner_and_promise(deps, store) -> None:
    opened = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    # Polish at 10:00 on a Monday: anna is the one Polish speaker on shift (taras starts at 12).
    assert (opened.owner_id, opened.owner_name, opened.team_id) == ("anna", "Anna Kowalska", "support")
    assert opened.category == "delivery" and opened.language == "pl" and opened.opening == 1
    assert opened.promise_due == MONDAY_10 + timedelta(hours=4)  # a delivery question: 4 business hours
    assert opened.acknowledge is True and opened.reference.startswith("SB-") and opened.customer_name == "Piotr"
    assert opened.excerpt == "Where is my parcel?"
    [conv] = store.conversations.values()
    assert conv.status == "open" and conv.owner_id == "anna" and conv.category_reason == {"confidence": 0.9,
                                                                                          "rule": "parcel"}
    [assignment] = store.assignments
    assert assignment.agent_id == "anna" and assignment.reason.startswith("least_loaded: ")
    assert len(store.messages) == 1 and store.commits == 1


def test_the_next_message_joins_the_open_conversation_and_tells_its_owner(deps, store) -> None:
    opened = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    # taras is on shift by now and less loaded than anna: the conversation keeps its one owner.
    joined = only(handle_inbound(telegram(2, MONDAY_13, text="order 48213"), deps), "conversation.message")
    assert joined.conversation_id == opened.conversation_id and joined.owner_id == "anna"
    assert joined.excerpt == "order 48213" and joined.reference == opened.reference
    assert joined.promise_due == opened.promise_due  # still unanswered: the notice repeats the promise
    assert len(store.conversations) == 1 and len(store.assignments) == 1 and len(store.messages) == 2


def test_a_message_after_resolution_within_the_window_reopens_with_the_same_owner(deps, store) -> None:
    first = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    resolve(store, first.conversation_id, MONDAY_10 + timedelta(hours=1))
    # Thursday: within 7 days. A new acknowledgement (opening 2), the same conversation and owner.
    thursday = MONDAY_10 + timedelta(days=3)
    again = only(handle_inbound(telegram(2, thursday, text="The parcel never came"), deps), "conversation.opened")
    assert again.conversation_id == first.conversation_id and again.reference == first.reference
    assert again.opening == 2 and again.owner_id == "anna" and again.acknowledge is True
    assert again.assignment_reason.startswith("previous owner anna is active")
    assert again.promise_due == thursday + timedelta(hours=4)
    assert store.conversations[first.conversation_id].status == "open" and len(store.assignments) == 2


def test_a_message_after_the_reopen_window_opens_a_new_conversation(deps, store) -> None:
    first = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    resolve(store, first.conversation_id, MONDAY_10 + timedelta(hours=1))
    later = MONDAY_10 + timedelta(days=14)
    new = only(handle_inbound(telegram(2, later, text="A question about sizes"), deps), "conversation.opened")
    assert new.conversation_id != first.conversation_id and new.reference != first.reference
    assert new.opening == 1 and new.category == "other" and new.customer_id == first.customer_id
    # "other": 8 business hours, 7 of them on Monday (10–17) and the eighth on Tuesday morning.
    assert new.promise_due == datetime(2026, 12, 8, 10, 0, tzinfo=WARSAW)
    assert store.conversations[first.conversation_id].status == "resolved"


def test_a_redelivered_message_republishes_its_events_and_changes_nothing(deps, store) -> None:
    first = handle_inbound(telegram(1, MONDAY_10), deps)
    stored = {name: len(getattr(store, name)) for name in ("customers", "conversations", "messages", "assignments",
                                                           "outbox")}
    assert handle_inbound(telegram(1, MONDAY_10), deps) == first
    joined = handle_inbound(telegram(2, MONDAY_10 + timedelta(minutes=5)), deps)
    assert handle_inbound(telegram(2, MONDAY_10 + timedelta(minutes=5)), deps) == joined
    # The one new message and its one event (a Telegram customer has no phone: no ownership event).
    assert {name: len(getattr(store, name)) for name in stored} == {**stored, "messages": 2, "outbox": 2}


# --- who owns it ---------------------------------------------------------------------------------------


def test_the_previous_owner_is_preferred_while_eligible(deps, store) -> None:
    store.availability["anna"] = "off"
    first = only(handle_inbound(telegram(1, MONDAY_13), deps), "conversation.opened")
    assert first.owner_id == "taras"
    resolve(store, first.conversation_id, MONDAY_13 + timedelta(hours=1))
    del store.availability["anna"]
    # Weeks later anna is back and less loaded, but the customer's last owner was taras.
    later = MONDAY_13 + timedelta(days=21)
    new = only(handle_inbound(telegram(2, later), deps), "conversation.opened")
    assert new.conversation_id != first.conversation_id
    assert new.owner_id == "taras" and new.assignment_reason.startswith("previous owner taras is active")


def test_a_previous_owner_on_leave_is_passed_over(deps, store) -> None:
    store.availability["anna"] = "off"
    first = only(handle_inbound(telegram(1, MONDAY_13), deps), "conversation.opened")
    resolve(store, first.conversation_id, MONDAY_13 + timedelta(hours=1))
    store.availability.update({"anna": "on_shift", "taras": "on_leave"})
    again = only(handle_inbound(telegram(2, MONDAY_13 + timedelta(days=1)), deps), "conversation.opened")
    assert again.conversation_id == first.conversation_id and again.opening == 2  # reopened
    assert again.owner_id == "anna" and "least loaded" in again.assignment_reason


def test_out_of_hours_goes_to_whoever_starts_first_and_the_promise_waits_for_business_hours(deps, store) -> None:
    opened = only(handle_inbound(telegram(1, SATURDAY_NIGHT), deps), "conversation.opened")
    # Polish speakers: anna (Mon 09:00) and taras (Mon 12:00).
    assert opened.owner_id == "anna" and "starts first" in opened.assignment_reason
    assert opened.promise_due == datetime(2026, 11, 23, 13, 0, tzinfo=WARSAW)  # Monday 9:00 + 4 business hours
    assert opened.acknowledge is True  # the customer hears when to expect an answer


def test_with_nobody_eligible_the_conversation_waits_in_the_team_queue(deps, store) -> None:
    store.availability.update({agent: "off" for agent in ("anna", "taras", "jonas", "maria")})
    opened = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    assert opened.owner_id is None and opened.owner_name is None and opened.team_id == "support"
    assert "team queue" in opened.assignment_reason and opened.acknowledge is True
    [assignment] = store.assignments
    assert assignment.agent_id is None and assignment.reason.startswith("team_queue: ")


def test_owners_take_turns_by_load(deps, store) -> None:
    # Monday 13:00: anna and taras are on shift and both read Russian. Load is open conversations
    # over capacity (anna 8, taras 12): 0 = 0 (anna by name), 1/8 > 0, 1/8 > 1/12, 1/8 < 2/12.
    owners = [only(handle_inbound(telegram(i, MONDAY_13, user=f"u{i}", lang="ru"), deps),
                   "conversation.opened").owner_id for i in range(4)]
    assert owners == ["anna", "taras", "taras", "anna"]


# --- agents' mail, automatic mail, floods, forged senders ------------------------------------------------


def test_an_agents_mail_answering_a_notice_is_kept_as_a_note_and_tells_nobody(deps, store) -> None:
    opened = only(handle_inbound(email(1, MONDAY_10), deps), "conversation.opened")
    note = email(2, MONDAY_10 + timedelta(minutes=30), sender="anna@northwind.example", text="Called the courier",
                 subject=f"Re: [{opened.reference}] Parcel", meta={"reference": opened.reference})
    assert handle_inbound(note, deps) == []  # no acknowledgement to anna, no conversation of hers
    kept = store.messages[note.message_id]
    assert (kept.direction, kept.sender_kind, kept.sender_value) == ("note", "agent", "anna")
    assert kept.conversation_id == opened.conversation_id
    assert len(store.conversations) == 1 and len(store.customers) == 1


def test_an_auto_reply_is_stored_apart_and_never_acknowledged(deps, store) -> None:
    auto = email(1, MONDAY_10, text="I am out of office until Monday", subject="Automatic reply", automatic=True,
                 meta={"automatic_kind": "auto_reply", "automatic_reason": "Auto-Submitted: auto-replied"})
    assert handle_inbound(auto, deps) == []
    [conv] = store.conversations.values()
    assert conv.status == "automatic" and conv.owner_id is None and store.assignments == []
    # The customer's own question after it opens a conversation of its own, acknowledged.
    opened = only(handle_inbound(email(2, MONDAY_10 + timedelta(minutes=1)), deps), "conversation.opened")
    assert opened.conversation_id != conv.id and opened.acknowledge is True and opened.owner_id == "anna"


def test_a_bounce_only_reports_the_failed_delivery(deps, store) -> None:
    report = {"kind": "bounce", "failed": True, "permanent": True, "original_message_id": "<ack-1@northwind>",
              "status": "5.1.1"}
    bounce = email(1, MONDAY_10, sender="mailer-daemon@example.com", text="Delivery failed",
                   subject="Undelivered Mail", automatic=True, meta={"automatic_kind": "bounce", "report": report})
    mail_report = only(handle_inbound(bounce, deps), "delivery.mail_report")
    assert mail_report.original_message_id == "<ack-1@northwind>" and mail_report.permanent is True
    assert [c.status for c in store.conversations.values()] == ["automatic"]


def test_a_flood_is_stored_in_full_but_tells_the_owner_only_at_the_flood_controls_pace(deps, store) -> None:
    only(handle_inbound(telegram(0, MONDAY_10), deps), "conversation.opened")
    at = MONDAY_10 + timedelta(seconds=1)
    told = [handle_inbound(telegram(i, at + timedelta(seconds=i), text=f"line {i}"), deps) for i in range(1, 8)]
    # Five in a row tell anna; the sixth and seventh are kept without a notice.
    assert [len(events) for events in told] == [1, 1, 1, 1, 1, 0, 0]
    assert all(events[0].payload.owner_id == "anna" for events in told[:5])
    assert len(store.messages) == 8
    # One token back after two minutes: the next message tells anna again.
    later = handle_inbound(telegram(8, at + timedelta(minutes=2, seconds=8), text="hello?"), deps)
    assert only(later, "conversation.message").excerpt == "hello?"


def test_an_unverified_sender_does_not_join_another_customers_conversation(deps, store) -> None:
    mine = only(handle_inbound(email(1, MONDAY_10), deps), "conversation.opened")
    # A mail from the same address our mail server did not vouch for, quoting her reference.
    forged = email(2, MONDAY_10 + timedelta(minutes=5), text="Please send the parcel to my new address",
                   subject=f"Re: [{mine.reference}] Parcel", verified=False, meta={"reference": mine.reference})
    other = only(handle_inbound(forged, deps), "conversation.opened")
    assert other.conversation_id != mine.conversation_id and other.customer_id != mine.customer_id
    assert store.conversations[other.conversation_id].unverified_sender is True
    assert store.messages[forged.message_id].details["quoted_reference"] == mine.reference
    # Her own conversation got nothing: no message, no notice.
    assert [m.conversation_id for m in store.messages.values()].count(mine.conversation_id) == 1


def test_a_verified_reply_joins_the_customers_own_thread(deps, store) -> None:
    mine = only(handle_inbound(email(1, MONDAY_10), deps), "conversation.opened")
    reply = email(2, MONDAY_10 + timedelta(minutes=5), text="Any news?", subject=f"Re: [{mine.reference}] Parcel",
                  meta={"reference": mine.reference}, thread_refs=("<m1@example.com>",))
    joined = only(handle_inbound(reply, deps), "conversation.message")
    assert joined.conversation_id == mine.conversation_id and joined.owner_id == "anna"


# --- surveys, revisions, calls, redirect ---------------------------------------------------------------


def test_stop_opts_out_of_surveys_and_opens_nothing(deps, store) -> None:
    opened = only(handle_inbound(telegram(1, MONDAY_10), deps), "conversation.opened")
    opt_out = only(handle_inbound(telegram(2, MONDAY_13, text="STOP"), deps), SurveyOptOut.TYPE)
    assert opt_out.customer_id == opened.customer_id and opt_out.channel == "telegram"
    assert len(store.messages) == 1 and len(store.conversations) == 1  # no notice for the owner either


def test_an_sms_digit_answers_the_survey_sent_there_and_the_next_text_is_its_comment(deps, store) -> None:
    sent = MONDAY_10 - timedelta(days=1)
    # The notifier's word that it sent a survey by SMS (its feedback.survey_result event).
    result = SurveyResult(conversation_id="c-1", opening=1, kind="csat", sent_at=sent, channel="sms",
                          address="+48600100200", token="tok-12345678")
    assert handle_inbound(Envelope.wrap(result, message_id="r1", correlation_id="r1", occurred_at=sent), deps) == []
    answer = only(handle_inbound(message("sms", "SM1", MONDAY_10, sender="+48600100200", text="5"), deps),
                  SurveyAnswer.TYPE)
    assert (answer.token, answer.score) == ("tok-12345678", 5)
    assert store.conversations == {}  # a rating opens no conversation
    # The notifier's word that it was answered; the next text is its comment, and routed as well.
    answered = SurveyResult(conversation_id="c-1", opening=1, kind="csat", sent_at=sent, score=5,
                            answered_at=MONDAY_10)
    handle_inbound(Envelope.wrap(answered, message_id="r2", correlation_id="r2", occurred_at=MONDAY_10), deps)
    events = handle_inbound(message("sms", "SM2", MONDAY_10 + timedelta(minutes=1), sender="+48600100200",
                                    text="Quick delivery, thanks"), deps)
    assert [e.type for e in events] == [SurveyAnswer.TYPE, ConversationOpened.TYPE]
    assert events[0].payload.comment == "Quick delivery, thanks" and events[0].payload.score is None


def test_a_customers_edit_revises_the_stored_message_and_tells_nobody(deps, store) -> None:
    first = message("whatsapp", "wamid.1", MONDAY_10, sender="48600100200", text="parcel to Krakow")
    only(handle_inbound(first, deps), "conversation.opened")
    edit = message("whatsapp", "wamid.2", MONDAY_10 + timedelta(minutes=1), sender="48600100200",
                   text="parcel to Gdansk", meta={"revision": {"kind": "edit", "of": "wamid.1"}})
    assert handle_inbound(edit, deps) == []
    stored = store.messages[first.message_id]
    assert stored.text == "parcel to Gdansk" and stored.details["revisions"][0]["previous_text"] == "parcel to Krakow"
    assert len(store.messages) == 1
    # Somebody else cannot revise it.
    forged = message("whatsapp", "wamid.3", MONDAY_10 + timedelta(minutes=2), sender="48999999999",
                     text="parcel to Narnia", meta={"revision": {"kind": "edit", "of": "wamid.1"}})
    assert handle_inbound(forged, deps) == [] and stored.text == "parcel to Gdansk"


def test_a_call_that_ended_unanswered_is_a_missed_call_with_a_call_back_task(deps, store) -> None:
    ended = message("phone", "CA1", MONDAY_10, sender="+48600100200", meta={"call": "ended", "call_status": "no-answer"})
    opened = only(handle_inbound(ended, deps), "conversation.opened")
    assert opened.channel == "phone" and opened.owner_id == "anna" and opened.acknowledge is True
    [task] = store.tasks
    assert (task.call_sid, task.kind, task.phone, task.owner_id, task.done_at) == (
        "CA1", "missed", "+48600100200", "anna", None)
    # The gateway hears whom this phone now reaches (stored pending for the relay).
    [ownership] = [r for r in store.outbox.values() if r.pending_since is not None]
    assert ownership.body["payload"]["owner_id"] == "anna"
    # The <Dial> action said a person took it after all: the task is done, nothing is sent.
    answered = message("phone", "CA1", MONDAY_10 + timedelta(seconds=5), sender="+48600100200",
                       meta={"call": "answered"})
    assert handle_inbound(answered, deps) == [] and (task.done_at, task.done_by) == (answered.occurred_at, "answered")


def test_a_call_answered_by_a_person_is_no_missed_call(deps, store) -> None:
    for n, kind in enumerate(("answered", "ended")):
        notice = message("phone", "CA2", MONDAY_10 + timedelta(minutes=n), sender="+48600100200",
                         meta={"call": kind, "call_status": "completed"})
        assert handle_inbound(notice, deps) == []
    assert store.conversations == {} and store.tasks == []


def test_a_channel_in_redirect_mode_answers_where_to_write_and_stores_nothing(deps, store) -> None:
    dm = message("instagram", "ig-1", MONDAY_10, sender="1789", text="Where is my parcel?")
    redirected = only(handle_inbound(dm, deps), Redirected.TYPE)
    assert redirected.channel == "instagram" and redirected.reply_to == "1789"
    assert store.conversations == {} and store.messages == {} and store.outbox == {}


# --- the batch is one unit of work ------------------------------------------------------------------------


def test_a_batch_is_one_commit_and_a_failing_message_rolls_back_alone(deps, store) -> None:
    def classify_or_fail(text, subject, language, channel):
        if "boom" in text:
            raise RuntimeError("the classifier failed")
        return classify(text, subject, language, channel)

    deps.classify = classify_or_fail
    batch = [telegram(1, MONDAY_10, user="a"), telegram(2, MONDAY_10, user="b", text="boom"),
             telegram(3, MONDAY_10, user="c")]
    first, failed, third = handle_inbound_batch(batch, deps)
    assert isinstance(failed, RuntimeError)
    assert only(first, "conversation.opened").owner_id and only(third, "conversation.opened").owner_id
    assert store.commits == 1 and len(store.conversations) == 2 and len(store.customers) == 2
    assert batch[1].message_id not in store.messages
