"""Phone calls nobody took, against the real PostgreSQL: the gateway's voice adapter turns Twilio's
callbacks into messages, the router keeps one message and one call-back task per call whatever the
order and however often they come, and the caller's acknowledgement leaves by SMS. A call's end
(the status callback) is a missed call only when nobody answered it and nothing else is known of
it; a withheld number's voicemail is a conversation nobody can answer."""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.gateway import owners
from services.gateway.channels import RawRequest
from services.gateway.channels.twilio_voice import TwilioVoiceAdapter
from services.notifier.ack import compose_ack
from services.notifier.bootstrap import build_senders
from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import AgentNotice, Outbox, Promise
from services.router import operations as ops
from services.router.api import ApiDeps, build_api
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import CallbackTask, Conversation, Identity, Message, PhoneCall, RouterOutbox
from shared.bus.publisher import Publisher
from shared.contracts import (
    ConversationOpened,
    DeliveryStatus,
    Envelope,
    PhoneOwnership,
    Redirected,
    decode,
    derive_id,
)
from shared.db import make_engine, migrate, session_factory, transaction
from shared.settings import load_settings
from shared.web import install_json_errors
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support.classify import Verdict
from tests.support.db import count

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "phone"
WARSAW = ZoneInfo("Europe/Warsaw")
SATURDAY_EVENING = datetime(2026, 11, 21, 20, 0, tzinfo=WARSAW)
MONDAY_MORNING = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)
CA_A, CA_B = "CA1b3d5f7a9c1e2d4f6a8c0e2b4d6f8a01", "CA2c4e6a8b0d2f3e5a7c9e1f3b5d7a9c12"
CA_C, CA_E = "CA3d5f7b9c1e3a4f6b8d0f2a4c6e8b0d23", "CA5f7b9d1e3a5c6b8d0f2b4c6e8a0d2f56"
CA_W = "CA6a8c0e2f4b6d7c9e1a3c5d7f9b1e3a67"  # a withheld number's voicemail
TRANSCRIPT = ("Hi, this is Tom. I ordered the leather boots last week, order 48213, and the courier never came. "
              "Could you call me back, please? Thanks.")


def fake_classify(text, subject, language, channel) -> Verdict:
    """A fake of our own classifier: enough to see that the transcript, not the empty text, is kept."""
    return Verdict("delivery") if "courier" in text else Verdict("other", 0.1)


