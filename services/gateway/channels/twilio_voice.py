"""Twilio Voice webhooks: what a caller hears (TwiML) and what a voicemail or missed call becomes.

Five endpoints, one adapter class, one instance per endpoint (`stage`):
- `POST /webhooks/twilio/voice` (the number's incoming-call URL): answers TwiML. In hours it
  <Dial>s the owner of the caller's open conversation (when they are on shift and have a phone),
  else the team's phone, with voicemail on no answer; out of hours it says the working hours and
  the next opening, then records a voicemail. Publishes nothing: a call is not a message yet.
- `POST /webhooks/twilio/voice/dial` (the <Dial> action): answered (completed) → <Hangup/> and an
  "answered" notice, so that the call's end is not taken for a missed call; no-answer, busy,
  failed → a voicemail <Record>, and a "missed" message is published at once; canceled (the caller
  hung up while it rang) → a "missed" message.
- `POST /webhooks/twilio/voice/recording` (the <Record> action): a voicemail message with the
  recording as an attachment, or a "missed" one when nothing was recorded; answers a goodbye and
  <Hangup/> — never another <Record>, which would loop (Twilio calls `action` after each one).
- `POST /webhooks/twilio/voice/transcription` (transcribeCallback): the same voicemail with the
  transcript as its text (completed) or with an empty text (failed).
- `POST /webhooks/twilio/voice/status` (the number's "call status changes" URL, set on the Twilio
  number, not in TwiML): the only word of a caller who hung up before the beep (during the hours
  being said, or at the beep with nothing recorded: Twilio then calls no action URL). A terminal
  CallStatus (completed, busy, failed, no-answer, canceled) publishes an "ended" notice; the
  router makes it a missed call only when nothing else is known of the call (no voicemail or
  missed message, no "answered" notice). Earlier statuses publish nothing. Answers <Response/>.

One call is one message, whatever order the callbacks come in: every message is keyed by the
CallSid (external_id), so the router stores the first one and merges what later callbacks add
(transcript, recording, missed → voicemail) into it, with one call-back task per CallSid
(services/router/handlers.py). Publishing at every stage means a lost or failed transcription
callback loses nothing, and a transcript that arrives last is still kept.

Authenticity: X-Twilio-Signature against PUBLIC_BASE_URL + path (`TwilioSignature`, shared with
SMS). Identity: the caller's E.164 number; a withheld number's voicemail is filed under the call
itself (identity kind `call_sid`: each such call is a customer of its own, with nothing to answer
on). Caller's language: the country of the number, if the business speaks its language, else the
business's default language.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from services.gateway.channels import Malformed, RawRequest, Webhook
from services.gateway.channels.twilio import TWIML_CONTENT_TYPE, TwilioSignature, form_params
from shared.config import Config
from shared.contracts import WITHHELD_CALL, Attachment, Identity, InboundMessage
from shared.locale import day_groups, format_when, words
from shared.phone import country_language, to_e164
from shared.vocabulary import LANGUAGES

log = logging.getLogger(__name__)

PATH_CALL = "/webhooks/twilio/voice"
PATH_DIAL = "/webhooks/twilio/voice/dial"
PATH_RECORDING = "/webhooks/twilio/voice/recording"
PATH_TRANSCRIPTION = "/webhooks/twilio/voice/transcription"
PATH_STATUS = "/webhooks/twilio/voice/status"
STAGE_PATHS = {"call": PATH_CALL, "dial": PATH_DIAL, "recording": PATH_RECORDING,
               "transcription": PATH_TRANSCRIPTION, "status": PATH_STATUS}
STAGES = tuple(STAGE_PATHS)

DIAL_TIMEOUT_SECONDS = 20  # about four rings: long enough to pick up, short of the caller giving up
# Twilio transcribes recordings of at most two minutes; a longer limit would silently lose transcripts.
MAX_VOICEMAIL_SECONDS = 120

#: DialCallStatus values that mean nobody picked up: the caller is offered voicemail.
UNANSWERED = frozenset({"no-answer", "busy", "failed"})
DIAL_STATUSES = frozenset({"completed", "answered", "canceled"}) | UNANSWERED
#: DialCallStatus values that mean a person took the call.
ANSWERED = frozenset({"completed", "answered"})

#: CallStatus values after which nothing more happens on the call (the status callback's last word).
CALL_ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
CALL_STATUSES = frozenset({"queued", "ringing", "in-progress"}) | CALL_ENDED

#: The words, per language: the `voice` part of services/gateway/locale/<language>.yaml.
LOCALE_DIR = Path(__file__).parent.parent / "locale"

# Call, recording and transcription SIDs are two letters and 32 hex digits.
_SID = re.compile(r"^(?P<prefix>[A-Z]{2})[0-9a-fA-F]{32}$")

#: caller's E.164 number → the agent id owning their open conversation, or None.
OwnerLookup = Callable[[str], str | None]


# --- the words --------------------------------------------------------------------------------


@functools.cache
def prompts() -> dict[str, dict[str, Any]]:
    return {language: words(LOCALE_DIR, language)["voice"] for language in LANGUAGES}


def caller_language(caller: str | None, languages: Sequence[str], default: str) -> str:
    """The language to speak to a caller: their number's country, if the business speaks it."""
    if caller:
        language = country_language(caller)
        if language is not None and language in languages:
            return language
    return default


