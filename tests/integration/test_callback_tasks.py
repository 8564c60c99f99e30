"""Phone calls nobody took, against the real PostgreSQL: the gateway's voice adapter turns Twilio's
callbacks into messages, the router keeps one message and one call-back task per call whatever the
order and however often they come, and the caller's acknowledgement leaves by SMS."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from services.gateway.channels import RawRequest
from services.gateway.channels.twilio_voice import TwilioVoiceAdapter
from services.gateway.owner_lookup import owner_lookup
from services.notifier.ack import compose_ack
from services.notifier.bootstrap import build_senders
from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import Outbox
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import CallbackTask, Conversation, Message
from shared.contracts import DeliveryStatus, Envelope, derive_id
from shared.db import make_engine, migrate, session_factory
from shared.settings import load_settings
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "phone"
WARSAW = ZoneInfo("Europe/Warsaw")
SATURDAY_EVENING = datetime(2026, 11, 21, 20, 0, tzinfo=WARSAW)
MONDAY_MORNING = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)
CA_A, CA_B = "CA1b3d5f7a9c1e2d4f6a8c0e2b4d6f8a01", "CA2c4e6a8b0d2f3e5a7c9e1f3b5d7a9c12"
TRANSCRIPT = ("Hi, this is Tom. I ordered the leather boots last week, order 48213, and the courier never came. "
              "Could you call me back, please? Thanks.")


@dataclass
class Verdict:
    category: str
    confidence: float = 0.9
    reason: dict = field(default_factory=dict)


def fake_classify(text, subject, language, channel) -> Verdict:
    """A fake of our own classifier: enough to see that the transcript, not the empty text, is kept."""
    return Verdict("delivery") if "courier" in text else Verdict("other", 0.1)


@pytest.fixture
def sessions(pg_url):
    engine = make_engine(pg_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def deps(example_config, sessions) -> RouterDeps:
    return RouterDeps(config=example_config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")


def callback(config, stage: str, fixture: str, at: datetime) -> Envelope:
    """What the gateway puts on the bus for one Twilio callback (signature checks are the contract tests')."""
    raw = (FIXTURES / f"{fixture}.txt").read_bytes()
    req = RawRequest(url="https://support.northwind.example", headers={}, body=raw,
                     form=parse_qs(raw.decode(), keep_blank_values=True), received_at=at)
    [msg] = TwilioVoiceAdapter("token", stage=stage, config=config,
                               public_base_url="https://support.northwind.example").parse(req)
    return Envelope.wrap(msg, message_id=derive_id(msg.channel, msg.external_id), correlation_id=f"c-{fixture}",
                         occurred_at=at)


def count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


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
    lookup = owner_lookup(pg_url)
    assert lookup("+442071838750") is None
    [event] = handle_inbound(callback(example_config, "recording", "recording_completed", SATURDAY_EVENING), deps)
    assert lookup("+442071838750") == event.payload.owner_id is not None
    assert lookup("+48601234567") is None


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