@pytest.fixture
def deps(example_config, sessions) -> RouterDeps:
    return RouterDeps(config=example_config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")


def callback(config, stage: str, fixture: str, at: datetime, **changes: str) -> Envelope:
    """What the gateway puts on the bus for one Twilio callback (signature checks are the contract tests')."""
    raw = (FIXTURES / f"{fixture}.txt").read_bytes()
    form = {**parse_qs(raw.decode(), keep_blank_values=True), **{k: [v] for k, v in changes.items()}}
    req = RawRequest(url="https://support.northwind.example", headers={}, body=raw, form=form, received_at=at)
    [msg] = TwilioVoiceAdapter("token", stage=stage, config=config,
                               public_base_url="https://support.northwind.example").parse(req)
    return Envelope.wrap(msg, message_id=derive_id(msg.channel, msg.external_id), correlation_id=f"c-{fixture}",
                         occurred_at=at)


def test_a_voicemail_delivered_twice_is_one_message_and_one_task(example_config, deps, sessions) -> None:
    voicemail = callback(example_config, "recording", "recording_completed", SATURDAY_EVENING)
    first = handle_inbound(voicemail, deps)
    again = handle_inbound(voicemail, deps)
    assert again == first and len(first) == 1 and first[0].payload.channel == "phone"
    assert count(sessions, Message) == 1 and count(sessions, CallbackTask) == 1
    with sessions() as s:
        task = s.scalar(select(CallbackTask))
        conv = s.get(Conversation, task.conversation_id)
        assert (task.call_sid, task.kind, task.phone, task.done_at) == (CA_B, "voicemail", "+442071838750", None)
        assert task.owner_id == conv.owner_id and task.owner_id is not None


def test_recording_then_transcription_keeps_the_transcript_in_the_one_message(example_config, deps, sessions) -> None:
    events = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    assert handle_inbound(callback(example_config, "transcription", "transcription_completed", SATURDAY_EVENING),
                          deps) == events  # the same call: no second acknowledgement
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        assert message.text == TRANSCRIPT
        assert message.details["meta"] == {"call": "voicemail", "call_sid": CA_B, "duration": 23,
                                           "to": "+48221002030", "transcription": "completed"}
        assert [a["content_type"] for a in message.details["attachments"]] == ["audio/mpeg"]
    assert count(sessions, CallbackTask) == 1


def test_transcription_first_is_not_overwritten_by_the_recording(example_config, deps, sessions) -> None:
    handle_inbound(callback(example_config, "transcription", "transcription_completed", SATURDAY_EVENING), deps)
    handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        assert message.text == TRANSCRIPT and message.details["meta"]["duration"] == 23
        assert s.scalar(select(CallbackTask.kind)) == "voicemail"
        # The transcript came first, so the conversation was categorised on it.
        assert s.scalar(select(Conversation.category)) == "delivery"


def test_a_missed_call_that_becomes_a_voicemail_is_one_task_of_kind_voicemail(example_config, deps, sessions) -> None:
    # Call A: nobody answered (missed, published at the dial action), then the voicemail's transcript failed.
    handle_inbound(callback(example_config, "dial", "dial_no_answer", MONDAY_MORNING), deps)
    with sessions() as s:
        assert s.scalar(select(CallbackTask.kind)) == "missed"
    handle_inbound(callback(example_config, "transcription", "transcription_failed", MONDAY_MORNING), deps)
    with sessions() as s:
        [task] = s.scalars(select(CallbackTask)).all()
        [message] = s.scalars(select(Message)).all()
        assert (task.call_sid, task.kind) == (CA_A, "voicemail")
        assert message.text == "" and message.details["meta"]["call"] == "voicemail"
        assert message.details["attachments"][0]["url"].endswith(".mp3")


def test_a_missed_call_alone_still_makes_a_task(example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "recording", "missed_call", MONDAY_MORNING), deps)
    assert event.payload.reply_to == "+380501234567" and event.payload.language == "uk"
    with sessions() as s:
        assert s.scalar(select(CallbackTask.kind)) == "missed"


def test_the_gateway_finds_the_owner_of_a_callers_open_conversation(example_config, deps, sessions, pg_url) -> None:
    engine = owners.gateway_engine(pg_url)
    lookup = owners.owner_lookup(lambda: engine)
    assert lookup("+442071838750") is None
    [event] = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    # The router's ownership.phone event (stored for the bus), applied as the gateway's consumer does.
    with sessions() as s:
        stored = [decode(body) for body in s.scalars(select(RouterOutbox.body))]
    for ownership in (e for e in stored if e.type == PhoneOwnership.TYPE):
        owners.record(ownership, lambda: engine)
    assert lookup("+442071838750") == event.payload.owner_id is not None
    assert lookup("+48601234567") is None
    engine.dispose()