def _clock(t: time) -> str:
    # Said aloud, "9:00" reads better than "09:00"; an interval ending at midnight is "24:00".
    return f"{t.hour}:{t.minute:02d}"


def spoken_hours(weekly_hours: Mapping[str, Sequence[tuple[time, time]]], language: str) -> str:
    """Working hours in words a voice can say: "Monday to Friday from 9:00 to 17:00, Saturday from
    10:00 to 14:00"; consecutive days with the same hours form one range. "" for a week with none."""
    words = prompts()[language]
    parts = []
    for first, last, intervals in day_groups(weekly_hours):
        label = (words["weekdays_single"][first] if first == last else
                 words["day_range"].format(first=words["weekdays_from"][first], last=words["weekdays_to"][last]))
        spans = words["and"].join(
            words["span"].format(start=_clock(a), end="24:00" if b == time(0) else _clock(b)) for a, b in intervals)
        parts.append(f"{label} {spans}")
    return ", ".join(parts)


# --- TwiML ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceUrls:
    """Absolute callback URLs: Twilio signs the URL it calls, and only PUBLIC_BASE_URL is it."""

    base: str

    @property
    def dial(self) -> str:
        return self.base + PATH_DIAL

    @property
    def recording(self) -> str:
        return self.base + PATH_RECORDING

    @property
    def transcription(self) -> str:
        return self.base + PATH_TRANSCRIPTION


def _say(response: VoiceResponse, language: str, sentences: Sequence[str]) -> None:
    words = prompts()[language]
    response.say(" ".join(s for s in sentences if s), voice=words["voice"], language=words["say_language"])


def _voicemail(response: VoiceResponse, urls: VoiceUrls) -> None:
    response.record(action=urls.recording, method="POST", max_length=MAX_VOICEMAIL_SECONDS, play_beep=True,
                    transcribe=True, transcribe_callback=urls.transcription)
    # Reached only when nothing was recorded (Twilio then skips the action): end the call politely.
    response.hangup()


def incoming_call_twiml(*, language: str, at: datetime, config: Config, dial_to: str | None, urls: VoiceUrls) -> str:
    """The answer to an incoming call. `dial_to` is the number to ring in hours (owner or team)."""
    words = prompts()[language]
    calendar = config.business_calendar
    response = VoiceResponse()
    greeting = words["greeting"].format(business=config.business.name)
    if calendar.is_open(at):
        if dial_to:
            _say(response, language, [greeting, words["connecting"]])
            response.dial(dial_to, timeout=DIAL_TIMEOUT_SECONDS, action=urls.dial, method="POST")
        else:
            _say(response, language, [greeting, words["no_answer"], words["record"]])
            _voicemail(response, urls)
        return str(response)
    local = at.astimezone(calendar.tz)
    hours = spoken_hours(calendar.weekly_hours, language)
    reopens = calendar.next_opening(local)
    _say(response, language, [
        greeting, words["closed"],
        words["hours"].format(hours=hours) if hours else "",
        words["back"].format(when=format_when(reopens, local, language)) if reopens else "",
        words["record"],
    ])
    _voicemail(response, urls)
    return str(response)


def dial_action_twiml(*, language: str, dial_status: str, urls: VoiceUrls) -> str:
    """After the <Dial>: hang up when someone answered (or the caller left), else take a voicemail."""
    response = VoiceResponse()
    if dial_status in UNANSWERED:
        words = prompts()[language]
        _say(response, language, [words["no_answer"], words["record"]])
        _voicemail(response, urls)
    else:
        response.hangup()
    return str(response)


def recording_action_twiml(*, language: str) -> str:
    """After the <Record>: goodbye and hang up. Never another <Record>: that would loop forever."""
    response = VoiceResponse()
    _say(response, language, [prompts()[language]["goodbye"]])
    response.hangup()
    return str(response)


def empty_voice_twiml() -> str:
    return str(VoiceResponse())


# --- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    sid: str
    caller: str | None  # E.164, None for a withheld number
    to: str | None  # the business number that was called


