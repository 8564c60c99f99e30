"""Twilio Voice: one test per fixture — the form Twilio posts, signed with the real RequestValidator,
in; the exact InboundMessages and the exact TwiML out. Then the same through the gateway's HTTP
edge: 403 before anything, 400 naming the problem, TwiML as text/xml, and no <Record> loop."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from werkzeug.datastructures import MultiDict

from services import simulate
from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels import Malformed, RawRequest, Unauthenticated
from services.gateway.channels.twilio_voice import (
    PATH_CALL,
    PATH_DIAL,
    PATH_RECORDING,
    PATH_STATUS,
    PATH_TRANSCRIPTION,
    TwilioVoiceAdapter,
    caller_language,
    spoken_hours,
)
from shared.contracts import Attachment, Envelope, Identity, InboundMessage, derive_id, encode
from tests.contract.test_twilio_fixtures import TOKEN, form_of, sign

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "phone"
PUBLIC = "https://support.northwind.example"
WARSAW = ZoneInfo("Europe/Warsaw")
IN_HOURS = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)  # Monday morning
OUT_OF_HOURS = datetime(2026, 11, 21, 20, 0, tzinfo=WARSAW)  # Saturday evening, back on Monday 09:00
AC = "AC3f9a1c2b4d5e6f708192a3b4c5d6e7f8"
BIZ = "+48221002030"
TEAM_PHONE = "+48221002030"  # deploy/switchboard.yaml: the support team's "+48 22 100 20 30"
CA_A, CA_B, CA_D = "CA1b3d5f7a9c1e2d4f6a8c0e2b4d6f8a01", "CA2c4e6a8b0d2f3e5a7c9e1f3b5d7a9c12", "CA4e6a8c0d2f4b5a7c9e1a3b5d7f9c1e34"
CA_C = "CA3d5f7b9c1e3a4f6b8d0f2a4c6e8b0d23"
CA_E, CA_W = "CA5f7b9d1e3a5c6b8d0f2b4c6e8a0d2f56", "CA6a8c0e2f4b6d7c9e1a3c5d7f9b1e3a67"  # W: a withheld number
RE_A, RE_B, RE_W = ("RE5f7b9d1e3a5c6b8d0f2b4c6e8a0d2f45", "RE6a8c0e2f4b6d7c9e1a3c5d7f9b1e3a56",
                    "RE7b9d1f3a5c7e8d0f2b4d6e8a0c2f4b78")

STAGE_PATHS = {"call": PATH_CALL, "dial": PATH_DIAL, "recording": PATH_RECORDING, "transcription": PATH_TRANSCRIPTION,
               "status": PATH_STATUS}
XML = '<?xml version="1.0" encoding="UTF-8"?>'
RECORD = (f'<Record action="{PUBLIC}/webhooks/twilio/voice/recording" maxLength="120" method="POST" playBeep="true" '
          f'transcribe="true" transcribeCallback="{PUBLIC}/webhooks/twilio/voice/transcription" /><Hangup /></Response>')


def recording(re: str) -> tuple[Attachment, ...]:
    url = f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Recordings/{re}.mp3"
    return (Attachment(content_type="audio/mpeg", url=url, name=f"{re}.mp3"),)


# name → (stage, time of the request, InboundMessages, TwiML)
CASES: dict[str, tuple[str, datetime, list[InboundMessage], str]] = {
    # In hours a Polish caller hears Polish and the team's phone rings (no lookup: nobody owns them yet).
    "call_incoming_in_hours": ("call", IN_HOURS, [], (
        f'{XML}<Response><Say language="pl-PL" voice="Polly.Ewa">Northwind Outfitters, dzień dobry! Dziękujemy za '
        'telefon. Łączymy z konsultantem, prosimy chwilę zaczekać.</Say>'
        f'<Dial action="{PUBLIC}/webhooks/twilio/voice/dial" method="POST" timeout="20">{TEAM_PHONE}</Dial></Response>')),
    # Out of hours: the hours, the next opening in local time, then a voicemail.
    "call_incoming_out_of_hours": ("call", OUT_OF_HOURS, [], (
        f'{XML}<Response><Say language="en-GB" voice="Polly.Amy">Thank you for calling Northwind Outfitters. We are '
        'closed at the moment. Our opening hours are Monday to Friday from 9:00 to 17:00, Saturday from 10:00 to '
        '14:00. We will be back on Monday, 23 November, at 09:00. Please leave your name and your question after the '
        f'beep, and we will call you back. When you have finished, just hang up.</Say>{RECORD}')),
    # Nobody picked up: a missed call is published at once, and the caller is offered voicemail.
    "dial_no_answer": ("dial", IN_HOURS, [InboundMessage(
        channel="phone", external_id=CA_A, sender=Identity("phone", "+48601234567"), reply_to="+48601234567",
        received_at=IN_HOURS, language_hint="pl", meta={"call": "missed", "call_sid": CA_A, "duration": 0, "to": BIZ},
    )], (f'{XML}<Response><Say language="pl-PL" voice="Polly.Ewa">Niestety nikt nie może teraz odebrać. Po sygnale '
         f'prosimy podać imię i sprawę, a oddzwonimy. Po nagraniu wystarczy się rozłączyć.</Say>{RECORD}')),
    # A person took the call: an "answered" notice, so that the call's end is no missed call.
    "dial_completed": ("dial", IN_HOURS, [InboundMessage(
        channel="phone", external_id=CA_C, sender=Identity("phone", "+4915112345678"), reply_to="+4915112345678",
        received_at=IN_HOURS, language_hint="de", meta={"call": "answered", "call_sid": CA_C, "to": BIZ},
    )], f"{XML}<Response><Hangup /></Response>"),
    # The <Record> action: the voicemail, and a goodbye — never another <Record>.
    "recording_completed": ("recording", OUT_OF_HOURS, [InboundMessage(
        channel="phone", external_id=CA_B, sender=Identity("phone", "+442071838750"), reply_to="+442071838750",
        received_at=OUT_OF_HOURS, language_hint="en", attachments=recording(RE_B),
        meta={"call": "voicemail", "call_sid": CA_B, "duration": 23, "to": BIZ},
    )], (f'{XML}<Response><Say language="en-GB" voice="Polly.Amy">Thank you, we have your message and will call you '
         'back. Goodbye.</Say><Hangup /></Response>')),
    "transcription_completed": ("transcription", OUT_OF_HOURS, [InboundMessage(
        channel="phone", external_id=CA_B, sender=Identity("phone", "+442071838750"), reply_to="+442071838750",
        received_at=OUT_OF_HOURS, language_hint="en", attachments=recording(RE_B),
        text="Hi, this is Tom. I ordered the leather boots last week, order 48213, and the courier never came. "
             "Could you call me back, please? Thanks.",
        meta={"call": "voicemail", "call_sid": CA_B, "to": BIZ, "transcription": "completed"},
    )], f"{XML}<Response />"),
    # Twilio's transcription fails on a Polish voicemail: still the message, with the recording to listen to.
    "transcription_failed": ("transcription", IN_HOURS, [InboundMessage(
        channel="phone", external_id=CA_A, sender=Identity("phone", "+48601234567"), reply_to="+48601234567",
        received_at=IN_HOURS, language_hint="pl", attachments=recording(RE_A),
        meta={"call": "voicemail", "call_sid": CA_A, "to": BIZ, "transcription": "failed"},
    )], f"{XML}<Response />"),
    # Hung up at the beep: nothing recorded, still a call to return.
    "missed_call": ("recording", IN_HOURS, [InboundMessage(
        channel="phone", external_id=CA_D, sender=Identity("phone", "+380501234567"), reply_to="+380501234567",
        received_at=IN_HOURS, language_hint="uk", meta={"call": "missed", "call_sid": CA_D, "duration": 0, "to": BIZ},
    )], (f'{XML}<Response><Say language="uk-UA" voice="Google.uk-UA-Standard-A">Дякуємо, ваше повідомлення записано. '
         'Ми вам передзвонимо. До побачення!</Say><Hangup /></Response>')),
    # A RecordingStatusCallback has no caller; the <Record> action brought the same recording: ignored.
    "recording_status_callback": ("recording", OUT_OF_HOURS, [], f"{XML}<Response />"),
    # A withheld number (Twilio's "+266696687", "anonymous" on a keypad) left a voicemail: filed under
    # the call itself, with nothing to answer on.
    "voicemail_withheld_number": ("recording", OUT_OF_HOURS, [InboundMessage(
        channel="phone", external_id=CA_W, sender=Identity("call_sid", CA_W), reply_to="",
        received_at=OUT_OF_HOURS, attachments=recording(RE_W),
        meta={"call": "voicemail", "call_sid": CA_W, "duration": 31, "to": BIZ},
    )], (f'{XML}<Response><Say language="en-GB" voice="Polly.Amy">Thank you, we have your message and will call you '
         'back. Goodbye.</Say><Hangup /></Response>')),
    # The call's status callback: the caller heard the hours and hung up before the beep. The only
    # word of that call; the router makes it a missed call when nothing else is known of it.
    "status_completed_hung_up_before_beep": ("status", OUT_OF_HOURS, [InboundMessage(
        channel="phone", external_id=CA_E, sender=Identity("phone", "+37061234567"), reply_to="+37061234567",
        received_at=OUT_OF_HOURS, language_hint="lt",
        meta={"call": "ended", "call_sid": CA_E, "call_status": "completed", "call_duration": 14, "to": BIZ},
    )], f"{XML}<Response />"),
    # Still ringing: the call goes on, nothing to publish.
    "status_ringing": ("status", OUT_OF_HOURS, [], f"{XML}<Response />"),
}

MALFORMED = {
    "malformed_call_missing_call_sid": ("call", "CallSid is missing"),
    "malformed_dial_missing_status": ("dial", "DialCallStatus is missing"),
    "malformed_transcription_missing_status": ("transcription", "TranscriptionStatus is missing"),
    "malformed_status_missing_call_status": ("status", "CallStatus is missing"),
}


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.txt").read_bytes()


def request(stage: str, form: dict[str, list[str]], at: datetime, *, token: str = TOKEN) -> RawRequest:
    url = PUBLIC + STAGE_PATHS[stage]
    return RawRequest(url=url, headers={"X-Twilio-Signature": sign(url, form, token)}, body=b"", form=form,
                      received_at=at)


def adapter(config, stage: str, **kwargs) -> TwilioVoiceAdapter:
    return TwilioVoiceAdapter(TOKEN, stage=stage, config=config, public_base_url=PUBLIC, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_verifies_and_gives_the_exact_messages_and_twiml(example_config, name: str) -> None:
    stage, at, messages, twiml = CASES[name]
    voice = adapter(example_config, stage)
    req = request(stage, form_of(body(name)), at)
    voice.verify(req)
    assert voice.parse(req) == messages
    assert voice.respond(req) == (twiml, "text/xml; charset=utf-8")
    for msg in messages:
        encode(Envelope.wrap(msg, message_id="m-1", correlation_id="c-1", occurred_at=at))  # fits the bus contract


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_passes_the_signature_then_names_the_problem(example_config, name: str) -> None:
    stage, problem = MALFORMED[name]
    voice = adapter(example_config, stage)
    req = request(stage, form_of(body(name)), IN_HOURS)
    voice.verify(req)  # 400 comes after the signature passes, never instead of a 403
    with pytest.raises(Malformed, match=problem):
        voice.parse(req)


def test_every_fixture_is_used() -> None:
    assert {p.stem for p in FIXTURES.glob("*")} == set(CASES) | set(MALFORMED)


def test_the_record_action_never_records_again(example_config) -> None:
    # Twilio requests the <Record> action after every recording: another <Record> there loops forever.
    for name in ("recording_completed", "missed_call"):
        stage, at, _, _ = CASES[name]
        twiml, _ = adapter(example_config, stage).respond(request(stage, form_of(body(name)), at))
        assert "<Record" not in twiml and twiml.endswith("<Hangup /></Response>")


def test_every_callback_of_one_call_is_keyed_by_its_call_sid(example_config) -> None:
    # Dial, recording and transcription of call A: one external id, so the router keeps one message.
    ids = {msg.external_id for name in ("dial_no_answer", "transcription_failed")
           for msg in adapter(example_config, CASES[name][0]).parse(
               request(CASES[name][0], form_of(body(name)), IN_HOURS))}
    assert ids == {CA_A}


def parsed(config, stage: str, name: str, at: datetime = IN_HOURS, **changes: str) -> list[InboundMessage]:
    form = {**form_of(body(name)), **{k: [v] for k, v in changes.items()}}
    return adapter(config, stage).parse(request(stage, form, at))


@pytest.mark.parametrize("status", ["completed", "busy", "failed", "no-answer", "canceled"])
def test_every_final_call_status_is_an_ended_notice(example_config, status) -> None:
    [msg] = parsed(example_config, "status", "status_completed_hung_up_before_beep", CallStatus=status)
    assert (msg.external_id, msg.meta["call"], msg.meta["call_status"]) == (CA_E, "ended", status)


@pytest.mark.parametrize("status", ["queued", "ringing", "in-progress", "In-Progress"])
def test_a_call_still_going_on_publishes_nothing(example_config, status) -> None:
    assert parsed(example_config, "status", "status_ringing", CallStatus=status) == []


def test_an_outbound_calls_status_is_no_customers_call(example_config) -> None:
    # Someone calling a customer back from the business number: not a call to return.
    assert parsed(example_config, "status", "status_completed_hung_up_before_beep", Direction="outbound-api") == []


def test_a_status_callback_without_a_duration_is_still_an_ended_notice(example_config) -> None:
    form = {k: v for k, v in form_of(body("status_completed_hung_up_before_beep")).items() if k != "CallDuration"}
    [msg] = adapter(example_config, "status").parse(request("status", form, IN_HOURS))
    assert msg.meta == {"call": "ended", "call_sid": CA_E, "call_status": "completed", "to": BIZ}


@pytest.mark.parametrize("status", ["completed", "answered"])
def test_a_dial_a_person_answered_is_an_answered_notice(example_config, status) -> None:
    [msg] = parsed(example_config, "dial", "dial_completed", DialCallStatus=status)
    assert (msg.external_id, msg.meta) == (CA_C, {"call": "answered", "call_sid": CA_C, "to": BIZ})


@pytest.mark.parametrize(("stage", "name"), [
    ("dial", "dial_no_answer"),  # missed, at the dial
    ("recording", "missed_call"),  # hung up at the beep
    ("dial", "dial_completed"),  # answered
    ("status", "status_completed_hung_up_before_beep"),  # ended
])
@pytest.mark.parametrize("withheld", ["+266696687", "anonymous", "client:anonymous"])
def test_a_withheld_number_without_a_voicemail_is_not_published(example_config, stage, name, withheld) -> None:
    # Nothing to act on: no number to call back, nothing recorded to hear.
    assert parsed(example_config, stage, name, From=withheld, Caller=withheld) == []


def test_a_withheld_numbers_transcript_joins_its_voicemail(example_config) -> None:
    [msg] = parsed(example_config, "transcription", "transcription_completed", From="anonymous", Caller="anonymous")
    assert (msg.sender, msg.reply_to, msg.language_hint) == (Identity("call_sid", CA_B), "", None)
    assert msg.text.startswith("Hi, this is Tom.") and msg.meta["call"] == "voicemail"


@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_signature_made_with_another_token_or_no_configured_token_is_refused(example_config, token) -> None:
    form = form_of(body("call_incoming_in_hours"))
    with pytest.raises(Unauthenticated):
        TwilioVoiceAdapter(token, stage="call", config=example_config, public_base_url=PUBLIC).verify(
            request("call", form, IN_HOURS, token="another-accounts-token-000000000"))


def test_a_signature_for_another_voice_endpoint_is_refused(example_config) -> None:
    form = form_of(body("recording_completed"))
    signed_for_dial = request("dial", form, OUT_OF_HOURS)
    with pytest.raises(Unauthenticated):
        adapter(example_config, "recording").verify(dataclasses.replace(signed_for_dial, url=PUBLIC + PATH_RECORDING))


# --- whom a call rings ----------------------------------------------------------------------------


@pytest.fixture
def config_with_phones(example_config):
    agents = dict(example_config.agents)
    agents["anna"] = dataclasses.replace(agents["anna"], phone="+48 600 100 200")  # Mon–Fri 09:00–17:00
    agents["taras"] = dataclasses.replace(agents["taras"], phone="+48 600 300 400")  # Mon–Fri 12:00–20:00
    return dataclasses.replace(example_config, agents=agents)


def dialled(voice: TwilioVoiceAdapter) -> str:
    twiml, _ = voice.respond(request("call", form_of(body("call_incoming_in_hours")), IN_HOURS))
    return twiml.split('timeout="20">', 1)[1].split("</Dial>", 1)[0]


def test_a_known_caller_rings_the_owner_of_their_open_conversation(config_with_phones) -> None:
    asked = []
    voice = adapter(config_with_phones, "call", owner_lookup=lambda phone: asked.append(phone) or "anna")
    assert dialled(voice) == "+48600100200"
    assert asked == ["+48601234567"]


def test_an_owner_off_shift_is_not_rung_the_team_is(config_with_phones) -> None:
    # Monday 10:00: Taras starts at 12:00.
    assert dialled(adapter(config_with_phones, "call", owner_lookup=lambda phone: "taras")) == TEAM_PHONE


def test_an_owner_without_a_phone_or_a_failing_lookup_rings_the_team(example_config, config_with_phones) -> None:
    assert dialled(adapter(example_config, "call", owner_lookup=lambda phone: "anna")) == TEAM_PHONE

    def broken(phone: str) -> str:
        raise ConnectionError("database is down")

    assert dialled(adapter(config_with_phones, "call", owner_lookup=broken)) == TEAM_PHONE


def test_in_hours_without_any_phone_to_ring_the_caller_gets_voicemail(example_config) -> None:
    teams = {k: dataclasses.replace(t, phone=None) for k, t in example_config.teams.items()}
    voice = adapter(dataclasses.replace(example_config, teams=teams), "call")
    twiml, _ = voice.respond(request("call", form_of(body("call_incoming_in_hours")), IN_HOURS))
    assert "<Dial" not in twiml and "Niestety nikt nie może teraz odebrać." in twiml and twiml.endswith(RECORD)


# --- the words ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "language"), [
    ("+48601234567", "pl"), ("+79161234567", "ru"), ("+380501234567", "uk"), ("+359888123456", "bg"),
    ("+37061234567", "lt"), ("+4915112345678", "de"), ("+442071838750", "en"),
    ("+33612345678", "en"),  # French is not a business language: the default
    (None, "en"),  # withheld number
])
def test_the_caller_hears_the_language_of_their_country(example_config, caller, language) -> None:
    business = example_config.business
    assert caller_language(caller, business.languages, business.default_language) == language


def test_a_language_the_business_does_not_speak_falls_back_to_the_default() -> None:
    assert caller_language("+79161234567", ("en", "pl"), "pl") == "pl"


@pytest.mark.parametrize(("language", "said"), [
    ("en", "Monday to Friday from 9:00 to 17:00, Saturday from 10:00 to 14:00"),
    ("ru", "с понедельника по пятницу с 9:00 до 17:00, в субботу с 10:00 до 14:00"),
    ("pl", "od poniedziałku do piątku od 9:00 do 17:00, w sobotę od 10:00 do 14:00"),
    ("uk", "з понеділка по п'ятницю з 9:00 до 17:00, у суботу з 10:00 до 14:00"),
    ("bg", "от понеделник до петък от 9:00 до 17:00, в събота от 10:00 до 14:00"),
    ("lt", "nuo pirmadienio iki penktadienio nuo 9:00 iki 17:00, šeštadienį nuo 10:00 iki 14:00"),
    ("de", "Montag bis Freitag von 9:00 bis 17:00 Uhr, Samstag von 10:00 bis 14:00 Uhr"),
])
def test_working_hours_are_said_in_words(example_config, language, said) -> None:
    assert spoken_hours(example_config.business_calendar.weekly_hours, language) == said


@pytest.mark.parametrize("caller", ["+48601234567", "+79161234567", "+380501234567", "+359888123456",
                                    "+37061234567", "+4915112345678", "+442071838750"])
def test_out_of_hours_every_language_says_hours_and_reopening(example_config, caller) -> None:
    form = {**form_of(body("call_incoming_out_of_hours")), "From": [caller]}
    twiml, _ = adapter(example_config, "call").respond(request("call", form, OUT_OF_HOURS))
    assert "09:00" in twiml and "17:00" in twiml and "{" not in twiml and ".." not in twiml
    assert twiml.endswith(RECORD)


# --- through the HTTP edge ------------------------------------------------------------------------


@pytest.fixture
def client(example_config, intake):
    adapters = {("twilio_voice" if stage == "call" else f"twilio_voice_{stage}"): adapter(example_config, stage)
                for stage in STAGE_PATHS}
    deps = GatewayDeps(config=example_config, intake=intake, adapters=adapters, public_base_url=PUBLIC,
                       max_body_bytes=64 * 1024, clock=lambda: OUT_OF_HOURS)
    return create_app(deps).test_client()


def post(client, stage: str, name: str, token: str = TOKEN, **changes: str):
    form = {**form_of(body(name)), **{k: [v] for k, v in changes.items()}}
    path = STAGE_PATHS[stage]
    return client.post(path, data=MultiDict([(k, v) for k, vs in form.items() for v in vs]),
                       content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": sign(PUBLIC + path, form, token)})


def test_an_incoming_call_is_answered_with_twiml_and_publishes_nothing(client, intake) -> None:
    r = post(client, "call", "call_incoming_out_of_hours")
    assert r.status_code == 200 and r.mimetype == "text/xml"
    assert r.data.decode() == CASES["call_incoming_out_of_hours"][3]
    assert intake.accepted == []


def test_the_record_action_publishes_the_voicemail_and_hangs_up(client, intake) -> None:
    r = post(client, "recording", "recording_completed")
    assert r.status_code == 200 and r.mimetype == "text/xml"
    assert "<Record" not in r.data.decode() and r.data.decode().endswith("<Hangup /></Response>")
    [env] = intake.accepted
    assert env.message_id == derive_id("phone", CA_B) and env.payload.meta["call"] == "voicemail"


def test_recording_and_transcription_of_one_call_carry_the_same_message_id(client, intake) -> None:
    post(client, "recording", "recording_completed")
    post(client, "transcription", "transcription_completed")
    assert [e.message_id for e in intake.accepted] == [derive_id("phone", CA_B)] * 2
    assert intake.accepted[1].payload.text.startswith("Hi, this is Tom.")


def test_the_status_callback_publishes_the_ended_call_and_answers_empty_twiml(client, intake) -> None:
    r = post(client, "status", "status_completed_hung_up_before_beep")
    assert r.status_code == 200 and r.mimetype == "text/xml" and r.data.decode() == f"{XML}<Response />"
    [env] = intake.accepted
    # The call's own message id: the router finds a voicemail or missed message of the call by it.
    assert env.message_id == derive_id("phone", CA_E) and env.payload.meta["call"] == "ended"
    r = post(client, "status", "status_ringing")
    assert r.status_code == 200 and r.data.decode() == f"{XML}<Response />" and len(intake.accepted) == 1


@pytest.mark.parametrize(("stage", "name"), [("call", "call_incoming_in_hours"), ("recording", "recording_completed"),
                                             ("transcription", "transcription_completed"), ("dial", "dial_no_answer"),
                                             ("status", "status_completed_hung_up_before_beep")])
def test_a_bad_signature_is_403_and_nothing_is_published(client, intake, stage, name) -> None:
    r = post(client, stage, name, token="someone-else-entirely-0000000000")
    assert r.status_code == 403 and r.json["error"] == "forbidden" and intake.accepted == []


def test_a_tampered_caller_is_403(client, intake) -> None:
    form = form_of(body("recording_completed"))
    signature = sign(PUBLIC + PATH_RECORDING, form)
    r = client.post(PATH_RECORDING, data={**{k: v[0] for k, v in form.items()}, "From": "+48600000000"},
                    headers={"X-Twilio-Signature": signature})
    assert r.status_code == 403 and intake.accepted == []


@pytest.mark.parametrize(("stage", "name", "changes", "problem"), [
    ("call", "malformed_call_missing_call_sid", {}, "CallSid is missing"),
    ("dial", "malformed_dial_missing_status", {}, "DialCallStatus is missing"),
    ("transcription", "malformed_transcription_missing_status", {}, "TranscriptionStatus is missing"),
    ("recording", "recording_completed", {"RecordingDuration": "twenty"}, "RecordingDuration is not a number"),
    ("recording", "recording_completed", {"CallSid": "CA123"}, "CallSid is not a Twilio CA… SID"),
    ("dial", "dial_completed", {"DialCallStatus": "exploded"}, "is not a dial status"),
    ("status", "malformed_status_missing_call_status", {}, "CallStatus is missing"),
    ("status", "status_ringing", {"CallStatus": "exploded"}, "is not a call status"),
    ("status", "status_completed_hung_up_before_beep", {"CallDuration": "²"}, "CallDuration is not a number"),
])
def test_signed_but_malformed_is_400_naming_the_field(client, intake, stage, name, changes, problem) -> None:
    r = post(client, stage, name, **changes)
    assert r.status_code == 400 and r.json["error"] == "malformed" and problem in r.json["message"]
    assert intake.accepted == []


def test_a_switched_off_phone_channel_refuses_calls(example_config, intake) -> None:
    channels = {**example_config.channels, "phone": dataclasses.replace(example_config.channels["phone"], mode="off")}
    config = dataclasses.replace(example_config, channels=channels)
    deps = GatewayDeps(config=config, intake=intake, adapters={"twilio_voice": adapter(config, "call")},
                       public_base_url=PUBLIC, max_body_bytes=64 * 1024, clock=lambda: IN_HOURS)
    r = post(create_app(deps).test_client(), "call", "call_incoming_in_hours")
    assert r.status_code == 404 and intake.accepted == []


def gateway(config, intake, at: datetime):
    adapters = {("twilio_voice" if stage == "call" else f"twilio_voice_{stage}"): adapter(config, stage)
                for stage in STAGE_PATHS}
    return create_app(GatewayDeps(config=config, intake=intake, adapters=adapters, public_base_url=PUBLIC,
                                  max_body_bytes=64 * 1024, clock=lambda: at)).test_client()


@pytest.mark.parametrize(("at", "rang"), [(IN_HOURS, True), (OUT_OF_HOURS, False)])
def test_a_simulated_voicemail_follows_the_twiml_it_gets(example_config, intake, at, rang) -> None:
    # `switchboard simulate call`: in hours the call rings the team first; nobody picks up, so the
    # <Dial> action offers voicemail; out of hours the voicemail is offered at once, and no dial
    # action comes, as from Twilio.
    client = gateway(example_config, intake, at)

    def post(request: simulate.SimulatedRequest) -> tuple[int, str]:
        r = client.post(request.path, data=request.body, headers=request.headers)
        return r.status_code, r.data.decode()

    answers = simulate.play(simulate.build_call("Please call me back", secret=TOKEN, public_url=PUBLIC), post)
    assert [status for status, _ in answers] == [200] * (5 if rang else 4)
    assert ("<Dial" in answers[0][1]) is rang
    offered = answers[1][1] if rang else answers[0][1]
    assert "<Record " in offered
    calls = [e.payload.meta["call"] for e in intake.accepted]
    # An unanswered ring is a missed call at once (the router merges the voicemail into it).
    assert calls == (["missed"] if rang else []) + ["voicemail", "voicemail", "ended"]
    assert intake.accepted[-2].payload.text == "Please call me back"


def test_a_failing_step_ends_the_simulated_call(example_config, intake) -> None:
    client = gateway(example_config, intake, OUT_OF_HOURS)
    calls = simulate.build_call("hello", secret="not-the-token-0000000000000000000", public_url=PUBLIC)
    answers = simulate.play(calls, lambda r: (client.post(r.path, data=r.body, headers=r.headers).status_code, ""))
    assert answers == [(403, "")] and intake.accepted == []