def test_the_caller_is_acknowledged_by_sms_from_the_number_they_called(example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    fake = FakeTwilioApi().start()
    try:
        settings = load_settings({}, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                                 TWILIO_API_BASE=fake.base_url)
        senders = build_senders(settings, example_config)
        notifier = NotifierDeps(config=example_config, sessions=sessions, senders=senders,
                                compose_ack=partial(compose_ack, config=example_config),
                                clock=lambda: SATURDAY_EVENING)
        handle_event(event, notifier)
        handle_event(event, notifier)  # redelivered: still one SMS
        [sms] = fake.sent_to("+442071838750")
        # Twilio's status callback for that SMS (channel "sms") finds the phone acknowledgement.
        status = DeliveryStatus("sms", sms.sid, "delivered", SATURDAY_EVENING)
        handle_event(Envelope.wrap(status, message_id="st-1", correlation_id="c", occurred_at=SATURDAY_EVENING),
                     notifier)
        with sessions() as s:
            assert s.scalar(select(Outbox.delivery_status).where(Outbox.channel == "phone")) == "delivered"
    finally:
        fake.stop()
        senders.close()
    assert sms.from_ == "+48221002030" and len(sms.body) <= 320
    assert "Northwind Outfitters" in sms.body and "closed" in sms.body


# --- the call's end (status callback) and a person answering (the <Dial> action) ----------------


def ended(config, at: datetime, sid: str = CA_E, caller: str = "+37061234567") -> Envelope:
    return callback(config, "status", "status_completed_hung_up_before_beep", at, CallSid=sid, From=caller,
                    Caller=caller)


def answered(config, at: datetime, sid: str = CA_E, caller: str = "+37061234567") -> Envelope:
    return callback(config, "dial", "dial_completed", at, CallSid=sid, From=caller, Caller=caller)


def test_a_caller_who_hung_up_before_the_beep_is_one_missed_call_and_one_task(example_config, deps, sessions) -> None:
    # Saturday evening: the caller heard the hours and hung up during them. Only the status callback tells.
    notice = ended(example_config, SATURDAY_EVENING)
    [event] = handle_inbound(notice, deps)
    assert event.type == ConversationOpened.TYPE and event.payload.acknowledge  # the caller gets an SMS
    assert (event.payload.reply_to, event.payload.reply_from, event.payload.language) == (
        "+37061234567", "+48221002030", "lt")
    assert handle_inbound(notice, deps) == [event]  # redelivered: nothing new
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        [task] = s.scalars(select(CallbackTask)).all()
        assert message.external_id == CA_E and message.details["meta"] == {
            "call": "missed", "call_sid": CA_E, "call_status": "completed", "call_duration": 14, "to": "+48221002030"}
        assert (task.call_sid, task.kind, task.phone, task.done_at) == (CA_E, "missed", "+37061234567", None)
    assert count(sessions, Conversation) == 1


def test_an_answered_call_that_ended_is_no_conversation(example_config, deps, sessions) -> None:
    assert handle_inbound(answered(example_config, MONDAY_MORNING), deps) == []
    end = MONDAY_MORNING + timedelta(minutes=3)
    assert handle_inbound(ended(example_config, end), deps) == []
    # Twilio retries either: still nothing.
    assert handle_inbound(answered(example_config, MONDAY_MORNING), deps) == []
    assert handle_inbound(ended(example_config, end), deps) == []
    for model in (Conversation, Message, CallbackTask, RouterOutbox):
        assert count(sessions, model) == 0, model.__name__
    with sessions() as s:
        call = s.get(PhoneCall, CA_E)
        assert (call.answered_at, call.ended_at, call.end_status) == (MONDAY_MORNING, end, "completed")


def test_an_end_handled_before_the_answer_has_its_call_back_task_closed_by_it(example_config, deps, sessions) -> None:
    # Not Twilio's order (the <Dial> action comes first), but a slow replica or a redelivery can make it so.
    handle_inbound(ended(example_config, MONDAY_MORNING), deps)
    with sessions() as s:
        assert s.scalar(select(CallbackTask.done_at)) is None
    later = MONDAY_MORNING + timedelta(seconds=2)
    assert handle_inbound(answered(example_config, later), deps) == []
    assert handle_inbound(answered(example_config, later + timedelta(seconds=5)), deps) == []
    with sessions() as s:
        [task] = s.scalars(select(CallbackTask)).all()
        assert (task.call_sid, task.done_at) == (CA_E, later)  # a person talked to the caller: nothing to return
    assert count(sessions, Message) == 1 and count(sessions, Conversation) == 1


def test_a_voicemail_and_then_the_calls_end_is_still_the_voicemail_with_one_task(example_config, deps, sessions) -> None:
    events = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    end = ended(example_config, SATURDAY_EVENING, sid=CA_B, caller="+442071838750")
    assert handle_inbound(end, deps) == events  # the same call: no second acknowledgement
    assert handle_inbound(end, deps) == events
    # The transcript still comes after the call's end, and is kept.
    handle_inbound(callback(example_config, "transcription", "transcription_completed", SATURDAY_EVENING), deps)
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        [task] = s.scalars(select(CallbackTask)).all()
        assert message.text == TRANSCRIPT
        assert message.details["meta"] == {"call": "voicemail", "call_sid": CA_B, "duration": 23, "to": "+48221002030",
                                           "transcription": "completed", "call_status": "completed",
                                           "call_duration": 14}
        assert (task.kind, task.done_at) == ("voicemail", None)


def test_an_end_before_the_voicemail_becomes_the_voicemail(example_config, deps, sessions) -> None:
    # The status callback overtook the <Record> action: a missed call first, the voicemail upgrades it.
    end = ended(example_config, SATURDAY_EVENING, sid=CA_B, caller="+442071838750")
    events = handle_inbound(end, deps)
    assert handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING),
                          deps) == events
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        [task] = s.scalars(select(CallbackTask)).all()
        assert message.details["meta"]["call"] == "voicemail" and message.details["meta"]["duration"] == 23
        assert message.details["attachments"][0]["url"].endswith(".mp3")
        assert task.kind == "voicemail"