class TwilioVoiceAdapter:
    """One Twilio Voice endpoint (`stage`): verify, parse into InboundMessages, answer TwiML."""

    channel_family = "phone"

    def __init__(self, auth_token: str | None, *, stage: str, config: Config, public_base_url: str,
                 owner_lookup: OwnerLookup | None = None, default_region: str = "PL"):
        if stage not in STAGES:
            raise ValueError(f"unknown voice stage {stage!r}; stages: {', '.join(STAGES)}")
        self.signature = TwilioSignature(auth_token)
        self.stage = stage
        self.webhook = Webhook(STAGE_PATHS[stage], "phone")  # one endpoint, one adapter, per stage
        self.config = config
        self.urls = VoiceUrls(public_base_url.rstrip("/"))
        self.owner_lookup = owner_lookup
        self.default_region = default_region

    def verify(self, request: RawRequest) -> None:
        self.signature.verify(request)

    def parse(self, request: RawRequest) -> list[InboundMessage]:
        form = form_params(request)
        if self.stage == "recording" and not _one(form, "From") and _one(form, "RecordingStatus"):
            # A RecordingStatusCallback carries no caller; the <Record> action brings the same recording.
            _sid(form, "CallSid", "CA")
            return []
        call = self._call(form)
        if self.stage == "call":
            return []
        if self.stage == "dial":
            if _dial_status(form) in ANSWERED:
                # A person took the call: said, so that the router does not take its end for a missed call.
                return self._message(call, request.received_at, kind="answered")
            return self._message(call, request.received_at, kind="missed", duration=0)
        if self.stage == "recording":
            return self._recording(form, call, request.received_at)
        if self.stage == "status":
            return self._status(form, call, request.received_at)
        return self._transcription(form, call, request.received_at)

    def respond(self, request: RawRequest) -> tuple[str, str]:
        """The TwiML for this request (parse has already accepted it)."""
        form = form_params(request)
        if self.stage in ("transcription", "status") or (self.stage == "recording" and not _one(form, "From")):
            return empty_voice_twiml(), TWIML_CONTENT_TYPE
        call = self._call(form)
        language = caller_language(call.caller, self.config.business.languages, self.config.business.default_language)
        if self.stage == "call":
            dial_to = self._dial_target(call.caller, request.received_at)
            return incoming_call_twiml(language=language, at=request.received_at, config=self.config,
                                       dial_to=dial_to, urls=self.urls), TWIML_CONTENT_TYPE
        if self.stage == "dial":
            return dial_action_twiml(language=language, dial_status=_dial_status(form),
                                     urls=self.urls), TWIML_CONTENT_TYPE
        return recording_action_twiml(language=language), TWIML_CONTENT_TYPE

    # --- parsing

    def _call(self, form: Mapping[str, list[str]]) -> _Call:
        sid = _sid(form, "CallSid", "CA")
        raw_from = _one(form, "From")
        if raw_from is None:
            raise Malformed("From is missing")
        # A withheld number arrives as "anonymous", "+266696687" or a SIP/client address: still a
        # caller to answer, but no number to call back.
        caller = to_e164(raw_from, self.default_region) if raw_from.startswith("+") else None
        raw_to = (_one(form, "To") or "").strip()
        return _Call(sid=sid, caller=caller, to=(to_e164(raw_to, self.default_region) or raw_to) if raw_to else None)

    def _recording(self, form: Mapping[str, list[str]], call: _Call, at: datetime) -> list[InboundMessage]:
        raw = (_one(form, "RecordingDuration") or "0").strip()
        if not re.fullmatch(r"-?[0-9]+", raw):  # not "²" or "--5": str.isdigit() passes them, int() refuses
            raise Malformed("RecordingDuration is not a number")
        duration = max(int(raw), 0)
        url = _one(form, "RecordingUrl")
        if duration == 0 or not url:
            # The caller hung up at the beep: still a call to return.
            return self._message(call, at, kind="missed", duration=0)
        return self._message(call, at, kind="voicemail", duration=duration,
                             recording=(_sid(form, "RecordingSid", "RE"), url))

    def _transcription(self, form: Mapping[str, list[str]], call: _Call, at: datetime) -> list[InboundMessage]:
        status = (_one(form, "TranscriptionStatus") or "").strip().lower()
        if not status:
            raise Malformed("TranscriptionStatus is missing")
        if status not in ("completed", "failed"):
            raise Malformed(f"TranscriptionStatus {status[:32]!r} is not completed or failed")
        url = _one(form, "RecordingUrl")
        if not url:
            raise Malformed("RecordingUrl is missing")
        text = (_one(form, "TranscriptionText") or "").strip() if status == "completed" else ""
        return self._message(call, at, kind="voicemail", recording=(_sid(form, "RecordingSid", "RE"), url),
                             text=text, transcription=status)

    def _status(self, form: Mapping[str, list[str]], call: _Call, at: datetime) -> list[InboundMessage]:
        status = (_one(form, "CallStatus") or "").strip().lower()
        if not status:
            raise Malformed("CallStatus is missing")
        if status not in CALL_STATUSES:
            raise Malformed(f"CallStatus {status[:32]!r} is not a call status")
        raw = (_one(form, "CallDuration") or "").strip()
        if raw and not re.fullmatch(r"[0-9]+", raw):
            raise Malformed("CallDuration is not a number")
        direction = (_one(form, "Direction") or "inbound").strip().lower()
        if status not in CALL_ENDED or direction != "inbound":
            # Ringing, in progress: the call goes on, the later callbacks tell. An outbound call
            # (someone calling a customer back from the number) is not a customer's call to return.
            return []
        return self._message(call, at, kind="ended", call_status=status,
                             call_duration=int(raw) if raw else None)

    def _message(self, call: _Call, at: datetime, *, kind: str, duration: int | None = None,
                 recording: tuple[str, str] | None = None, text: str = "",
                 transcription: str | None = None, call_status: str | None = None,
                 call_duration: int | None = None) -> list[InboundMessage]:
        if call.caller is None and kind != "voicemail":
            # A withheld number leaves nothing to act on unless it left a voicemail: no number to
            # call back, no recording to hear. Its "answered" and "ended" notices would only serve
            # to tell such a missed call from the others. Said loudly, not published.
            log.warning("a %s call from a withheld number is not kept", kind, extra={"call_sid": call.sid})
            return []
        meta: dict[str, Any] = {"call": kind, "call_sid": call.sid}
        if duration is not None:
            meta["duration"] = duration
        if call_status:
            meta["call_status"] = call_status
        if call_duration is not None:
            # Not "duration", which is the voicemail's length: the call's includes the words said first.
            meta["call_duration"] = call_duration
        if call.to:
            meta["to"] = call.to  # the acknowledgement SMS leaves from the number the customer called
        if transcription:
            meta["transcription"] = transcription
        attachments: tuple[Attachment, ...] = ()
        if recording:
            rec_sid, url = recording
            # Twilio serves a recording as WAV, or as MP3 with ".mp3" appended: ten times smaller,
            # and it plays in every browser. Fetching it needs the account's credentials.
            attachments = (Attachment(content_type="audio/mpeg", url=url + ".mp3", name=f"{rec_sid}.mp3"),)
        if call.caller is None:
            # A voicemail has content the business must hear: filed under the call itself, so each
            # withheld call is a customer of its own, with an empty reply_to (nothing can answer it).
            sender, reply_to, hint = Identity(WITHHELD_CALL, call.sid), "", None
        else:
            sender, reply_to, hint = Identity("phone", call.caller), call.caller, country_language(call.caller)
        return [InboundMessage(
            channel="phone", external_id=call.sid, sender=sender, reply_to=reply_to,
            received_at=at, text=text, language_hint=hint, attachments=attachments, meta=meta,
        )]

    # --- whom to ring

    def _dial_target(self, caller: str | None, at: datetime) -> str | None:
        """The owner of the caller's open conversation, when on shift with a phone; else the team."""
        if caller and self.owner_lookup is not None:
            try:
                owner_id = self.owner_lookup(caller)
            except Exception as exc:  # noqa: BLE001 - a lookup failure must never drop a ringing call
                log.warning("owner lookup failed, ringing the team: %s", exc)
                owner_id = None
            agent = self.config.agents.get(owner_id) if owner_id else None
            if agent and agent.phone and agent.status == "active" and agent.shift.is_open(at):
                number = to_e164(agent.phone, self.default_region)
                if number:
                    return number
        return team_phone(self.config, self.default_region)


def team_phone(config: Config, region: str) -> str | None:
    """The default team's phone (the team the router assigns to when nobody else fits), else any
    team's phone."""
    for team in config.teams.values():
        number = to_e164(team.phone, region) if team.phone else None
        if number:
            return number
    return None


def _dial_status(form: Mapping[str, list[str]]) -> str:
    status = (_one(form, "DialCallStatus") or "").strip().lower()
    if not status:
        raise Malformed("DialCallStatus is missing")
    if status not in DIAL_STATUSES:
        raise Malformed(f"DialCallStatus {status[:32]!r} is not a dial status")
    return status


def _sid(form: Mapping[str, list[str]], name: str, prefix: str) -> str:
    value = _one(form, name)
    if not value:
        raise Malformed(f"{name} is missing")
    m = _SID.match(value)
    if not m or m["prefix"] != prefix:
        raise Malformed(f"{name} is not a Twilio {prefix}… SID")
    return value


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
