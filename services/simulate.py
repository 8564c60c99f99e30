"""Realistic, correctly signed provider webhooks for `switchboard simulate`: what Telegram, Twilio,
Meta and a mail relay would send for one customer message. Pure: builds the request, sends nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

from services.gateway.channels import Sample, SimulatedRequest, Simulation
from shared import contracts
from shared.settings import DEV_TELEGRAM_SECRET

DEV_SECRET = DEV_TELEGRAM_SECRET  # what `make run` accepts for every provider whose secret is unset
BUSINESS_NUMBER = Sample.business_number  # the number customers write and call

#: What `switchboard simulate` sends: every channel (shared/contracts.py) but phone, whose simulation
#: is a whole call ("call", build_call). Each request is made by the `simulation` of the gateway
#: adapter that takes it, at the path that adapter declares (`webhook`); tests/unit/test_simulate_channels.py
#: fails when a channel has no simulation or a simulation misses the gateway's routes.
CHANNELS: tuple[str, ...] = (*(c for c in contracts.CHANNELS if c != "phone"), "call")


def build(channel: str, text: str, *, name: str = "Alex Customer", lang: str = "en", sender: str | None = None,
          user_id: int = 424242, update_id: int | None = None, subject: str | None = None,
          secret: str | None = None, public_url: str = "http://127.0.0.1:8080") -> SimulatedRequest:
    """The request the provider of `channel` would send for one customer message: made by the
    `simulation` of the gateway adapter that takes it, signed with `secret`, else the adapter's
    secret from the environment, else the development secret."""
    # Imported here, not at the top: the CLI reads CHANNELS to parse its arguments, and the adapters
    # and Twilio's library are loaded only for a simulation.
    from services.gateway.bootstrap import ADAPTERS

    for line in ADAPTERS:
        simulation = getattr(line.kind, "simulation", None)
        if isinstance(simulation, Simulation) and channel in simulation.channels:
            key = secret or os.environ.get(simulation.secret_env) or DEV_SECRET
            sample = Sample(text=text, secret=key, name=name, lang=lang, sender=sender, user_id=user_id,
                            update_id=update_id, subject=subject, public_url=public_url,
                            business_number=BUSINESS_NUMBER)
            return simulation.build(channel, sample)
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