def test_no_answer_voicemail_and_end_in_any_order_are_one_voicemail_task(example_config, deps, sessions) -> None:
    handle_inbound(callback(example_config, "dial", "dial_no_answer", MONDAY_MORNING), deps)
    handle_inbound(ended(example_config, MONDAY_MORNING, sid=CA_A, caller="+48601234567"), deps)
    handle_inbound(callback(example_config, "transcription", "transcription_failed", MONDAY_MORNING), deps)
    with sessions() as s:
        [task] = s.scalars(select(CallbackTask)).all()
        [message] = s.scalars(select(Message)).all()
        assert (task.call_sid, task.kind) == (CA_A, "voicemail") and message.details["meta"]["call"] == "voicemail"


def test_answered_and_ended_at_the_same_moment_never_leave_a_call_to_return(example_config, deps, sessions) -> None:
    # Two router replicas, one notice each: whichever goes first, the call's row serialises them, so
    # the end never makes a missed call the answer does not close.
    calls = [(f"CA{n:032x}", f"+4860123{n:04d}") for n in range(1, 9)]
    errors: list[BaseException] = []

    def run(barrier: threading.Barrier, envelope: Envelope) -> None:
        try:
            barrier.wait()
            handle_inbound(envelope, deps)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    for sid, caller in calls:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(barrier, answered(example_config, MONDAY_MORNING, sid, caller))),
                   threading.Thread(target=run, args=(barrier, ended(example_config, MONDAY_MORNING, sid, caller)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CallbackTask).where(CallbackTask.done_at.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(PhoneCall).where(PhoneCall.answered_at.is_not(None),
                                                                          PhoneCall.ended_at.is_not(None))) == 8


def test_in_redirect_mode_a_hang_up_gets_the_note_and_an_answered_call_nothing(example_config, sessions) -> None:
    channels = {**example_config.channels, "phone": dataclasses.replace(example_config.channels["phone"],
                                                                         mode="redirect")}
    config = dataclasses.replace(example_config, channels=channels)
    deps = RouterDeps(config=config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")
    [note] = handle_inbound(ended(config, SATURDAY_EVENING), deps)
    assert note.type == Redirected.TYPE and note.payload.reply_to == "+37061234567"
    assert handle_inbound(ended(config, SATURDAY_EVENING), deps) == [note]  # the same note: sent once
    assert handle_inbound(answered(config, MONDAY_MORNING, sid=CA_C), deps) == []
    assert handle_inbound(ended(config, MONDAY_MORNING, sid=CA_C), deps) == []
    assert count(sessions, Conversation) == 0 and count(sessions, CallbackTask) == 0


# --- a withheld number's voicemail ----------------------------------------------------------------


def test_a_withheld_numbers_voicemail_is_a_conversation_without_acknowledgement_or_task(
        example_config, deps, sessions) -> None:
    voicemail = callback(example_config, "recording", "voicemail_withheld_number", SATURDAY_EVENING)
    [event] = handle_inbound(voicemail, deps)
    assert event.type == ConversationOpened.TYPE and not event.payload.acknowledge and event.payload.reply_to == ""
    assert handle_inbound(voicemail, deps) == [event]
    # Its transcript joins it, under the same call.
    handle_inbound(callback(example_config, "transcription", "transcription_completed", SATURDAY_EVENING,
                            CallSid=CA_W, From="+266696687", Caller="+266696687"), deps)
    with sessions() as s:
        [message] = s.scalars(select(Message)).all()
        assert message.text == TRANSCRIPT and message.details["meta"]["call"] == "voicemail"
        assert [(i.kind, i.value) for i in s.scalars(select(Identity))] == [("call_sid", CA_W)]
    assert count(sessions, CallbackTask) == 0 and count(sessions, Conversation) == 1
    # Another withheld call is another customer: two strangers are not one because both hid their number.
    other = callback(example_config, "recording", "voicemail_withheld_number", SATURDAY_EVENING,
                     CallSid="CA" + "7" * 32)
    [second] = handle_inbound(other, deps)
    assert second.payload.customer_id != event.payload.customer_id and not second.payload.acknowledge


def test_the_notifier_sends_nothing_for_a_withheld_voicemail(example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "recording", "voicemail_withheld_number", SATURDAY_EVENING),
                             deps)
    senders = build_senders(load_settings({}), example_config)
    try:
        notifier = NotifierDeps(config=example_config, sessions=sessions, senders=senders,
                                compose_ack=partial(compose_ack, config=example_config),
                                clock=lambda: SATURDAY_EVENING)
        handle_event(event, notifier)
    finally:
        senders.close()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack")) == 0
        # No promise was told to anyone and none can be kept: no reminder or breach will follow,
        # but the owner is told of the voicemail.
        assert s.scalar(select(func.count()).select_from(Promise)) == 0
        notices = s.scalars(select(AgentNotice)).all()
        assert [(n.kind, n.agent_id) for n in notices] == [("assigned", event.payload.owner_id)]


def test_an_agent_replying_to_a_withheld_caller_is_told_there_is_no_way_to_answer(
        example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "recording", "voicemail_withheld_number", SATURDAY_EVENING),
                             deps)
    app = Flask("test")
    install_json_errors(app)
    app.register_blueprint(build_api(ApiDeps(config=example_config, sessions=sessions,
                                             publisher=Publisher("memory://"), clock=lambda: MONDAY_MORNING)))
    with transaction(sessions) as s:
        token = ops.issue_token(s, "anna", MONDAY_MORNING)  # the team lead: she sees the team's queue too
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/conversations/{event.payload.conversation_id}"
    client = app.test_client()
    before = (count(sessions, Message), count(sessions, RouterOutbox))
    for body in ({"text": "Hello, we got your message"}, {"macro": "product-question"}):
        r = client.post(url + "/reply", json=body, headers=auth)
        assert r.status_code == 409 and r.is_json, r.data
        assert r.json["error"] == "unanswerable" and "no way to answer" in r.json["message"]
    assert (count(sessions, Message), count(sessions, RouterOutbox)) == before  # nothing queued to die later
    assert client.post(url + "/resolve", headers=auth).status_code == 200  # heard, done


