"""Twilio forms (inbound SMS/MMS, status callbacks, the four voice callbacks): any form either
becomes InboundMessages / a DeliveryStatus that pass the contract, or raises Malformed. The voice
adapter's TwiML answer is computed for every accepted form too: the gateway sends it after parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway.channels import RawRequest
from services.gateway.channels.twilio import TwilioSmsAdapter, TwilioStatusAdapter
from services.gateway.channels.twilio_voice import STAGES, TwilioVoiceAdapter
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW, assert_publishable, parsed_or_malformed

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
URL = "https://support.example/webhooks/twilio/sms"
# Monday 10:00 in Warsaw, in hours: an incoming call is answered with a <Dial>.
IN_HOURS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

hexes = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


def sid(prefix: str) -> st.SearchStrategy:
    return hexes.map(lambda h: prefix + h)


# Digits beyond ASCII ("²", "٣") pass str.isdigit() but not int(): a classic.
numbers = st.one_of(st.integers(-5, 20).map(str), st.sampled_from(["", " 3 ", "²", "٣", "1e3", "-0", "--5", "9" * 40]))
phones = st.one_of(st.sampled_from(["+48601234567", "+442071838750", "601234567", "anonymous", "+266696687",
                                    "client:alice", "sip:a@b", "whatsapp:+48601234567", "+", "", " "]),
                   st.from_regex(r"\+?[0-9 ()-]{1,20}", fullmatch=True))
statuses = st.sampled_from(["queued", "sent", "delivered", "undelivered", "failed", "read", "received", "Sent ",
                            "no-answer", "busy", "completed", "canceled", "answered", "in-progress", "x" * 40])

FIELDS: dict[str, st.SearchStrategy] = {
    "MessageSid": sid("SM") | sid("MM") | st.text(max_size=40), "AccountSid": sid("AC"),
    "MessagingServiceSid": sid("MG"), "From": phones, "To": phones, "Body": st.text(max_size=200),
    "NumMedia": numbers, "NumSegments": numbers, "OptOutType": st.sampled_from(["STOP", "START", "HELP", "x"]),
    "MediaUrl0": st.text(max_size=40), "MediaContentType0": st.text(max_size=20), "MediaUrl1": st.text(max_size=40),
    "MessageStatus": statuses, "SmsStatus": statuses, "ErrorCode": numbers, "ErrorMessage": st.text(max_size=40),
    "CallSid": sid("CA") | sid("RE") | st.text(max_size=40), "DialCallStatus": statuses, "CallStatus": statuses,
    "RecordingSid": sid("RE") | sid("CA"), "RecordingUrl": st.text(max_size=60), "RecordingDuration": numbers,
    "RecordingStatus": statuses, "TranscriptionStatus": statuses, "TranscriptionText": st.text(max_size=80),
}


@st.composite
def forms(draw) -> dict[str, list[str]]:
    """Twilio-shaped forms: a subset of the known fields, each with Twilio-like or hostile values,
    sometimes repeated, plus unknown fields (Twilio adds parameters without notice)."""
    keys = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=len(FIELDS)))
    form = {k: draw(st.lists(FIELDS[k], min_size=1, max_size=2)) for k in keys}
    form.update(draw(st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=20), min_size=1, max_size=2),
                                     max_size=3)))
    return form


def request(form: dict[str, list[str]], at: datetime = NOW) -> RawRequest:
    return RawRequest(url=URL, headers={}, body=b"", form=form, received_at=at)


def fixture_forms() -> list[dict[str, list[str]]]:
    return [parse_qs(p.read_text(encoding="utf-8"), keep_blank_values=True)
            for family in ("sms", "phone") for p in sorted((FIXTURES / family).glob("*.txt"))]


@fuzz(400)
@given(forms())
@example({"MessageSid": ["SM" + "0" * 32], "From": ["+48601234567"], "NumSegments": ["²"]})
@example({"MessageSid": ["SM" + "0" * 32], "From": ["+48601234567"], "NumMedia": ["²"]})
def test_sms_form_is_parsed_or_malformed(form) -> None:
    adapter = TwilioSmsAdapter("token", default_region="PL")
    assert_publishable(parsed_or_malformed(lambda: adapter.parse(request(form))) or [])


@fuzz(300)
@given(forms())
def test_status_form_is_parsed_or_malformed(form) -> None:
    adapter = TwilioStatusAdapter("token")
    status = parsed_or_malformed(lambda: adapter.parse_status(request(form)))
    assert_publishable([status] if status else [])
    assert parsed_or_malformed(lambda: adapter.parse(request(form))) in ([], None)


@pytest.fixture(scope="module")
def voice_adapters(example_config) -> dict[str, TwilioVoiceAdapter]:
    return {stage: TwilioVoiceAdapter("token", stage=stage, config=example_config,
                                      public_base_url="https://support.example", default_region="PL")
            for stage in STAGES}


@fuzz(250)
@given(stage=st.sampled_from(STAGES), form=forms(), at=st.sampled_from([NOW, IN_HOURS]))
@example(stage="recording", form={"CallSid": ["CA" + "0" * 32], "From": ["+48601234567"],
                                  "RecordingDuration": ["²"]}, at=NOW)
@example(stage="recording", form={"CallSid": ["CA" + "0" * 32], "From": ["+48601234567"],
                                  "RecordingDuration": ["--5"]}, at=NOW)
def test_voice_form_is_parsed_or_malformed_and_answered_with_twiml(voice_adapters, stage, form, at) -> None:
    adapter = voice_adapters[stage]
    req = request(form, at)
    messages = parsed_or_malformed(lambda: adapter.parse(req))
    if messages is None:
        return
    assert_publishable(messages)
    body, content_type = adapter.respond(req)
    assert content_type.startswith("text/xml") and body.startswith("<?xml") and "<Response" in body


@fuzz(150)
@given(data=st.data())
def test_a_mutated_real_form_is_parsed_or_malformed(voice_adapters, data) -> None:
    """Real fixtures with one field dropped, replaced or duplicated: closer to what a provider sends."""
    form = dict(data.draw(st.sampled_from(fixture_forms())))
    key = data.draw(st.sampled_from(sorted(form)))
    action = data.draw(st.sampled_from(["drop", "replace", "repeat"]))
    if action == "drop":
        del form[key]
    else:
        value = data.draw(FIELDS.get(key, st.text(max_size=30)))
        form[key] = [value] if action == "replace" else [*form[key], value]
    req = request(form)
    assert_publishable(parsed_or_malformed(lambda: TwilioSmsAdapter("t").parse(req)) or [])
    status = parsed_or_malformed(lambda: TwilioStatusAdapter("t").parse_status(req))
    assert_publishable([status] if status else [])
    for adapter in voice_adapters.values():
        messages = parsed_or_malformed(lambda a=adapter: a.parse(req))
        if messages is not None:
            assert_publishable(messages)
            adapter.respond(req)
