"""Realistic, correctly signed provider webhooks for `switchboard simulate`: what Telegram, Twilio,
Meta and a mail relay would send for one customer message. Pure: builds the request, sends nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from urllib.parse import urlencode

from shared import contracts
from shared.settings import DEV_TELEGRAM_SECRET

DEV_SECRET = DEV_TELEGRAM_SECRET  # what `make run` accepts for every provider whose secret is unset
BUSINESS_NUMBER = "+48732125400"
WHATSAPP_NUMBER_ID = "106540352242922"

#: What `switchboard simulate` sends: every channel (shared/contracts.py) but phone, whose simulation
#: is a whole call ("call", build_call). Each request goes to the path its gateway adapter declares
#: (`webhook`); tests/unit/test_simulate_channels.py fails when a channel has no simulation or a
#: simulation misses the gateway's routes.
CHANNELS: tuple[str, ...] = (*(c for c in contracts.CHANNELS if c != "phone"), "call")


@dataclass(frozen=True)
class SimulatedRequest:
    path: str
    body: bytes
    headers: dict[str, str]
    # Sent only when the previous answer contains this (Twilio follows the TwiML it got): None, always.
    only_after: str | None = None


def build(channel: str, text: str, *, name: str = "Alex Customer", lang: str = "en", sender: str | None = None,
          user_id: int = 424242, update_id: int | None = None, subject: str | None = None,
          secret: str | None = None, public_url: str = "http://127.0.0.1:8080") -> SimulatedRequest:
    # Imported here, not at the top: the CLI reads CHANNELS to parse its arguments, and the adapters
    # and Twilio's library are loaded only for a simulation.
    from twilio.request_validator import RequestValidator

    from services.gateway.channels.email import EmailRelayAdapter
    from services.gateway.channels.meta import MetaAdapter
    from services.gateway.channels.telegram import TelegramAdapter
    from services.gateway.channels.twilio import TwilioSmsAdapter

    now = int(time.time())
    if channel == "telegram":
        key = secret or os.environ.get("TELEGRAM_WEBHOOK_SECRET") or DEV_SECRET
        uid = update_id if update_id is not None else int(time.time() * 1000) % 2_000_000_000
        first, _, last = name.partition(" ")
        person = {"id": user_id, "is_bot": False, "first_name": first, "language_code": lang, **({"last_name": last} if last else {})}
        update = {"update_id": uid, "message": {"message_id": uid % 100000, "date": now, "text": text, "from": person,
                                               "chat": {"id": user_id, "type": "private", "first_name": first}}}
        return SimulatedRequest(TelegramAdapter.webhook.path, json.dumps(update).encode(),
                                {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": key})
    if channel == "sms":
        key = secret or os.environ.get("TWILIO_AUTH_TOKEN") or DEV_SECRET
        sid = "SM" + uuid.uuid4().hex
        form = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": "AC" + "0" * 32,
                "From": sender or "+48601234567", "To": BUSINESS_NUMBER, "Body": text, "NumMedia": "0",
                "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
        path = TwilioSmsAdapter.webhook.path
        signature = RequestValidator(key).compute_signature(public_url.rstrip("/") + path, form)
        return SimulatedRequest(path, urlencode(form).encode(), {
            "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    if channel in ("whatsapp", "messenger", "instagram"):
        key = secret or os.environ.get("META_APP_SECRET") or DEV_SECRET
        if channel == "whatsapp":
            wa_id = (sender or "+37061234567").lstrip("+")
            payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
                "field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": BUSINESS_NUMBER.lstrip("+"), "phone_number_id": WHATSAPP_NUMBER_ID},
                    "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                    "messages": [{"from": wa_id, "id": "wamid.SIM" + uuid.uuid4().hex, "timestamp": str(now),
                                  "type": "text", "text": {"body": text}}]}}]}]}
        else:
            ms = now * 1000
            payload = {"object": "page" if channel == "messenger" else "instagram", "entry": [{
                "id": "104512345678901", "time": ms, "messaging": [{
                    "sender": {"id": sender or "7712345678901234"}, "recipient": {"id": "104512345678901"},
                    "timestamp": ms, "message": {"mid": "m_SIM" + uuid.uuid4().hex, "text": text}}]}]}
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        return SimulatedRequest(MetaAdapter.webhook.path, body, {"Content-Type": "application/json",
                                                        "X-Hub-Signature-256": signature})
    if channel == "email":
        key = secret or os.environ.get("EMAIL_RELAY_SECRET") or DEV_SECRET
        mail = EmailMessage()
        mail["From"] = formataddr((name, sender or "alex.customer@example.com"))
        mail["To"] = "support@northwind.example"
        mail["Subject"] = subject or text[:60]
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain="example.com")
        mail.set_content(text)
        return SimulatedRequest(EmailRelayAdapter.webhook.path, mail.as_bytes(), {
            "Content-Type": "message/rfc822", "X-Switchboard-Relay-Secret": key})
    raise ValueError(f"simulate supports {', '.join(CHANNELS)}, not {channel!r}")


def build_call(text: str, *, sender: str | None = None, hang_up: bool = False, secret: str | None = None,
               public_url: str = "http://127.0.0.1:8080") -> list[SimulatedRequest]:
    """The Twilio Voice callbacks of one call, in the order Twilio makes them: the incoming call
    (answered with TwiML), then either a voicemail — in hours the <Dial> nobody answered first,
    the <Record> action, the transcription with `text`, the call's end — or, with `hang_up`, only
    the call's end: a caller who hung up before the beep. Each is signed like Twilio's, over
    PUBLIC_BASE_URL + path."""
    from twilio.request_validator import RequestValidator

    from services.gateway.channels.twilio_voice import STAGE_PATHS

    key = secret or os.environ.get("TWILIO_AUTH_TOKEN") or DEV_SECRET
    base = public_url.rstrip("/")
    account = "AC" + "0" * 32
    call_sid, recording_sid = "CA" + uuid.uuid4().hex, "RE" + uuid.uuid4().hex
    call = {"CallSid": call_sid, "AccountSid": account, "From": sender or "+48601234567", "To": BUSINESS_NUMBER,
            "Direction": "inbound", "ApiVersion": "2010-04-01"}
    recording_url = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{recording_sid}"
    steps: list[tuple[str, dict[str, str], str | None]] = [(STAGE_PATHS["call"], {**call, "CallStatus": "ringing"}, None)]
    if not hang_up:
        # In hours the call rings the owner or the team first; nobody answers in the simulation.
        steps.append((STAGE_PATHS["dial"], {**call, "CallStatus": "in-progress", "DialCallStatus": "no-answer",
                                                     "DialCallDuration": "0"}, "<Dial"))
        steps += [
            (STAGE_PATHS["recording"], {**call, "CallStatus": "in-progress", "RecordingSid": recording_sid,
                                                  "RecordingUrl": recording_url, "RecordingDuration": "14",
                                                  "Digits": "hangup"}, None),
            (STAGE_PATHS["transcription"], {**call, "RecordingSid": recording_sid,
                                                      "RecordingUrl": recording_url,
                                                      "TranscriptionSid": "TR" + uuid.uuid4().hex,
                                                      "TranscriptionStatus": "completed",
                                                      "TranscriptionText": text}, None),
        ]
    steps.append((STAGE_PATHS["status"], {**call, "CallStatus": "completed",
                                                    "CallDuration": "9" if hang_up else "31"}, None))
    validator = RequestValidator(key)
    return [SimulatedRequest(path, urlencode(form).encode(), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": validator.compute_signature(base + path, form)}, only_after=when)
        for path, form, when in steps]


def play(requests: list[SimulatedRequest], post: Callable[[SimulatedRequest], tuple[int, str]]) -> list[tuple[int, str]]:
    """Send `requests` in order with `post` (→ status, body), as the provider would: a step whose
    `only_after` is not in the previous answer is left out (no <Dial>, no dial action), and the
    first answer that is not a success ends the call. The answers, in order."""
    answers: list[tuple[int, str]] = []
    for request in requests:
        if request.only_after is not None and (not answers or request.only_after not in answers[-1][1]):
            continue
        answers.append(post(request))
        if not 200 <= answers[-1][0] < 300:
            break
    return answers