def test_the_embedded_modes_sqlite_claims_the_call_the_same_way(example_config, tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'switchboard.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    deps = RouterDeps(config=example_config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")
    try:
        assert handle_inbound(answered(example_config, MONDAY_MORNING, sid=CA_C), deps) == []
        assert handle_inbound(ended(example_config, MONDAY_MORNING, sid=CA_C), deps) == []
        [event] = handle_inbound(ended(example_config, SATURDAY_EVENING), deps)
        assert handle_inbound(ended(example_config, SATURDAY_EVENING), deps) == [event]
        with sessions() as s:
            assert [(t.call_sid, t.kind) for t in s.scalars(select(CallbackTask))] == [(CA_E, "missed")]
            assert s.get(PhoneCall, CA_C).answered_at == MONDAY_MORNING
    finally:
        engine.dispose()


# --- the owner sees the calls to return and marks them done ---------------------------------------


def api_client(config, sessions, agent: str):
    app = Flask("test")
    install_json_errors(app)
    deps_ = ApiDeps(config=config, sessions=sessions, publisher=Publisher("memory://"), clock=lambda: MONDAY_MORNING)
    app.register_blueprint(build_api(deps_))
    from services.router.inbox import build_inbox

    for bp in build_inbox(deps_):
        app.register_blueprint(bp)
    with transaction(sessions) as s:
        token = ops.issue_token(s, agent, MONDAY_MORNING)
    return app.test_client(), {"Authorization": f"Bearer {token}"}, token


def test_the_owner_lists_the_calls_to_return_hears_the_voicemail_and_marks_it_done(
        example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    handle_inbound(callback(example_config, "transcription", "transcription_completed", SATURDAY_EVENING), deps)
    owner, conv_id = event.payload.owner_id, event.payload.conversation_id
    client, auth, token = api_client(example_config, sessions, owner)
    [task] = client.get("/api/v1/callbacks", headers=auth).json["callbacks"]
    assert (task["conversation_id"], task["phone"], task["kind"], task["done_at"]) == (
        conv_id, "+442071838750", "voicemail", None)
    detail = client.get(f"/api/v1/conversations/{conv_id}", headers=auth).json
    assert [c["id"] for c in detail["callbacks"]] == [task["id"]]
    [voicemail] = detail["history"]
    assert voicemail["text"] == TRANSCRIPT and voicemail["attachments"][0]["content_type"] == "audio/mpeg"

    # The inbox shows it: the number to call, the recording to play, a button to say it is done.
    login = client.get("/inbox/login")
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', login.text).group(1)
    client.post("/inbox/login", data={"csrf_token": csrf, "token": token})
    assert "call back" in client.get("/inbox/").text
    page = client.get(f"/inbox/c/{conv_id}").text
    assert 'href="tel:+442071838750"' in page and "<audio controls" in page and "Called back" in page
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    done = client.post(f"/inbox/c/{conv_id}/callbacks/{task['id']}/done", data={"csrf_token": csrf})
    assert done.status_code == 302 and "done=called" in done.headers["Location"]
    assert client.get("/api/v1/callbacks", headers=auth).json["callbacks"] == []
    # A call back is the conversation's first human response: the promise is kept, and the
    # notifier hears of it (conversation.called_back) to close its own promise row.
    with sessions() as s:
        conv = s.get(Conversation, conv_id)
        assert conv.first_response_at == MONDAY_MORNING
        [called] = [decode(r.body) for r in s.scalars(select(RouterOutbox)) if "called_back" in r.body["type"]]
        assert (called.payload.agent_id, called.payload.phone) == (owner, "+442071838750")
        assert ops.human_replied(s, conv_id)  # so the survey follows the resolution
    # Done twice is still done once, at the first time.
    again = client.post(f"/api/v1/callbacks/{task['id']}/done", headers=auth)
    assert again.status_code == 200 and again.json["callback"]["done_at"].startswith("2026-11-23T09:00")


def test_someone_elses_call_back_is_refused_and_resolving_closes_the_rest(example_config, deps, sessions) -> None:
    [event] = handle_inbound(callback(example_config, "dial", "dial_no_answer", MONDAY_MORNING), deps)
    owner = event.payload.owner_id
    stranger = next(a for a, agent in example_config.agents.items()
                    if a != owner and agent.role != "lead" and not any(t.lead == a for t in example_config.teams.values()))
    client, auth, _ = api_client(example_config, sessions, stranger)
    with sessions() as s:
        task_id = s.scalar(select(CallbackTask.id))
    assert client.get("/api/v1/callbacks", headers=auth).json["callbacks"] == []
    r = client.post(f"/api/v1/callbacks/{task_id}/done", headers=auth)
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    assert client.post("/api/v1/callbacks/999999/done", headers=auth).status_code == 404
    owner_client, owner_auth, _ = api_client(example_config, sessions, owner)
    assert owner_client.post(f"/api/v1/conversations/{event.payload.conversation_id}/resolve",
                             headers=owner_auth).status_code == 200
    with sessions() as s:
        task = s.get(CallbackTask, task_id)
        assert task.done_at is not None and task.done_by == "resolved"  # nothing left to call back...
        assert not ops.human_replied(s, event.payload.conversation_id)  # ...but nobody called: no survey
